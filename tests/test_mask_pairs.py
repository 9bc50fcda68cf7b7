"""``mask_pairs`` end to end on a real BCCD blood-smear image with masks drawn from its VOC boxes.

The masks are filled ellipses inscribed in two of the image's annotated cells, so the expected
overlay is known exactly: the Mask Level image must differ from the source JPEG on (almost)
exactly the mask's pixels, and every segmentation target must come as a mask + contour pair.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from gmai_build.cli import main
from gmai_build.config import load_config
from gmai_build.converters import get_converter
from gmai_build.errors import BuildError
from gmai_build.image2d import read_image
from gmai_build.pipeline import build
from helpers import group_token

REALDATA = Path(os.environ.get("GMAI_REALDATA",
                               Path(__file__).resolve().parents[1].parent / "shared" / "realdata"))
STEM = "BloodImage_00000"
WBC_VALUE, RBC_VALUE = 255, 128


def bccd_image() -> tuple[Path, Path]:
    """(JPEG, VOC XML) of one real BCCD image, or skip saying where the sample comes from."""
    root = REALDATA / "voc_bccd"
    jpg, xml = root / "JPEGImages" / f"{STEM}.jpg", root / "Annotations" / f"{STEM}.xml"
    if not (jpg.is_file() and xml.is_file()):
        pytest.skip(f"real sample not found at {root} (set GMAI_REALDATA): it is 20 images of the "
                    "BCCD dataset (Blood Cell Count and Detection, MIT licence, Pascal VOC layout)")
    return jpg, xml


def voc_box(xml: Path, name: str, avoid: tuple[int, int, int, int] | None = None) -> tuple[int, ...]:
    """First 0-based half-open box of ``name`` (not overlapping ``avoid``)."""
    for obj in ET.parse(xml).getroot().iter("object"):
        if obj.findtext("name") != name:
            continue
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        box = (x0 - 1, y0 - 1, x1, y1)
        apart = avoid is None or (box[2] <= avoid[0] or box[0] >= avoid[2]
                                  or box[3] <= avoid[1] or box[1] >= avoid[3])
        if apart:
            return box
    raise AssertionError(f"no {name} box in {xml}")


def ellipse_mask(shape: tuple[int, int], box: tuple[int, ...]) -> np.ndarray:
    """Filled ellipse inscribed in a box."""
    x0, y0, x1, y1 = box
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2 - 1, (y1 - y0) // 2 - 1),
                0, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, np.ndarray]]:
    """root/images/<stem>.jpg + root/masks/<stem>_mask.png (WBC ellipse 255, RBC ellipse 128)."""
    jpg, xml = bccd_image()
    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shutil.copy(jpg, root / "images" / jpg.name)
    image = read_image(jpg)
    wbc = voc_box(xml, "WBC")
    rbc = voc_box(xml, "RBC", avoid=wbc)
    masks = {"white blood cell": ellipse_mask(image.shape[:2], wbc),
             "red blood cell": ellipse_mask(image.shape[:2], rbc)}
    label_mask = np.zeros(image.shape[:2], np.uint8)
    label_mask[masks["white blood cell"]] = WBC_VALUE
    label_mask[masks["red blood cell"]] = RBC_VALUE
    cv2.imwrite(str(root / "masks" / f"{STEM}_mask.png"), label_mask)
    return root, image, masks


def write_config(tmp: Path, root: Path, options: dict) -> Path:
    (tmp / "map.yaml").write_text(yaml.safe_dump(
        {"department": "Hematology",
         "labels": {"WBC": "white blood cell", str(RBC_VALUE): "red blood cell", "RBC": "red blood cell"}}))
    cfg = {"build": {"name": "T", "workers": 1},
           "sources": [{"name": "seg", "format": "mask_pairs", "root": str(root), "modality": "Microscopy",
                        "label_map": "map.yaml", "license": "MIT", "citation": "BCCD dataset",
                        "identifying_paths": False, "options": options}]}
    path = tmp / "sources.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


OPTIONS = {"images": "images/*.jpg", "masks": "masks/{stem}_mask.png", "mask_labels": {WBC_VALUE: "WBC"}}


def decode(b64: str) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_mask_overlay_matches_source_mask(pair, tmp_path: Path) -> None:
    root, image, masks = pair
    out = tmp_path / "out"
    build(load_config(write_config(tmp_path, root, OPTIONS)), out, workers=1, progress=False,
          log=lambda _: None)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    images: dict[int, str] = {}
    for split in ("VAL", "TEST"):
        df = pd.read_csv(out / f"T_{split}.tsv", sep="\t")
        images.update(zip(df["index"].astype(int), df["image"]))
    assert {r["raw_label"] for r in records} == {"WBC", str(RBC_VALUE)}
    assert all(r["original_task"] == "SEG_2D" and r["group"] == group_token("seg", STEM)
               for r in records)
    pairs: dict[str, set[str]] = {}
    for r in records:
        pairs.setdefault(r["pair_id"], set()).add(r["granularity"])
    assert len(pairs) == 2 and all(g == {"Mask Level", "Contour Level"} for g in pairs.values())
    for r in records:
        source_mask = masks[r["category"]]
        drawn = decode(images[r["index"]])
        changed = np.any(drawn != image, axis=2)
        if r["granularity"] == "Mask Level":
            iou = (changed & source_mask).sum() / (changed | source_mask).sum()
            assert iou >= 0.99, f"{r['category']}: overlay IoU {iou:.4f}"
            assert r["region"]["mask_area"] == int(source_mask.sum())
        else:  # the outline hugs the mask: its changed pixels sit on the mask's border band
            m8, k9 = source_mask.astype(np.uint8), np.ones((9, 9), np.uint8)
            band = cv2.dilate(m8, k9).astype(bool) & ~cv2.erode(m8, k9).astype(bool)
            assert changed.any() and (changed & ~band).sum() == 0


def convert(root: Path, **options) -> list:
    cls = get_converter("mask_pairs")
    conv = cls("seg", root, cls.Options.model_validate(options))
    return [s for item in conv.discover() for s in conv.load(item)]


def test_values_without_mask_labels_are_str_value(pair) -> None:
    root, _, masks = pair
    (sample,) = convert(root, images="images/*.jpg", masks="masks/{stem}_mask.png")
    assert sample.mask_labels == {}
    assert set(np.unique(sample.label_mask)) == {0, RBC_VALUE, WBC_VALUE}
    assert np.array_equal(sample.label_mask == WBC_VALUE, masks["white blood cell"])
    assert sample.files == (f"images/{STEM}.jpg", f"masks/{STEM}_mask.png")


def test_rgb_mask_with_colors(pair) -> None:
    root, _, masks = pair
    rgb = np.zeros((*masks["red blood cell"].shape, 3), np.uint8)
    rgb[masks["white blood cell"]] = (255, 0, 0)
    rgb[masks["red blood cell"]] = (0, 255, 0)
    cv2.imwrite(str(root / "masks" / f"{STEM}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    colors = {"#ff0000": "WBC", "#00FF00": "RBC"}
    (sample,) = convert(root, images="images/*.jpg", masks="masks/{stem}.png", colors=colors)
    from gmai_build.slicing import label_mask_targets

    targets = label_mask_targets(sample.label_mask, sample.mask_labels)
    assert np.array_equal(targets["WBC"], masks["white blood cell"])
    assert np.array_equal(targets["RBC"], masks["red blood cell"])
    with pytest.raises(BuildError, match="colour not in options.colors"):
        convert(root, images="images/*.jpg", masks="masks/{stem}.png", colors={"#ff0000": "WBC"})
    with pytest.raises(BuildError, match="give options.colors"):
        convert(root, images="images/*.jpg", masks="masks/{stem}.png")


def test_size_mismatch_names_both_files(pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = pair
    sources = write_config(tmp_path, root, OPTIONS)
    out = tmp_path / "out"
    args = ["--sources", str(sources), "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    mask = root / "masks" / f"{STEM}_mask.png"
    cv2.imwrite(str(mask), cv2.resize(cv2.imread(str(mask), cv2.IMREAD_UNCHANGED), (320, 240),
                                      interpolation=cv2.INTER_NEAREST))
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "source 'seg'" in err and f"masks/{STEM}_mask.png" in err and f"images/{STEM}.jpg" in err
    assert "320x240" in err and "640x480" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_missing_mask(pair) -> None:
    root, _, _ = pair
    (root / "masks" / f"{STEM}_mask.png").unlink()
    with pytest.raises(BuildError, match="no mask for this image"):
        convert(root, **OPTIONS)
    assert convert(root, images="images/*.jpg", masks="masks/{stem}_mask.png", missing_mask="skip") == []


def test_lossy_mask_with_threshold(pair) -> None:
    root, _, masks = pair
    binary = (masks["white blood cell"] * 255).astype(np.uint8)
    cv2.imwrite(str(root / "masks" / f"{STEM}_mask.jpg"), binary, [cv2.IMWRITE_JPEG_QUALITY, 90])
    (sample,) = convert(root, images="images/*.jpg", masks="masks/{stem}_mask.jpg", threshold=127,
                        mask_labels={1: "WBC"})
    assert set(np.unique(sample.label_mask)) == {0, 1} and sample.mask_labels == {1: "WBC"}
    got = sample.label_mask == 1
    iou = (got & masks["white blood cell"]).sum() / (got | masks["white blood cell"]).sum()
    assert iou >= 0.99
