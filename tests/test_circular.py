"""CircularEval: rotated copies in VLMEvalKit's conventions, and circular accuracy in gmai-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from gmai_build.circular import OFFSET, rotate, write_circular
from gmai_build.errors import BuildError
from helpers import REPO, read_manifest, run_build, sha256

LETTERS = "ABCDE"


def _options(row: pd.Series) -> list[str]:
    return [row[c] for c in LETTERS if isinstance(row[c], str)]


def test_rotate_moves_the_answer_with_its_option() -> None:
    assert rotate(["a", "b", "c", "d"], "A", 1) == (["b", "c", "d", "a"], "D")
    assert rotate(["a", "b", "c"], "C", 2) == (["c", "a", "b"], "A")
    assert rotate(["a", "b"], "B", 0) == (["a", "b"], "B")


def test_circular_build_follows_vlmevalkit_conventions(realdata_build: Path) -> None:
    name = "GMAI-realdata"
    manifest = {r["index"]: r for r in read_manifest(realdata_build)}
    val = pd.read_csv(realdata_build / f"{name}_circular_VAL.tsv", sep="\t")
    vanilla = pd.read_csv(realdata_build / f"{name}_VAL.tsv", sep="\t").set_index("index")
    assert list(val.columns) == [*vanilla.reset_index().columns, "g_index"]
    assert (val["g_index"] == val["index"] % OFFSET).all()  # VLMEvalKit's default grouping
    for g, group in val.groupby("g_index"):
        original = vanilla.loc[g]
        options = _options(original)
        assert sorted(group["index"]) == [g + k * OFFSET for k in range(len(options))]
        answer_text = options[LETTERS.index(original["answer"])]
        for _, row in group.iterrows():
            k = row["index"] // OFFSET
            assert _options(row) == options[k:] + options[:k]
            assert _options(row)[LETTERS.index(row["answer"])] == answer_text
            assert row["image"] == original["image"] and row["question"] == original["question"]
            assert manifest[g]["options"] == options
    # TEST: rotations without answers; the key holds the moved letters.
    test = pd.read_csv(realdata_build / f"{name}_circular_TEST.tsv", sep="\t")
    key = pd.read_csv(realdata_build / f"{name}_circular_TEST_answers.tsv", sep="\t")
    assert "answer" not in test.columns and sorted(test["index"]) == sorted(key["index"])
    by_index = test.set_index("index")
    for _, row in key.iterrows():
        options = _options(by_index.loc[row["index"]])
        g = row["g_index"]
        assert options[LETTERS.index(row["answer"])] == manifest[g]["category"]
    n_test = sum(len(r["options"]) for r in manifest.values() if r["split"] == "TEST")
    assert len(test) == n_test


def test_vanilla_outputs_do_not_change_and_stale_copies_go(example_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    assert run_build(REPO / "examples" / "sources.yaml", out) == 0
    for f in ("GMAI-example_VAL.tsv", "GMAI-example_TEST.tsv", "GMAI-example_TEST_answers.tsv"):
        assert sha256(out / f) == sha256(example_build / f)
    assert not list(out.glob("*circular*"))
    from gmai_build.cli import main

    assert main(["--sources", str(REPO / "examples" / "sources.yaml"), "--out", str(out),
                 "--no-progress", "--circular"]) == 0
    assert len(list(out.glob("*_circular_*.tsv"))) == 3
    assert run_build(REPO / "examples" / "sources.yaml", out) == 0  # flag off again
    assert not list(out.glob("*circular*"))


def test_indices_past_the_rotation_offset_are_a_clear_error(tmp_path: Path) -> None:
    for part, header, row in (("VAL", "index\tquestion\tA\tB\tanswer", f"{OFFSET}\tq\ta\tb\tA"),
                              ("TEST", "index\tquestion\tA\tB", "1\tq\ta\tb"),
                              ("TEST_answers", "index\tanswer", "1\tA")):
        (tmp_path / f"x_{part}.tsv").write_text(f"{header}\n{row}\n")
    with pytest.raises(BuildError, match=r"index 1000000 is not below 1000000"):
        write_circular(tmp_path, "x")


# gmai-eval ------------------------------------------------------------------------------------
def _png_b64(value: int) -> str:
    import base64

    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".png", np.full((8, 8, 3), value * 40, np.uint8))
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _hand_scored(tmp_path: Path) -> tuple[Path, Path]:
    """Three questions (3, 2 and 4 options) with all rotations, and predictions scored by hand:

    g=0: every rotation right                      -> circular hit
    g=1: original right, rotation 1 wrong          -> miss
    g=2: original right, rotations 1-2 right, rotation 3 has no prediction -> miss
    g=7: only a rotation (no original): VLMEvalKit does not score such a group.
    Circular 1/3; vanilla on originals 3/3; vanilla on all 10 rows 8/10 (g=7 included).
    """
    rows, preds = [], []

    def add(index: int, options: list[str], answer: str, pred: str | None, task: str) -> None:
        row = {"index": index, "question": "Which?", "answer": answer, "category": "x",
               "clinical VQA task": task, "image": _png_b64(index % 5)}
        row.update(dict(zip(LETTERS, options)))
        rows.append(row)
        if pred is not None:
            preds.append({"index": index, "prediction": pred, "method": "direct"})

    add(0, ["p", "q", "r"], "B", "B", "Counting")
    add(1000000, ["q", "r", "p"], "A", "A", "Counting")
    add(2000000, ["r", "p", "q"], "C", "C", "Counting")
    add(1, ["s", "t"], "A", "A", "Bone")
    add(1000001, ["t", "s"], "B", "A", "Bone")
    add(2, ["a", "b", "c", "d"], "D", "D", "Bone")
    add(1000002, ["b", "c", "d", "a"], "C", "C", "Bone")
    add(2000002, ["c", "d", "a", "b"], "B", "B", "Bone")
    add(3000002, ["d", "a", "b", "c"], "A", None, "Bone")
    add(1000007, ["y", "z"], "A", "A", "Bone")
    data = tmp_path / "hand_circular_VAL.tsv"
    pd.DataFrame(rows, columns=["index", "question", *LETTERS, "answer", "category",
                                "clinical VQA task", "image"]).to_csv(data, sep="\t", index=False)
    pred_dir = tmp_path / "results" / "hand" / "hand_circular_VAL"
    pred_dir.mkdir(parents=True)
    (pred_dir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return data, pred_dir


def test_gmai_eval_scores_circular_beside_vanilla(tmp_path: Path, capsys) -> None:
    from gmai_eval.cli import main

    data, pred_dir = _hand_scored(tmp_path)
    assert main(["score", "--data", str(data), "--pred", str(pred_dir)]) == 0
    out = capsys.readouterr().out
    assert "circular accuracy 33.33% (n=3 questions, 10 rows) beside vanilla 100.00%" in out
    res = json.loads((pred_dir / "scores_circular.json").read_text())
    assert (res["n"], res["circular_correct"]) == (3, 1)
    assert res["vanilla_accuracy"] == 100.0 and res["vanilla_all_accuracy"] == pytest.approx(80.0)
    bone = res["groups"]["clinical VQA task"]["Bone"]
    assert (bone["n"], bone["circular_correct"], bone["rows"]) == (2, 0, 6)
    assert res["groups"]["clinical VQA task"]["Counting"]["circular_accuracy"] == 100.0
    assert "| overall | 3 | 33.33 | 100.00 | 80.00 |" in (pred_dir / "scores_circular.md").read_text()
    vanilla = json.loads((pred_dir / "scores.json").read_text())
    assert vanilla["n"] == 10 and vanilla["accuracy"] == pytest.approx(80.0)


def test_circular_build_scores_end_to_end(example_build: Path, tmp_path: Path) -> None:
    from gmai_eval.cli import main

    data = example_build / "GMAI-example_circular_TEST.tsv"
    key = example_build / "GMAI-example_circular_TEST_answers.tsv"
    assert main(["--data", str(data), "--answers", str(key), "--model", "first",
                 "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "first" / data.stem / "scores_circular.json").read_text())
    # "Always A" is right on exactly one rotation of every question: never circularly right.
    assert res["circular_correct"] == 0 and res["n"] == len(pd.read_csv(
        example_build / "GMAI-example_TEST_answers.tsv", sep="\t"))


def test_vlmevalkit_circular_eval_agrees(realdata_build: Path, tmp_path: Path) -> None:
    """VLMEvalKit's own mcq_circular_eval on the same predictions (letters and free text).

    Needs a VLMEvalKit checkout (VLMEVALKIT_DIR) and a Python with its light requirements
    (VLMEVALKIT_PYTHON); see scripts/vlmevalkit_circular_check.py.
    """
    import os
    import random
    import subprocess

    kit, python = os.environ.get("VLMEVALKIT_DIR"), os.environ.get("VLMEVALKIT_PYTHON")
    if not kit or not python:
        pytest.skip("set VLMEVALKIT_DIR (a VLMEvalKit checkout) and VLMEVALKIT_PYTHON (a Python "
                    "with pandas, validators, sty, filelock, huggingface_hub, rich, tqdm)")
    from gmai_eval.cli import main

    data = realdata_build / "GMAI-realdata_circular_TEST.tsv"
    key = realdata_build / "GMAI-realdata_circular_TEST_answers.tsv"
    answers = pd.read_csv(key, sep="\t")
    rng = random.Random(0)
    pred_dir = tmp_path / "mixed" / data.stem
    pred_dir.mkdir(parents=True)
    with open(pred_dir / "predictions.jsonl", "w") as f:
        for index, answer, g in zip(answers["index"], answers["answer"], answers["g_index"]):
            if rng.random() < 0.03:
                continue  # a missing rotation
            letter = answer if g % 3 == 0 else rng.choice("AB") if g % 3 == 1 else None
            reply = None if letter else (f"The answer is {answer}." if rng.random() < 0.8
                                         else "I am not sure.")
            pred = letter or (answer if reply and answer in reply else "Z")
            f.write(json.dumps({"index": int(index), "prediction": pred, "reply": reply,
                                "method": "direct"}) + "\n")
    assert main(["score", "--data", str(data), "--answers", str(key), "--pred", str(pred_dir)]) == 0
    res = subprocess.run([python, str(REPO / "scripts" / "vlmevalkit_circular_check.py"),
                          "--vlmevalkit", kit, "--data", str(data), "--answers", str(key),
                          "--pred", str(pred_dir)], capture_output=True, text=True)
    assert res.returncode == 0 and "agree" in res.stdout, res.stdout + res.stderr
