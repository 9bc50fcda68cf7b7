"""A built benchmark is scored by gmai-eval unchanged: build -> TSV -> predictions -> scores."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from helpers import REPO, read_manifest, run_build


def test_example_build_scored_with_key_and_per_source(tmp_path: Path) -> None:
    from gmai_eval.cli import main as eval_main

    out = tmp_path / "build"
    assert run_build(REPO / "examples" / "sources.yaml", out) == 0
    res = tmp_path / "results"
    code = eval_main(["--data", str(out / "GMAI-example_TEST.tsv"),
                      "--answers", str(out / "GMAI-example_TEST_answers.tsv"),
                      "--model", "first", "--out", str(res)])
    assert code == 0
    scores = pd.read_csv(res / "first" / "GMAI-example_TEST" / "scores.csv")
    manifest = [r for r in read_manifest(out) if r["split"] == "TEST"]
    # "first" always answers A: accuracy per source is the share of A answers, by hand.
    for source in {r["source"] for r in manifest}:
        rows = [r for r in manifest if r["source"] == source]
        expected = 100 * sum(r["answer"] == "A" for r in rows) / len(rows)
        got = scores[(scores["group"] == "source") & (scores["value"] == source)]
        assert len(got) == 1 and abs(float(got["accuracy"].iloc[0]) - expected) < 1e-9
        assert int(got["n"].iloc[0]) == len(rows)
    overall = scores[scores["group"] == "overall"]["accuracy"].iloc[0]
    assert abs(overall - 100 * sum(r["answer"] == "A" for r in manifest) / len(manifest)) < 1e-9
    preds = [json.loads(x) for x in
             (res / "first" / "GMAI-example_TEST" / "predictions.jsonl").read_text().splitlines()]
    assert {p["index"] for p in preds} == {r["index"] for r in manifest}
    # The TEST TSV's category is no label, but the key holds the true one: scores per category
    # (and per department, which TEST may leave empty) are the key's.
    for label in {r["category"] for r in manifest}:
        rows = [r for r in manifest if r["category"] == label]
        expected = 100 * sum(r["answer"] == "A" for r in rows) / len(rows)
        got = scores[(scores["group"] == "category") & (scores["value"] == label)]
        assert len(got) == 1 and abs(float(got["accuracy"].iloc[0]) - expected) < 1e-9
    assert set(scores[scores["group"] == "department"]["value"]) == {
        r["department"] or "(none)" for r in manifest}
