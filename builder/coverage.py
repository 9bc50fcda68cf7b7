"""Coverage report: how many questions sit on each branch of the tree, and which published nodes
of GMAI-MMBench's lexical tree the build leaves empty.

Written as ``coverage.json`` and ``coverage.md`` beside the TSVs; the build prints its short
table. Counts are per task, department, modality, granularity, source and label, split into
VAL and TEST. Published nodes (``label_maps/published_tree.yaml``) are checked at every level the
tree has: tasks, departments, granularities and modalities alone; each of those three axes
crossed with modality (the published tree's second level); the (task, granularity) cells; and
the leaves, (modality, label). Nodes a build has that the published tree lacks are listed too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from .manifest import ManifestRecord
from .schemas import bundled_yaml
from .taxonomy import MODALITIES, Vocabulary
from .templates import PUBLISHED_TREE

AXES: dict[str, Callable[[ManifestRecord], str]] = {  # report name -> the record's value
    "clinical VQA task": lambda r: r.task,
    "department": lambda r: r.department,
    "modality": lambda r: r.modality,
    "perceptual granularity": lambda r: r.granularity,
    "source": lambda r: r.source,
    "label": lambda r: r.category,
}
NONE = "(none)"
COVERAGE_JSON, COVERAGE_MD = "coverage.json", "coverage.md"
SEP = " / "


@lru_cache(maxsize=1)
def published_nodes() -> dict[str, list[str]]:
    """Every node of the published tree, per level, as display strings."""
    tree = bundled_yaml(PUBLISHED_TREE)
    axes = (("clinical VQA task", "tasks"), ("department", "departments"),
            ("perceptual granularity", "granularities"))
    out: dict[str, list[str]] = {level: sorted(n or NONE for n in tree[axis]) for level, axis in axes}
    out["modality"] = sorted(MODALITIES)
    for level, axis in axes:
        out[f"{level}{SEP}modality"] = sorted(
            f"{n or NONE}{SEP}{m}" for n, mods in tree[axis].items() for m in mods)
    out[f"clinical VQA task{SEP}perceptual granularity"] = sorted(
        f"{c['task']}{SEP}{c['granularity']}" for c in tree["cells"])
    out[f"modality{SEP}label"] = sorted(
        f"{m}{SEP}{label}" for m, labels in tree["labels"].items() for label in labels)
    return out


def _node_values(r: ManifestRecord, published_label: dict[str, str]) -> dict[str, str]:
    task, dept, gran, mod = r.task, r.department or NONE, r.granularity, r.modality
    label = published_label.get(r.category, r.category)
    return {
        f"modality{SEP}label": f"{mod}{SEP}{label}",
        "clinical VQA task": task, "department": dept, "modality": mod,
        "perceptual granularity": gran,
        f"clinical VQA task{SEP}modality": f"{task}{SEP}{mod}",
        f"department{SEP}modality": f"{dept}{SEP}{mod}",
        f"perceptual granularity{SEP}modality": f"{gran}{SEP}{mod}",
        f"clinical VQA task{SEP}perceptual granularity": f"{task}{SEP}{gran}",
    }


class CoverageCounts:
    """The coverage report gathered record by record (:meth:`add`) as the records stream;
    memory bounded by the tree's nodes, not the number of questions.

    With the vocabulary, a published label that the vocabulary spells differently (a merged
    synonym or spelling variant) counts as covered by questions on its canonical label.
    """

    def __init__(self, vocab: Vocabulary | None = None):
        self.published_label: dict[str, str] = {}
        if vocab is not None:
            for labels in bundled_yaml(PUBLISHED_TREE)["labels"].values():
                for name in labels:
                    entry = vocab.resolve(name)
                    if entry is not None and entry.label != name:
                        self.published_label.setdefault(entry.label, name)
        self.total = 0
        self.per: dict[str, dict[str, Counter[str]]] = {title: {} for title in AXES}
        self.present: dict[str, set[str]] = {}

    def add(self, r: ManifestRecord) -> None:
        self.total += 1
        for title, value_of in AXES.items():
            self.per[title].setdefault(value_of(r) or NONE, Counter())[r.split] += 1
        for level, value in _node_values(r, self.published_label).items():
            self.present.setdefault(level, set()).add(value)

    def report(self) -> dict[str, Any]:
        """Counts per axis and split, and the published nodes without a question, per level."""
        counts = {title: {v: {"VAL": c["VAL"], "TEST": c["TEST"], "total": c["VAL"] + c["TEST"]}
                          for v, c in sorted(per.items())}
                  for title, per in self.per.items()}
        levels = {}
        for level, nodes in published_nodes().items():
            have = self.present.get(level, set())
            levels[level] = {
                "published": len(nodes),
                "covered": sum(n in have for n in nodes),
                "empty": [n for n in nodes if n not in have],
                "outside_published": sorted(have - set(nodes)),
            }
        return {"total": self.total, "counts": counts, "published_tree": levels}


def coverage_report(records: Iterable[ManifestRecord],
                    vocab: Vocabulary | None = None) -> dict[str, Any]:
    """Counts per axis and split, and the published nodes without a question, per level
    (:class:`CoverageCounts` over ``records``)."""
    counts = CoverageCounts(vocab)
    for r in records:
        counts.add(r)
    return counts.report()


def coverage_table(report: dict[str, Any]) -> str:
    """The short table the build prints: published nodes covered per level."""
    lines = ["| tree level | covered | published | questions outside the published tree |",
             "|---|---:|---:|---:|"]
    for level, s in report["published_tree"].items():
        lines.append(f"| {level} | {s['covered']} | {s['published']} | "
                     f"{len(s['outside_published'])} |")
    return "\n".join(lines) + "\n"


def coverage_markdown(report: dict[str, Any], name: str) -> str:
    lines = [f"# Coverage: {name}", "", f"Questions: {report['total']}", "",
             "## Published GMAI-MMBench tree", "", coverage_table(report).rstrip()]
    for level, s in report["published_tree"].items():
        lines += ["", f"### Empty {level} nodes ({len(s['empty'])} of {s['published']})", ""]
        lines.append(", ".join(s["empty"]) if s["empty"] else "none")
        if s["outside_published"]:
            lines += ["", "Built but not in the published tree: " + ", ".join(s["outside_published"])]
    for title, values in report["counts"].items():
        lines += ["", f"## By {title}", "", f"| {title} | VAL | TEST | total |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {v.replace('|', '/')} | {c['VAL']} | {c['TEST']} | {c['total']} |"
                  for v, c in values.items()]
    return "\n".join(lines) + "\n"


def write_coverage(stage: Path, report: dict[str, Any], name: str) -> None:
    """coverage.json and coverage.md (of a :meth:`CoverageCounts.report`) into the staging
    folder."""
    (stage / COVERAGE_JSON).write_text(
        json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (stage / COVERAGE_MD).write_text(coverage_markdown(report, name), encoding="utf-8")


def coverage_lines(out_dir: Path, short: bool = False) -> str:
    """What the build prints from its coverage.json: the table, or (``short``) one line."""
    report = json.loads((out_dir / COVERAGE_JSON).read_text(encoding="utf-8"))
    if short:
        names = {"clinical VQA task": "tasks", "department": "departments", "modality": "modalities",
                 "perceptual granularity": "granularities",
                 f"clinical VQA task{SEP}perceptual granularity": "task x granularity cells",
                 f"modality{SEP}label": "labels"}
        tree = report["published_tree"]
        parts = [f"{names[k]} {tree[k]['covered']}/{tree[k]['published']}" for k in names]
        return "  published tree covered: " + ", ".join(parts) + " (empty nodes: coverage.md)"
    return ("Published GMAI-MMBench tree nodes with questions (coverage.md lists the empty ones):\n"
            + coverage_table(report))
