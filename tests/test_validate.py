"""``gmai-build validate`` finds, without decoding pixels, what the build would reject: all of it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from gmai_build.cli import main
from helpers import copy_example, file_token, realdata, write_yaml


def _validate(sources: Path, capsys) -> tuple[int, str, str]:
    code = main(["validate", "--sources", str(sources)])
    out, err = capsys.readouterr()
    return code, out, err


def _edit(sources: Path, edit) -> Path:
    data = yaml.safe_load(sources.read_text())
    edit(data)
    return write_yaml(sources, data)


def test_example_validates(tmp_path: Path, capsys) -> None:
    code, out, err = _validate(copy_example(tmp_path), capsys)
    assert code == 0, err
    assert "fundus-findings: csv_table, 16 items, label map OK (2 raw labels checked, 16 files exist)" in out
    assert err == ""


def test_missing_csv_image_is_found_by_validate_and_would_fail_the_build(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    (tmp_path / "data" / "fundus_findings" / "images" / "hrf07_2.png").unlink()
    code, _, err = _validate(sources, capsys)
    assert code == 1
    # Files are named by the token the build's outputs use (identifying names never printed)
    token = file_token("fundus-findings", "images/hrf07_2.png")
    assert "source 'fundus-findings'" in err and f"{token}: does not exist" in err
    assert "hrf07_2" not in err
    # The build rejects the same file (validate caught it first, without reading pixels).
    assert main(["--sources", str(sources), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert token in capsys.readouterr().err
    # --show-paths names it by its path, on the terminal only
    assert main(["validate", "--sources", str(sources), "--show-paths"]) == 1
    assert "hrf07_2.png: does not exist" in capsys.readouterr().err


def test_every_missing_file_is_listed(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    for n in (0, 1, 5):
        (tmp_path / "data" / "fundus_findings" / "images" / f"hrf07_{n}.png").unlink()
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert sum("does not exist" in line for line in err.splitlines()) == 3


def test_a_table_path_leaving_the_root_is_an_error(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    table = tmp_path / "data" / "fundus_findings" / "labels.csv"
    shutil.copy(tmp_path / "data" / "fundus_findings" / "images" / "hrf07_0.png", tmp_path / "x.png")
    table.write_text(table.read_text() + "../../x.png,microaneurysms,p9\n")
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert "outside the source root" in err and f"resolves to {tmp_path}/" in err


def test_seg_whose_series_is_absent(tmp_path: Path, capsys) -> None:
    """A DICOM SEG copied without the CT it references: the reference is resolved from headers."""
    shutil.copytree(realdata("dicom_seg_liver", "seg"), tmp_path / "liver" / "seg")
    sources = write_yaml(tmp_path / "sources.yaml", {"sources": [{
        "name": "liver", "format": "dicom_seg", "root": "liver", "modality": "CT",
        "label_map": "dicom_seg_liver", "license": "BSD-3", "citation": "QIICR dcmqi test data",
        "options": {"images": ".", "segs": "seg/*"}}]})
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert "source 'liver'" in err and "SEG has no matching image series" in err
    assert "looked for the series named by its ReferencedSeriesSequence; 0 image series found" in err
    assert "1.2." not in err  # no UID in the message


def test_seg_segment_labels_are_checked_from_the_header(tmp_path: Path, capsys) -> None:
    (tmp_path / "map.yaml").write_text("labels:\n  Spleen: spleen\n")
    sources = write_yaml(tmp_path / "sources.yaml", {"sources": [{
        "name": "liver", "format": "dicom_seg", "root": str(realdata("dicom_seg_liver")),
        "modality": "CT", "label_map": "map.yaml", "license": "BSD-3", "citation": "dcmqi",
        "options": {"images": "ct", "segs": "seg/*"}}]})
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert "raw label 'Liver'" in err and "map.yaml" in err


def test_rtstruct_roi_names_are_checked_from_the_header(tmp_path: Path, capsys) -> None:
    root = realdata("dicom_rtstruct_phantom")
    (tmp_path / "map.yaml").write_text("labels:\n  ROI-2: liver\n")
    sources = write_yaml(tmp_path / "sources.yaml", {"sources": [{
        "name": "rt", "format": "dicom_rtstruct", "root": str(root), "modality": "CT",
        "label_map": "map.yaml", "license": "MIT", "citation": "rt-utils test data"}]})
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert "raw label 'ROI-1'" in err


def test_box_labels_of_voc_annotations_are_checked(tmp_path: Path, capsys) -> None:
    (tmp_path / "map.yaml").write_text("department: Hematology\nlabels:\n  RBC: red blood cell\n")
    sources = write_yaml(tmp_path / "sources.yaml", {"sources": [{
        "name": "bccd", "format": "voc", "root": str(realdata("voc_bccd")), "modality": "Microscopy",
        "label_map": "map.yaml", "license": "MIT", "citation": "BCCD"}]})
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert "raw label 'WBC'" in err and "raw label 'Platelets'" in err


def test_four_unknown_labels_in_a_label_map_are_all_reported(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    (tmp_path / "findings.yaml").write_text(
        "labels:\n  microaneurysms: microaneurysmz\n  normal fundus: normal fundis\n"
        "  haemorrhage: bleedz\n  exudate: exudatez\n")
    _edit(sources, lambda d: d["sources"][1].update(label_map="findings.yaml"))
    code, _, err = _validate(sources, capsys)
    assert code == 1
    for raw, target in [("microaneurysms", "microaneurysmz"), ("normal fundus", "normal fundis"),
                        ("haemorrhage", "bleedz"), ("exudate", "exudatez")]:
        assert f"labels.{raw}: '{target}' is not a canonical label" in err
    assert "(close: microaneurysms" in err


def test_four_unknown_raw_labels_in_the_data_are_all_reported(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    table = tmp_path / "data" / "fundus_findings" / "labels.csv"
    lines = table.read_text().splitlines()
    for k, raw in enumerate(["drusen", "cotton wool", "glaucoma?", "bleed"], start=1):
        image, _, patient = lines[k].split(",")
        lines[k] = f"{image},{raw},{patient}"
    table.write_text("\n".join(lines) + "\n")
    code, _, err = _validate(sources, capsys)
    assert code == 1
    for raw in ["drusen", "cotton wool", "glaucoma?", "bleed"]:
        assert f"raw label '{raw}' (e.g. " in err


def test_label_not_listed_for_the_modality_is_a_warning(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    (tmp_path / "findings.yaml").write_text(
        "labels:\n  microaneurysms: microaneurysms\n  normal fundus: pneumonia\n")
    _edit(sources, lambda d: d["sources"][1].update(label_map="findings.yaml"))
    code, out, err = _validate(sources, capsys)
    assert code == 0
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "label 'pneumonia'" in warning and "modality 'Fundus Photography'" in warning
    assert "findings.yaml" in warning
    assert "OK, 1 warning(s)" in out


def test_vocabulary_and_question_pool_problems_are_all_reported(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    (tmp_path / "vocab.yaml").write_text(
        "labels:\n  - {label: foo lesion, task: Disease Diagnosiz, department: none}\n"
        "  - {label: bar lesion, task: Disease Diagnosis, department: Ophthalmolgy}\n")
    pool = yaml.safe_load((Path(__file__).parents[1] / "question_pools" / "default.yaml").read_text())
    pool["groups"][0]["granularity"] = "Image Levle"
    pool["groups"][1]["texts"][0] = "What is {organ}?"
    write_yaml(tmp_path / "pool.yaml", pool)
    _edit(sources, lambda d: d["build"].update(vocabulary=["vocab.yaml"], question_pool="pool.yaml"))
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert "labels[0]: unknown clinical VQA task 'Disease Diagnosiz'" in err
    assert "labels[1]: unknown department 'Ophthalmolgy'" in err
    assert "groups[0].granularity: 'Image Levle'" in err and "groups[1].texts[0]: unknown placeholder" in err
    assert err.count("groups[0].granularity") == 1  # once per group, not once per text


def test_quiet_validate_prints_only_errors(tmp_path: Path, capsys) -> None:
    code = main(["validate", "-q", "--sources", str(copy_example(tmp_path))])
    assert code == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("missing", ["sources.yaml"])
def test_missing_sources_file(tmp_path: Path, capsys, missing: str) -> None:
    code, _, err = _validate(tmp_path / missing, capsys)
    assert code == 1 and "no such file" in err


def test_a_file_that_is_not_an_image_is_found_from_its_header(tmp_path: Path, capsys) -> None:
    sources = copy_example(tmp_path)
    bad = tmp_path / "data" / "fundus_laterality" / "oculus dexter" / "crop00.png"
    assert bad.is_file()
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, _, err = _validate(sources, capsys)
    assert code == 1
    token = file_token("fundus-laterality", "oculus dexter/crop00.png")
    assert "source 'fundus-laterality'" in err and f"{token}: cannot read image" in err


def test_configs_that_build_also_validate(capsys) -> None:
    """No false alarms: the real-data example (MedMNIST, MSD, NRRD, DICOM SEG, VOC) validates."""
    realdata()  # skips, saying where the samples come from, when they are absent
    code, out, err = _validate(Path(__file__).parents[1] / "examples" / "realdata_sources.yaml", capsys)
    assert code == 0, err
    assert "dicom_seg_liver: dicom_seg, 1 items, label map OK (1 raw labels checked, 4 files exist)" in out
    assert "bccd: voc, 20 items, label map OK (3 raw labels checked, 40 files exist)" in out


def test_rtstruct_phantom_validates(tmp_path: Path, capsys) -> None:
    sources = write_yaml(tmp_path / "sources.yaml", {"sources": [{
        "name": "rt", "format": "dicom_rtstruct", "root": str(realdata("dicom_rtstruct_phantom")),
        "modality": "CT", "label_map": "dicom_rtstruct_phantom", "license": "MIT",
        "citation": "rt-utils test data", "options": {"images": "ct", "structs": "rtstruct.dcm"}}]})
    code, out, err = _validate(sources, capsys)
    assert code == 0, err
    assert "rt: dicom_rtstruct, 1 items, label map OK (1 raw labels checked" in out


def test_voc_box_outside_its_image_is_found_from_headers(tmp_path: Path, capsys) -> None:
    root = tmp_path / "bccd"
    shutil.copytree(realdata("voc_bccd"), root)
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    # The first box moves right of the 640-pixel-wide image: nothing of it is left inside.
    text = re.sub(r"<xmin>[^<]*</xmin>", "<xmin>5000</xmin>", xml.read_text(), count=1)
    xml.write_text(re.sub(r"<xmax>[^<]*</xmax>", "<xmax>5100</xmax>", text, count=1))
    sources = write_yaml(tmp_path / "sources.yaml", {"sources": [{
        "name": "bccd", "format": "voc", "root": "bccd", "modality": "Microscopy",
        "label_map": "bccd", "license": "MIT", "citation": "BCCD"}]})
    code, _, err = _validate(sources, capsys)
    assert code == 1, err
    assert "lies outside the" in err and file_token("bccd", f"Annotations/{xml.name}") in err
    assert main(["--sources", str(sources), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "lies outside the" in capsys.readouterr().err


def test_mask_of_another_size_is_found_from_headers(tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    sources = copy_example(tmp_path)
    images = sorted((tmp_path / "data" / "fundus_findings" / "images").glob("*.png"))[:2]
    (tmp_path / "seg" / "masks").mkdir(parents=True)
    for k, image in enumerate(images):
        shutil.copy(image, tmp_path / "seg" / image.name)
        w, h = Image.open(image).size
        mask = np.zeros((h, w + k), np.uint8)  # the second mask is one pixel too wide
        mask[: h // 2, : w // 2] = 1
        Image.fromarray(mask).save(tmp_path / "seg" / "masks" / image.name)
    (tmp_path / "seg_map.yaml").write_text("labels:\n  '1': microaneurysms\n")
    data = yaml.safe_load(sources.read_text())
    data["sources"] = [{"name": "seg", "format": "mask_pairs", "root": "seg",
                        "modality": "Fundus Photography", "label_map": "seg_map.yaml",
                        "license": "CC0", "citation": "example",
                        "options": {"images": "*.png", "masks": "masks/{name}"}}]
    write_yaml(sources, data)
    code, _, err = _validate(sources, capsys)
    assert code == 1
    bad, good = (file_token("seg", f"masks/{images[k].name}") for k in (1, 0))
    assert f"mask {bad} is " in err and "masks must be in the image's pixel grid" in err
    assert good not in err


def test_seg_on_another_grid_is_found_from_headers(tmp_path: Path, capsys) -> None:
    import pydicom

    root = tmp_path / "liver"
    shutil.copytree(realdata("dicom_seg_liver"), root)
    seg_file = next((root / "seg").iterdir())
    seg = pydicom.dcmread(seg_file)
    seg.Rows = int(seg.Rows) + 2  # the header now says the frames are on a larger grid
    seg.save_as(seg_file)
    sources = write_yaml(tmp_path / "sources.yaml", {"sources": [{
        "name": "liver", "format": "dicom_seg", "root": "liver", "modality": "CT",
        "label_map": "dicom_seg_liver", "license": "BSD-3", "citation": "dcmqi",
        "options": {"images": "ct", "segs": "seg/*"}}]})
    code, _, err = _validate(sources, capsys)
    assert code == 1
    assert f"SEG frames are {seg.Rows}x{seg.Columns} but the image series is" in err
    assert main(["--sources", str(sources), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert f"SEG frames are {seg.Rows}x{seg.Columns}" in capsys.readouterr().err
