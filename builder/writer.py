"""Outputs: TSVs in GMAI-MMBench's exact columns, the TEST answer key, the manifest, the summary.

Everything is written into a staging folder inside the output folder and only moved into place
(``os.replace``, atomic per file) once the whole build succeeded, so a failed build leaves the
previous outputs as they were and no partial file behind.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TSV_COLUMNS = [
    "index", "question", "A", "B", "C", "D", "E", "answer", "category", "clinical VQA task",
    "department", "perceptual granularity", "modality", "original task", "image",
]
TEST_COLUMNS = [c for c in TSV_COLUMNS if c != "answer"]
MANIFEST = "manifest.jsonl"
BUILD_INFO = "build.json"


class ImageSpool:
    """Rendered PNGs parked on disk between rendering and writing: memory stays flat."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "w+b")  # noqa: SIM115  (closed in close())

    def put(self, data: bytes) -> tuple[int, int]:
        offset = self._f.seek(0, os.SEEK_END)
        self._f.write(data)
        return offset, len(data)

    def get(self, ref: tuple[int, int]) -> bytes:
        self._f.seek(ref[0])
        return self._f.read(ref[1])

    def close(self) -> None:
        self._f.close()


LINE_END = "\n"


class Base64Text(str):
    """Text made only of the base64 alphabet (``A-Z a-z 0-9 + / =``), as :func:`b64` returns.

    No TSV dialect ever quotes it, so :func:`write_tsv` writes it as it is instead of letting
    the csv module scan every character of a ~500 KB image field for quoting (a third of the
    build time before).
    """


def tsv_writer(f) -> Any:
    return csv.writer(f, delimiter="\t", lineterminator=LINE_END, quoting=csv.QUOTE_MINIMAL)


def write_tsv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    """Rows as csv's tab dialect writes them; a :class:`Base64Text` last field is appended as is.

    The bytes are exactly those of ``tsv_writer(f).writerow(row)`` for every row: the other
    fields still go through the csv module (with an empty last field, which it writes as
    nothing), so their quoting does not change.
    """
    n = 0
    head = io.StringIO()
    head_writer = tsv_writer(head)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = tsv_writer(f)
        w.writerow(columns)
        for row in rows:
            values = [row.get(c, "") for c in columns]
            last = values[-1]
            if isinstance(last, Base64Text) and last and len(values) > 1:
                head.seek(0)
                head.truncate()
                head_writer.writerow([*values[:-1], ""])
                f.write(head.getvalue()[: -len(LINE_END)])
                f.write(last)
                f.write(LINE_END)
            else:
                w.writerow(values)
            n += 1
    return n


def b64(png: bytes) -> Base64Text:
    return Base64Text(base64.b64encode(png).decode("ascii"))


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def read_manifest(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The previous build's questions by case id (empty if there is none)."""
    path = out_dir / MANIFEST
    if not path.is_file():
        return {}
    records = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                records[rec["case_id"]] = rec
    return records


@contextmanager
def staging(out_dir: Path):
    """A private folder beside the outputs; published by :func:`publish`, removed on error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, out_dir: Path, names: list[str]) -> None:
    """Move finished files into place; the manifest goes last (it marks a complete build)."""
    ordered = sorted(names, key=lambda n: n == MANIFEST)
    for name in ordered:
        os.replace(stage / name, out_dir / name)


def summary_tables(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per split and per task / department / modality / granularity / source / label."""
    axes = {
        "clinical VQA task": "task",
        "department": "department",
        "modality": "modality",
        "perceptual granularity": "granularity",
        "source": "source",
        "original task": "original_task",
    }
    splits = dict(sorted(Counter(r["split"] for r in rows).items()))
    out: dict[str, Any] = {"total": len(rows), "splits": splits}
    out["answer_letters"] = dict(sorted(Counter(r["answer"] for r in rows).items()))
    for title, key in axes.items():
        counts: dict[str, dict[str, int]] = {}
        for r in rows:
            name = r[key] or "(none)"
            bucket = counts.setdefault(name, {"VAL": 0, "TEST": 0})
            bucket[r["split"]] += 1
        out[title] = dict(sorted(counts.items()))
    return out


def summary_markdown(summary: dict[str, Any], name: str) -> str:
    lines = [f"# Build summary: {name}", ""]
    lines.append(f"Questions: {summary['total']} ("
                 + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()) + ")")
    lines.append("Answer letters: " + ", ".join(f"{k} {v}" for k, v in summary["answer_letters"].items()))
    if summary.get("skipped"):
        lines.append("Skipped cases: " + ", ".join(f"{k}: {v}" for k, v in summary["skipped"].items()))
    for title in ("clinical VQA task", "department", "modality", "perceptual granularity",
                  "original task", "source"):
        lines += ["", f"## By {title}", "", f"| {title} | VAL | TEST | total |", "|---|---:|---:|---:|"]
        for key, c in summary[title].items():
            lines.append(f"| {key} | {c['VAL']} | {c['TEST']} | {c['VAL'] + c['TEST']} |")
    return "\n".join(lines) + "\n"


def read_tsv_rows(path: Path) -> Iterator[list[str]]:
    """Rows of a TSV this package wrote (header first), streamed, exactly as written."""
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default limit
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.reader(f, delimiter="\t")
