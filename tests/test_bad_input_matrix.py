"""The bad-input matrix of issue 9 (points 2-4): input kind -> message -> outcome.

Each test builds a small project (real samples where they exist, synthetic volumes for numeric
edge cases), damages it one way and checks the one-line message and the outcome: an error that
publishes nothing (exit 1), or a build whose summary.md/json lists the skip or note.

=====================================  ===========================================  ===========
input kind                             message (file named by its token f-...)      outcome
=====================================  ===========================================  ===========
1 NaN voxel in a float NIfTI           note "1 NaN/inf pixel value(s) ignored in     built, no
                                       percentiles and shown at the window floor"    black slice
inf voxels (saturation)                note "10 NaN/inf pixel value(s) ..."          built
NaN + intensity.nonfinite: error       "N NaN/inf pixel value(s) (intensity.         exit 1
                                       nonfinite: error ...)"
slice all NaN (constant after map)     skipped "image (axial slice 6) is constant    not published
                                       after intensity mapping: not published"
NaN in a float TIFF                    note "1 NaN/inf pixel value(s) ..."           built
.nii.gz / .nii cut after chosen plane  "truncated or damaged compressed volume" /   exit 1
                                       "truncated NIfTI: the header declares ..."
gzip with several members              (none)                                        built
DICOM file, DICM + garbage, no suffix  "unreadable DICOM: ..."                       exit 1
  same, on_error: skip                 skipped "series left out: a file in its       series out,
                                       folder cannot be used (unreadable ...)"       rest built
uneven DICOM slice gaps                note "DICOM: uneven slice gaps 1.000..3.000"  built
DICOM slice with truncated pixel data  "cannot decode pixel data: ... less than      exit 1
                                       expected ..."
PNG / NIfTI / DICOM over max_pixels,   "... exceeds the pixel budget of N           exit 1
  max_voxels; 12000x12000 PNG bomb;      (build.max_pixels; checked before
  MedMNIST from npy headers              decoding)"
CSV row ../x, absolute path, symlink   "entry '...' resolves to /abs/x, outside     exit 1
                                       the source root ...allow_outside_root: true"
  same, on_error: skip                 skipped "... outside the source root ..."    row out
  same, allow_outside_root: true       (none; files recorded as tokens only)        built
dataset.json entry ../x.nii.gz         "entry '../x.nii.gz' resolves to ..."        exit 1
unreadable image in a CSV table        "cannot read image: ..."                      exit 1
  on_error: skip (build or source)     skipped "cannot read image: ..."              rest built
missing_mask: skip / empty mask        skipped "no mask for this image               built
                                       (missing_mask: skip)" / "mask is empty"
missing label volume                   "label volume for image ... not found"       exit 1
  missing_label: skip                  skipped "no label volume for this image      built
                                       (missing_label: skip)"
target under slicing.min_area          skipped "target '2' is smaller than slicing.     built
                                       min_area (16 pixels) on every slice ..."
box partly outside the image           note "1 box(es) clipped to the image"         built
unknown mask value under skip          "raw label '3' is not in label map ..."       exit 1
another build.salt, same --out         "... was built with another salt ..."         exit 1
output of a build without salted ids   "... built by a gmai-build without salted     exit 1
                                       identifiers ..."
relative config + root with ../        (none)                                        built
escape under validate                  "... outside the source root ..."            exit 1
  with allow_outside_root: true        (none)                                        OK
=====================================  ===========================================  ===========

Privacy (point 1) is in test_privacy.py; RTSTRUCT/SEG on partial series (point 5) in
test_partial_series.py.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from gmai_build.cli import main
from helpers import decode_image, read_manifest, read_tsv, realdata, write_yaml
from PIL import Image

CITE = {"license": "CC BY 4.0", "citation": "public samples"}
MAP_2D = "department: Pulmonary Medicine\nlabels:\n  normal: normal\n  pneumonia: pneumonia\n"
MAP_CT = "department: Gastroenterology and Hepatology\nlabels:\n  Liver: liver\n  Kidney: kidney\n"


@dataclass
class Result:
    code: int
    err: str
    out: Path

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())

    def reasons(self, key: str) -> list[str]:
        return [e["reason"] for e in self.summary()[key]]


def run(tmp: Path, sources: list[dict], capsys, **build) -> Result:
    cfg = write_yaml(tmp / "sources.yaml", {"build": {"name": "M", "workers": 1, **build},
                                            "sources": sources})
    out = tmp / "out"
    code = main(["--sources", str(cfg), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code:
        assert err.startswith("gmai-build: error: ") and not (out / "manifest.jsonl").exists()
    return Result(code, err, out)


# 2D projects: real chest X-rays in a CSV table ---------------------------------------------
def xray_table(tmp: Path, extra_rows: list[str] = (), **source) -> dict:
    """Six real chest X-rays (both classes) listed in a CSV; extra rows appended as given."""
    root = tmp / "xr"
    (root / "imgs").mkdir(parents=True)
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    labels = arrays["val_labels"][:, 0]
    rows = ["image,label"]
    for k in list(np.flatnonzero(labels == 0)[:3]) + list(np.flatnonzero(labels == 1)[:3]):
        Image.fromarray(arrays["val_images"][k]).save(root / "imgs" / f"{k}.png")
        rows.append(f"imgs/{k}.png,{'pneumonia' if labels[k] else 'normal'}")
    (root / "t.csv").write_text("\n".join(rows + list(extra_rows)) + "\n")
    (tmp / "map2d.yaml").write_text(MAP_2D)
    return {"name": "xr", "format": "csv_table", "root": str(root), "modality": "X-ray",
            "label_map": str(tmp / "map2d.yaml"), **CITE,
            "options": {"table": "t.csv", "image_column": "image", "label_column": "label"},
            **source}


def float_tiff(path: Path, poison: Callable[[np.ndarray], None]) -> None:
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    img = arrays["val_images"][0].astype(np.float32) * 10.0
    poison(img)
    Image.fromarray(img, mode="F").save(path)


# 3D projects: synthetic float NIfTI volumes with a label blob ---------------------------------
def nifti_project(tmp: Path, poison: Callable[[np.ndarray], None] | None = None,
                  n: int = 2, gz: bool = True, **source) -> dict:
    """``n`` MR-like float volumes 48x48x12 with a tumour label largest on slice 6."""
    root = tmp / "mr"
    root.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for case in range(n):
        img = (100 + 50 * np.sin(xx / 5.0)[:, :, None] + rng.normal(0, 5, (48, 48, 12)))
        img = img.astype(np.float32)
        lab = np.zeros((48, 48, 12), np.uint8)
        for z in range(3, 10):
            r = 8 - abs(z - 6)
            lab[(yy - 24) ** 2 + (xx - 24) ** 2 <= r * r, z] = 1
        if poison is not None and case == 0:
            poison(img)
        ext = ".nii.gz" if gz else ".nii"
        nib.save(nib.Nifti1Image(img, np.eye(4)), root / f"c{case}_image{ext}")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / f"c{case}_label{ext}")
    ext = "nii.gz" if gz else "nii"
    return {"name": "mr", "format": "image_label_glob", "root": str(root), "modality": "MRI",
            "label_map": "nrrd_brain", **CITE,
            "options": {"image_glob": f"*_image.{ext}", "label_pattern": f"{{dir}}/{{stem}}.{ext}"
                        .replace("{stem}", "{case}_label"),
                        "image_regex": r"(?P<case>c\d+)_image"}, **source}


def truncate_after_chosen_plane(path: Path) -> None:
    """Cut the file at 85% (gzip) / 90% (raw): plane 6 of 12 still reads, the end does not."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * (0.85 if path.suffix == ".gz" else 0.9))])
    plane = np.asanyarray(nib.load(str(path)).dataobj[:, :, 6])  # the chosen plane reads fine
    assert plane.shape == (48, 48)


# DICOM projects: the real 3-slice abdominal CT, two series folders in a table ---------------
def ct_table(tmp: Path, **source) -> dict:
    root = tmp / "ct"
    real = realdata("dicom_seg_liver", "ct")
    for name in ("a", "b", "c"):
        shutil.copytree(real, root / name)
    (root / "series.csv").write_text("series,finding\na,Liver\nb,Kidney\nc,Liver\n")
    (tmp / "mapct.yaml").write_text(MAP_CT)
    return {"name": "ct", "format": "dicom_series_table", "root": str(root), "modality": "CT",
            "label_map": str(tmp / "mapct.yaml"), **CITE,
            "options": {"table": "series.csv", "series_column": "series", "label_column": "finding"},
            **source}


def garbage_dicom(path: Path) -> None:
    """Valid 128-byte preamble + DICM marker, garbage body, no suffix (as scanners name files)."""
    path.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(2000))


# The matrix ----------------------------------------------------------------------------------
def test_nan_voxel_in_float_nifti_is_ignored_and_counted(tmp_path, capsys) -> None:
    src = nifti_project(tmp_path, lambda a: a.__setitem__((24, 24, 6), np.nan))
    r = run(tmp_path, [src], capsys)
    assert r.code == 0
    assert "1 NaN/inf pixel value(s) ignored in percentiles and shown at the window floor" \
        in r.reasons("notes")
    images = [decode_image(x) for x in read_tsv(r.out / "M_TEST.tsv")["image"]] + \
        [decode_image(x) for x in read_tsv(r.out / "M_VAL.tsv")["image"]]
    assert images and all(float(im.std()) > 10 for im in images), "no black slice published"


def test_inf_voxels_do_not_saturate(tmp_path, capsys) -> None:
    def poison(a: np.ndarray) -> None:
        a[5:8, 5:8, 6] = np.inf
        a[40, 40, 6] = -np.inf

    r = run(tmp_path, [nifti_project(tmp_path, poison)], capsys)
    assert r.code == 0
    assert "10 NaN/inf pixel value(s) ignored in percentiles and shown at the window floor" \
        in r.reasons("notes")
    for split in ("TEST", "VAL"):
        for x in read_tsv(r.out / f"M_{split}.tsv")["image"]:
            assert float(decode_image(x).std()) > 10


def test_nan_with_nonfinite_error_rule_names_file_and_count(tmp_path, capsys) -> None:
    src = nifti_project(tmp_path, lambda a: a.__setitem__((24, 24, 6), np.nan),
                        intensity={"nonfinite": "error"})
    r = run(tmp_path, [src], capsys)
    assert r.code == 1 and "source 'mr': file f-" in r.err
    assert "1 NaN/inf pixel value(s) (intensity.nonfinite: error" in r.err


def test_constant_slice_is_not_published_and_listed(tmp_path, capsys) -> None:
    src = nifti_project(tmp_path, lambda a: a.__setitem__((slice(None), slice(None), 6), np.nan))
    r = run(tmp_path, [src], capsys)
    assert r.code == 0
    assert r.reasons("skipped_samples") == [
        "image (axial slice 6) is constant after intensity mapping: not published"]
    assert len({rec["sample_id"].split("#")[0] for rec in read_manifest(r.out)}) == 1


def test_nan_in_float_tiff(tmp_path, capsys) -> None:
    src = xray_table(tmp_path, ["imgs/f.tif,normal"])
    float_tiff(Path(src["root"]) / "imgs" / "f.tif", lambda a: a.__setitem__((3, 3), np.nan))
    r = run(tmp_path, [src], capsys, per_label_cap=100)
    assert r.code == 0
    assert "1 NaN/inf pixel value(s) ignored in percentiles and shown at the window floor" \
        in r.reasons("notes")
    assert len(read_manifest(r.out)) == 7


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_nifti_after_the_chosen_planes_is_an_error(tmp_path, capsys, gz: bool) -> None:
    src = nifti_project(tmp_path, gz=gz)
    truncate_after_chosen_plane(Path(src["root"]) / ("c0_image.nii.gz" if gz else "c0_image.nii"))
    r = run(tmp_path, [src], capsys)
    assert r.code == 1
    assert "truncated" in r.err and "source 'mr'" in r.err


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_damaged_dicom_file_inside_a_series(tmp_path, capsys, on_error: str) -> None:
    src = ct_table(tmp_path)
    garbage_dicom(Path(src["root"]) / "a" / "IM0004")
    r = run(tmp_path, [src], capsys, on_error=on_error)
    if on_error == "fail":
        assert r.code == 1 and "unreadable DICOM" in r.err and "file f-" in r.err
        return
    # skip: series 'a' is left out as a whole (it may have lost a slice); 'b' and 'c' are built
    assert r.code == 0
    [skipped] = r.summary()["skipped_samples"]
    assert skipped["reason"].startswith(
        "series left out: a file in its folder cannot be used (unreadable DICOM")
    assert len({rec["sample_id"] for rec in read_manifest(r.out)}) == 2


def test_uneven_dicom_slice_gaps_are_noted(tmp_path, capsys) -> None:
    src = ct_table(tmp_path)
    a = Path(src["root"]) / "a"
    extra = pydicom.dcmread(a / "03.dcm")
    extra.SOPInstanceUID = pydicom.uid.generate_uid()
    extra.ImagePositionPatient = [*extra.ImagePositionPatient[:2],
                                  float(extra.ImagePositionPatient[2]) - 3.0]
    extra.save_as(a / "04.dcm")
    r = run(tmp_path, [src], capsys)
    assert r.code == 0
    assert any(n.startswith("DICOM: uneven slice gaps 1.000..3.000 mm") for n in r.reasons("notes"))


@pytest.mark.parametrize("kind", ["png", "nifti", "dicom"])
def test_pixel_budget_is_checked_before_decoding(tmp_path, capsys, kind: str) -> None:
    if kind == "png":
        src, budget = xray_table(tmp_path), {"max_pixels": 500}
        what = "image of 28x28 = 784 pixels exceeds the pixel budget of 500"
    elif kind == "nifti":
        src, budget = nifti_project(tmp_path), {"max_voxels": 10_000}
        what = "volume of 48x48x12 = 27,648 voxels exceeds the budget of 10,000"
    else:
        src, budget = ct_table(tmp_path), {"max_pixels": 100_000}
        what = "image of 512x512 = 262,144 pixels exceeds the pixel budget of 100,000"
    r = run(tmp_path, [src], capsys, **budget)
    assert r.code == 1 and what in r.err


def test_decompression_bomb_png_with_the_default_budget(tmp_path, capsys) -> None:
    src = xray_table(tmp_path, ["imgs/bomb.png,normal"])
    Image.new("1", (12_000, 12_000)).save(Path(src["root"]) / "imgs" / "bomb.png")
    assert (Path(src["root"]) / "imgs" / "bomb.png").stat().st_size < 1_000_000
    r = run(tmp_path, [src], capsys)
    assert r.code == 1
    assert "12000x12000 = 144,000,000 pixels exceeds the pixel budget of 100,000,000" in r.err


ESCAPES = {
    "dotdot": lambda root: "../outside.png",
    "absolute": lambda root: str(root.parent / "outside.png"),
    "symlink": lambda root: "imgs/link.png",
}


@pytest.mark.parametrize("how", sorted(ESCAPES))
def test_paths_escaping_the_root(tmp_path, capsys, how: str) -> None:
    outside = tmp_path / "outside.png"
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    Image.fromarray(arrays["test_images"][0]).save(outside)
    src = xray_table(tmp_path)
    root = Path(src["root"])
    (root / "imgs" / "link.png").symlink_to(outside)
    entry = ESCAPES[how](root)
    (root / "t.csv").write_text((root / "t.csv").read_text() + f"{entry},normal\n")
    r = run(tmp_path, [src], capsys)
    assert r.code == 1
    assert "source 'xr'" in r.err and "outside the source root" in r.err
    assert f"resolves to {outside}" in r.err and "allow_outside_root: true" in r.err
    if how != "symlink":  # the entry as written (a name inside the root would be a token)
        assert f"entry '{entry if how == 'dotdot' else Path(entry).as_posix()}'" in r.err
    # skip: the row is left out and listed; allow_outside_root: the file is read, by token
    r = run(tmp_path, [{**src, "on_error": "skip"}], capsys)
    assert r.code == 0 and len(read_manifest(r.out)) == 6
    assert any("outside the source root" in s for s in r.reasons("skipped_samples"))
    r = run(tmp_path, [{**src, "allow_outside_root": True}], capsys, per_label_cap=100)
    assert r.code == 0 and len(read_manifest(r.out)) == 7
    manifest = (r.out / "manifest.jsonl").read_text()
    assert "outside" not in manifest and str(tmp_path) not in manifest


def test_dataset_json_entry_outside_the_root(tmp_path, capsys) -> None:
    root = tmp_path / "msd"
    shutil.copytree(realdata("msd_spleen"), root)
    data = json.loads((root / "dataset.json").read_text())
    (tmp_path / "x.nii.gz").write_bytes(b"")
    data["training"].append({"image": "../x.nii.gz", "label": "../x.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(data))
    src = {"name": "sp", "format": "msd", "root": str(root), "modality": "CT",
           "label_map": "msd_spleen", **CITE}
    r = run(tmp_path, [src], capsys)
    assert r.code == 1 and "entry '../x.nii.gz' resolves to" in r.err


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_lists_unreadable_image_and_builds_the_rest(tmp_path, capsys, workers) -> None:
    src = xray_table(tmp_path, ["imgs/broken.png,normal"])
    (Path(src["root"]) / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    r = run(tmp_path, [src], capsys, workers=workers)
    assert r.code == 1 and "cannot read image" in r.err
    r = run(tmp_path, [src], capsys, on_error="skip", workers=workers)
    assert r.code == 0 and len(read_manifest(r.out)) == 6
    [skipped] = r.summary()["skipped_samples"]
    assert skipped["reason"].startswith("cannot read image") and skipped["file"].startswith("f-")
    md = (r.out / "summary.md").read_text()
    assert "## Skipped samples and targets (1)" in md and skipped["file"] in md
    # per-source override of the build's policy
    r = run(tmp_path, [{**src, "on_error": "skip"}], capsys, on_error="fail")
    assert r.code == 0 and r.summary()["skipped_samples_total"] == 1


def mask_project(tmp: Path) -> dict:
    root = tmp / "seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    for k in range(4):
        Image.fromarray(arrays["val_images"][k]).save(root / "images" / f"i{k}.png")
        mask = np.zeros((28, 28), np.uint8)
        if k != 1:  # i1: an empty mask
            mask[5:15, 5:15] = 1
            mask[16:26, 16:26] = 2
        if k != 3:  # i3: no mask at all
            Image.fromarray(mask).save(root / "masks" / f"i{k}.png")
    (tmp / "mapseg.yaml").write_text(
        "department: Pulmonary Medicine\nlabels:\n  '1': normal\n  '2': pneumonia\n")
    return {"name": "seg", "format": "mask_pairs", "root": str(root), "modality": "X-ray",
            "label_map": str(tmp / "mapseg.yaml"), **CITE,
            "options": {"images": "images/*.png", "masks": "masks/{stem}.png",
                        "missing_mask": "skip"}}


def test_declared_drops_are_counted(tmp_path, capsys) -> None:
    r = run(tmp_path, [mask_project(tmp_path)], capsys)
    assert r.code == 0
    reasons = sorted(r.reasons("skipped_samples"))
    assert reasons == ["mask is empty (no labelled pixel)",
                       "no mask for this image (missing_mask: skip)"]


def test_clipped_boxes_are_noted(tmp_path, capsys) -> None:
    root = tmp_path / "coco"
    root.mkdir()
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    Image.fromarray(arrays["val_images"][0]).resize((64, 64)).save(root / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30]},
                            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [2, 2, 20, 20]}],
            "categories": [{"id": 1, "name": "normal"}, {"id": 2, "name": "pneumonia"}]}
    (root / "ann.json").write_text(json.dumps(data))
    (tmp_path / "map2d.yaml").write_text(MAP_2D)
    src = {"name": "box", "format": "coco", "root": str(root), "modality": "X-ray",
           "label_map": str(tmp_path / "map2d.yaml"), **CITE, "options": {"annotations": "ann.json"}}
    r = run(tmp_path, [src], capsys)
    assert r.code == 0
    [note] = r.summary()["notes"]
    assert (note["reason"], note["count"]) == ("1 box(es) clipped to the image", 1)
    assert note["sample"] == read_manifest(r.out)[0]["sample_id"]  # links to the manifest


def test_another_salt_into_the_same_folder_is_refused(tmp_path, capsys) -> None:
    src = xray_table(tmp_path)
    assert run(tmp_path, [src], capsys, salt="first-salt-0123456789").code == 0
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text()
    r = run(tmp_path, [src], capsys, salt="first-salt-0123456789")
    assert r.code == 0 and (tmp_path / "out" / "manifest.jsonl").read_text() == manifest
    cfg = write_yaml(tmp_path / "sources.yaml", {"build": {"name": "M", "salt": "other-salt-xyz"},
                                                 "sources": [src]})
    assert main(["--sources", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert "was built with another salt than build.salt" in capsys.readouterr().err
    info = (tmp_path / "out" / "build.json").read_text()
    assert "first-salt" not in info and "salt_check" in info
    # an output of a gmai-build before salted identifiers: refused, not silently renumbered
    old = json.loads(info)
    del old["salt_check"]
    (tmp_path / "out" / "build.json").write_text(json.dumps(old))
    cfg = write_yaml(tmp_path / "sources.yaml",
                     {"build": {"name": "M", "salt": "first-salt-0123456789"}, "sources": [src]})
    assert main(["--sources", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert "without salted identifiers" in capsys.readouterr().err


def test_salt_from_environment_is_not_written_anywhere(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MY_SALT", "s3cret-salt-from-env")
    r = run(tmp_path, [xray_table(tmp_path)], capsys, salt="${MY_SALT}")
    assert r.code == 0
    for p in r.out.rglob("*"):  # the published links and the build folder behind them
        if p.is_file():
            assert b"s3cret" not in p.read_bytes()


def test_gzip_check_accepts_multi_member_streams(tmp_path, capsys) -> None:
    """bgzip/pigz -i style files (several gzip members) are complete: not a false alarm."""
    src = nifti_project(tmp_path)
    path = Path(src["root"]) / "c0_image.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    half = len(raw) // 2
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    assert run(tmp_path, [src], capsys).code == 0


def test_relative_config_path_and_root(tmp_path, capsys, monkeypatch) -> None:
    """A root relative to a sources.yaml named by a relative path: scans stay confined.

    Like ``examples/`` naming ``../shared/realdata/...``: the relative root climbs out of the
    config's folder, so a scanned path joined onto the root a second time would land outside.
    """
    (tmp_path / "data").mkdir()
    src = ct_table(tmp_path / "data")
    src["root"] = "../../data/ct"
    src["label_map"] = "../../data/mapct.yaml"
    (tmp_path / "conf" / "sub").mkdir(parents=True)
    write_yaml(tmp_path / "conf" / "sub" / "sources.yaml",
               {"build": {"name": "M", "workers": 1}, "sources": [src]})
    monkeypatch.chdir(tmp_path / "conf")
    code = main(["--sources", "sub/sources.yaml", "--out", "../out", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert len(read_manifest(tmp_path / "out")) == 3


def test_medmnist_budget_from_the_npy_headers(tmp_path, capsys) -> None:
    src = {"name": "pn", "format": "medmnist", "root": str(realdata("medmnist")),
           "modality": "X-ray", "label_map": "pneumoniamnist", **CITE}
    r = run(tmp_path, [src], capsys, max_pixels=700)
    assert r.code == 1 and "'train_images' images of 28x28 pixels exceed the pixel budget of 700" \
        in r.err


def test_unknown_label_found_while_reading_stops_even_under_skip(tmp_path, capsys) -> None:
    src = mask_project(tmp_path)
    mask = np.zeros((28, 28), np.uint8)
    mask[2:12, 2:12] = 3  # a value the label map does not know
    Image.fromarray(mask).save(Path(src["root"]) / "masks" / "i0.png")
    r = run(tmp_path, [src], capsys, on_error="skip")
    assert r.code == 1 and "raw label '3' is not in label map" in r.err


def test_dicom_slice_with_truncated_pixel_data(tmp_path, capsys) -> None:
    src = ct_table(tmp_path)
    path = Path(src["root"]) / "a" / "02.dcm"
    path.write_bytes(path.read_bytes()[:-5000])
    r = run(tmp_path, [src], capsys)
    assert r.code == 1 and "source 'ct'" in r.err and "file f-" in r.err
    assert "cannot decode pixel data" in r.err and "less than expected" in r.err


def test_target_below_min_area_is_listed_once(tmp_path, capsys) -> None:
    src = mask_project(tmp_path)
    root = Path(src["root"])
    mask = np.zeros((28, 28), np.uint8)
    mask[5:15, 5:15] = 1
    mask[20:22, 20:22] = 2  # 4 pixels: below slicing.min_area (16)
    Image.fromarray(mask).save(root / "masks" / "i0.png")
    r = run(tmp_path, [src], capsys)
    assert r.code == 0
    # Too small to ask about (targets.min_area / min_extent): its Mask and Contour cases are
    # counted once each under the reason, and the target is not listed a second time per file.
    assert r.summary()["skipped"] == {"seg: marked area thinner than 4 px": 2}
    assert not any("target '2'" in reason for reason in r.reasons("skipped_samples"))


def test_validate_agrees_with_the_build_on_escapes(tmp_path, capsys) -> None:
    outside = tmp_path / "outside.png"
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    Image.fromarray(arrays["test_images"][0]).save(outside)
    src = xray_table(tmp_path, ["../outside.png,normal"])
    cfg = write_yaml(tmp_path / "sources.yaml", {"build": {"name": "M"}, "sources": [src]})
    assert main(["validate", "--sources", str(cfg)]) == 1
    assert "outside the source root" in capsys.readouterr().err
    write_yaml(cfg, {"build": {"name": "M"}, "sources": [{**src, "allow_outside_root": True}]})
    assert main(["validate", "--sources", str(cfg)]) == 0, capsys.readouterr().err


def test_the_printed_summary_says_how_many_were_skipped(tmp_path, capsys) -> None:
    src = xray_table(tmp_path, ["imgs/broken.png,normal"])
    (Path(src["root"]) / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    write_yaml(tmp_path / "sources.yaml", {"build": {"name": "M", "on_error": "skip"},
                                           "sources": [src]})
    code = main(["--sources", str(tmp_path / "sources.yaml"), "--out", str(tmp_path / "o2")])
    assert code == 0
    assert "skipped: 1 samples or targets (files and reasons in summary.md)" in capsys.readouterr().out


def test_missing_label_volume_skip_is_listed(tmp_path, capsys) -> None:
    src = nifti_project(tmp_path, n=3)
    (Path(src["root"]) / "c2_label.nii.gz").unlink()
    r = run(tmp_path, [src], capsys)
    assert r.code == 1 and "label volume for image" in r.err and "not found" in r.err
    src["options"]["missing_label"] = "skip"
    r = run(tmp_path, [src], capsys)
    assert r.code == 0
    assert r.reasons("skipped_samples") == ["no label volume for this image (missing_label: skip)"]
