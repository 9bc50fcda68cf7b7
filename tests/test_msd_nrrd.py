"""Real 3D data end to end: MSD spleen CT (NIfTI, ``msd``) and pyradiomics brain MR (NRRD,
``image_label_glob``).

Every check compares the built image with an INDEPENDENT rendering of the source files (nibabel
or SimpleITK arrays flipped by hand from their headers, windowed / clipped with NumPy), so a bug
shared by the builder's reader and display code would not go unnoticed.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from gmai_build.cases import CaseMaker
from gmai_build.config import SourceConfig, load_config
from gmai_build.converters import get_converter
from gmai_build.pipeline import build
from gmai_build.render import contour_thickness, decode_png
from gmai_build.slicing import to_slices
from gmai_build.taxonomy import LabelMap, load_vocabulary
from helpers import sample_token

REALDATA = Path(
    os.environ.get("GMAI_REALDATA", Path(__file__).resolve().parents[1].parent / "shared" / "realdata")
)


def realdata(name: str) -> Path:
    path = REALDATA / name
    if not path.exists():
        pytest.skip(
            f"real samples not found at {path} (set GMAI_REALDATA); they come from MSD Task09 "
            "spleen (ivadomed/data-testing) and pyradiomics test data (brain1 NRRD); see "
            "shared/realdata/README.md"
        )
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def overlay_region(drawn: np.ndarray, base: np.ndarray) -> np.ndarray:
    return np.any(drawn != base, axis=2)


def independent_contour(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    canvas = np.zeros(shape[:2], np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, 1, contour_thickness(np.zeros(shape)), cv2.LINE_8)
    return canvas.astype(bool)


# MSD spleen through the whole pipeline ---------------------------------------------------------
def test_msd_spleen_end_to_end(tmp_path: Path) -> None:
    root = realdata("msd_spleen")
    cfg = tmp_path / "sources.yaml"
    cfg.write_text(yaml.safe_dump({
        "build": {"name": "SPLEEN"},
        "sources": [{
            "name": "msd_spleen", "format": "msd", "root": str(root), "modality": "CT",
            "label_map": "msd_spleen", "license": "CC-BY-SA 4.0",
            "citation": "Antonelli et al., The Medical Segmentation Decathlon, 2022",
            "intensity": {"window": "soft_tissue"}, "min_side": 1,  # pixel-exact, no upscale
        }],
    }))
    out = tmp_path / "out"
    build(load_config(cfg), out, workers=1, progress=False, log=lambda _: None)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    rows = pd.concat([pd.read_csv(out / f"SPLEEN_{s}.tsv", sep="\t") for s in ("VAL", "TEST")])
    images = {int(r["index"]): decode_png(base64.b64decode(r["image"])) for _, r in rows.iterrows()}
    assert {r["granularity"] for r in records} == {"Mask Level", "Contour Level"}

    # Independent rendering: nibabel canonical RAS, radiological display = data[::-1, ::-1, k].T
    img = nib.as_closest_canonical(nib.load(str(root / "imagesTr/spleen_2.nii.gz")))
    lab = nib.as_closest_canonical(nib.load(str(root / "labelsTr/spleen_2.nii.gz")))
    hu, seg = img.get_fdata(), np.asanyarray(lab.dataobj)
    areas = (seg == 1).sum(axis=(0, 1))
    assert img.header.get_zooms()[0] == pytest.approx(img.header.get_zooms()[1])  # no resampling
    for r in records:
        assert r["category"] == "spleen" and r["original_task"] == "SEG_3D" and r["axis"] == "axial"
        k = r["slice_index"]
        assert k == int(np.argmax(areas))  # the recorded slice is the largest-area one
        assert r["sample_id"] == sample_token("msd_spleen", "imagesTr/spleen_2.nii.gz") + f"#axial{k}"
        plane = hu[::-1, ::-1, k].T
        truth = (seg[::-1, ::-1, k] == 1).T
        width, level = 400.0, 40.0  # soft_tissue, as declared
        expected = np.clip(np.rint((plane - (level - width / 2)) / width * 255), 0, 255).astype(np.uint8)
        base = np.repeat(expected[:, :, None], 3, axis=2)
        shown = images[r["index"]]
        assert shown.shape == base.shape
        region = overlay_region(shown, base)
        if r["granularity"] == "Mask Level":
            assert iou(region, truth) >= 0.99
            assert np.array_equal(shown[~truth], base[~truth])  # windowed exactly as declared
        else:
            assert iou(region, independent_contour(truth, base.shape)) >= 0.99
        # Radiological orientation: the spleen is on the patient's LEFT, so the ribs lateral to
        # it (bone, > 300 HU) lie on the image's RIGHT of the spleen. (This crop is centred on the
        # spleen, so "spleen in the right half of the image" does not hold for it.)
        bone_cols = np.nonzero(plane > 300)[1]
        spleen_cols = np.nonzero(region if r["granularity"] == "Mask Level" else truth)[1]
        assert bone_cols.mean() > spleen_cols.mean() + 10
        if r["granularity"] == "Mask Level":  # a left-right mirrored display would not match
            assert iou(region, truth[:, ::-1]) < 0.9


# NRRD brain through image_label_glob ----------------------------------------------------------
def sitk_radiological(path: Path, k: int) -> np.ndarray:
    """Axial slice k by hand from SimpleITK's raw (z, y, x) array and its diagonal direction."""
    im = sitk.ReadImage(str(path))
    direction = np.array(im.GetDirection()).reshape(3, 3)
    assert np.allclose(np.abs(direction), np.eye(3))  # axis-aligned: flips only
    arr = sitk.GetArrayFromImage(im)  # (z, y, x) in index order
    if direction[2, 2] < 0:
        arr = arr[::-1]
    plane = arr[k]  # rows = y index, cols = x index
    # Radiological = LPS order: rows run to Posterior (+y), columns to the patient's Left (+x).
    if direction[1, 1] < 0:
        plane = plane[::-1]
    if direction[0, 0] < 0:
        plane = plane[:, ::-1]
    return plane


def test_nrrd_brain_image_label_glob(tmp_path: Path) -> None:
    root = realdata("nrrd_brain")
    src_yaml = tmp_path / "sources.yaml"
    src_yaml.write_text(yaml.safe_dump({"sources": [{
        "name": "nrrd_brain", "format": "image_label_glob", "root": str(root), "modality": "MRI",
        "label_map": "nrrd_brain", "license": "BSD-3-Clause", "citation": "pyradiomics test data",
        "options": {"image_glob": "*_image.nrrd", "image_regex": r"(?P<case>[^/]+)_image",
                    "label_pattern": "{case}_label.nrrd"},
    }]}))
    cfg = load_config(src_yaml)
    src = cfg.sources[0]
    conv = get_converter(src.format)(src.name, src.root, src.options)
    (item,) = list(conv.discover())
    assert item.paths == ("brain1_image.nrrd", "brain1_label.nrrd") and item.group is None
    (sample,) = list(conv.load(item))
    assert sample.intensity == "mr"  # auto: no air-like values in MR
    slices = to_slices(sample, src)
    assert len(slices) == 1
    s = slices[0]
    k = s.slice_index
    assert s.sample_id == f"brain1_image.nrrd#axial{k}" and s.axis == "axial"

    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "brain1_image.nrrd")))
    lo, hi = np.percentile(raw[raw != 0].astype(np.float64), [0.5, 99.5])
    plane = sitk_radiological(root / "brain1_image.nrrd", k).astype(np.float64)
    expected = np.clip(np.rint((plane - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
    truth = sitk_radiological(root / "brain1_label.nrrd", k) == 1
    label_zyx = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "brain1_label.nrrd")))
    label_areas = (label_zyx == 1).sum(axis=(1, 2))
    assert truth.sum() == label_areas.max()  # the recorded slice is the largest-area one
    assert np.array_equal(s.rgb[:, :, 0], expected)  # percentile clip over the whole volume
    assert np.array_equal(s.target_masks["1"], truth)

    vocab = load_vocabulary([])
    maker = CaseMaker(src, LabelMap(src.label_map, src.name, vocab))
    cases = list(maker.cases(s))
    assert {c.granularity for c in cases} == {"Mask Level", "Contour Level"}
    base = np.repeat(expected[:, :, None], 3, axis=2)
    for c in cases:
        assert c.label == "brain tumor" and c.slice_index == k
        region = overlay_region(decode_png(c.png), base)
        want = truth if c.granularity == "Mask Level" else independent_contour(truth, base.shape)
        assert iou(region, want) >= 0.99


def test_nrrd_brain_coronal_resampled(tmp_path: Path) -> None:
    """Coronal slices of 6.5 mm slabs: resampled to square pixels, overlay still aligned."""
    root = realdata("nrrd_brain")
    conv = get_converter("image_label_glob")(
        "nrrd_brain", root, get_converter("image_label_glob").Options.model_validate(
            {"image_glob": "brain1_image.nrrd", "label_pattern": "brain1_label.nrrd"}))
    (sample,) = list(conv.load(next(iter(conv.discover()))))
    src = SourceConfig(name="nrrd_brain", format="image_label_glob", root=root, modality="MRI",
                       label_map="nrrd_brain", license="BSD", citation="pyradiomics",
                       slicing={"axis": "coronal"}, min_side=1)
    (s,) = to_slices(sample, src)
    sp = sitk.ReadImage(str(root / "brain1_image.nrrd")).GetSpacing()
    assert s.rgb.shape[:2] == (round(25 * sp[2] / sp[0]), 256)
    assert s.extra["scale"][0] == pytest.approx(s.rgb.shape[0] / 25)
    # independent: coronal = LPS array[:, y, ::-1].T; SimpleITK (z, y, x) with y flipped to P
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "brain1_label.nrrd")))[:, ::-1, :]
    plane = (lab[::-1, s.slice_index, :] == 1).astype(np.uint8)
    h, w = s.rgb.shape[:2]
    want = cv2.resize(plane, (w, h), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)
    assert iou(s.target_masks["1"], want) == 1.0
