"""What the command line prints after a build: a short summary, not the whole ``summary.md``.

A few lines a user reads at a glance (questions per split, per granularity and per source, and
where the files are); the full tables stay in ``summary.md`` / ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _counts(table: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{name} {c.get('VAL', 0) + c.get('TEST', 0)}" for name, c in table.items())


def short_summary(summary: dict[str, Any], name: str, out: Path) -> str:
    """The build's summary in a few lines, ending with where its outputs are."""
    splits = ", ".join(f"{split} {n}" for split, n in summary["splits"].items())
    lines = [
        f"{name}: {summary['total']} questions ({splits})",
        f"  by granularity: {_counts(summary['perceptual granularity'])}",
        f"  by source: {_counts(summary['source'])}",
    ]
    skipped = summary.get("skipped") or {}
    if skipped:
        lines.append(f"  skipped: {sum(skipped.values())} cases (reasons in summary.md)")
    if summary.get("skipped_samples"):  # on_error: skip and declared drops, file by file
        lines.append(f"  skipped: {len(summary['skipped_samples'])} samples or targets "
                     "(files and reasons in summary.md)")
    if summary.get("notes"):
        lines.append(f"  notes: {len(summary['notes'])} (clipped boxes, NaN/inf pixels, ...: "
                     "summary.md)")
    lines.append(f"  wrote {out / (name + '_VAL.tsv')}, {name}_TEST.tsv, {name}_TEST_answers.tsv "
                 "(full tables: summary.md)")
    return "\n".join(lines)
