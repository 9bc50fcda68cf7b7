"""Segmentation targets: mask and contour questions in pairs; boxes from mask components."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import decode_image, read_manifest, read_tsv, realdata, run_build, write_yaml


def _spleen(tmp_path: Path, **extra) -> Path:
    cfg = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "SP"},
        "sources": [{
            "name": "msd_spleen", "format": "msd", "root": str(realdata("msd_spleen")),
            "modality": "CT", "label_map": "msd_spleen", "license": "CC-BY-SA 4.0",
            "citation": "Antonelli M. et al. The Medical Segmentation Decathlon. Nat Commun 2022",
            "intensity": {"window": "soft_tissue"}, "slicing": {"per_label": 3}, **extra,
        }],
    })
    out = tmp_path / "out"
    assert run_build(cfg, out) == 0
    return out


def test_mask_and_contour_share_options_and_answer(tmp_path: Path) -> None:
    manifest = read_manifest(_spleen(tmp_path))
    pairs: dict[str, dict[str, dict]] = {}
    for r in manifest:
        pairs.setdefault(r["pair_id"], {})[r["granularity"]] = r
    assert len(pairs) == 3  # per_label: 3 slices
    for pair in pairs.values():
        assert set(pair) == {"Mask Level", "Contour Level"}
        mask, contour = pair["Mask Level"], pair["Contour Level"]
        assert mask["options"] == contour["options"] and mask["answer"] == contour["answer"]
        assert mask["slice_index"] == contour["slice_index"] and mask["split"] == contour["split"]
        assert mask["category"] == "spleen" and mask["original_task"] == "SEG_3D"
        # Distractors: other abdominal organs from the vocabulary (this build has one label).
        assert len(mask["options"]) >= 2 and "spleen" in mask["options"]
        assert not any("splen" in o for o in mask["options"] if o != "spleen")


def test_boxes_from_mask_components(tmp_path: Path) -> None:
    out = _spleen(tmp_path, boxes_from_masks={"min_area": 20})
    everything = read_manifest(out)
    masks = {r["sample_id"]: r for r in everything if r["granularity"] == "Mask Level"}
    manifest = [r for r in everything if r["granularity"] == "Box Level"]
    assert manifest
    rows = {}
    for split in ("VAL", "TEST"):
        path = out / f"SP_{split}.tsv"
        df = read_tsv(path)
        rows.update({int(i): img for i, img in zip(df["index"], df["image"])})
    for r in manifest:
        x0, y0, x1, y1 = r["region"]["box"]
        img = decode_image(rows[r["index"]])
        red = (img[:, :, 0] == 255) & (img[:, :, 1] == 0) & (img[:, :, 2] == 0)
        ys, xs = np.nonzero(red)
        # The drawn rectangle's outer edge is the component's bounding box.
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert r["region"]["component_area"] >= 20
        # The box is the mask's bounding box on the same slice (the spleen is one component).
        mask = masks[r["sample_id"]]
        assert mask["slice_index"] == r["slice_index"]
        assert mask["region"]["mask_bbox"] == [x0, y0, x1, y1]
        assert r["region"]["component_area"] == mask["region"]["mask_area"]
