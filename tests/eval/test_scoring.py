"""Scores checked by hand on a small TSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import png_b64, write_tsv
from gmai_eval.cli import main
from gmai_eval.runner import best_records, prediction_files
from gmai_eval.scoring import bar_label, collect, summarize, wilson_ci

COLS = ["index", "question", "A", "B", "C", "answer", "category", "clinical VQA task",
        "department", "perceptual granularity", "modality", "source", "image"]


def rows() -> list[dict]:
    # (answer, task, department, granularity, modality, source, category)
    spec = [
        ("A", "DD", "Oncology", "Image Level", "CT", "s1", "tumour"),
        ("A", "DD", "Oncology", "Image Level", "CT", "s1", "tumour"),
        ("B", "DD", "", "Mask Level", "MRI", "s2", "cyst"),
        ("B", "OR", "", "Mask Level", "MRI", "s2", "cyst"),
        ("C", "OR", "Urology", "Box Level", "CT", "s1", "kidney"),
        ("A", "OR", "Urology", "Box Level", "X-ray", "s2", "tumour"),
    ]
    return [{"index": i + 1, "question": f"q{i}", "A": "tumour", "B": "cyst", "C": "kidney",
             "answer": a, "category": cat, "clinical VQA task": t, "department": d,
             "perceptual granularity": g, "modality": m, "source": s, "image": png_b64(i)}
            for i, (a, t, d, g, m, s, cat) in enumerate(spec)]


def test_first_baseline_scores_by_hand(tmp_path: Path) -> None:
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows(), COLS)
    assert main(["--data", str(data), "--model", "first", "--out", str(tmp_path / "r")]) == 0
    res = json.loads((tmp_path / "r/first/toy_VAL/scores.json").read_text())
    # 'first' answers A: correct on items 1, 2, 6 -> 3/6.
    assert res["accuracy"] == pytest.approx(50.0)
    g = res["groups"]
    acc = {k: {v: s["accuracy"] for v, s in d.items()} for k, d in g.items()}
    assert acc["clinical VQA task"] == pytest.approx({"DD": 200 / 3, "OR": 100 / 3})
    assert acc["department"] == pytest.approx({"Oncology": 100.0, "(none)": 0.0,
                                               "Urology": 50.0})
    assert acc["perceptual granularity"] == pytest.approx(
        {"Image Level": 100.0, "Mask Level": 0.0, "Box Level": 50.0})
    assert acc["modality"] == pytest.approx({"CT": 200 / 3, "MRI": 0.0, "X-ray": 100.0})
    assert acc["source"] == pytest.approx({"s1": 200 / 3, "s2": 100 / 3})
    assert acc["category"] == pytest.approx({"tumour": 100.0, "cyst": 0.0, "kidney": 0.0})
    assert g["department"]["(none)"]["n"] == 2
    assert res["methods"] == {"baseline": 6}
    lo, hi = res["ci95"]
    assert 0 <= lo <= 50 <= hi <= 100
    out = tmp_path / "r/first/toy_VAL"
    for name in ("scores.csv", "scores.md", "accuracy_by_clinical_VQA_task.png",
                 "accuracy_by_department.png", "accuracy_by_perceptual_granularity.png",
                 "accuracy_by_modality.png"):
        assert (out / name).stat().st_size > 0
    assert "| (none) | 2 | 0 | 0.00 | 0.00 | 65.76 |" in (out / "scores.md").read_text()


def test_no_source_column_skips_group(tmp_path: Path) -> None:
    cols = [c for c in COLS if c != "source"]
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows(), cols)
    main(["--data", str(data), "--model", "first", "--out", str(tmp_path / "r")])
    df = collect(data, best_records(prediction_files(tmp_path / "r/first/toy_VAL")))
    assert "source" not in set(summarize(df)["group"])


def test_wilson_interval_never_collapses() -> None:
    lo, hi = wilson_ci(4, 0)
    assert lo == 0.0 and hi == pytest.approx(0.4899, abs=1e-4)  # 0/4: 0-49%, not 0-0
    lo, hi = wilson_ci(4, 4)
    assert lo == pytest.approx(0.5101, abs=1e-4) and hi == 1.0
    lo, hi = wilson_ci(200, 120)  # textbook value for 60% of 200: 53.1-66.6%
    assert (lo, hi) == pytest.approx((0.5309, 0.6654), abs=1e-4)


def test_test_split_with_key_and_compare(tmp_path: Path) -> None:
    data_rows = rows()
    key = tmp_path / "toy_TEST_key.csv"
    key.write_text("index,answer\n" + "".join(f"{r['index']},{r['answer']}\n"
                                               for r in data_rows))
    for r in data_rows:
        del r["answer"]
    data = write_tsv(tmp_path / "toy_TEST.tsv", data_rows, [c for c in COLS if c != "answer"])
    out = tmp_path / "r"
    assert main(["--data", str(data), "--answers", str(key), "--model", "first",
                 "--model", "most-frequent-letter", "--model", "random?seed=3",
                 "--out", str(out)]) == 0
    first = json.loads((out / "first/toy_TEST/scores.json").read_text())
    assert first["accuracy"] == pytest.approx(50.0)
    # Most frequent answer in the key is A (3 of 6), so it equals 'first' here.
    mfl = json.loads((out / "most-frequent-letter/toy_TEST/scores.json").read_text())
    assert mfl["accuracy"] == pytest.approx(50.0)
    table = (out / "comparison/comparison.md").read_text()
    assert "first [toy_TEST]" in table and "random-seed3 [toy_TEST]" in table
    assert main(["compare", str(out), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp/comparison.csv").exists()


def test_val_and_test_with_key_in_one_comparison(tmp_path: Path) -> None:
    val_rows, test_rows = rows(), rows()
    val = write_tsv(tmp_path / "toy_VAL.tsv", val_rows, COLS)
    key = tmp_path / "toy_TEST_answers.tsv"
    key.write_text("index\tanswer\n" + "".join(f"{r['index']}\t{r['answer']}\n"
                                              for r in test_rows))
    test = write_tsv(tmp_path / "toy_TEST.tsv", test_rows, [c for c in COLS if c != "answer"])
    out = tmp_path / "r"
    assert main(["--data", str(val), "--answers", "-", "--data", str(test), "--answers",
                 str(key), "--model", "first", "--model", "random", "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison/comparison.csv")
    assert {"first [toy_VAL]", "first [toy_TEST]", "random [toy_VAL]",
            "random [toy_TEST]"} <= set(table.columns)
    overall = table[table["group"] == "overall"].iloc[0]
    assert overall["first [toy_VAL]"] == pytest.approx(50.0)
    assert overall["first [toy_TEST]"] == pytest.approx(50.0)
    overview = pd.read_csv(out / "comparison/overview.csv")
    assert list(overview["model"]) == ["first", "random"]
    assert overview.loc[0, "toy_TEST"].startswith("50.00 [18.76, 81.24] n=6")


def test_each_bar_is_labelled_with_value_and_n(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.axes

    texts: list[str] = []
    real = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, *a, **k: texts.append(s) or real(self, x, y, s,
                                                                               *a, **k))
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows(), COLS)
    assert main(["--data", str(data), "--model", "first", "--out", str(tmp_path / "r")]) == 0
    # granularity: Image Level 2/2, Mask Level 0/2, Box Level 1/2 (see the first test)
    for label in ("100.0% (n=2)", "0.0% (n=2)", "50.0% (n=2)"):
        assert label in texts
    assert bar_label(0.5, 8, "fraction") == "0.500 (n=8)"
