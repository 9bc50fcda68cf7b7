"""Pipeline invariants: the render rule changes work, not results; parallel == serial."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_manifest, realdata, sha256, write_yaml


def _bccd_config(tmp_path: Path, cap: int) -> Path:
    return write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "BCCD", "per_label_cap": cap},
        "sources": [{
            "name": "bccd", "format": "voc", "root": str(realdata("voc_bccd")),
            "modality": "Microscopy", "label_map": "bccd", "license": "MIT",
            "citation": "BCCD Dataset, Shenggan, 2017", "identifying_paths": False,
        }],
    })


@pytest.mark.parametrize("cap", [3, 40])
def test_skipping_draws_gives_the_same_build(tmp_path: Path, monkeypatch, cap: int) -> None:
    from gmai_build import pipeline
    from gmai_build.config import load_config
    from gmai_build.selection import RenderRule

    cfg = load_config(_bccd_config(tmp_path, cap))
    pipeline.build(cfg, tmp_path / "lazy", workers=2, progress=False, log=lambda s: None)
    drawn: list[int] = []
    original = RenderRule.keep

    def keep_all(self, *args) -> bool:
        drawn.append(original(self, *args))
        return True

    monkeypatch.setattr(RenderRule, "keep", keep_all)
    pipeline.build(cfg, tmp_path / "eager", workers=1, progress=False, log=lambda s: None)
    for name in ("BCCD_VAL.tsv", "BCCD_TEST.tsv", "manifest.jsonl"):
        assert sha256(tmp_path / "lazy" / name) == sha256(tmp_path / "eager" / name), name
    # The rule would have skipped most draws: each label keeps only `cap` boxes.
    if cap == 3:
        assert drawn.count(False) > 0.8 * len(drawn)
    labels = [r["category"] for r in read_manifest(tmp_path / "lazy")]
    assert max(labels.count(x) for x in set(labels)) <= cap


def test_max_side_downscales_image_and_boxes_together(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    import numpy as np
    from helpers import decode_image, read_tsv, run_build

    cfg = _bccd_config(tmp_path, 5)
    text = cfg.read_text().replace("  label_map: bccd", "  label_map: bccd\n  max_side: 320")
    cfg.write_text(text)
    assert run_build(cfg, tmp_path / "out") == 0
    images = {}
    for split in ("VAL", "TEST"):
        df = read_tsv(tmp_path / "out" / f"BCCD_{split}.tsv")
        images.update(dict(zip(df["index"], df["image"])))
    root = realdata("voc_bccd")
    for r in read_manifest(tmp_path / "out"):
        img = decode_image(images[r["index"]])
        assert img.shape[:2] == (240, 320)  # 640 x 480 halved
        assert r["region"]["max_side_scale"] == [0.5, 0.5]
        # The recorded box is the XML box (0-based, half-open) halved.
        xml = ET.parse(root / "Annotations" / (Path(r["files"][0]).stem + ".xml"))
        boxes = [[(float(o.findtext(f"bndbox/{k}")) - d) * 0.5 for k, d in
                  (("xmin", 1), ("ymin", 1), ("xmax", 0), ("ymax", 0))]
                 for o in xml.findall("object") if o.findtext("name") == r["raw_label"]]
        assert any(np.allclose(b, r["region"]["box"], atol=0.01) for b in boxes)
        x0, y0, x1, y1 = (round(v) for v in r["region"]["box"])
        red = (img[:, :, 0] == 255) & (img[:, :, 1] == 0) & (img[:, :, 2] == 0)
        assert red[y0, x0:x1].mean() > 0.9 and red[y0:y1, x0].mean() > 0.9
