"""DICOM series, DICOM SEG and RTSTRUCT on real public samples, checked against independent reads.

The samples live outside the repository (``$GMAI_REALDATA``, default ``../shared/realdata``):
``dicom_mr_series`` (neurolabusc/dcm_qa_decubitus), ``dicom_seg_liver`` (QIICR/dcmqi test data)
and ``dicom_rtstruct_phantom`` (qurit/rt-utils test data). Each check re-derives the expected
result with pydicom / SimpleITK / skimage directly, not with the code under test.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from gmai_build.config import CT_WINDOWS, load_config
from gmai_build.converters import get_converter
from gmai_build.dicom_io import DicomError, find_series, read_series
from gmai_build.errors import BuildError
from gmai_build.pipeline import build
from helpers import group_token
from skimage.draw import polygon

REALDATA = Path(
    os.environ.get("GMAI_REALDATA", Path(__file__).resolve().parents[1].parent / "shared" / "realdata")
)
ORIGINS = ("public samples from neurolabusc/dcm_qa_decubitus, QIICR/dcmqi and qurit/rt-utils; "
           "see shared/realdata/README.md and set GMAI_REALDATA")


def real(*parts: str) -> Path:
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent ({ORIGINS})")
    return path


MR = ("dicom_mr_series", "3_t1_fl2d_sag")


def run(tmp_path: Path, sources: list[dict], name: str = "DCM") -> tuple[Path, list[dict], pd.DataFrame]:
    """Write sources.yaml, build into tmp_path/out; return (out, manifest rows, VAL+TEST rows)."""
    cfg = tmp_path / "sources.yaml"
    cfg.write_text(yaml.safe_dump({"build": {"name": name, "workers": 1}, "sources": sources}))
    out = tmp_path / "out"
    build(load_config(cfg), out, workers=1, progress=False, log=lambda _: None)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    tsv = pd.concat([pd.read_csv(out / f"{name}_{s}.tsv", sep="\t") for s in ("VAL", "TEST")])
    return out, manifest, tsv.set_index("index")


def decode(b64: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def window_u8(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """Independent CT window: [level - width/2, level + width/2] -> 0..255."""
    return np.clip(np.rint((hu - (level - width / 2)) / width * 255), 0, 255).astype(np.uint8)


def hu_of(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


CITE = {"license": "BSD-3-Clause", "citation": "test fixture"}


# --- MR series: order, spacing, geometry ---------------------------------------------------------
def test_mr_series_sorted_by_position_and_spacing() -> None:
    folder = real(*MR)
    series = find_series(folder)
    assert len(series) == 1
    s = read_series(next(iter(series.values())))
    d = s.positions @ s.normal
    assert np.all(np.diff(d) > 0), "slices are sorted along the slice normal"
    assert s.volume.array.shape == (35, 256, 256) and s.intensity == "mr"
    assert np.allclose(s.volume.spacing, (4.8, 1.015625, 1.015625), atol=1e-4)
    assert s.slice_axis == 0, "sagittal slices stack along canonical x"
    # Independent reader: SimpleITK (GDCM sorting) reoriented to LPS gives the same voxels/origin.
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = sitk.DICOMOrient(reader.Execute(), "LPS")
    ref = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    assert np.array_equal(ref, s.volume.array)
    assert np.allclose(img.GetOrigin(), s.volume.affine[:3, 3], atol=1e-3)
    assert np.allclose(img.GetSpacing(), s.volume.spacing, atol=1e-4)


def shuffled_copy(src: Path, dst: Path, seed: int = 7, new_uid: bool = False) -> Path:
    """Copy a series with its InstanceNumbers (and file names) shuffled."""
    dst.mkdir(parents=True)
    files = sorted(src.glob("*.dcm"))
    numbers = list(range(1, len(files) + 1))
    random.Random(seed).shuffle(numbers)
    uid = pydicom.uid.generate_uid() if new_uid else None
    for f, n in zip(files, numbers):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = n
        if uid:
            ds.SeriesInstanceUID = uid
            ds.PatientID = "crlab-copy"
        ds.save_as(dst / f"{n:04d}.dcm")
    return dst


def test_instance_number_is_ignored(tmp_path: Path) -> None:
    src = real(*MR)
    a = read_series(sorted(src.glob("*.dcm")))
    b = read_series(sorted(shuffled_copy(src, tmp_path / "shuffled").glob("*.dcm")))
    assert np.array_equal(a.volume.array, b.volume.array)
    assert np.allclose(a.volume.affine, b.volume.affine)


def test_mr_series_table_end_to_end(tmp_path: Path) -> None:
    src = real(*MR)
    root = tmp_path / "data"
    shutil.copytree(src, root / "series" / "t1_sag")
    copy = shuffled_copy(src, root / "series" / "t1_copy", new_uid=True)
    copy_uid = str(pydicom.dcmread(next(copy.glob("*.dcm"))).SeriesInstanceUID)
    # one row by folder, one by SeriesInstanceUID; labels are invented for the test
    pd.DataFrame({"series": ["t1_sag", copy_uid], "finding": ["healthy", "tumour"]}).to_csv(
        root / "labels.csv", index=False)
    (tmp_path / "mr_map.yaml").write_text(yaml.safe_dump(
        {"department": "Neurosurgery", "labels": {"healthy": "normal", "tumour": "brain tumor"}}))
    source = {"name": "mr_series", "format": "dicom_series_table", "root": str(root),
              "modality": "T1 weighted MRI", "label_map": str(tmp_path / "mr_map.yaml"), **CITE,
              "slicing": {"axis": "sagittal"},
              "options": {"table": "labels.csv", "series_column": "series", "label_column": "finding",
                          "image_root": "series"}}
    _, manifest, tsv = run(tmp_path, [source])
    assert sorted(r["category"] for r in manifest) == ["brain tumor", "normal"]
    assert {r["granularity"] for r in manifest} == {"Image Level"}
    assert {r["slice_index"] for r in manifest} == {17}, "middle sagittal slice of 35"
    assert {r["group"] for r in manifest} == {group_token(r["source"], p) for p in ("crlab", "crlab-copy")
                                              for r in manifest[:1]}, "group = salted DICOM PatientID"
    for r in manifest:
        assert decode(tsv.loc[r["index"], "image"]).shape[:2] == (256, 256)


# --- multi-frame ----------------------------------------------------------------------------------
def test_multiframe_equals_single_frame(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    files = sorted(real("dicom_seg_liver", "ct").glob("*.dcm"))
    legacy = [pydicom.dcmread(f) for f in files]
    with pytest.warns(UserWarning):  # highdicom complains about the anonymised PatientName
        mf = hd.legacy.LegacyConvertedEnhancedCTImage(
            legacy_datasets=legacy, series_instance_uid=hd.UID(), series_number=9,
            sop_instance_uid=hd.UID(), instance_number=1)
    mf.save_as(tmp_path / "mf.dcm")
    a, b = read_series(files), read_series([tmp_path / "mf.dcm"])
    assert np.array_equal(a.volume.array, b.volume.array)
    assert np.allclose(a.volume.affine, b.volume.affine)
    assert len(b.sop_to_index) == 3 and all("#" in k for k in b.sop_to_index)


def test_multiframe_without_positions_is_a_clear_error() -> None:
    data = pytest.importorskip("pydicom.data")
    try:
        path = data.get_testdata_file("emri_small.dcm")
    except Exception:
        path = None
    if not path:
        pytest.skip("emri_small.dcm comes with the pydicom-data package, which is not installed")
    with pytest.raises(DicomError, match="PerFrameFunctionalGroupsSequence") as err:
        read_series([path])
    assert "emri_small.dcm" in str(err.value)


# --- DICOM SEG ------------------------------------------------------------------------------------
def seg_source(root: Path, **extra) -> dict:
    return {"name": "dicom_seg_liver", "format": "dicom_seg", "root": str(root), "modality": "CT",
            "label_map": "dicom_seg_liver", **CITE, "options": {"images": "ct", "segs": "seg/*.dcm"},
            **extra}


def test_dicom_seg_liver_end_to_end(tmp_path: Path) -> None:
    root = real("dicom_seg_liver")
    _, manifest, tsv = run(tmp_path, [seg_source(root, intensity={"window": "liver"})])
    assert {r["granularity"] for r in manifest} == {"Mask Level", "Contour Level"}
    assert {r["category"] for r in manifest} == {"liver"}

    # independent reads: CT slices sorted by z (LPS: canonical z grows superior), SEG frames
    cts = sorted((pydicom.dcmread(f) for f in (root / "ct").glob("*.dcm")),
                 key=lambda d: float(d.ImagePositionPatient[2]))
    seg = pydicom.dcmread(root / "seg" / "liver_seg.dcm")
    frames = seg.pixel_array.astype(bool)
    width, level = CT_WINDOWS["liver"]
    mask_rows = [r for r in manifest if r["granularity"] == "Mask Level"]
    assert len(mask_rows) == 1
    r = mask_rows[0]
    ct = cts[r["slice_index"]]  # the slice shown is the one recorded
    f = next(i for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence)
             if fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
             == ct.SOPInstanceUID)
    expected_mask = frames[f]
    assert expected_mask.sum() == max(m.sum() for m in frames), "the largest liver slice is shown"
    plain = window_u8(hu_of(ct), width, level)
    img = decode(tsv.loc[r["index"], "image"])
    assert img.shape[:2] == plain.shape
    overlay = np.any(img != plain[:, :, None], axis=2)
    # outside the overlay the pixels are exactly the declared liver window of the HU values
    assert np.array_equal(img[~overlay][:, 0], plain[~overlay])
    assert iou(overlay, expected_mask) >= 0.99
    # radiological display: the liver (patient's right) is on the LEFT half of the image
    ys, xs = np.nonzero(overlay)
    assert xs.mean() < img.shape[1] / 2
    contour_rows = [c for c in manifest if c["granularity"] == "Contour Level"]
    assert [c["slice_index"] for c in contour_rows] == [r["slice_index"]]


def test_seg_referencing_missing_series(tmp_path: Path) -> None:
    seg_root = real("dicom_seg_liver")
    other = real("dicom_rtstruct_phantom")
    root = tmp_path / "data"
    shutil.copytree(other / "ct", root / "ct")  # a different series than the SEG references
    shutil.copytree(seg_root / "seg", root / "seg")
    conv_cls = get_converter("dicom_seg")
    conv = conv_cls("liver_src", root, conv_cls.Options(images="ct", segs="seg/*.dcm"))
    with pytest.raises(BuildError) as err:
        list(conv.discover())
    msg = str(err.value)
    assert "liver_src" in msg and "liver_seg.dcm" in msg
    assert "no matching image series under options.images" in msg


def test_unreadable_dicom_is_named(tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(real("dicom_seg_liver", "ct"), root / "ct")
    (root / "ct" / "04.dcm").write_bytes(b"\x00" * 64 + b"definitely not DICOM")
    with pytest.raises(DicomError, match="04.dcm"):
        find_series(root)
    shutil.copytree(real("dicom_seg_liver", "seg"), root / "seg")
    conv_cls = get_converter("dicom_seg")
    conv = conv_cls("liver_src", root, conv_cls.Options(images="ct", segs="seg/*.dcm"))
    with pytest.raises(BuildError) as err:
        list(conv.discover())
    assert "liver_src" in str(err.value) and "04.dcm" in str(err.value)
    assert "DICOM" in err.value.reason


# --- RTSTRUCT -------------------------------------------------------------------------------------
def independent_roi_raster(root: Path) -> dict[int, np.ndarray]:
    """ROI-1 rasterised with skimage through each CT slice's own IPP/PixelSpacing (even-odd)."""
    cts = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(f) for f in (root / "ct").glob("*.dcm"))}
    order = sorted(cts, key=lambda u: float(cts[u].ImagePositionPatient[2]))
    rt = pydicom.dcmread(root / "rtstruct.dcm")
    out = {k: np.zeros((512, 512), bool) for k in range(len(order))}
    for c in rt.ROIContourSequence[0].ContourSequence:
        ct = cts[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
        pts = np.asarray(c.ContourData, float).reshape(-1, 3)
        x0, y0 = float(ct.ImagePositionPatient[0]), float(ct.ImagePositionPatient[1])
        rows = (pts[:, 1] - y0) / float(ct.PixelSpacing[0])
        cols = (pts[:, 0] - x0) / float(ct.PixelSpacing[1])
        rr, cc = polygon(rows, cols, shape=(int(ct.Rows), int(ct.Columns)))
        out[order.index(str(ct.SOPInstanceUID))][rr, cc] ^= True
    return out


def test_rtstruct_raster_matches_independent() -> None:
    root = real("dicom_rtstruct_phantom")
    conv_cls = get_converter("dicom_rtstruct")
    conv = conv_cls("phantom", root, conv_cls.Options())
    items = list(conv.discover())
    assert len(items) == 1 and items[0].group == "PHANTOM_EXAMPLE"
    (sample,) = list(conv.load(items[0]))
    assert list(sample.target_masks) == ["ROI-1"] and sample.intensity == "ct"
    mask = sample.target_masks["ROI-1"]
    expected = independent_roi_raster(root)
    for k, exp in expected.items():
        got = mask[:, :, k].T  # axial display of canonical LPS+ = the CT's own pixel grid here
        if exp.any() or got.any():
            assert iou(got, exp) >= 0.99


def test_rtstruct_end_to_end(tmp_path: Path) -> None:
    root = real("dicom_rtstruct_phantom")
    source = {"name": "dicom_rtstruct_phantom", "format": "dicom_rtstruct", "root": str(root),
              "modality": "CT", "label_map": "dicom_rtstruct_phantom", **CITE,
              "options": {"images": "ct", "structs": "rtstruct.dcm"}}
    _, manifest, tsv = run(tmp_path, [source])
    assert {r["granularity"] for r in manifest} == {"Mask Level", "Contour Level"}
    (r,) = [r for r in manifest if r["granularity"] == "Mask Level"]
    assert r["raw_label"] == "ROI-1" and r["category"] == "phantom insert"
    expected = independent_roi_raster(root)[r["slice_index"]]
    cts = sorted((pydicom.dcmread(f) for f in (root / "ct").glob("*.dcm")),
                 key=lambda d: float(d.ImagePositionPatient[2]))
    plain = window_u8(hu_of(cts[r["slice_index"]]), *CT_WINDOWS["soft_tissue"])
    img = decode(tsv.loc[r["index"], "image"])
    overlay = np.any(img != plain[:, :, None], axis=2)
    assert iou(overlay, expected) >= 0.99


def test_rtstruct_without_matching_images(tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(real("dicom_seg_liver", "ct"), root / "ct")
    shutil.copy(real("dicom_rtstruct_phantom", "rtstruct.dcm"), root / "rtstruct.dcm")
    conv_cls = get_converter("dicom_rtstruct")
    conv = conv_cls("phantom", root, conv_cls.Options(images="ct"))
    with pytest.raises(BuildError) as err:
        list(conv.discover())
    assert "phantom" in str(err.value) and "rtstruct.dcm" in str(err.value)
    assert "no matching image series" in str(err.value)


@pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent")
def test_fractional_overlapping_seg_and_position_fallback(tmp_path: Path) -> None:
    """A FRACTIONAL SEG with two overlapping segments (written by highdicom from the real CT)."""
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    root = real("dicom_seg_liver")
    cts = sorted((pydicom.dcmread(f) for f in (root / "ct").glob("*.dcm")),
                 key=lambda d: float(d.ImagePositionPatient[2]))  # canonical z order
    for ct in cts:
        ct.SpecificCharacterSet = "ISO_IR 100"  # highdicom refuses the empty value
    seg = pydicom.dcmread(root / "seg" / "liver_seg.dcm")
    frames = seg.pixel_array
    by_sop = {fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID: frames[i]
              for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence)}
    liver = np.stack([by_sop[c.SOPInstanceUID] for c in cts]).astype(np.float32)
    part = liver.copy()
    part[:, :, 256:] = 0
    part[:, :, :150] *= 0.4  # below the 0.5 threshold: must drop out
    descs = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=label, segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for i, label in enumerate(["Liver", "Liver part"])]
    made = hd.seg.Segmentation(
        source_images=cts, pixel_array=np.stack([liver * 0.9, part], axis=-1),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL, segment_descriptions=descs,
        series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0", max_fractional_value=255)
    data = tmp_path / "data"
    shutil.copytree(root / "ct", data / "ct")
    (data / "seg").mkdir()
    made.save_as(data / "seg" / "frac.dcm")
    # same SEG without frame -> image references: frames are placed by PlanePositionSequence
    bare = pydicom.dcmread(data / "seg" / "frac.dcm")
    for fg in bare.PerFrameFunctionalGroupsSequence:
        del fg.DerivationImageSequence
    bare.save_as(data / "seg" / "frac_by_position.dcm")

    conv_cls = get_converter("dicom_seg")
    conv = conv_cls("frac", data, conv_cls.Options(images="ct", segs="seg/*.dcm"))
    items = list(conv.discover())
    assert [i.key for i in items] == ["seg/frac.dcm", "seg/frac_by_position.dcm"]
    expected = {"Liver": liver > 0, "Liver part": part >= 0.5}
    for item in items:
        (sample,) = conv.load(item)
        assert set(sample.target_masks) == {"Liver", "Liver part"}, "overlapping segments stay apart"
        for label, exp in expected.items():
            got = sample.target_masks[label]  # [x, y, z]; exp is [z, row, col]
            assert np.array_equal(got.transpose(2, 1, 0), exp), label


def test_oblique_series_goes_to_closest_axes_like_simpleitk(tmp_path: Path) -> None:
    """The real MR series with its geometry rotated 25 degrees: same voxels and affine as ITK."""
    import SimpleITK as sitk

    src = real(*MR)
    a = np.deg2rad(25.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ \
        np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    out = tmp_path / "oblique"
    out.mkdir()
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.r_[rot @ iop[:3], rot @ iop[3:]]]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in rot @ np.asarray(ds.ImagePositionPatient, float)]
        ds.save_as(out / f.name)
    s = read_series(sorted(out.glob("*.dcm")))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out)))
    img = sitk.DICOMOrient(reader.Execute(), "LPS")
    assert np.array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), s.volume.array)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    assert np.allclose(s.volume.affine[:3, :3], direction * np.asarray(img.GetSpacing()), atol=1e-4)
    assert np.allclose(s.volume.affine[:3, 3], img.GetOrigin(), atol=1e-3)
    # every canonical axis points most along its own patient axis, positively
    cols = s.volume.affine[:3, :3] / np.linalg.norm(s.volume.affine[:3, :3], axis=0)
    assert list(np.argmax(np.abs(cols), axis=0)) == [0, 1, 2] and np.all(np.diag(cols) > 0)
