"""Box converters (voc, coco, yolo) end to end on real BCCD blood-smear images.

The VOC build is checked against the XML itself: every Box Level image in the TSV is decoded, the
drawn rectangle is found as the pixels that differ from the source JPEG (the writer's PNG is
lossless, so untouched pixels are identical) and its outer bounds must match the XML box. COCO
and YOLO fixtures are made from the same XML boxes, so their builds must give the same boxes.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from gmai_build.config import load_config
from gmai_build.converters import get_converter
from gmai_build.converters.base import Item
from gmai_build.errors import BuildError
from gmai_build.image2d import read_image
from gmai_build.pipeline import build
from helpers import group_token, leftovers

REALDATA = Path(os.environ.get("GMAI_REALDATA",
                               Path(__file__).resolve().parents[1].parent / "shared" / "realdata"))
LABEL_MAP = {"RBC": "red blood cell", "WBC": "white blood cell", "Platelets": "platelet"}
CLASSES = ["RBC", "WBC", "Platelets"]
SUBSET = 4  # images in the COCO/YOLO/error fixtures (keeps the suite fast)


def bccd_root() -> Path:
    """The real VOC sample, or skip saying where it comes from."""
    root = REALDATA / "voc_bccd"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"real sample not found at {root} (set GMAI_REALDATA): it is 20 images of the "
                    "BCCD dataset (Blood Cell Count and Detection, MIT licence, Pascal VOC layout)")
    return root


def xml_boxes(xml: Path) -> list[tuple[float, float, float, float, str]]:
    """The XML's boxes converted independently: 1-based inclusive -> 0-based half-open."""
    out = []
    for obj in ET.parse(xml).getroot().iter("object"):
        bb = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append((xmin - 1, ymin - 1, xmax, ymax, obj.findtext("name").strip()))
    return out


def write_config(tmp: Path, fmt: str, root: Path, options: dict | None = None,
                 cap: int = 30, name: str = "bccd") -> Path:
    (tmp / "bccd_map.yaml").write_text(yaml.safe_dump(
        {"department": "Hematology", "labels": LABEL_MAP}, sort_keys=False))
    src = {"name": name, "format": fmt, "root": str(root), "modality": "Microscopy",
           "label_map": "bccd_map.yaml", "license": "MIT", "citation": "BCCD dataset",
           "identifying_paths": False}  # public data: files recorded as relative paths
    if options:
        src["options"] = options
    cfg = {"build": {"name": "T", "per_label_cap": cap, "workers": 1}, "sources": [src]}
    path = tmp / f"sources_{fmt}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(sources: Path, out: Path) -> list[dict]:
    build(load_config(sources), out, workers=1, progress=False, log=lambda _: None)
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def tsv_images(out: Path) -> dict[int, str]:
    rows: dict[int, str] = {}
    for split in ("VAL", "TEST"):
        df = pd.read_csv(out / f"T_{split}.tsv", sep="\t")
        rows.update(zip(df["index"].astype(int), df["image"]))
    return rows


def decode(b64: str) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def box_key(records: list[dict]) -> list[tuple[str, str, tuple[float, ...]]]:
    """(image stem, raw label, box) of every Box Level record, sorted."""
    return sorted((Path(r["files"][0]).stem, r["raw_label"], tuple(r["region"]["box"]))
                  for r in records if r["granularity"] == "Box Level")


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first SUBSET images of BCCD as a VOC folder, plus their XML boxes."""
    src = bccd_root()
    root = tmp_path_factory.mktemp("voc_subset")
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    for xml in sorted((src / "Annotations").glob("*.xml"))[:SUBSET]:
        shutil.copy(xml, root / "Annotations" / xml.name)
        shutil.copy(src / "JPEGImages" / f"{xml.stem}.jpg", root / "JPEGImages" / f"{xml.stem}.jpg")
    return root


@pytest.fixture(scope="module")
def subset_voc_records(subset: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("voc_subset_build")
    return run(write_config(tmp, "voc", subset, cap=10_000), tmp / "out")


def test_voc_box_questions_line_up_with_xml(tmp_path: Path) -> None:
    root = bccd_root()
    records = run(write_config(tmp_path, "voc", root), tmp_path / "out")
    images = tsv_images(tmp_path / "out")
    boxes = [r for r in records if r["granularity"] == "Box Level"]
    assert boxes and all(r["original_task"] == "DET_2D" for r in boxes)
    assert {r["category"] for r in boxes} == set(LABEL_MAP.values())
    originals: dict[str, np.ndarray] = {}
    for r in boxes:
        image_rel, xml_rel = r["files"]
        assert r["group"] == group_token(r["source"], Path(image_rel).stem)
        if image_rel not in originals:
            originals[image_rel] = read_image(root / image_rel)
        original = originals[image_rel]
        x0, y0, x1, y1 = r["region"]["box"]
        matches = [b for b in xml_boxes(root / xml_rel)
                   if b[4] == r["raw_label"] and np.allclose(b[:4], (x0, y0, x1, y1), atol=0.01)]
        assert matches, f"{r['sample_id']}: region {r['region']['box']} is not a box of {xml_rel}"
        assert r["category"] == LABEL_MAP[r["raw_label"]]
        drawn = decode(images[r["index"]])
        assert drawn.shape == original.shape
        ys, xs = np.nonzero(np.any(drawn != original, axis=2))
        outer = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        h, w = original.shape[:2]
        xb0, yb0, xb1, yb1 = matches[0][:4]
        expected = (max(0, xb0), max(0, yb0), min(w, xb1), min(h, yb1))
        assert np.all(np.abs(np.array(outer) - np.array(expected)) <= 1), (
            f"{r['sample_id']}: drawn rectangle {outer} vs XML box {expected}")


def test_coco_matches_voc(subset: Path, subset_voc_records: list[dict], tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)] + [{"id": 99, "name": "crowd"}]
    images, anns = [], []
    for k, xml in enumerate(sorted((subset / "Annotations").glob("*.xml")), start=1):
        shutil.copy(subset / "JPEGImages" / f"{xml.stem}.jpg", root / "images")
        images.append({"id": k, "file_name": f"{xml.stem}.jpg", "width": 640, "height": 480})
        for x0, y0, x1, y1, name in xml_boxes(xml):
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": CLASSES.index(name) + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0, "area": (x1 - x0) * (y1 - y0)})
        # A crowd region of a label the map does not know: must be skipped, not fail the build.
        anns.append({"id": len(anns) + 1, "image_id": k, "category_id": 99, "bbox": [0, 0, 50, 50],
                     "iscrowd": 1})
    (root / "annotations").mkdir()
    (root / "annotations" / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    options = {"annotations": "annotations/instances.json", "images": "images"}
    records = run(write_config(tmp_path, "coco", root, options, cap=10_000), tmp_path / "out")
    assert_same_boxes(records, subset_voc_records)


def test_yolo_matches_voc(subset: Path, subset_voc_records: list[dict], tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": dict(enumerate(CLASSES))}))
    for xml in sorted((subset / "Annotations").glob("*.xml")):
        shutil.copy(subset / "JPEGImages" / f"{xml.stem}.jpg", root / "images" / "train")
        lines = [f"{CLASSES.index(n)} {(x0 + x1) / 2 / 640:.8f} {(y0 + y1) / 2 / 480:.8f} "
                 f"{(x1 - x0) / 640:.8f} {(y1 - y0) / 480:.8f}" for x0, y0, x1, y1, n in xml_boxes(xml)]
        (root / "labels" / "train" / f"{xml.stem}.txt").write_text("\n".join(lines) + "\n")
    records = run(write_config(tmp_path, "yolo", root, cap=10_000), tmp_path / "out")
    assert_same_boxes(records, subset_voc_records)
    # names given inline instead of data.yaml: same boxes (converter level, no second build)
    from_yaml = [(s.sample_id, s.boxes) for s in convert("yolo", root)]
    (root / "data.yaml").unlink()
    assert [(s.sample_id, s.boxes) for s in convert("yolo", root, names=CLASSES)] == from_yaml


def assert_same_boxes(records: list[dict], reference: list[dict]) -> None:
    got, want = box_key(records), box_key(reference)
    assert len(got) == len(want) > 0
    assert Counter(k[:2] for k in got) == Counter(k[:2] for k in want)
    for g, w in zip(got, want):
        assert g[:2] == w[:2] and np.allclose(g[2], w[2], atol=0.5), (g, w)
    assert all(r["category"] == LABEL_MAP[r["raw_label"]] for r in records)


# Converter-level checks (no build) ----------------------------------------------------------
def convert(fmt: str, root: Path, **options) -> list:
    cls = get_converter(fmt)
    conv = cls("src", root, cls.Options.model_validate(options))
    return [s for item in conv.discover() for s in conv.load(item)]


def small_voc(root: Path, boxes: str, size: str = "<width>64</width><height>48</height>") -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "JPEGImages" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    xml = root / "Annotations" / "a.xml"
    xml.write_text(f"<annotation><filename>a.png</filename><size>{size}<depth>3</depth></size>"
                   f"{boxes}</annotation>")
    return xml


def obj(name: str, x0: int, y0: int, x1: int, y1: int) -> str:
    return (f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def test_voc_clips_boxes_outside_the_image_and_records_it(tmp_path: Path) -> None:
    small_voc(tmp_path, obj("RBC", 1, 1, 10, 10) + obj("WBC", 50, 40, 80, 60))
    (sample,) = convert("voc", tmp_path)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in sample.boxes] == [(0, 0, 10, 10), (49, 39, 64, 48)]
    assert sample.extra["clipped_boxes"][0]["box"] == [49.0, 39.0, 80.0, 60.0]
    assert sample.group == "a"


def test_voc_box_fully_outside_is_an_error(tmp_path: Path) -> None:
    xml = small_voc(tmp_path, obj("RBC", 100, 1, 120, 10))
    with pytest.raises(BuildError, match="outside") as err:
        convert("voc", tmp_path)
    assert str(xml) in str(err.value)


def test_voc_size_mismatch_names_the_file(tmp_path: Path) -> None:
    xml = small_voc(tmp_path, obj("RBC", 1, 1, 10, 10), "<width>640</width><height>480</height>")
    with pytest.raises(BuildError, match="640x480 but image JPEGImages/a.png is 64x48") as err:
        convert("voc", tmp_path)
    assert str(xml) in str(err.value)


# Errors through the CLI: exit code 1, message names source + file + reason, output untouched --
def good_then_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], sources: Path,
                  break_it) -> str:
    from gmai_build.cli import main

    out = tmp_path / "out"
    args = ["--sources", str(sources), "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    break_it()
    assert main(args) == 1
    err = capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before, "a failed build must leave the previous build untouched"
    assert not leftovers(out)
    assert "source 'bccd'" in err
    return err


def test_malformed_xml_is_a_build_error(subset: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "voc"
    shutil.copytree(subset, root)
    xml = sorted((root / "Annotations").glob("*.xml"))[1]
    err = good_then_bad(tmp_path, capsys, write_config(tmp_path, "voc", root),
                        lambda: xml.write_text(xml.read_text()[:300]))
    assert xml.relative_to(root).as_posix() in err and "malformed VOC XML" in err


def test_coco_annotation_for_missing_image(subset: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "coco"
    root.mkdir()
    xml = sorted((subset / "Annotations").glob("*.xml"))[0]
    shutil.copy(subset / "JPEGImages" / f"{xml.stem}.jpg", root)
    ann = root / "ann.json"
    data = {"images": [{"id": 1, "file_name": f"{xml.stem}.jpg", "width": 640, "height": 480}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40]}],
            "categories": [{"id": 1, "name": "RBC"}]}
    ann.write_text(json.dumps(data))

    def break_it() -> None:
        data["images"].append({"id": 2, "file_name": "BloodImage_missing.jpg"})
        data["annotations"].append({"id": 7, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]})
        ann.write_text(json.dumps(data))

    err = good_then_bad(tmp_path, capsys, write_config(tmp_path, "coco", root, {"annotations": "ann.json"}),
                        break_it)
    assert "ann.json" in err and "BloodImage_missing.jpg" in err and "does not exist" in err
    # an annotation whose image_id is not listed at all
    data["images"].pop()
    ann.write_text(json.dumps(data))
    from gmai_build.cli import main

    assert main(["--sources", str(tmp_path / "sources_coco.yaml"), "--out", str(tmp_path / "o2"),
                 "--no-progress"]) == 1
    assert "annotation id 7: image_id 2 is not in 'images'" in capsys.readouterr().err


def test_yolo_class_index_out_of_range(subset: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    xml = sorted((subset / "Annotations").glob("*.xml"))[0]
    shutil.copy(subset / "JPEGImages" / f"{xml.stem}.jpg", root / "images")
    label = root / "labels" / f"{xml.stem}.txt"
    label.write_text("1 0.5 0.5 0.2 0.2\n")
    err = good_then_bad(tmp_path, capsys, write_config(tmp_path, "yolo", root),
                        lambda: label.write_text("1 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n"))
    assert label.relative_to(root).as_posix() in err
    assert "line 2: class index 7 out of range" in err


def test_item_data_is_picklable(subset: Path) -> None:
    import pickle

    conv = get_converter("voc")("s", subset, get_converter("voc").Options())
    items = list(conv.discover())
    assert isinstance(items[0], Item) and pickle.loads(pickle.dumps(items)) == items


def test_yolo_polygon_lines_empty_images_and_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for stem in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.png"), np.zeros((50, 100, 3), np.uint8))
    # a: one box and one segment polygon (its bbox is used); b: empty label file; c: no label file
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.2 0.3 0.2 0.2 0.6\n")
    (tmp_path / "labels" / "b.txt").write_text("")
    samples = convert("yolo", tmp_path, names=["RBC", "WBC"])
    assert [s.sample_id for s in samples] == ["images/a.png"]
    got = [(round(b.x0, 6), round(b.y0, 6), round(b.x1, 6), round(b.y1, 6), b.raw_label)
           for b in samples[0].boxes]
    assert got == [(40, 15, 60, 35, "RBC"), (10, 10, 30, 30, "WBC")]
    assert len(convert("yolo", tmp_path, names=["RBC", "WBC"], keep_empty=True)) == 3
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(BuildError, match="line 1: expected 'class cx cy w h'"):
        convert("yolo", tmp_path, names=["RBC", "WBC"])
    with pytest.raises(BuildError, match="class names unknown"):
        convert("yolo", tmp_path)


def test_coco_float_boxes_are_kept_exactly(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 5, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1.25, 2.5, 10.5, 20.0]},
                        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [60.0, 40.0, 10.0, 10.0]}],
        "categories": [{"id": 3, "name": "Platelets"}]}))
    (sample,) = convert("coco", tmp_path, annotations="ann.json")
    assert [(b.x0, b.y0, b.x1, b.y1) for b in sample.boxes] == [(1.25, 2.5, 11.75, 22.5), (60, 40, 64, 48)]
    assert len(sample.extra["clipped_boxes"]) == 1 and sample.files == ("a.png", "ann.json")
