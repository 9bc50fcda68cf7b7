"""Nothing lost in silence, images fit to ask about: labels that contain each other, single-label
sources, sources that yield nothing, slivers, overlapping boxes, upscaled small images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from gmai_build.cases import CaseMaker
from gmai_build.config import SourceConfig
from gmai_build.errors import BuildError
from gmai_build.samples import BOX_LEVEL, MASK_LEVEL, Box, Slice2D
from gmai_build.taxonomy import LabelMap, load_vocabulary
from helpers import decode_image, read_manifest, read_tsv, run_build, write_yaml

CITE = {"license": "CC0", "citation": "synthetic test data"}


def noise_png(path: Path, seed: int, size: tuple[int, int] = (256, 256)) -> None:
    """A distinct textured picture per seed (no two are perceptual near duplicates)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def mask_source(root: Path, n: int, mask: np.ndarray, seed0: int = 0) -> None:
    for i in range(n):
        noise_png(root / "images" / f"case{i:02d}.png", seed0 + i, mask.shape)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "masks" / f"case{i:02d}.png"), mask.astype(np.uint8))


def blob(shape=(256, 256)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, (128, 128), 40, 1, -1)
    return m


def test_labels_that_contain_each_other_still_make_questions(tmp_path: Path) -> None:
    """normal / abnormal sperm head: both labels asked, each offered as the other's distractor
    (text matching falls back to the letter; the letter is the answer)."""
    for k, cls in enumerate(("normal", "abnormal")):
        for i in range(6):
            noise_png(tmp_path / "sperm" / cls / f"{i}.png", 100 * k + i)
    write_yaml(tmp_path / "m.yaml", {"labels": {"normal": "normal sperm head",
                                                "abnormal": "abnormal sperm head"}})
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "SP"}, "sources": [
        {"name": "sperm", "format": "folder_per_class", "root": "sperm", "modality": "Microscopy",
         "label_map": "m.yaml", **CITE}]})
    assert run_build(cfg, tmp_path / "out") == 0
    records = read_manifest(tmp_path / "out")
    assert len(records) == 12
    assert {r["category"] for r in records} == {"normal sperm head", "abnormal sperm head"}
    assert all(sorted(r["options"]) == ["abnormal sperm head", "normal sperm head"]
               for r in records)


def test_single_label_source_on_a_modality_without_other_labels(tmp_path: Path) -> None:
    """Spinal cord on T2 MRI: the vocabulary has no other label there; distractors come from the
    same task on other modalities instead of the source silently building nothing."""
    mask_source(tmp_path / "cord", 4, blob())
    write_yaml(tmp_path / "m.yaml", {"labels": {"1": "spinal cord"}})
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "SC"}, "sources": [
        {"name": "cord", "format": "mask_pairs", "root": "cord", "modality": "T2 MRI",
         "label_map": "m.yaml", **CITE,
         "options": {"images": "images/*.png", "masks": "masks/{stem}.png"}}]})
    assert run_build(cfg, tmp_path / "out") == 0
    records = read_manifest(tmp_path / "out")
    assert len(records) == 8 and all(len(r["options"]) >= 2 for r in records)
    assert all(r["task"] == "Organ Recognition - Thorax" for r in records)


def test_a_source_that_yields_no_question_is_an_error_unless_allowed(tmp_path: Path, capsys) -> None:
    # A strip of image (a few-slice volume cut coronally is one) with a 1-pixel-high, 117-long
    # sliver: upscaled to be seen, but still one pixel of information, so not asked about.
    sliver = np.zeros((8, 256), np.uint8)
    sliver[4, 50:167] = 1
    mask_source(tmp_path / "thin", 3, sliver)
    mask_source(tmp_path / "good", 3, blob(), seed0=50)
    write_yaml(tmp_path / "m.yaml", {"labels": {"1": "liver"}})
    opts = {"images": "images/*.png", "masks": "masks/{stem}.png"}
    thin = {"name": "thin", "format": "mask_pairs", "root": "thin", "modality": "CT",
            "label_map": "m.yaml", **CITE, "options": opts}
    good = {**thin, "name": "good", "root": "good"}
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "T"}, "sources": [thin, good]})
    assert run_build(cfg, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "thin" in err and "yields no question" in err and "thinner than 4 px" in err
    assert "allow_no_questions" in err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "T"}, "sources": [
        {**thin, "allow_no_questions": True}, good]})
    assert run_build(cfg, tmp_path / "out") == 0
    records = read_manifest(tmp_path / "out")
    assert {r["source"] for r in records} == {"good"}
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # every skipped case counted by reason: 3 images x (mask + contour)
    assert summary["skipped"] == {"thin: marked area thinner than 4 px": 6}


def make_slice(rgb: np.ndarray, **kw) -> Slice2D:
    return Slice2D(source="s", sample_id="x", files=("x.png",), group="g", rgb=rgb, **kw)


def bccd_maker(tmp_path: Path, **targets) -> CaseMaker:
    src = SourceConfig(name="s", format="voc", root=tmp_path, modality="Microscopy",
                       label_map="bccd", **CITE, targets=targets or {})
    from gmai_build.taxonomy import BUNDLED_SOURCE_MAPS

    return CaseMaker(src, LabelMap(BUNDLED_SOURCE_MAPS / "bccd.yaml", "s", load_vocabulary(),
                                   "Microscopy"))


def test_box_distractors_exclude_labels_whose_boxes_cover_the_target(tmp_path: Path) -> None:
    rgb = np.zeros((300, 300, 3), np.uint8)
    boxes = (Box(100, 100, 200, 200, "RBC"),  # a red cell ...
             Box(150, 150, 170, 170, "Platelets"),  # ... with a platelet on it (inside)
             Box(10, 10, 60, 60, "WBC"))  # apart
    cases = [c for c in bccd_maker(tmp_path).cases(make_slice(rgb, boxes=boxes))
             if c.granularity == BOX_LEVEL]
    by_label = {c.label: c for c in cases}
    assert by_label["platelet"].exclude == ("red blood cell",)
    assert by_label["red blood cell"].exclude == ("platelet",)
    assert by_label["white blood cell"].exclude == ()
    loose = bccd_maker(tmp_path, box_overlap=1.0)
    assert all(not c.exclude for c in loose.cases(make_slice(rgb, boxes=boxes)))


def test_slivers_and_small_areas_are_not_asked_about(tmp_path: Path) -> None:
    maker = bccd_maker(tmp_path)
    rgb = np.zeros((256, 256, 3), np.uint8)
    sliver = np.zeros((256, 256), bool)
    sliver[10, 10:127] = True
    tiny = np.zeros((256, 256), bool)
    tiny[50:56, 50:56] = True  # 36 px < 64
    fine = np.zeros((256, 256), bool)
    fine[100:120, 100:120] = True
    cases = list(maker.cases(make_slice(rgb, target_masks={"RBC": sliver, "WBC": tiny,
                                                           "Platelets": fine})))
    why = {c.label: c.skipped for c in cases if c.granularity == MASK_LEVEL}
    assert why == {"red blood cell": "marked area thinner than 4 px",
                   "white blood cell": "marked area below 64 px", "platelet": ""}
    assert all(not c.rendered for c in cases if c.skipped)
    thin_box = list(maker.cases(make_slice(rgb, boxes=(Box(0, 0, 3, 80, "RBC"),))))
    assert thin_box[0].skipped == "marked area thinner than 4 px"


def test_small_images_are_upscaled_before_the_overlay(tmp_path: Path) -> None:
    """A 64x64 image with a box: published at 224x224 with a 1-pixel crisp box outline."""
    # Textured grey (a constant image is not published): never the overlay's pure red.
    yy, xx = np.mgrid[:64, :64]
    img = np.repeat((70 + (xx + 2 * yy) % 5 * 10).astype(np.uint8)[:, :, None], 3, axis=2)
    root = tmp_path / "boxes"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    cv2.imwrite(str(root / "JPEGImages" / "a.png"), img)
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>64</width><height>64</height>"
        "<depth>3</depth></size><object><name>WBC</name><bndbox><xmin>17</xmin><ymin>17</ymin>"
        "<xmax>48</xmax><ymax>48</ymax></bndbox></object><object><name>RBC</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>7</xmax><ymax>7</ymax></bndbox></object></annotation>")
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "UP"}, "sources": [
        {"name": "up", "format": "voc", "root": "boxes", "modality": "Microscopy",
         "label_map": "bccd", **CITE, "allow_no_questions": False}]})
    assert run_build(cfg, tmp_path / "out") == 0
    records = read_manifest(tmp_path / "out")
    wbc = next(r for r in records if r["category"] == "white blood cell")
    assert wbc["region"]["min_side_scale"] == [3.5, 3.5]
    assert wbc["region"]["box"] == [56.0, 56.0, 168.0, 168.0]  # (16..48) x 3.5
    rows = {**{int(r["index"]): r for _, r in read_tsv(tmp_path / "out" / "UP_TEST.tsv").iterrows()},
            **{int(r["index"]): r for _, r in read_tsv(tmp_path / "out" / "UP_VAL.tsv").iterrows()}}
    shown = decode_image(rows[wbc["index"]]["image"])
    assert shown.shape == (224, 224, 3)
    red = (shown[:, :, 0] == 255) & (shown[:, :, 1] == 0)
    ys, xs = np.nonzero(red)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (56, 56, 167, 167)
    assert red[56, 56:168].all() and not red[57, 60:160].any()  # one crisp line, hollow inside
    # The 7x7 RBC box is 24.5 px wide once drawn, but 49 source pixels: not asked, counted.
    assert not any(r["category"] == "red blood cell" for r in records)
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert '"up: marked area below 64 px": 1' in summary


def test_a_diagonal_line_is_too_thin_and_the_error_names_the_source(tmp_path: Path) -> None:
    """Its bounding box is large, but the mask is 1 pixel thick on average: not asked about."""
    from gmai_build.config import load_config
    from gmai_build.pipeline import build

    mask_source(tmp_path / "thin", 1, np.eye(256, dtype=np.uint8))
    write_yaml(tmp_path / "m.yaml", {"labels": {"1": "liver"}})
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "T"}, "sources": [
        {"name": "diag", "format": "mask_pairs", "root": "thin", "modality": "CT",
         "label_map": "m.yaml", **CITE,
         "options": {"images": "images/*.png", "masks": "masks/{stem}.png"}}]})
    with pytest.raises(BuildError) as exc:
        build(load_config(cfg), tmp_path / "out", workers=1, progress=False, log=lambda _: None)
    assert exc.value.source == "diag"
    assert "marked area thinner than 4 px (2 case(s))" in str(exc.value)


def test_a_single_class_image_source_says_why_it_yields_nothing(tmp_path: Path, capsys) -> None:
    for i in range(4):
        noise_png(tmp_path / "one" / "pneumonia" / f"{i}.png", 700 + i)
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "ONE"}, "sources": [
        {"name": "one", "format": "folder_per_class", "root": "one", "modality": "X-ray",
         "label_map": "pneumoniamnist_names.yaml", **CITE}]})
    assert run_build(cfg, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "source 'one'" in err and "no distractor for 'pneumonia' (Image Level: distractors " \
        "are the source's other labels, and it has none) (4 case(s))" in err
