"""TSV reading (published layout and VLMEvalKit quirks), answer keys and prompts."""

from __future__ import annotations

from pathlib import Path

from conftest import COLUMNS, png_b64, write_tsv
from gmai_eval.data import iter_items, load_answer_key
from gmai_eval.prompt import PromptBuilder, vlmevalkit_prompt

PUBLISHED = COLUMNS[:-1] + ["image_path", "image"]


def published_rows() -> list[dict]:
    return [
        {"index": "001", "question": "Is the finding present?", "A": "None", "B": "tumour",
         "C": "cyst", "answer": "B", "category": "tumour", "clinical VQA task": "Disease "
         "Diagnosis", "department": "", "perceptual granularity": "Image Level",
         "modality": "CT", "original task": "CLS_2D", "image_path": "images/1.png",
         "image": png_b64(1)},
        {"index": "2", "question": "Which organ?", "A": "liver", "B": "NA", "C": "spleen",
         "D": "kidney", "answer": "D", "category": "kidney", "clinical VQA task": "Organ "
         "Recognition - Abdomen", "department": "Urology", "perceptual granularity":
         "Mask Level", "modality": "MRI", "original task": "SEG_2D", "image_path": "x.png",
         "image": png_b64(2)},
        {"index": "3", "question": "dropped", "A": "a", "B": "b", "answer": "A",
         "category": "a", "image": ""},  # empty image: dropped like VLMEvalKit
    ]


def test_published_layout_and_quirks(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "GMAI_VAL.tsv", published_rows(), PUBLISHED)
    items = list(iter_items(path, chunksize=1))
    assert [i.index for i in items] == [1, 2, 3]  # '001' read as int 1
    assert items[2].problem() == "empty image"  # reported as invalid, not silently dropped
    assert items[0].options == {"B": "tumour", "C": "cyst"}  # 'None' read as NaN -> empty
    assert items[1].options == {"A": "liver", "C": "spleen", "D": "kidney"}
    assert items[0].meta["department"] != items[0].meta["department"]  # NaN kept in meta
    assert items[0].image().size == (32, 32)
    assert "image_path" not in items[0].meta
    kept = list(iter_items(path, keep_na_text=True))
    assert kept[0].options["A"] == "None" and kept[1].options["B"] == "NA"


def test_prompt_is_vlmevalkit_format(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "GMAI_VAL.tsv", published_rows(), PUBLISHED)
    item = next(iter_items(path))
    assert vlmevalkit_prompt(item) == (
        "Question: Is the finding present?\nOptions:\nB. tumour\nC. cyst\n"
        "Please select the correct answer from the options above. \n"
    )
    item.hint = "CT of the abdomen"
    assert vlmevalkit_prompt(item).startswith("Hint: CT of the abdomen\nQuestion: ")


def test_hint_column_and_template(tmp_path: Path) -> None:
    rows = [{"index": 1, "question": "Q?", "A": "x", "B": "y", "answer": "A", "hint": "",
             "image": png_b64()},
            {"index": 2, "question": "Q2?", "A": "x", "B": "y", "answer": "B", "hint": "H",
             "image": png_b64()}]
    path = write_tsv(tmp_path / "h.tsv", rows, ["index", "question", "A", "B", "answer",
                                                 "hint", "image"])
    a, b = list(iter_items(path))
    assert not vlmevalkit_prompt(a).startswith("Hint")
    assert vlmevalkit_prompt(b).startswith("Hint: H\nQuestion: Q2?\n")
    tpl = tmp_path / "t.txt"
    tpl.write_text("[{hint}] {question}\n{options}Answer with the letter.")
    assert PromptBuilder.from_file(tpl)(b) == "[H] Q2?\nA. x\nB. y\nAnswer with the letter."


def test_answer_key_csv_and_tsv(tmp_path: Path) -> None:
    (tmp_path / "k.csv").write_text("index,answer\n001,B\n2,C\n")
    (tmp_path / "k.tsv").write_text("index\tanswer\n1\tB\n2\tC\n")
    assert load_answer_key(tmp_path / "k.csv") == {1: "B", 2: "C"}
    assert load_answer_key(tmp_path / "k.tsv") == {1: "B", 2: "C"}


def test_sharding_partitions_rows(tsv_factory) -> None:
    path = tsv_factory(10)
    shards = [[i.ordinal for i in iter_items(path, shard=(r, 3))] for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_swallowed_option_is_reported(tmp_path: Path, caplog) -> None:
    path = write_tsv(tmp_path / "GMAI_VAL.tsv", published_rows(), PUBLISHED)
    list(iter_items(path))
    assert "2 items have an empty option before a non-empty one" in caplog.text


def test_test_split_without_key_gives_predictions_only(tmp_path: Path) -> None:
    from gmai_eval.cli import main

    rows = published_rows()[:2]
    for r in rows:
        del r["answer"]
    cols = [c for c in PUBLISHED if c != "answer"]
    path = write_tsv(tmp_path / "GMAI_TEST.tsv", rows, cols)
    assert main(["--data", str(path), "--model", "first", "--out", str(tmp_path / "r")]) == 0
    d = tmp_path / "r/first/GMAI_TEST"
    assert len((d / "predictions.jsonl").read_text().splitlines()) == 2
    assert not (d / "scores.json").exists()


def test_numeric_options_read_as_written(tmp_path: Path) -> None:
    """A chunk whose options are only numbers (counting questions) keeps them verbatim."""
    from conftest import make_rows
    from conftest import write_tsv as write

    rows = make_rows(4)
    for r in rows:
        r.update(A="2", B="3", C="4", D=None, E=None, answer="A")
    rows[1]["D"] = "5"
    path = write(tmp_path / "count_VAL.tsv", rows)
    items = list(iter_items(path, chunksize=2))
    assert items[1].options == {"A": "2", "B": "3", "C": "4", "D": "5"}
    assert "D. 5\n" in vlmevalkit_prompt(items[1])
