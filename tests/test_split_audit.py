"""VAL/TEST split (share, stratification, near duplicates) and ``gmai-build audit``."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from gmai_build.audit import AuditQuestion, audit
from gmai_build.cli import main
from gmai_build.split import TEST, VAL, assign_splits
from helpers import REPO, read_manifest, realdata, run_build, write_yaml
from test_nothing_lost import CITE, noise_png


@pytest.mark.parametrize("seed", range(30))
def test_val_share_within_3_points_and_every_source_with_5_groups_in_both(seed: int) -> None:
    rng = random.Random(seed)
    groups = [(f"src{s}", f"g{g}") for s in range(rng.randint(1, 12))
              for g in range(rng.choice([1, 2, 3, 5, 8, 40, 200]))]
    if len(groups) < 20:
        groups += [("big", f"g{g}") for g in range(20)]
    frac = rng.choice([0.1, 0.18, 0.25, 0.5])
    plan = assign_splits(groups, frac)
    sizes = {src: sum(s == src for s, _ in groups) for src, _ in groups}
    floors = sum(min(max(int(frac * n), 1), n - 1) if n >= 5 else int(frac * n)
                 for n in sizes.values())
    if floors > (frac + 0.03) * len(groups):  # stratification wins: the minimum, no more
        assert plan.val_share() * len(groups) == floors
    else:
        assert abs(100 * plan.val_share() - 100 * frac) <= 3, (len(groups), plan.val_share())
    by_source: dict[str, set[str]] = {}
    for (src, _), split in plan.splits.items():
        by_source.setdefault(src, set()).add(split)
    for src, splits in by_source.items():
        if sum(s == src for s, _ in groups) >= 5:
            assert splits == {VAL, TEST}, src
    # Deterministic and independent of the order the groups come in.
    assert assign_splits(list(reversed(groups)), frac).splits == plan.splits


def test_previous_splits_are_kept_and_linked_groups_share_one() -> None:
    groups = [("a", f"g{i}") for i in range(30)]
    first = assign_splits(groups, 0.2)
    more = groups + [("a", f"new{i}") for i in range(10)]
    second = assign_splits(more, 0.2, previous=first.splits)
    assert all(second.splits[g] == first.splits[g] for g in groups)
    val = next(g for g in groups if first.splits[g] == VAL)
    test = next(g for g in groups if first.splits[g] == TEST)
    fresh = assign_splits(groups, 0.2, links=[(val, test)])
    assert fresh.splits[val] == fresh.splits[test]
    assert sorted([val, test]) in fresh.together


def test_duplicate_images_across_sources_land_in_one_split(tmp_path: Path) -> None:
    """One picture in two datasets (redistributed copies): its groups move together, listed."""
    for i in range(12):
        noise_png(tmp_path / "a" / "normal" / f"p{i}.png", i)
        noise_png(tmp_path / "b" / "normal" / f"q{i}.png", 1000 + i)
        noise_png(tmp_path / "a" / "pneumonia" / f"r{i}.png", 2000 + i)
        noise_png(tmp_path / "b" / "pneumonia" / f"s{i}.png", 3000 + i)
    for i in range(6):  # b holds copies of six of a's pictures: 3 exact, 3 brightened + re-encoded
        src, dst = tmp_path / "a" / "normal" / f"p{i}.png", tmp_path / "b" / "normal" / f"c{i}.png"
        if i < 3:
            shutil.copy(src, dst)
        else:
            img = cv2.imread(str(src)).astype(np.int16) + 6
            cv2.imwrite(str(dst.with_suffix(".jpg")), np.clip(img, 0, 255).astype(np.uint8))
    src = {"format": "folder_per_class", "modality": "X-ray",
           "label_map": "pneumoniamnist_names.yaml", **CITE,
           "identifying_paths": False}  # files recorded as relative paths (ids stay tokens)
    cfg = write_yaml(tmp_path / "s.yaml", {"build": {"name": "D", "val_fraction": 0.3},
                                           "sources": [{"name": "a", "root": "a", **src},
                                                       {"name": "b", "root": "b", **src}]})
    assert run_build(cfg, tmp_path / "out") == 0
    records = read_manifest(tmp_path / "out")
    split_of_sample = {(r["source"], r["files"][0]): r["split"] for r in records}
    copies = [f"normal/c{i}.png" for i in range(3)] + [f"normal/c{i}.jpg" for i in range(3, 6)]
    for i, copy in enumerate(copies):
        assert split_of_sample[("a", f"normal/p{i}.png")] == split_of_sample[("b", copy)]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["split"]
    sample = {r["index"]: r["files"][0] for r in records}
    pairs = {(sample[p["a"]], sample[p["b"]]) for p in summary["near_duplicates"]}
    assert {(f"normal/p{i}.png", copy) for i, copy in enumerate(copies)} <= pairs
    assert "p0.png" not in (tmp_path / "out" / "summary.md").read_text()  # indices, not names
    assert len(summary["kept_together"]) >= 6
    assert abs(summary["val_share_groups"] - 30) <= 3
    report = tmp_path / "audit.json"
    main(["audit", str(tmp_path / "out"), "--json", str(report)])
    assert json.loads(report.read_text())["near_duplicates"] == []


def q(i: int, answer: str, options: list[str], split: str = "TEST", **kw) -> AuditQuestion:
    return AuditQuestion(index=str(i), split=split, question="This is a CT image. Which?",
                         options=options, answer=answer, **kw)


def test_audit_fails_an_always_last_benchmark_and_passes_a_balanced_one() -> None:
    opts = ["liver", "spleen", "kidney"]
    biased = [q(i, "C", opts) for i in range(120)]
    report = audit(biased)
    assert any("'always last' scores 100.0% on 120 questions" in f for f in report.failures)
    assert any("answer C in 100.0%" in f for f in report.failures)
    balanced = [q(i, "ABC"[i % 3], [f"lab{(i + k) % 7}x" for k in range(3)]) for i in range(120)]
    assert audit(balanced).failures == []
    few = [q(i, "C", opts) for i in range(99)]  # below 100 questions: reported, not failed
    assert audit(few).failures == []


def test_audit_finds_length_leaks_column_leaks_related_options_and_cross_split_twins() -> None:
    long_wrong = [q(i, "AB"[i % 2], ["liver", "vesicles and punctate cytosolic patterns"][::1 - 2 * (i % 2)])
                  for i in range(100)]
    assert any("'shortest option'" in f for f in audit(long_wrong).failures)
    named = [q(i, "AB"[i % 2], ["liver", "spleen"], columns={"category": ["liver", "spleen"][i % 2]})
             for i in range(100)]
    assert any("column 'category'" in f for f in audit(named).failures)
    related = [q(0, "A", ["red blood cell", "erythrocytes"]), q(1, "B", ["lung", "upper lobe"])]
    report = audit(related)
    assert {(v["a"], v["relation"]) for v in report.violations} == {
        ("red blood cell", "synonym"), ("lung", "whole of")}
    twins = [q(0, "A", ["a", "b"], split="VAL", phash="ffff0000ffff0000", group="s/1"),
             q(1, "A", ["a", "b"], split="TEST", phash="ffff0000ffff0001", group="s/2")]
    assert audit(twins).near_duplicates[0]["distance"] == 1


def test_learnt_label_prior_is_reported_and_gated_only_when_strict() -> None:
    """Options filled from the vocabulary are never answers: a solver trained on VAL learns it."""
    qs = [q(i, "AB"[i % 2], [["liver", "cecum"], ["aorta", "liver"]][i % 2],
            split="VAL" if i < 100 else "TEST") for i in range(200)]
    report = audit(qs)
    prior = next(b for b in report.baselines["TEST"] if b.name.startswith("answer prior"))
    assert prior.accuracy == 100.0 and report.failures == []
    assert any("answer prior" in f for f in audit(qs, strict=True).failures)


def test_audit_command_on_a_built_benchmark(tmp_path: Path, capsys) -> None:
    out = tmp_path / "build"
    assert run_build(REPO / "examples" / "sources.yaml", out) == 0
    code = main(["audit", str(out), "--min-questions", "100000"])
    text = capsys.readouterr().out
    assert code == 0, text
    for needle in ("always last", "longest option", "most similar to question",
                   "Answer letters per option count", "Near-duplicate images", "Related options"):
        assert needle in text
    test = next(out.glob("*_TEST.tsv"))
    key = next(out.glob("*_TEST_answers.tsv"))
    assert main(["audit", str(test)]) == 1  # TEST alone has no answers: nothing to audit
    assert "give --answers KEY" in capsys.readouterr().err
    assert main(["audit", str(test), "--answers", str(key), "--min-questions", "100000"]) == 0
    assert main(["audit", str(tmp_path / "nope")]) == 1
    assert "no such build folder" in capsys.readouterr().err


def vlmevalkit_group_tables(df: pd.DataFrame) -> dict[str, dict]:
    """VLMEvalKit's grouping for GMAI-MMBench, as in vlmeval/dataset/image_mcq.py
    (GMAIMMBenchDataset.report_acc_by_groups) and utils/multiple_choice.py (report_acc):
    lower-cased columns, ``sorted(set(df[group]))`` for category, NaN -> 'None' for the rest."""
    df = df.rename(columns=str.lower)
    tables = {}
    abilities = sorted(set(df["category"]))  # report_acc: a NaN here would raise TypeError
    tables["category"] = {ab: df[df["category"] == ab]["hit"].mean() for ab in abilities}
    for group in ("clinical vqa task", "department", "perceptual granularity"):
        values = ["None" if isinstance(v, float) and pd.isna(v) else v for v in set(df[group])]
        tables[group] = {v: df[df[group] == v]["hit"].mean() for v in sorted(values)}
    return tables


def test_realdata_example_passes_the_audit(tmp_path: Path, monkeypatch, capsys) -> None:
    """The issue's measurement: letters per option count, options per granularity, VAL share,
    TEST columns, blind baselines at chance."""
    monkeypatch.setenv("GMAI_REALDATA", str(realdata()))
    out = tmp_path / "out"
    assert run_build(REPO / "examples" / "realdata_sources.yaml", out, workers=2) == 0
    capsys.readouterr()
    assert main(["audit", str(out)]) == 0, capsys.readouterr().out
    records = read_manifest(out)
    local = [len(r["options"]) for r in records if r["granularity"] != "Image Level"]
    assert sum(local) / len(local) >= 3.4
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["split"]["val_share_groups"] - 18) <= 3
    for src, n in summary["split"]["groups_per_source"].items():
        if n["VAL"] + n["TEST"] >= 5:
            assert n["VAL"] and n["TEST"], src
    test = pd.read_csv(next(out.glob("*_TEST.tsv")), sep="\t")
    key = pd.read_csv(next(out.glob("*_TEST_answers.tsv")), sep="\t")
    options = test[list("ABCDE")].astype(str).to_numpy()
    for column in test.columns.drop(["index", "question", "image", *"ABCDE"]):
        values = test[column].astype(str).to_numpy()
        assert not any(v in row for v, row in zip(values, options)), column
    truth = {r["index"]: r["category"] for r in records}
    assert all(truth[i] == c for i, c in zip(key["index"], key["category"]))
    assert np.mean([t != c for t, c in zip(test["category"], key["category"])]) == 1.0
    # VLMEvalKit groups both TSVs (category, task, department, granularity) without crashing.
    for tsv in (next(out.glob("*_VAL.tsv")), next(out.glob("*_TEST.tsv"))):
        df = pd.read_csv(tsv, sep="\t")  # VLMEvalKit's load() for .tsv
        df["hit"] = np.arange(len(df)) % 2
        tables = vlmevalkit_group_tables(df)
        assert all(tables.values())
    assert set(tables["category"]) <= {r["task"] for r in records} | {"(task not shown)"}


def two_sources(tmp_path: Path) -> tuple[dict, dict]:
    for name, seed in (("a", 0), ("b", 5000)):
        for k, cls in enumerate(("normal", "pneumonia")):
            for i in range(15):
                noise_png(tmp_path / name / cls / f"{i}.png", seed + 100 * k + i)
    src = {"format": "folder_per_class", "modality": "X-ray",
           "label_map": "pneumoniamnist_names.yaml", **CITE}
    return {"name": "a", "root": "a", **src}, {"name": "b", "root": "b", **src}


def by_case(out: Path) -> dict[str, tuple]:
    return {r["case_id"]: (r["index"], r["options"], r["answer"], r["split"])
            for r in read_manifest(out)}


def test_source_order_and_added_sources_change_no_other_question(tmp_path: Path) -> None:
    a, b = two_sources(tmp_path)
    ab = write_yaml(tmp_path / "ab.yaml", {"build": {"name": "O"}, "sources": [a, b]})
    ba = write_yaml(tmp_path / "ba.yaml", {"build": {"name": "O"}, "sources": [b, a]})
    only_a = write_yaml(tmp_path / "a.yaml", {"build": {"name": "O"}, "sources": [a]})
    assert run_build(ab, tmp_path / "ab") == 0 and run_build(ba, tmp_path / "ba") == 0
    assert by_case(tmp_path / "ab") == by_case(tmp_path / "ba")  # config order is irrelevant
    # Incremental: build a, then add b into the same folder: a's questions stay exactly.
    assert run_build(only_a, tmp_path / "inc") == 0
    before = by_case(tmp_path / "inc")
    assert run_build(ab, tmp_path / "inc") == 0
    after = by_case(tmp_path / "inc")
    assert len(after) == 2 * len(before)
    assert all(after[k] == v for k, v in before.items())

