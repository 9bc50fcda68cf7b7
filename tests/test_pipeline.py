"""Pipeline invariants: the cap tracker changes work, not results; parallel == serial."""

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
            "citation": "BCCD Dataset, Shenggan, 2017",
        }],
    })


@pytest.mark.parametrize("cap", [3, 40])
def test_skipping_draws_gives_the_same_build(tmp_path: Path, monkeypatch, cap: int) -> None:
    from gmai_build import pipeline
    from gmai_build.config import load_config

    cfg = load_config(_bccd_config(tmp_path, cap))
    pipeline.build(cfg, tmp_path / "lazy", workers=2, progress=False, log=lambda s: None)
    drawn: list[int] = []
    original = pipeline.CapTracker.keep

    def keep_all(self, *args) -> bool:
        drawn.append(original(self, *args))
        return True

    monkeypatch.setattr(pipeline.CapTracker, "keep", keep_all)
    pipeline.build(cfg, tmp_path / "eager", workers=1, progress=False, log=lambda s: None)
    for name in ("BCCD_VAL.tsv", "BCCD_TEST.tsv", "manifest.jsonl"):
        assert sha256(tmp_path / "lazy" / name) == sha256(tmp_path / "eager" / name), name
    # The tracker would have skipped most draws: each label keeps only `cap` boxes.
    if cap == 3:
        assert drawn.count(False) > 0.8 * len(drawn)
    labels = [r["category"] for r in read_manifest(tmp_path / "lazy")]
    assert max(labels.count(x) for x in set(labels)) <= cap
