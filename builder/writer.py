"""Outputs: TSVs in GMAI-MMBench's exact columns, the TEST answer key, the manifest, the summary.

Everything is written into a staging folder that :mod:`outdir` publishes in one atomic step once
the whole build succeeded, so a failed build leaves the previous outputs as they were.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
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


def tsv_writer(f) -> Any:
    return csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)


def write_tsv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = tsv_writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow([row.get(c, "") for c in columns])
            n += 1
    return n


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


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
    from .report import markdown_section  # skipped samples and notes, file by file

    lines += markdown_section(summary)
    return "\n".join(lines) + "\n"


def read_tsv_rows(path: Path) -> Iterator[list[str]]:
    """Rows of a TSV this package wrote (header first), streamed, exactly as written."""
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default limit
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.reader(f, delimiter="\t")
