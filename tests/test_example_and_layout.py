"""The README's first command, and the install layout a user relies on."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from helpers import REPO, read_manifest, read_tsv, sha256


def test_readme_example_builds_twice_identically(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "gmai_build.cli", "--sources",
             str(REPO / "examples" / "sources.yaml"), "--out", str(out), "--no-progress"],
            capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("GMAI-example: 32 questions"), proc.stdout
        outs.append(out)
    for f in ("GMAI-example_VAL.tsv", "GMAI-example_TEST.tsv", "manifest.jsonl", "build.json"):
        assert sha256(outs[0] / f) == sha256(outs[1] / f)
    manifest = read_manifest(outs[0])
    assert {r["source"] for r in manifest} == {"fundus-laterality", "fundus-findings"}
    assert {r["category"] for r in manifest} == {
        "oculus sinister", "oculus dexter", "microaneurysms", "normal fundus"}
    # A crop and its mirror image share a group, hence a split.
    groups: dict[str, set[str]] = {}
    for r in manifest:
        groups.setdefault((r["source"], r["group"]), set()).add(r["split"])
    assert all(len(v) == 1 for v in groups.values())
    test = read_tsv(outs[0] / "GMAI-example_TEST.tsv")
    assert (test["modality"] == "Fundus Photography").all()


def test_import_names_do_not_shadow_common_packages() -> None:
    import gmai_build
    import gmai_eval

    assert Path(gmai_build.__file__).parent.name in ("builder", "gmai_build")
    assert Path(gmai_eval.__file__).parent.name in ("evaluate", "gmai_eval")
    for name in ("builder", "evaluate"):
        spec = importlib.util.find_spec(name)
        # If something named so is importable, it is not this project's code.
        assert spec is None or "gmai" not in str(spec.origin)


def test_console_scripts_answer_help() -> None:
    for module in ("gmai_build.cli", "gmai_eval.cli"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                              text=True)
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr
