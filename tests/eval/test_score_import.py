"""`gmai-eval score` on predictions made elsewhere, the resume fingerprint, and invalid rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_rows, write_tsv
from gmai_eval.cli import main


def _vlmevalkit_frame(rows: list[dict], replies: list[str]) -> pd.DataFrame:
    """A VLMEvalKit result table: the TSV's columns (no image) plus the raw `prediction`."""
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "image"} for r in rows])
    frame["prediction"] = replies
    return frame


def _replies(rows: list[dict]) -> list[str]:
    # Every third reply right via "The answer is X because ..." (VLMEvalKit's PR #1552 rule),
    # the others "I cannot tell" (Z).
    return [f"The answer is {r['answer']} because of the image I was shown today" if i % 3 == 0
            else "I cannot tell from this picture" for i, r in enumerate(rows)]


@pytest.mark.parametrize("suffix", [".xlsx", ".csv", ".tsv", ".json"])
def test_vlmevalkit_result_file(tmp_path: Path, suffix: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(12)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    frame = _vlmevalkit_frame(rows, _replies(rows))
    pred = tmp_path / f"Qwen2-VL_toy_VAL{suffix}"
    if suffix == ".xlsx":
        frame.to_excel(pred, index=False)
    elif suffix == ".json":  # VLMEvalKit's dump_json: DataFrame.to_dict("records")
        pred.write_text(json.dumps(frame.to_dict("records"), ensure_ascii=False, indent=4))
    else:
        frame.to_csv(pred, sep="\t" if suffix == ".tsv" else ",", index=False)
    assert main(["score", "--data", str(data), "--pred", str(pred)]) == 0
    res = json.loads((tmp_path / "Qwen2-VL_toy_VAL_scores/scores.json").read_text())
    assert (res["n"], res["correct"]) == (12, 4)
    assert res["methods"] == {"letter": 4, "failed": 8}
    assert "12 of 12 prediction rows matched the TSV's 12 questions" in capsys.readouterr().out


def test_jsonl_replies_and_partial_match(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(6)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    pred = tmp_path / "preds.jsonl"
    recs = [{"index": r["index"], "reply": f"({r['answer']})"} for r in rows[:4]]
    recs.append({"index": 999, "reply": "A"})
    pred.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["score", "--data", str(data), "--pred", str(pred), "--out",
                 str(tmp_path / "s")]) == 0
    res = json.loads((tmp_path / "s/scores.json").read_text())
    assert (res["n"], res["correct"], res["missing"]) == (6, 4, 2)
    out = capsys.readouterr().out
    assert "4 of 5 prediction rows matched the TSV's 6 questions" in out and "[999]" in out


def test_folder_with_a_vlmevalkit_file_points_to_it(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(3)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    (tmp_path / "vk").mkdir()
    _vlmevalkit_frame(rows, ["A"] * 3).to_csv(tmp_path / "vk/M_toy_VAL.csv", index=False)
    assert main(["score", "--data", str(data), "--pred", str(tmp_path / "vk")]) == 2
    err = capsys.readouterr().err
    assert "not a gmai-eval result folder" in err and "--pred " + str(tmp_path / "vk/M_toy_VAL.csv") in err


def test_folder_records_with_only_a_reply_are_extracted(tmp_path: Path) -> None:
    rows = make_rows(4)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    folder = tmp_path / "r/m/toy_VAL"
    folder.mkdir(parents=True)
    (folder / "predictions.jsonl").write_text("".join(
        json.dumps({"index": r["index"], "reply": f"The answer is {r['answer']}."}) + "\n"
        for r in rows))
    assert main(["score", "--data", str(data), "--pred", str(folder)]) == 0
    assert json.loads((folder / "scores.json").read_text())["correct"] == 4


def test_own_folder_and_file(tmp_path: Path) -> None:
    rows = make_rows(8)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    assert main(["--data", str(data), "--model", "first", "--out", str(tmp_path / "r")]) == 0
    folder = tmp_path / "r/first/toy_VAL"
    expected = json.loads((folder / "scores.json").read_text())["correct"]
    assert main(["score", "--data", str(data), "--pred", str(folder / "predictions.jsonl"),
                 "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s/scores.json").read_text())["correct"] == expected


def test_nothing_matched_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_tsv(tmp_path / "toy_VAL.tsv", make_rows(4))
    pred = tmp_path / "other.jsonl"
    pred.write_text('{"index": 100, "reply": "A"}\n')
    assert main(["score", "--data", str(data), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert "none of its 1 prediction rows has an index of" in err and "Traceback" not in err
    assert not (tmp_path / "other_scores").exists()


def test_other_questions_under_the_same_index_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(4)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    frame = _vlmevalkit_frame(rows, ["A"] * 4)
    frame.loc[2, "question"] = "Which lesion is shown?"
    frame.to_csv(tmp_path / "m_toy_VAL.csv", index=False)
    assert main(["score", "--data", str(data), "--pred", str(tmp_path / "m_toy_VAL.csv")]) == 2
    err = capsys.readouterr().err
    assert "disagree on 1 field(s) under the same index" in err
    assert "index 2: question 'Which lesion is shown?'" in err


def test_missing_file_and_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_tsv(tmp_path / "toy_VAL.tsv", make_rows(2))
    assert main(["score", "--data", str(data), "--pred", str(tmp_path / "nope.xlsx")]) == 2
    (tmp_path / "p.parquet").write_bytes(b"x")
    assert main(["score", "--data", str(data), "--pred", str(tmp_path / "p.parquet")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "unknown predictions format" in err


def test_resume_refuses_another_tsv_or_spec(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(6)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    out = str(tmp_path / "r")
    assert main(["--data", str(data), "--model", "random?seed=1&name=m", "--out", out]) == 0
    rows[3]["question"] = "A changed question?"
    write_tsv(data, rows)
    assert main(["--data", str(data), "--model", "random?seed=1&name=m", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "holds predictions made with a different tsv_sha256" in err
    assert "Refusing to resume" in err
    # Scoring the old predictions against the changed TSV is refused too.
    assert main(["score", "--data", str(data), "--pred", out + "/m/toy_VAL"]) == 2
    assert "different TSV" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    data2 = write_tsv(tmp_path / "x/toy_VAL.tsv", make_rows(6))
    out2 = str(tmp_path / "r2")
    assert main(["--data", str(data2), "--model", "random?seed=1&name=m", "--out", out2]) == 0
    # Throughput-only options (batch, workers, timeout, ...) may change on resume.
    assert main(["--data", str(data2), "--model", "random?name=m&batch=3&seed=1", "--out",
                 out2]) == 0
    assert main(["--data", str(data2), "--model", "random?seed=2&name=m", "--out", out2]) == 2
    assert "different model" in capsys.readouterr().err
    assert main(["--data", str(data2), "--model", "random?seed=1&name=m", "--out", out2]) == 0
    # Throughput-only options (batch, workers, timeout, ...) may change on resume.
    assert main(["--data", str(data2), "--model", "random?name=m&batch=3&seed=1", "--out",
                 out2]) == 0


def test_invalid_rows_are_reported_and_skipped(tmp_path: Path) -> None:
    rows = make_rows(8)
    rows[1]["image"] = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"  # a PNG header and nothing else
    rows[2]["answer"] = "E"
    for k in "BCDE":
        rows[2].pop(k, None)
    for k in "ABCDE":
        rows[3].pop(k, None)
    rows[5]["index"] = 4  # duplicate of row 4's index
    rows[6]["image"] = ""
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    asked: list[int] = []

    from gmai_eval.adapters import FirstBaseline

    class Spy(FirstBaseline):
        def predict(self, items, prompts):  # type: ignore[no-untyped-def]
            asked.extend(i.index for i in items)
            return super().predict(items, prompts)

    from gmai_eval.runner import predict

    pred_dir = predict(data, Spy(), tmp_path / "r")
    assert sorted(asked) == [0, 7]
    recs = {json.loads(x)["index"]: json.loads(x)
            for x in (pred_dir / "predictions.jsonl").read_text().splitlines()}
    assert recs[1]["method"] == "invalid" and "undecodable image" in recs[1]["invalid"]
    assert "answer 'E' is not one of the options A" in recs[2]["invalid"]
    assert recs[3]["invalid"].startswith("no options")
    assert "occurs more than once" in recs[4]["invalid"]
    assert "empty image" in recs[6]["invalid"]
    assert main(["score", "--data", str(data), "--pred", str(pred_dir)]) == 0
    res = json.loads((pred_dir / "scores.json").read_text())
    assert res["invalid"] == 6 and res["n"] == 2
    assert set(res["invalid_rows"]) == {"1", "2", "3", "4", "6"}


def test_category_from_the_answer_key(tmp_path: Path) -> None:
    rows = make_rows(6)
    key = tmp_path / "key.tsv"
    key.write_text("index\tanswer\tcategory\n" + "".join(
        f"{r['index']}\t{r['answer']}\ttrue-{r['index'] % 2}\n" for r in rows))
    for r in rows:
        del r["answer"]
        r["category"] = "placeholder"
    cols = [c for c in make_rows(1)[0] if c != "answer"]
    data = write_tsv(tmp_path / "toy_TEST.tsv", rows, cols)
    assert main(["--data", str(data), "--answers", str(key), "--model", "first",
                 "--out", str(tmp_path / "r"), "--scale", "fraction"]) == 0
    res = json.loads((tmp_path / "r/first/toy_TEST/scores.json").read_text())
    assert set(res["groups"]["category"]) == {"true-0", "true-1"}
    assert res["scale"] == "fraction" and 0 <= res["accuracy"] <= 1


def test_tsv_without_needed_columns_is_one_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x_VAL.tsv"
    bad.write_text("id\tquestion_text\n1\tq\n")
    assert main(["--data", str(bad), "--model", "first", "--out", str(tmp_path / "r")]) == 2
    (tmp_path / "latin1_VAL.tsv").write_bytes("index\tquestion\n1\tcaf\xe9\n".encode("latin-1"))
    assert main(["--data", str(tmp_path / "latin1_VAL.tsv"), "--model", "first", "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['index', 'question']" in err
    assert "latin1_VAL.tsv" in err and "Traceback" not in err


def test_lmms_eval_sample_log(tmp_path: Path) -> None:
    """lmms-eval's --log_samples JSONL (the exported task's docs carry `index`)."""
    rows = make_rows(4)
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    pred = tmp_path / "samples_gmai_toy_val.jsonl"
    recs = [{"doc_id": n, "doc": {k: v for k, v in r.items() if k != "image"},
             "target": r["answer"], "resps": [[f"{r['answer']}."]],
             "filtered_resps": [f"{r['answer']}." if n % 2 else "no idea"], "accuracy": 1.0}
            for n, r in enumerate(rows)]
    pred.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["score", "--data", str(data), "--pred", str(pred), "--out",
                 str(tmp_path / "s")]) == 0
    res = json.loads((tmp_path / "s/scores.json").read_text())
    assert (res["n"], res["correct"]) == (4, 2)
