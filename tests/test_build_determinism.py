"""Byte-identical outputs whatever the number of workers: real samples (VOC boxes and a gzip
NIfTI CT) on 1, 2 and 3 local workers, and gzip NIfTI volumes read plane by plane through one
gzip stream (2D sources: test_build_2d.py; the Ray executor: test_executor_ray.py)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from gmai_build.render import decode_png
from helpers import leftovers, published, run_build, sha256, write_yaml

OUTPUTS = ("CT_VAL.tsv", "CT_TEST.tsv", "CT_TEST_answers.tsv", "manifest.jsonl", "summary.json")


def _msd(root: Path, n: int = 4) -> None:
    """Small CT-like volumes (int16 HU) with two organ ellipsoids, in an MSD layout."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(3)
    x, y, z = np.ogrid[:48, :40, :24]
    training = []
    for k in range(n):
        img = rng.normal(40, 20, (48, 40, 24)).astype(np.int16)
        lab = np.zeros((48, 40, 24), np.uint8)
        for value, (cx, cy) in ((1, (15 + k, 20)), (2, (33, 18 + k))):
            inside = ((x - cx) / 9) ** 2 + ((y - cy) / 8) ** 2 + ((z - 12) / 8) ** 2 < 1
            lab[inside] = value
            img[inside] += 60 * value
        name = f"ct_{k}.nii.gz"
        nib.save(nib.Nifti1Image(img, np.diag([0.8, 0.8, 2.0, 1])), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(lab, np.diag([0.8, 0.8, 2.0, 1])), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "training": training}))


def test_nifti_gz_build_identical_on_one_and_two_workers(tmp_path: Path) -> None:
    _msd(tmp_path / "data")
    (tmp_path / "map.yaml").write_text("labels: {liver: liver, spleen: spleen}\n")
    cfg = write_yaml(tmp_path / "sources.yaml", {
        "build": {"name": "CT", "seed": 0, "val_fraction": 0.5},
        "sources": [{"name": "ct", "format": "msd", "root": "data", "modality": "CT",
                     "identifying_paths": False, "min_side": 1, "label_map": "map.yaml",
                     "license": "synthetic", "citation": "test",
                     "slicing": {"per_label": 3}}]})
    assert run_build(cfg, tmp_path / "one", workers=1) == 0
    assert run_build(cfg, tmp_path / "two", workers=2) == 0
    for name in OUTPUTS:
        assert sha256(tmp_path / "one" / name) == sha256(tmp_path / "two" / name), name
    # The planes are the volume's own: a mask question's unmasked pixels are the windowed CT.
    manifest = [json.loads(line) for line in
                (tmp_path / "one" / "manifest.jsonl").read_text().splitlines()]
    assert {r["slice_index"] for r in manifest} > {12}
    frames = pd.concat([pd.read_csv(tmp_path / "one" / f"CT_{s}.tsv", sep="\t") for s in
                        ("VAL", "TEST")])
    by_index = {int(r["index"]): r for r in manifest}
    for _, row in frames.iterrows():
        rec = by_index[int(row["index"])]
        # The checksum (computed in the worker) is the checksum of the published image.
        assert hashlib.sha256(base64.b64decode(row["image"])).hexdigest() == rec["image_sha256"]
        if rec["granularity"] != "Image Level":
            data = np.asanyarray(nib.load(tmp_path / "data" / rec["files"][0]).dataobj)
            plane = data[::-1, ::-1, rec["slice_index"]].T  # LPS axial display (see volumes)
            windowed = np.clip(np.rint((plane.astype(np.float64) - (40 - 200)) / 400 * 255),
                               0, 255)
            rgb = decode_png(base64.b64decode(row["image"]))
            untouched = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])  # not red
            assert untouched.mean() > 0.5
            np.testing.assert_allclose(rgb[..., 1][untouched], windowed[untouched], atol=1)


@pytest.mark.parametrize("workers", [2, 3])
def test_real_data_build_identical_on_one_two_and_three_workers(
        tmp_path: Path, mixed_reference: tuple[Path, Path], workers: int) -> None:
    """Every published file (TSVs, manifest, summaries, build.json, coverage) is the same
    bytes as the one-worker build's, whatever the chunking and the order results arrive in."""
    sources, one = mixed_reference
    assert run_build(sources, tmp_path / "out", workers=workers) == 0
    reference = published(one)
    assert {"MIX_TEST.tsv", "MIX_VAL.tsv", "manifest.jsonl", "build.json", "summary.json",
            "coverage.json"} <= set(reference)
    assert published(tmp_path / "out") == reference
    assert leftovers(tmp_path / "out") == []
