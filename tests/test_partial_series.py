"""RTSTRUCT and SEG on partial series: a clinical export holds a few of the planned slices.

The RTSTRUCT is made from the real rt-utils phantom (two CT slices on disk, z = 60 and 65 mm):
its contours reference a planned series of 100 slices 5 mm apart, as a treatment-planning
export does. Contours on slices not on disk are skipped and counted; ROIs the label map drops
are never read; an ROI with no slice on disk is an error naming it, or a skip under
``on_error: skip``. The SEG case uses the real dcmqi liver SEG with one CT slice removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from dicom_factory import planned_series, rtstruct, square
from gmai_build.cli import main
from helpers import realdata, write_yaml

CITE = {"license": "MIT", "citation": "qurit/rt-utils test data"}
LABEL_MAP = """\
source: clinic
new_labels:
  - label: phantom insert
    task: Organ Recognition - Abdomen
    department: none
    modalities: [CT]
labels:
  Body: phantom insert
  Eye_L: {eye}
  Couch: drop
  Empty: phantom insert
"""
N_PLANNED, BEFORE = 100, 40  # planned slices, and how many precede the first real one


def clinical_export(tmp_path: Path, eye: str = "drop", refs: bool = True) -> tuple[Path, Path]:
    """Root with the 2 real CT slices + an RTSTRUCT on 100 planned slices; and its config.

    ``refs=False`` strips ContourImageSequence (some planning systems omit it): contours are
    then placed by their z position, and those between or beyond the slices on disk skipped.
    """
    real = realdata("dicom_rtstruct_phantom")
    root = tmp_path / "export"
    shutil.copytree(real / "ct", root / "ct")
    cts = [pydicom.dcmread(p) for p in sorted((root / "ct").glob("*.dcm"))]
    slices = planned_series(cts, BEFORE, N_PLANNED)
    assert sum(uid in {str(d.SOPInstanceUID) for d in cts} for uid, _ in slices) == 2
    rois = {
        "Body": [(j, square(z, 40.0)) for j, (_, z) in enumerate(slices)],  # on all 100
        "Eye_L": [(j, square(slices[j][1], 5.0, 20.0, -40.0)) for j in range(80, 86)],  # none on disk
        # Dropped ROI whose only contour is off the plane of its (present) slice: reading it
        # would be an error, so the build passing proves it is never read.
        "Couch": [(BEFORE, square(slices[BEFORE][1] + 2.5, 50.0))],
        "Empty": [],
    }
    rt = rtstruct(cts[0], slices, rois)
    if not refs:
        for roi in rt.ROIContourSequence:
            for contour in roi.ContourSequence:
                del contour.ContourImageSequence
    rt.save_as(root / "rtstruct.dcm", enforce_file_format=True)
    (tmp_path / "map.yaml").write_text(LABEL_MAP.format(eye=eye))
    cfg = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "RT", "workers": 1},
        "sources": [{"name": "clinic", "format": "dicom_rtstruct", "root": str(root),
                     "modality": "CT", "label_map": "map.yaml", **CITE,
                     "options": {"images": "ct", "structs": "rtstruct.dcm"}}]})
    return root, cfg


def build(cfg: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["--sources", str(cfg), "--out", str(out), "--no-progress", *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("refs", [True, False])
def test_clinical_rtstruct_on_partial_series_builds(tmp_path: Path, capsys, refs: bool) -> None:
    _, cfg = clinical_export(tmp_path, refs=refs)
    code, err = build(cfg, tmp_path / "out", capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    notes = {n["reason"]: n["count"] for n in summary["notes"]}
    # Body: 98 of its 100 contours are on slices not on disk -> skipped and counted.
    assert notes["ROI 'Body': 98 of 100 contour(s) lie on slices that are not on disk: skipped"] == 98
    assert "ROI 'Empty' has no contour" in notes
    assert not any("Couch" in r or "Eye_L" in r for r in notes), "dropped ROIs are never read"
    assert summary["skipped_samples"] == []
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").open()]
    assert {r["category"] for r in records} == {"phantom insert"}
    assert {r["slice_index"] for r in records} <= {0, 1}  # only the slices on disk
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## Notes" in md and "98 of 100 contour(s)" in md


def test_roi_with_no_slice_on_disk_is_an_error_naming_it(tmp_path: Path, capsys) -> None:
    _, cfg = clinical_export(tmp_path, eye="phantom insert")
    code, err = build(cfg, tmp_path / "out", capsys)
    assert code == 1
    assert "source 'clinic'" in err and "ROI 'Eye_L' has no contour on a slice that is on disk" in err
    assert "6 of 6 contour(s) reference slices not on disk; 2 slice(s) present" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_roi_with_no_slice_on_disk_is_skipped_under_on_error_skip(tmp_path: Path, capsys) -> None:
    _, cfg = clinical_export(tmp_path, eye="phantom insert")
    text = cfg.read_text().replace("workers: 1", "workers: 1\n  on_error: skip")
    cfg.write_text(text)
    code, err = build(cfg, tmp_path / "out", capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    skipped = [s["reason"] for s in summary["skipped_samples"]]
    assert len(skipped) == 1 and skipped[0].startswith("ROI 'Eye_L' has no contour on a slice")
    assert summary["skipped_samples_total"] == 1
    assert summary["total"] > 0  # Body still gives questions


def test_seg_frames_on_missing_slices_are_skipped_and_counted(tmp_path: Path, capsys) -> None:
    real = realdata("dicom_seg_liver")
    root = tmp_path / "liver"
    shutil.copytree(real, root)
    seg = pydicom.dcmread(root / "seg" / "liver_seg.dcm")
    cts = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in (root / "ct").glob("*.dcm")}
    referenced = [str(fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
                  for fg in seg.PerFrameFunctionalGroupsSequence]
    gone = cts[referenced[0]]
    gone.unlink()  # the slice of the SEG's first frame is not on disk
    cfg = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "SEG", "workers": 1},
        "sources": [{"name": "liver", "format": "dicom_seg", "root": str(root), "modality": "CT",
                     "label_map": "dicom_seg_liver", "license": "BSD-3",
                     "citation": "QIICR/dcmqi", "options": {"images": "ct", "segs": "seg"}}]})
    code, err = build(cfg, tmp_path / "out", capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    notes = [n for n in summary["notes"] if "frame(s) lie on slices that are not on disk" in n["reason"]]
    n_frames = int(seg.NumberOfFrames)
    assert [n["reason"] for n in notes] == [
        f"segment 'Liver': 1 of {n_frames} frame(s) lie on slices that are not on disk: skipped"]


def seg_source(name: str, root: Path) -> dict:
    return {"name": name, "format": "dicom_seg", "root": str(root), "modality": "CT",
            "label_map": "dicom_seg_liver", "license": "BSD-3", "citation": "QIICR/dcmqi",
            "options": {"images": "ct", "segs": "seg"}}


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_seg_with_no_slice_on_disk(tmp_path: Path, capsys, on_error: str) -> None:
    """One CT slice left, moved off every frame's slice: the segment has no usable slice."""
    real = realdata("dicom_seg_liver")
    root = tmp_path / "liver"
    shutil.copytree(real, root)
    (root / "ct" / "02.dcm").unlink()
    (root / "ct" / "03.dcm").unlink()
    ds = pydicom.dcmread(root / "ct" / "01.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]),
                               float(ds.ImagePositionPatient[1]), 400.0]
    ds.save_as(root / "ct" / "01.dcm")
    sources = [seg_source("liver", root)]
    if on_error == "skip":
        # the broken source yields no question at all: allowed explicitly, or that is an error
        sources[0]["allow_no_questions"] = True
        sources.append(seg_source("liver_ok", real))
    cfg = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "SEG", "workers": 1, "on_error": on_error}, "sources": sources})
    code, err = build(cfg, tmp_path / "out", capsys)
    why = "segment 'Liver' has no frame on a slice that is on disk (3 of 3 frame(s)"
    if on_error == "fail":
        assert code == 1 and why in err and "source 'liver'" in err
        assert "Traceback" not in err and str(root) not in err
        return
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(s["source"], s["reason"][:len(why)]) for s in summary["skipped_samples"]] == [
        ("liver", why)]
    assert {r["source"] for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").open())} \
        == {"liver_ok"}


def test_dropped_segments_are_never_decoded(monkeypatch) -> None:
    from gmai_build.converters import dicom_seg
    from gmai_build.dicom_io import DicomError, read_series

    real = realdata("dicom_seg_liver")
    series = read_series(sorted((real / "ct").glob("*.dcm")))
    seg = pydicom.dcmread(real / "seg" / "liver_seg.dcm")

    def boom(*args, **kwargs):
        raise AssertionError("a dropped segment's frame was decoded")

    monkeypatch.setattr(dicom_seg, "pixel_array", boom)
    assert dicom_seg.seg_masks(seg, series, real / "seg" / "liver_seg.dcm",
                               wanted=lambda raw: raw != "Liver") == {}
    with pytest.raises(DicomError, match="was decoded"):  # wanted: its frames are decoded
        dicom_seg.seg_masks(seg, series, real / "seg" / "liver_seg.dcm")
