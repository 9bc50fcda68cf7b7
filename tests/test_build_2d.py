"""End-to-end builds of 2D image-level sources on real images: what a user reads back."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from gmai_build.writer import ANSWER_KEY_COLUMNS, TEST_COLUMNS, TSV_COLUMNS
from helpers import (
    decode_image,
    read_manifest,
    read_tsv,
    realdata,
    run_build,
    sample_token,
    sha256,
    write_yaml,
)
from PIL import Image

CITE = {"license": "CC BY 4.0", "citation": "Yang J. et al. MedMNIST v2. Sci Data 2023"}


def pneumonia_source(**extra) -> dict:
    return {
        "name": "pneumoniamnist",
        "format": "medmnist",
        "root": str(realdata("medmnist")),
        "modality": "X-ray",
        "label_map": "pneumoniamnist.yaml",
        **CITE,
        **extra,
    }


def build_pneumonia(tmp_path: Path, **build) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = write_yaml(tmp_path / "sources.yaml",
                     {"build": {"name": "PN", **build}, "sources": [pneumonia_source()]})
    out = tmp_path / "out"
    assert run_build(cfg, out) == 0
    return out


def check_tsvs(out: Path, name: str) -> tuple:
    val, test = read_tsv(out / f"{name}_VAL.tsv"), read_tsv(out / f"{name}_TEST.tsv")
    key = read_tsv(out / f"{name}_TEST_answers.tsv")
    assert list(val.columns) == TSV_COLUMNS
    assert list(test.columns) == TEST_COLUMNS
    assert list(key.columns) == ANSWER_KEY_COLUMNS
    assert key["index"].tolist() == test["index"].tolist()
    all_index = val["index"].tolist() + test["index"].tolist()
    assert len(set(all_index)) == len(all_index)
    truth = {"VAL": val["category"].tolist(), "TEST": key["category"].tolist()}
    for split, df, answers in (("VAL", val, val["answer"].tolist()),
                               ("TEST", test, key["answer"].tolist())):
        for (_, row), answer, category in zip(df.iterrows(), answers, truth[split]):
            opts = [row[c] for c in "ABCDE" if isinstance(row[c], str)]
            filled = [c for c in "ABCDE" if isinstance(row[c], str)]
            assert filled == list("ABCDE"[: len(opts)]), "options fill A.. without gaps"
            assert 2 <= len(opts) <= 5
            assert len(set(opts)) == len(opts), "options never repeat"
            assert answer in filled
            assert row[answer] == category, "the answer option is the ground truth"
            assert isinstance(row["category"], str) and row["category"]
            if split == "TEST":  # TEST's category is the task: it never names an option
                assert row["category"] == row["clinical VQA task"] or not row["clinical VQA task"]
                assert row["category"] not in opts
    return val, test, key


def test_pneumoniamnist_real_build(tmp_path: Path) -> None:
    out = build_pneumonia(tmp_path)
    val, test, key = check_tsvs(out, "PN")
    manifest = read_manifest(out)
    # Per-label cap (30) on both labels, everything else seeded and recorded.
    assert Counter(r["category"] for r in manifest) == {"normal": 30, "pneumonia": 30}
    assert len(val) + len(test) == 60
    # VAL and TEST never share a group.
    groups = {s: {r["group"] for r in manifest if r["split"] == s} for s in ("VAL", "TEST")}
    assert groups["VAL"] and groups["TEST"] and not groups["VAL"] & groups["TEST"]
    # Pixels: the decoded image is exactly the 28x28 npz image as RGB, upscaled bicubically to
    # the 224-pixel minimum side (before any overlay, so lines drawn later stay crisp).
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    by_index = {r["index"]: r for r in manifest}
    raw_ids = {sample_token("pneumoniamnist", f"pneumoniamnist.npz:{s}/{i}"): f"{s}/{i}"
               for s in ("train", "val", "test") for i in range(len(arrays[f"{s}_labels"]))}
    for df in (val, test):
        for _, row in df.iterrows():
            rec = by_index[row["index"]]
            split, i = raw_ids[rec["sample_id"]].split("/")
            expected = arrays[f"{split}_images"][int(i)]
            got = decode_image(row["image"])
            assert got.shape == (224, 224, 3)
            rgb = np.repeat(expected[:, :, None], 3, axis=2)
            np.testing.assert_array_equal(
                got, cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_CUBIC))
            assert rec["region"] == {"min_side_scale": [8.0, 8.0]}
            raw = int(arrays[f"{split}_labels"][int(i)][0])
            assert rec["category"] == {0: "normal", 1: "pneumonia"}[raw]
            assert row["category"] == (rec["category"] if "answer" in row else "Disease Diagnosis")
            assert row["clinical VQA task"] == "Disease Diagnosis"
            assert row["department"] == "Pulmonary Medicine"
            assert row["perceptual granularity"] == "Image Level"
            assert row["original task"] == "CLS_2D"
            assert "X-ray" in row["question"]


def test_same_inputs_byte_identical_outputs(tmp_path: Path) -> None:
    a = build_pneumonia(tmp_path / "a")
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    cfg = write_yaml(b_dir / "sources.yaml",
                     {"build": {"name": "PN"}, "sources": [pneumonia_source()]})
    assert run_build(cfg, b_dir / "out", workers=2) == 0  # parallel run, same bytes
    for name in ("PN_VAL.tsv", "PN_TEST.tsv", "PN_TEST_answers.tsv", "manifest.jsonl",
                 "summary.json"):
        assert sha256(a / name) == sha256(b_dir / "out" / name), name


def test_answer_letters_balanced_and_cap_configurable(tmp_path: Path) -> None:
    out = build_pneumonia(tmp_path, per_label_cap=200, seed=7)
    manifest = read_manifest(out)
    assert Counter(r["category"] for r in manifest) == {"normal": 200, "pneumonia": 200}
    letters = Counter(r["answer"] for r in manifest)
    assert abs(letters["A"] - letters["B"]) <= 1  # 2-option questions: only A and B exist
    assert {r["seed"] for r in manifest} == {7}


def test_val_share_close_to_configured(tmp_path: Path) -> None:
    from gmai_build.split import split_of

    splits = Counter(split_of("src", f"patient-{k}", 0.18) for k in range(20000))
    assert abs(splits["VAL"] / 20000 - 0.18) < 0.01


def _export_images(root: Path) -> dict[str, np.ndarray]:
    """Real chest X-rays exported as 8-bit, 16-bit, palette and RGBA files; expected RGB."""
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    imgs, labels = arrays["test_images"], arrays["test_labels"][:, 0]
    picks = list(np.flatnonzero(labels == 0)[:12]) + list(np.flatnonzero(labels == 1)[:12])
    expected: dict[str, np.ndarray] = {}
    for k in picks:
        cls = "pneumonia" if labels[k] else "normal"
        (root / cls).mkdir(parents=True, exist_ok=True)
        img = imgs[k]
        rel = f"{cls}/x{k:03d}"
        if k % 4 == 0:
            Image.fromarray(img).save(root / f"{rel}.png")
            expected[f"{rel}.png"] = np.repeat(img[:, :, None], 3, axis=2)
        elif k % 4 == 1:  # 16-bit: percentile clip of the non-zero pixels
            Image.fromarray(img.astype(np.uint16) * 257).save(root / f"{rel}.png")
            v = img.astype(np.float64) * 257
            lo, hi = np.percentile(v[v != 0], [0.5, 99.5])
            exp = np.clip(np.rint((v - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
            expected[f"{rel}.png"] = np.repeat(exp[:, :, None], 3, axis=2)
        elif k % 4 == 2:  # palette
            pal = Image.fromarray(np.stack([img, img // 2, 255 - img], -1)).convert(
                "P", palette=Image.ADAPTIVE, colors=32)
            pal.save(root / f"{rel}.png")
            expected[f"{rel}.png"] = np.asarray(pal.convert("RGB"))
        else:  # RGBA, opaque, and a TIFF
            rgba = np.dstack([img, img, img, np.full_like(img, 255)])
            Image.fromarray(rgba).save(root / f"{rel}.tif")
            expected[f"{rel}.tif"] = np.repeat(img[:, :, None], 3, axis=2)
    return expected


def test_folder_and_csv_sources_pixels_and_modes(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    expected = _export_images(folder)
    table = tmp_path / "table"
    shutil.copytree(folder, table / "imgs")
    rows = ["path,diagnosis,patient"] + [
        f"imgs/{rel},{rel.split('/')[0]},P{n // 2}" for n, rel in enumerate(sorted(expected))
    ]
    (table / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "MIX"},
        "sources": [
            {"name": "folder", "format": "folder_per_class", "root": "folder", "modality": "X-ray",
             "label_map": "pneumoniamnist_names.yaml", **CITE, "identifying_paths": False,
             "min_side": 1},
            {"name": "table", "format": "csv_table", "root": "table", "modality": "X-ray",
             "label_map": "pneumoniamnist_names.yaml", **CITE, "identifying_paths": False,
             "min_side": 1,
             "options": {"table": "labels.csv", "image_column": "path",
                         "label_column": "diagnosis", "patient_column": "patient"}},
        ],
    })
    out = tmp_path / "out"
    assert run_build(cfg, out) == 0
    val, test, _ = check_tsvs(out, "MIX")
    manifest = {r["index"]: r for r in read_manifest(out)}
    seen = set()
    for df in (val, test):
        for _, row in df.iterrows():
            rec = manifest[row["index"]]
            rel = rec["files"][0].removeprefix("imgs/")
            np.testing.assert_array_equal(decode_image(row["image"]), expected[rel], err_msg=rel)
            assert rec["category"] == rel.split("/")[0]
            seen.add((rec["source"], rel))
    assert len(seen) == 48
    # CSV patient column: both images of a patient are in the same split.
    by_patient: dict[str, set[str]] = {}
    for rec in manifest.values():
        if rec["source"] == "table":
            by_patient.setdefault(rec["group"], set()).add(rec["split"])
    assert all(len(s) == 1 for s in by_patient.values()) and len(by_patient) == 12


def test_adding_a_source_keeps_existing_questions(tmp_path: Path) -> None:
    build = {"name": "PN", "per_label_cap": 1000}  # below the cap: every image is kept
    first = pneumonia_source(options={"splits": ["test"]})
    cfg = write_yaml(tmp_path / "sources.yaml", {"build": build, "sources": [first]})
    out = tmp_path / "out"
    assert run_build(cfg, out) == 0
    before = {r["case_id"]: r for r in read_manifest(out)}
    assert len(before) == len(np.load(realdata("medmnist", "pneumoniamnist.npz"))["test_labels"])
    _export_images(tmp_path / "folder")
    cfg = write_yaml(tmp_path / "sources2.yaml", {
        "build": build,
        "sources": [first,
                    {"name": "folder", "format": "folder_per_class", "root": "folder",
                     "modality": "X-ray", "label_map": "pneumoniamnist_names.yaml", **CITE}],
    })
    assert run_build(cfg, out) == 0
    after = {r["case_id"]: r for r in read_manifest(out)}
    assert set(before) <= set(after)
    for cid, old in before.items():
        for key in ("index", "options", "answer", "split", "question", "image_sha256"):
            assert after[cid][key] == old[key], key
    new = [r for r in after.values() if r["case_id"] not in before]
    assert len(new) == 24
    assert min(r["index"] for r in new) > max(r["index"] for r in before.values())


def test_nested_class_folders_with_class_from_parent(tmp_path: Path) -> None:
    """Kaggle-style root/<split>/<CLASS>/x.png: the image's own folder is the class."""
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    imgs, labels = arrays["test_images"], arrays["test_labels"][:, 0]
    picks = list(np.flatnonzero(labels == 0)[:6]) + list(np.flatnonzero(labels == 1)[:6])
    for n, k in enumerate(picks):
        folder = tmp_path / "data" / ("train" if n % 2 else "test") / ("PNEUMONIA" if labels[k] else "NORMAL")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[k]).save(folder / f"{k}.png")
    (tmp_path / "map.yaml").write_text(
        "department: Pulmonary Medicine\nlabels:\n  NORMAL: normal\n  PNEUMONIA: pneumonia\n")
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "K"}, "sources": [
        {"name": "kaggle", "format": "folder_per_class", "root": "data", "modality": "X-ray",
         "label_map": "map.yaml", **CITE, "options": {"class_from": "parent"},
         "identifying_paths": False}]})
    assert run_build(cfg, tmp_path / "out") == 0
    manifest = read_manifest(tmp_path / "out")
    assert len(manifest) == 12
    for r in manifest:
        assert r["category"] == ("pneumonia" if "PNEUMONIA" in r["files"][0] else "normal")


def test_medmnist_3d_volumes(tmp_path: Path) -> None:
    """N x D x H x W arrays (OrganMNIST3D-style) become volumes; the middle axial slice is shown."""
    rng = np.random.default_rng(0)
    vols = rng.integers(1, 255, (6, 28, 28, 28), dtype=np.uint8)
    vols[:, 14, 3, 5] = 0  # a marker on the middle slice (z=14): row y=3, column x=5
    labs = np.arange(6).reshape(-1, 1) % 3
    np.savez(tmp_path / "organmnist3d.npz", train_images=vols, train_labels=labs)
    (tmp_path / "m.yaml").write_text("labels:\n  '0': liver\n  '1': spleen\n  '2': kidney\n")
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "O3"}, "sources": [
        {"name": "o3", "format": "medmnist", "root": ".", "modality": "CT", "label_map": "m.yaml",
         **CITE, "options": {"splits": ["train"]}, "min_side": 1}]})
    assert run_build(cfg, tmp_path / "out") == 0
    manifest = read_manifest(tmp_path / "out")
    assert len(manifest) == 6 and {r["category"] for r in manifest} == {"liver", "spleen", "kidney"}
    assert {r["slice_index"] for r in manifest} == {14}
    test = read_tsv(tmp_path / "out" / "O3_TEST.tsv")
    for _, row in test.iterrows():
        img = decode_image(row["image"])
        assert img.shape == (28, 28, 3)
        assert img[3, 5, 0] == 0  # axial display: row = y, column = x


def test_csv_one_hot_columns_bare_ids_and_windows_paths(tmp_path: Path) -> None:
    """HAM10000/CheXpert-style tables: one-hot label columns, bare image ids, '\\' paths."""
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    imgs, labels = arrays["val_images"], arrays["val_labels"][:, 0]
    picks = list(np.flatnonzero(labels == 0)[:5]) + list(np.flatnonzero(labels == 1)[:5])
    (tmp_path / "data" / "imgs").mkdir(parents=True)
    rows = ["image,NORMAL,PNEUMONIA"]
    for k in picks:
        Image.fromarray(imgs[k]).save(tmp_path / "data" / "imgs" / f"v{k}.jpg", quality=100)
        rows.append(f"imgs\\v{k},{1.0 - labels[k]:.1f},{float(labels[k]):.1f}")
    (tmp_path / "data" / "gt.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "map.yaml").write_text(
        "department: Pulmonary Medicine\nlabels:\n  NORMAL: normal\n  PNEUMONIA: pneumonia\n")
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "OH"}, "sources": [
        {"name": "onehot", "format": "csv_table", "root": "data", "modality": "X-ray",
         "label_map": "map.yaml", **CITE, "identifying_paths": False,
         "options": {"table": "gt.csv", "image_column": "image",
                     "label_columns": ["NORMAL", "PNEUMONIA"], "image_suffix": ".jpg"}}]})
    assert run_build(cfg, tmp_path / "out") == 0
    got = {r["files"][0]: r["category"] for r in read_manifest(tmp_path / "out")}
    assert got == {f"imgs/v{k}.jpg": ("pneumonia" if labels[k] else "normal") for k in picks}
