"""TSV writing: byte-identical to the csv module's tab dialect, and read back by pandas as written.

The image field is written directly (it is base64: never quoted); every other field must still
be quoted exactly as ``csv.writer`` quotes it, since VLMEvalKit reads these files with pandas.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gmai_build.render import encode_png
from gmai_build.writer import TSV_COLUMNS, Base64Text, b64, tsv_writer, write_tsv

TRICKY = ["", " ", "plain", 'say "yes"', "tab\there", "new\nline", "carriage\rreturn",
          "crlf\r\nend", "\"", "é ü 中文", "trailing space ", "=1+1", "'quoted'"]


def _rows(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        image = rng.integers(0, 256, (8 + i, 9, 3), dtype=np.uint8)
        row = {c: TRICKY[(i + k) % len(TRICKY)] for k, c in enumerate(TSV_COLUMNS)}
        row["index"] = i
        row["E"] = None if i % 3 == 0 else row["E"]
        row["image"] = b64(encode_png(image))
        rows.append(row)
    return rows


def _csv_module_bytes(columns: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO(newline="")
    w = tsv_writer(buf)
    w.writerow(columns)
    for row in rows:
        w.writerow([str(row.get(c, "")) if isinstance(row.get(c), Base64Text) else row.get(c, "")
                    for c in columns])
    return buf.getvalue().encode("utf-8")


@pytest.mark.parametrize("columns", [TSV_COLUMNS, [c for c in TSV_COLUMNS if c != "answer"]])
def test_bytes_equal_the_csv_module(tmp_path: Path, columns: list[str]) -> None:
    rows = _rows(2 * len(TRICKY))
    path = tmp_path / "out.tsv"
    assert write_tsv(path, columns, rows) == len(rows)
    assert path.read_bytes() == _csv_module_bytes(columns, rows)


def test_pandas_reads_back_every_field(tmp_path: Path) -> None:
    # A bare "\r" is not quoted by Python 3.11's csv module with a "\n" line end, and pandas
    # reads it as a line break: a known limit of the dialect (not of the fast path), left out.
    rows = [r for r in _rows(len(TRICKY))
            if not any("\r" in str(v) and "\n" not in str(v) for v in r.values())]
    path = tmp_path / "out.tsv"
    write_tsv(path, TSV_COLUMNS, rows)
    frame = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    assert list(frame.columns) == TSV_COLUMNS
    for got, row in zip(frame.to_dict("records"), rows):
        want = {c: "" if row[c] is None else str(row[c]) for c in TSV_COLUMNS}
        assert got == want


def test_non_base64_last_field_still_quoted(tmp_path: Path) -> None:
    """Only a Base64Text last field bypasses the csv module; a plain string is quoted as usual."""
    path = tmp_path / "out.tsv"
    write_tsv(path, ["a", "b"], [{"a": "x", "b": "tab\there"}, {"a": "y", "b": Base64Text("")}])
    assert path.read_text() == 'a\tb\nx\t"tab\there"\ny\t\n'
    rows = list(csv.reader(io.StringIO(path.read_text()), delimiter="\t"))
    assert rows == [["a", "b"], ["x", "tab\there"], ["y", ""]]
