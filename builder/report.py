"""What a build left out or changed, file by file: the ``skipped`` and ``notes`` of the summary.

Nothing is dropped silently. Converters and the worker stage record an :class:`Entry` for every
sample skipped under ``on_error: skip`` and for every declared drop (a missing mask with
``missing_mask: skip``, an empty mask, a constant slice, contours on slices that are not on
disk, ...), and a note for every change that keeps the sample (boxes clipped to the image,
NaN/inf pixels shown at the window floor, uneven DICOM slice gaps). Files are named by the
same tokens as the manifest (see :mod:`gmai_build.privacy`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

SKIPPED = "skipped"
NOTE = "note"
MARKDOWN_ROWS = 500  # summary.md lists this many entries per kind; summary.json lists all


@dataclass(frozen=True, order=True)
class Entry:
    source: str
    kind: Literal["skipped", "note"]
    file: str  # token (or relative path for sources with identifying_paths: false)
    reason: str
    count: int = 1
    sample: str = ""  # the sample's token (as in the manifest) when known


def summary_section(entries: list[Entry]) -> dict[str, Any]:
    """The summary.json keys: every entry (sorted, so any worker count gives the same bytes),
    and totals per kind."""
    entries = sorted(entries)
    out: dict[str, Any] = {}
    for kind, key in ((SKIPPED, "skipped_samples"), (NOTE, "notes")):
        rows = [asdict(e) for e in entries if e.kind == kind]
        for row in rows:
            del row["kind"]
        out[key] = rows
    out["skipped_samples_total"] = len(out["skipped_samples"])
    return out


def markdown_section(summary: dict[str, Any]) -> list[str]:
    """summary.md lines for the skipped samples and notes (empty when there are none)."""
    lines: list[str] = []
    for key, title in (("skipped_samples", "Skipped samples and targets"), ("notes", "Notes")):
        rows = summary.get(key) or []
        if not rows:
            continue
        lines += ["", f"## {title} ({len(rows)})", ""]
        by_reason = Counter(r["reason"] for r in rows)
        if len(by_reason) < len(rows):
            lines += [f"- {n} x {reason}" for reason, n in sorted(by_reason.items())] + [""]
        lines += ["| source | file | sample | reason | count |", "|---|---|---|---|---:|"]
        for r in rows[:MARKDOWN_ROWS]:
            reason = str(r["reason"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['source']} | {r['file']} | {r['sample']} | {reason} | "
                         f"{r['count']} |")
        if len(rows) > MARKDOWN_ROWS:
            lines.append(f"| ... | | | {len(rows) - MARKDOWN_ROWS} more in summary.json | |")
    return lines
