"""Circular accuracy: a question counts only when the model answers every rotation of it.

A CircularEval build (``gmai-build --circular``) writes each question once per rotation of its
options: rotation ``k`` has ``index + k * 1_000_000`` and ``g_index`` = the original's index,
VLMEvalKit's convention (``mcq_circular_eval`` in ``vlmeval/dataset/utils/multiple_choice.py``,
which takes ``index % 1e6`` when the TSV has no ``g_index`` column). As there, a group is scored
only when its original question (``index == g_index``) is present, and a rotation without a
prediction is wrong.

Reported beside it: vanilla accuracy on the originals only (VLMEvalKit's ``vanilla_0``) and
on every row (``vanilla_all``), overall and per group column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .data import GROUP_COLUMNS, Index, iter_metadata, normalize_index, read_header

OFFSET = 1_000_000
GROUP_INDEX = "g_index"


def read_group_index(data: str | Path) -> dict[Index, int] | None:
    """index -> g_index from the TSV's ``g_index`` column (None when it has none)."""
    if GROUP_INDEX not in read_header(data):
        return None
    out: dict[Index, int] = {}
    for chunk in iter_metadata(data):
        for index, g in zip(chunk["index"], chunk[GROUP_INDEX], strict=True):
            out[normalize_index(index)] = int(g)
    return out


def is_circular(df: pd.DataFrame, g_index: dict[Index, int] | None = None) -> bool:
    """The scored rows hold rotated copies (a ``g_index`` column or indices past 1e6)."""
    if g_index is not None:
        return True
    return any(isinstance(i, int) and i >= OFFSET for i in df["index"])


def _with_groups(df: pd.DataFrame, g_index: dict[Index, int] | None) -> pd.DataFrame:
    rows = df[df["index"].map(lambda i: isinstance(i, int) or (g_index or {}).get(i) is not None)]
    rows = rows.copy()
    rows["g_index"] = [
        (g_index or {}).get(i, i % OFFSET if isinstance(i, int) else i) for i in rows["index"]
    ]
    rows["is_original"] = rows["index"] == rows["g_index"]
    return rows


def _stats(rows: pd.DataFrame) -> dict[str, Any]:
    originals = rows[rows["is_original"]]
    hits = rows.groupby("g_index")["correct"].all()
    hits = hits[hits.index.isin(originals["g_index"])]
    n = len(hits)
    return {
        "n": n,
        "rows": len(rows),
        "circular_correct": int(hits.sum()),
        "circular_accuracy": 100 * float(hits.mean()) if n else float("nan"),
        "vanilla_accuracy": 100 * float(originals["correct"].mean()) if n else float("nan"),
        "vanilla_all_accuracy": 100 * float(rows["correct"].mean()) if len(rows) else float("nan"),
    }


def circular_summary(df: pd.DataFrame, g_index: dict[Index, int] | None = None) -> dict[str, Any]:
    """Circular and vanilla accuracy overall and per group column (groups from the originals).

    ``df`` has one row per TSV row with ``index`` and ``correct`` (as from
    :func:`gmai_eval.scoring.collect`) and any group columns.
    """
    rows = _with_groups(df, g_index)
    out = _stats(rows)
    originals = rows[rows["is_original"]].set_index("g_index")
    out["groups"] = {}
    for column in GROUP_COLUMNS:
        if column not in rows.columns:
            continue
        value_of = originals[column].to_dict()
        by_value: dict[str, Any] = {}
        for value in sorted({str(v) for v in value_of.values()}):
            members = {g for g, v in value_of.items() if str(v) == value}
            by_value[value] = _stats(rows[rows["g_index"].isin(members)])
        out["groups"][column] = by_value
    return out


def markdown(summary: dict[str, Any], title: str) -> str:
    head = "| value | n | circular | vanilla (originals) | vanilla (all rows) |\n|---|---:|---:|---:|---:|"

    def line(value: str, s: dict[str, Any]) -> str:
        return (f"| {value} | {s['n']} | {s['circular_accuracy']:.2f} | {s['vanilla_accuracy']:.2f}"
                f" | {s['vanilla_all_accuracy']:.2f} |")

    parts = [f"# {title}: CircularEval\n", head, line("overall", summary)]
    for column, values in summary["groups"].items():
        parts += ["", f"## {column}", "", head]
        parts += [line(v.replace("|", "\\|"), s) for v, s in values.items()]
    return "\n".join(parts) + "\n"


def score_circular(data: str | Path, df: pd.DataFrame, out_dir: str | Path,
                   title: str) -> dict[str, Any] | None:
    """Write scores_circular.json/.md beside the vanilla scores when ``data`` is circular."""
    g_index = read_group_index(data)
    if df.empty or not is_circular(df, g_index):
        return None
    summary = circular_summary(df, g_index)
    summary["title"] = title
    out = Path(out_dir)
    (out / "scores_circular.json").write_text(json.dumps(summary, indent=2, default=float),
                                              encoding="utf-8")
    (out / "scores_circular.md").write_text(markdown(summary, title), encoding="utf-8")
    return summary
