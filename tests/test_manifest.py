"""The manifest record: a real manifest reads back as typed records and writes back as the same
bytes; a broken line is one clear error naming the file, the line and the field, for every
reader of a build (incremental reuse, audit, subset, preview, gmai-eval), and loses nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from gmai_build.cli import main
from gmai_build.manifest import (
    MANIFEST,
    ManifestError,
    ManifestRecord,
    read_manifest,
    write_manifest,
)
from helpers import RECORD, REPO, published

# Lines of a manifest written before the typed record existed (realdata example, one per
# granularity and kind of region: box on a 2D image, mask and contour on a CT slice, box on a
# CT slice, image level).
BEFORE = Path(__file__).parent / "data" / "manifest_v0.1.jsonl"


@pytest.mark.parametrize("build", ["example_build", "realdata_build"])
def test_a_real_manifest_reads_back_typed_and_writes_back_byte_identical(
        build: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path = request.getfixturevalue(build) / MANIFEST
    records = read_manifest(path)
    assert [r.index for r in records] == list(range(len(path.read_text().splitlines())))
    write_manifest(tmp_path / MANIFEST, records)
    assert (tmp_path / MANIFEST).read_bytes() == path.read_bytes()


def test_manifests_written_before_the_typed_record_still_load_and_keep_their_bytes() -> None:
    lines = BEFORE.read_text(encoding="utf-8").splitlines()
    records = [ManifestRecord.from_json(line) for line in lines]
    assert [r.to_json() for r in records] == lines
    box, mask, contour, ct_box, image = records
    assert (box.granularity, box.axis, box.slice_index) == ("Box Level", None, None)
    assert box.region["box"] == [259.0, 176.0, 491.0, 376.0]  # floats stay floats: "259.0"
    assert (mask.granularity, mask.axis, mask.slice_index) == ("Mask Level", "axial", 0)
    assert mask.pair_id == contour.pair_id and mask.case_id != contour.case_id
    assert isinstance(ct_box.region["component_area"], int)
    assert image.options == ("normal", "pneumonia") and image.answer == "B"
    assert image.test_view.columns() == {"category": "Disease Diagnosis",
                                         "clinical VQA task": "Disease Diagnosis",
                                         "department": "Pulmonary Medicine"}


def _drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda d: d.update({key: value})


def _drop_view_task(d: dict) -> None:
    del d["test_view"]["clinical VQA task"]


DAMAGE = {  # id -> (change to the second line, what the error says after 'line 2: ')
    "missing field": (_drop("pair_id"), "pair_id: missing"),
    "index as text": (_set("index", "1"), "index: Input should be a valid integer"),
    "negative index": (_set("index", -1), "index: Input should be greater than or equal to 0"),
    "options not a list": (_set("options", "femur"), "options: Input should be a valid array"),
    "no options": (_set("options", []), "options: 0 item(s), expected at least 1"),
    "answer without option": (_set("answer", "C"), "answer: C names no option (the question "
                                                   "has 2)"),
    "answer not a letter": (_set("answer", "a"), "answer: 'a' is none of A, B, C, D, E"),
    "unknown split": (_set("split", "val"), "split: 'val' is none of VAL, TEST"),
    "file not text": (_set("files", ["f.png", 3]), "files[1]: Input should be a valid string"),
    "slice as float": (_set("slice_index", 2.0), "slice_index: Input should be a valid integer"),
    "nested field missing": (_drop_view_task, "test_view.clinical VQA task: missing"),
    "six options": (_set("options", list("abcdef")), "options: 6 item(s), expected at most 5"),
    "unknown field": (_set("notes", "x"), "notes: not a field of a manifest record"),
}


def _write(path: Path, second: dict | str) -> Path:
    other = second if isinstance(second, str) else json.dumps(second)
    path.write_text(json.dumps(RECORD) + "\n" + other + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_bad_line_names_file_line_and_field(damage: str, tmp_path: Path) -> None:
    change, says = DAMAGE[damage]
    line = json.loads(json.dumps({**RECORD, "index": 1, "case_id": "c1"}))
    change(line)
    path = _write(tmp_path / MANIFEST, line)
    with pytest.raises(ManifestError) as err:
        read_manifest(path, "; HINT")
    assert str(err.value).startswith(f"file {path}: line 2: {says}")
    assert str(err.value).endswith("; HINT") and "\n" not in str(err.value)


@pytest.mark.parametrize("second, says", [
    ('{"index": 1, "case_id": "c1"', "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({**RECORD, "index": 1}), "case_id c0 occurs on an earlier line too"),
    (json.dumps({**RECORD, "case_id": "c1"}), "index 0 occurs on an earlier line too"),
])
def test_a_line_that_is_no_record_or_a_question_twice_is_named(second: str, says: str,
                                                               tmp_path: Path) -> None:
    path = _write(tmp_path / MANIFEST, second)
    with pytest.raises(ManifestError, match=f"^file {path}: line 2: {says}"):
        read_manifest(path)


def test_a_manifest_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST
    path.write_bytes(json.dumps(RECORD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(ManifestError, match=f"^file {path}: not UTF-8 text"):
        read_manifest(path)


# Every reader of a build, on a copy of the example build: (command, exit code, error prefix,
# the hint that tells its user what to do).
def _build(out: Path, tmp: Path) -> int:
    return main(["--sources", str(REPO / "examples" / "sources.yaml"), "--out", str(out),
                 "--workers", "1", "--no-progress", "--circular"])


def _eval(out: Path, tmp: Path) -> int:
    from gmai_eval.cli import main as eval_main

    return eval_main(["--data", str(out / "GMAI-example_VAL.tsv"), "--model", "first",
                      "--out", str(tmp / "results")])


def _eval_score(out: Path, tmp: Path) -> int:
    from gmai_eval.cli import main as eval_main

    pred = tmp / "pred.jsonl"
    pred.write_text('{"index": 0, "prediction": "A"}\n')
    return eval_main(["score", "--data", str(out / "GMAI-example_VAL.tsv"), "--pred", str(pred)])


READERS = {
    "incremental build": (_build, 1, "gmai-build: error: ", "start over with --rebuild"),
    "audit": (lambda out, tmp: main(["audit", str(out)]), 1, "gmai-build: error: ",
              "restore the build's manifest.jsonl"),
    "subset": (lambda out, tmp: main(["subset", "--from", str(out), "--out", str(tmp / "sub"),
                                      "--modality", "Fundus Photography"]),
               1, "gmai-build: error: ", "restore the build's manifest.jsonl"),
    "preview": (lambda out, tmp: main(["preview", str(out), "--out", str(tmp / "g.html")]),
                1, "gmai-build: error: ", "restore the build's manifest.jsonl"),
    "gmai-eval run": (_eval, 2, "gmai-eval: error: ", "move it away to score without"),
    "gmai-eval score": (_eval_score, 2, "gmai-eval: error: ", "move it away to score without"),
}


@pytest.mark.parametrize("damage", ["missing field", "index as text"])
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_of_a_build_names_the_bad_line_and_changes_nothing(
        reader: str, damage: str, example_build: Path, tmp_path: Path, capsys) -> None:
    run, code, prefix, hint = READERS[reader]
    out = tmp_path / "build"
    shutil.copytree(example_build, out, symlinks=True)
    stored = (out / MANIFEST).resolve()
    lines = stored.read_text(encoding="utf-8").splitlines()
    line = json.loads(lines[2])
    DAMAGE[damage][0](line)
    lines[2] = json.dumps(line, sort_keys=True, ensure_ascii=False)
    stored.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = published(out)
    capsys.readouterr()

    assert run(out, tmp_path) == code
    err = capsys.readouterr().err
    says = DAMAGE[damage][1]
    assert err.startswith(f"{prefix}file {out / MANIFEST}: line 3: {says}"), err
    assert hint in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert published(out) == before
    assert not (tmp_path / "sub").exists() or not any((tmp_path / "sub").iterdir())
    assert not (tmp_path / "g.html").exists()
    assert not list(tmp_path.glob("results/**/*.jsonl"))  # gmai-eval checks before any model runs
