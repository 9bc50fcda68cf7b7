"""examples/realdata_sources.yaml: every medical format on the real samples, in one build."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from helpers import REPO, read_manifest, realdata, run_build


def test_realdata_example_builds_all_formats(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GMAI_REALDATA", str(realdata()))
    out = tmp_path / "out"
    assert run_build(REPO / "examples" / "realdata_sources.yaml", out, workers=2) == 0
    manifest = read_manifest(out)
    by = Counter((r["source"], r["granularity"]) for r in manifest)
    assert by[("pneumoniamnist", "Image Level")] == 60
    for src in ("msd_spleen", "nrrd_brain", "dicom_seg_liver"):
        assert by[(src, "Mask Level")] == by[(src, "Contour Level")] > 0, src
    assert by[("msd_spleen", "Box Level")] > 0 and by[("bccd", "Box Level")] > 0
    assert {r["original_task"] for r in manifest} == {"CLS_2D", "DET_2D", "SEG_3D"}
    # Distractors of local questions come from the build or the same department's vocabulary.
    for r in manifest:
        assert r["category"] in r["options"] and len(set(r["options"])) == len(r["options"])
