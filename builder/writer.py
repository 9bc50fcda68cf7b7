"""Outputs: TSVs in GMAI-MMBench's exact columns, the TEST answer key, the manifest, the summary.

TEST shows nothing that gives the answer away (:func:`gmai_build.records.test_views` says what
it shows instead); the true values go to the answer key and the manifest
(:mod:`gmai_build.manifest`).

Everything is written into a staging folder that :mod:`outdir` publishes in one atomic step once
the whole build succeeded, so a failed build leaves the previous outputs as they were.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .manifest import ManifestRecord

TSV_COLUMNS = [
    "index", "question", "A", "B", "C", "D", "E", "answer", "category", "clinical VQA task",
    "department", "perceptual granularity", "modality", "original task", "image",
]
TEST_COLUMNS = [c for c in TSV_COLUMNS if c != "answer"]
# The TEST answer key also holds what TEST may not show: the true category (the label, which is
# the correct option's text) and the true task and department, so scores per group still work.
ANSWER_KEY_COLUMNS = ["index", "answer", "category", "clinical VQA task", "department"]
HIDDEN_TASK = "(task not shown)"  # TEST category where the options' tasks differ
BUILD_INFO = "build.json"


LINE_END = "\n"


def tsv_writer(f) -> Any:
    return csv.writer(f, delimiter="\t", lineterminator=LINE_END, quoting=csv.QUOTE_MINIMAL)


class RowText:
    """The text of TSV rows in csv's tab dialect: the header, and a row's fields before its
    image field (with the tab that precedes the image), exactly as ``tsv_writer`` writes them.
    The csv module quotes the other fields; the image is base64, which no TSV dialect quotes,
    so it is appended as it is (:mod:`gmai_build.assembly`): the csv module scanning ~500 KB
    per row for quoting was a third of the build time once."""

    def __init__(self, columns: list[str]):
        self.columns = columns
        self._head = io.StringIO()
        self._writer = tsv_writer(self._head)

    def line(self, values: list[Any]) -> str:
        self._head.seek(0)
        self._head.truncate()
        self._writer.writerow(values)
        return self._head.getvalue()

    def header(self) -> bytes:
        return self.line(self.columns).encode("utf-8")

    def before_image(self, row: dict[str, Any]) -> bytes:
        values = [row.get(c, "") for c in self.columns[:-1]]
        return self.line([*values, ""])[: -len(LINE_END)].encode("utf-8")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def answer_key_row(r: ManifestRecord) -> list[Any]:
    """A record's row of the TEST answer key (:data:`ANSWER_KEY_COLUMNS`)."""
    return [r.index, r.answer, r.category, r.task, r.department]


# Summary table -> the record's value it counts.
SUMMARY_AXES: dict[str, Callable[[ManifestRecord], str]] = {
    "clinical VQA task": lambda r: r.task,
    "department": lambda r: r.department,
    "modality": lambda r: r.modality,
    "perceptual granularity": lambda r: r.granularity,
    "source": lambda r: r.source,
    "original task": lambda r: r.original_task,
}


class SummaryCounts:
    """The summary's counts, gathered record by record (:meth:`add`) as the records stream:
    per split and per task / department / modality / granularity / source / original task,
    answer letters per option count, options per granularity (memory bounded by the tree)."""

    def __init__(self) -> None:
        self.splits: Counter[str] = Counter()
        self.letters: Counter[str] = Counter()
        self.by_count: dict[str, dict[str, int]] = {}
        self.options: dict[str, dict[str, Any]] = {}
        self.axes: dict[str, dict[str, dict[str, int]]] = {title: {} for title in SUMMARY_AXES}

    def add(self, r: ManifestRecord) -> None:
        n = len(r.options)
        self.splits[r.split] += 1
        self.letters[r.answer] += 1
        bucket = self.by_count.setdefault(str(n), dict.fromkeys("ABCDE"[:n], 0))
        bucket[r.answer] += 1
        g = self.options.setdefault(r.granularity, {"questions": 0, "options": 0, "counts": {}})
        g["questions"] += 1
        g["options"] += n
        g["counts"][str(n)] = g["counts"].get(str(n), 0) + 1
        for title, value_of in SUMMARY_AXES.items():
            counts = self.axes[title].setdefault(value_of(r) or "(none)", {"VAL": 0, "TEST": 0})
            counts[r.split] += 1

    def tables(self) -> dict[str, Any]:
        out: dict[str, Any] = {"total": sum(self.splits.values()),
                               "splits": dict(sorted(self.splits.items()))}
        out["answer_letters"] = dict(sorted(self.letters.items()))
        out["answer_letters_by_option_count"] = dict(sorted(self.by_count.items()))
        out["options_by_granularity"] = {
            k: {"questions": v["questions"],
                "mean_options": round(v["options"] / v["questions"], 3),
                "counts": dict(sorted(v["counts"].items()))}
            for k, v in sorted(self.options.items())
        }
        for title in SUMMARY_AXES:
            out[title] = dict(sorted(self.axes[title].items()))
        return out


def summary_tables(rows: Iterable[ManifestRecord]) -> dict[str, Any]:
    """Counts per split and per task / department / modality / granularity / source / label."""
    counts = SummaryCounts()
    for r in rows:
        counts.add(r)
    return counts.tables()


def summary_markdown(summary: dict[str, Any], name: str) -> str:
    lines = [f"# Build summary: {name}", ""]
    lines.append(f"Questions: {summary['total']} ("
                 + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()) + ")")
    lines.append("Answer letters: " + ", ".join(f"{k} {v}" for k, v in summary["answer_letters"].items()))
    lines += ["", "## Answer letters per option count", "",
              "| options | questions | A | B | C | D | E | uniform share |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, letters in summary.get("answer_letters_by_option_count", {}).items():
        total = sum(letters.values())
        cells = [f"{letters[x]} ({100 * letters[x] / total:.1f}%)" if x in letters else ""
                 for x in "ABCDE"]
        lines.append(f"| {n} | {total} | " + " | ".join(cells) + f" | {100 / int(n):.1f}% |")
    lines += ["", "## Options per question", "", "| granularity | questions | mean options | "
              "2 / 3 / 4 / 5 options |", "|---|---:|---:|---|"]
    for g, v in summary.get("options_by_granularity", {}).items():
        counts = " / ".join(str(v["counts"].get(str(n), 0)) for n in range(2, 6))
        lines.append(f"| {g} | {v['questions']} | {v['mean_options']:.2f} | {counts} |")
    if summary.get("skipped"):
        lines += ["", "## Cases not asked about", "", "| source: reason | cases |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in summary["skipped"].items()]
    split = summary.get("split")
    if split:
        lines += ["", "## Split", "",
                  f"VAL share of groups: {split['val_share_groups']}% ({split['val_groups']} of "
                  f"{split['groups']} groups; configured {100 * split['val_fraction']:.0f}%)",
                  f"Near-duplicate image pairs across groups: {len(split['near_duplicates'])}"]
        lines += [f"- index {p['a']} ~ index {p['b']} (distance {p['distance']})"
                  for p in split["near_duplicates"][:50]]
        lines += [f"- kept in one split: the groups of questions {', '.join(map(str, u))}"
                  for u in split["kept_together"][:50]]
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
