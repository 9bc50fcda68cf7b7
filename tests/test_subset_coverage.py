"""`gmai-build subset` by tree branches, and the coverage report of every build."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from gmai_build.cli import main
from gmai_build.coverage import coverage_report, published_nodes
from helpers import manifest_records, read_manifest, record

NAME = "GMAI-realdata"


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_subset_by_department_and_modality(realdata_build: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub"
    assert main(["subset", "--from", str(realdata_build), "--out", str(out),
                 "--department", "hematology", "--department", "Neurosurgery",
                 "--modality", "Microscopy", "--modality", "MRI", "--name", "blood-brain"]) == 0
    full = read_manifest(realdata_build)
    expected = {r["index"] for r in full if r["department"] in ("Hematology", "Neurosurgery")
                and r["modality"] in ("Microscopy", "MRI")}
    assert 0 < len(expected) < len(full)
    assert {r["index"] for r in read_manifest(out)} == expected
    for part in ("VAL", "TEST", "TEST_answers"):
        sub, src = _tsv(out / f"blood-brain_{part}.tsv"), _tsv(realdata_build / f"{NAME}_{part}.tsv")
        assert list(sub.columns) == list(src.columns)  # the build's columns, whatever they are
        kept = src[src["index"].astype(int).isin(expected)].reset_index(drop=True)
        pd.testing.assert_frame_equal(sub, kept)  # rows copied as written, indices preserved
    circ = _tsv(out / "blood-brain_circular_TEST.tsv")
    test_indices = set(_tsv(out / "blood-brain_TEST.tsv")["index"].astype(int))
    assert set(circ["g_index"].astype(int)) == test_indices
    info = json.loads((out / "subset.json").read_text())
    assert info["filters"] == {"department": ["hematology", "Neurosurgery"],
                               "modality": ["Microscopy", "MRI"]}
    assert info["questions"] == len(expected)
    assert "questions ->" in capsys.readouterr().out


def test_subset_label_contains_and_granularity_are_anded(realdata_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub"
    assert main(["subset", "--from", str(realdata_build), "--out", str(out),
                 "--label-contains", "SPLEEN", "--label-contains", "tumor",
                 "--granularity", "Mask Level"]) == 0
    got = read_manifest(out)
    assert got and all(r["granularity"] == "Mask Level" for r in got)
    assert all("spleen" in r["category"] or "tumor" in r["category"] for r in got)
    assert (out / f"{NAME}_subset_VAL.tsv").is_file()


def test_subset_errors_are_clear_and_write_nothing(realdata_build: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub"
    assert main(["subset", "--from", str(realdata_build), "--out", str(out),
                 "--modality", "CTT", "--task", "Counting"]) == 1
    err = capsys.readouterr().err
    assert "--modality 'CTT': not in this build (did you mean 'CT'?)" in err
    assert "--task 'Counting': not in this build" in err and "Traceback" not in err
    assert main(["subset", "--from", str(realdata_build), "--out", str(out),
                 "--modality", "CT", "--source", "bccd"]) == 1
    assert "no question of" in capsys.readouterr().err
    assert main(["subset", "--from", str(tmp_path), "--out", str(out)]) == 1
    assert "manifest.jsonl is missing" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_coverage_report_in_build_output(realdata_build: Path, capsys) -> None:
    report = json.loads((realdata_build / "coverage.json").read_text())
    manifest = read_manifest(realdata_build)
    from gmai_build.taxonomy import load_vocabulary

    assert report == json.loads(json.dumps(coverage_report(manifest_records(realdata_build),
                                                           load_vocabulary())))
    assert sum(c["total"] for c in report["counts"]["label"].values()) == len(manifest)
    assert report["counts"]["modality"]["CT"]["total"] == sum(r["modality"] == "CT" for r in manifest)
    tree = report["published_tree"]
    assert tree["perceptual granularity"] == {"published": 4, "covered": 4, "empty": [],
                                              "outside_published": []}
    tasks = tree["clinical VQA task"]
    assert tasks["published"] == 18 and "Counting" in tasks["empty"]
    assert tasks["covered"] == len({r["task"] for r in manifest})
    cells = tree["clinical VQA task / perceptual granularity"]
    assert cells["published"] == 46 and "Counting / Image Level" in cells["empty"]
    leaves = tree["modality / label"]
    assert leaves["published"] == 810 and "Microscopy / platelet" not in leaves["empty"]
    assert "Microscopy / neutrophil" in leaves["empty"] and "X-ray / normal" in leaves["outside_published"]
    md = (realdata_build / "coverage.md").read_text()
    assert "| clinical VQA task | 3 | 18 | 0 |" in md and "### Empty department nodes" in md


def test_build_prints_the_coverage_table(tmp_path: Path, capsys) -> None:
    from helpers import REPO, run_build

    assert run_build(REPO / "examples" / "sources.yaml", tmp_path / "out") == 0
    out = capsys.readouterr().out
    manifest = read_manifest(tmp_path / "out")
    tasks = len({r["task"] for r in manifest})
    assert (f"  published tree covered: tasks {tasks}/18, departments 1/19, modalities 1/38, "
            f"granularities 1/4, task x granularity cells {tasks}/46, labels 4/810") in out
    from gmai_build.coverage import coverage_lines

    assert "| modality | 1 | 38 | 0 |" in coverage_lines(tmp_path / "out")
    assert len(published_nodes()["modality"]) == 38


@pytest.mark.parametrize("department", ["", "Urology"])
def test_coverage_counts_the_empty_department_as_none(department: str) -> None:
    report = coverage_report([record(department=department)])
    assert list(report["counts"]["department"]) == [department or "(none)"]


def test_a_subset_is_a_build_for_subset_and_preview(realdata_build: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "ct", tmp_path / "ct-mask"
    assert main(["subset", "--from", str(realdata_build), "--out", str(first), "--modality", "CT",
                 "--name", "ct"]) == 0
    assert main(["subset", "--from", str(first), "--out", str(second),
                 "--granularity", "mask level"]) == 0
    got = read_manifest(second)
    assert got and {(r["modality"], r["granularity"]) for r in got} == {("CT", "Mask Level")}
    assert (second / "ct_subset_TEST_answers.tsv").is_file()
    assert main(["preview", str(first), "--out", str(tmp_path / "ct.html")]) == 0
    assert (tmp_path / "ct.html").read_text().count('<article class="card"') == len(read_manifest(first))
