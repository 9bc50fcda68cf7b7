"""Accuracy overall and per group, Wilson intervals, tables, plots and model comparisons.

Groups: ``clinical VQA task``, ``department``, ``modality``, ``perceptual granularity``,
``source`` (when known) and ``category`` (the label; read from the answer key when the key
carries it, since a TEST TSV may hold only a placeholder). Missing group values (e.g. the empty
department) form their own group, ``(none)``, instead of VLMEvalKit's NaN.

Every question has one outcome:

- ``correct`` / ``wrong``: the extracted letter equals / differs from the answer (``Z``, a
  refusal or an unreadable reply is wrong, as in VLMEvalKit);
- ``api_failed``: the model server failed for good: counted wrong, reported apart;
- ``missing``: no prediction at all: counted wrong, reported apart;
- ``invalid``: the row itself is broken (no options, an answer that is not an option, an
  undecodable or empty image, a duplicated index): reported and left out of ``n``.

Accuracy = correct / n with n = all questions except ``invalid`` ones, in percent by default
or as a fraction (VLMEvalKit writes fractions). The 95% interval is Wilson's score interval:
unlike a bootstrap or the normal approximation it does not collapse to zero width for 0/n or
n/n (0/4 -> 0-49%).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from gmai_build.manifest import MANIFEST, iter_manifest

from .data import (
    GROUP_COLUMNS,
    Index,
    group_value,
    is_missing,
    iter_metadata,
    normalize_index,
    row_problem,
)

log = logging.getLogger(__name__)
OVERALL = "overall"
PLOT_GROUPS = ("clinical VQA task", "department", "perceptual granularity", "modality")
OUTCOMES = ("correct", "wrong", "api_failed", "missing", "invalid")
Z95 = 1.959963984540054
SCALES = {"percent": 100.0, "fraction": 1.0}


def manifest_sources(data: str | Path) -> dict[Index, str] | None:
    """index -> source from a gmai-build ``manifest.jsonl`` beside the TSV, if there is one.

    Built TSVs keep GMAI-MMBench's exact columns (no ``source``); the build's manifest has it.
    A manifest that is not a valid one is a :class:`~gmai_build.manifest.ManifestError` naming
    the line and the field (scores per source from half a manifest would be wrong).
    """
    path = Path(data).parent / MANIFEST
    if not path.is_file():
        return None
    hint = ("; gmai-eval reads each question's source from the manifest beside the TSV: restore "
            "the build's manifest.jsonl, or move it away to score without the source groups")
    out = {normalize_index(rec.index): rec.source for rec in iter_manifest(path, hint)}
    return out or None


def outcome(record: dict[str, Any] | None, answer: str | None) -> str:
    """One of ``OUTCOMES`` for a question's prediction record."""
    if record is None:
        return "missing"
    method = record.get("method")
    if method == "invalid":
        return "invalid"
    if method == "error" or record.get("error"):
        return "api_failed"
    return "correct" if record.get("prediction") == answer else "wrong"


def collect(data: str | Path, records: dict[Index, dict[str, Any]],
            answers: dict[Index, str] | None = None,
            key_groups: dict[Index, dict[str, str]] | None = None,
            keep_na_text: bool = False) -> pd.DataFrame:
    """One row per question of ``data``: answer, prediction, method, outcome and the groups.

    ``records`` maps index -> prediction record (see ``predictions.load_predictions``).
    ``answers`` / ``key_groups`` come from a held-apart key and win over the TSV's columns.
    """
    sources = manifest_sources(data)
    rows = []
    for chunk in iter_metadata(data, keep_na_text=keep_na_text):
        letters = [c for c in chunk.columns if len(c) == 1 and c.isupper()]
        groups = [c for c in GROUP_COLUMNS if c in chunk.columns]
        for rec in chunk.to_dict("records"):
            index = normalize_index(rec["index"])
            if sources is not None and "source" not in chunk.columns:
                rec["source"] = sources.get(index)
            if key_groups and index in key_groups:
                rec.update(key_groups[index])
            answer = answers.get(index) if answers is not None else None
            if answer is None and not is_missing(rec.get("answer")):
                answer = str(rec["answer"]).strip()
            options = {k: str(rec[k]) for k in letters if not is_missing(rec[k])}
            pred = records.get(index)
            row = {
                "index": index,
                "answer": answer,
                "prediction": None if pred is None else pred.get("prediction"),
                "method": "missing" if pred is None else pred.get("method", "imported"),
                "outcome": outcome(pred, answer),
                "problem": row_problem(options, answer) if answer is not None else None,
            }
            if pred is not None and pred.get("invalid"):
                row["problem"] = pred["invalid"]
            for g in dict.fromkeys([*groups, *(key_groups or {}).get(index, {}), "source"]):
                if g in rec:
                    row[g] = group_value(rec.get(g))
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    dup = df["index"].duplicated(keep=False)
    df.loc[dup, "problem"] = "index occurs more than once in the TSV"
    df.loc[df["problem"].notna(), "outcome"] = "invalid"
    df["correct"] = df["outcome"] == "correct"
    return df


def wilson_ci(n: int, correct: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (as fractions 0-1); NaN for n = 0."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exactly 0 / 1 at the ends (the formula gives them up to rounding).
    return (0.0 if correct == 0 else centre - half, 1.0 if correct == n else centre + half)


def summarize(df: pd.DataFrame, scale: str = "percent") -> pd.DataFrame:
    """Rows (group, value, n, correct, accuracy, ci_low, ci_high, and one count per outcome
    that is reported apart), overall first; ``n`` leaves out invalid rows."""
    factor = SCALES[scale]
    out = []

    def add(group: str, value: str, part: pd.DataFrame) -> None:
        counts = part["outcome"].value_counts()
        invalid = int(counts.get("invalid", 0))
        n, k = len(part) - invalid, int(counts.get("correct", 0))
        lo, hi = wilson_ci(n, k)
        out.append({"group": group, "value": value, "n": n, "correct": k,
                    "accuracy": factor * k / n if n else float("nan"),
                    "ci_low": factor * lo, "ci_high": factor * hi,
                    "missing": int(counts.get("missing", 0)),
                    "api_failed": int(counts.get("api_failed", 0)),
                    "judge_failed": int((part["method"] == "judge_failed").sum()),
                    "invalid": invalid})

    add(OVERALL, OVERALL, df)
    for group in GROUP_COLUMNS:
        if group not in df.columns:
            continue
        for value, part in sorted(df.groupby(group, sort=False), key=lambda kv: str(kv[0])):
            add(group, str(value), part)
    return pd.DataFrame(out)


def markdown_table(frame: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table of a small frame (no tabulate dependency)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _digits(scale: str) -> int:
    return 2 if scale == "percent" else 4


def scores_markdown(summary: pd.DataFrame, title: str, scale: str = "percent") -> str:
    """One Markdown section per group."""
    unit = "%" if scale == "percent" else "fraction"
    parts = [f"# {title}\n\naccuracy in {unit}, 95% Wilson interval; n leaves out invalid "
             "rows; missing and api_failed rows count as wrong.\n"]
    for group, part in summary.groupby("group", sort=False):
        view = part[["value", "n", "correct", "accuracy", "ci_low", "ci_high", "missing",
                     "api_failed", "invalid"]]
        parts.append(f"\n## {group}\n\n" + markdown_table(view, _digits(scale)))
    return "".join(parts)


def bar_label(accuracy: float, n: int, scale: str = "percent") -> str:
    """The text beside a bar: its value and its n."""
    return f"{accuracy:.1f}% (n={n})" if scale == "percent" else f"{accuracy:.3f} (n={n})"


def plot_group(summary: pd.DataFrame, group: str, path: Path, title: str,
               scale: str = "percent") -> bool:
    """Horizontal bars of one group's accuracies with Wilson whiskers; each bar is labelled
    with its value and n. Returns False (no file) when the group is absent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = summary[(summary["group"] == group) & (summary["n"] > 0)].sort_values("accuracy")
    if part.empty:
        return False
    top = SCALES[scale]
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(part) + 1.6))
    err = [(part["accuracy"] - part["ci_low"]).clip(lower=0).to_numpy(),
           (part["ci_high"] - part["accuracy"]).clip(lower=0).to_numpy()]
    ax.barh(part["value"], part["accuracy"], xerr=err, color="#4C72B0", capsize=2)
    for y, (acc, n) in enumerate(zip(part["accuracy"], part["n"], strict=True)):
        ax.text(top * 1.01, y, bar_label(acc, n, scale), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.25)
    ax.set_xticks([top * k / 5 for k in range(6)])
    ax.set_xlabel(f"accuracy ({'%' if scale == 'percent' else 'fraction'}) with 95% Wilson "
                  "interval")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_scores(df: pd.DataFrame, out_dir: str | Path, title: str, scale: str = "percent",
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write scores.csv/.json/.md and one plot per task/department/granularity/modality."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(df, scale)
    summary.to_csv(out_dir / "scores.csv", index=False)
    (out_dir / "scores.md").write_text(scores_markdown(summary, title, scale), encoding="utf-8")
    plots = []
    for group in PLOT_GROUPS:
        path = out_dir / f"accuracy_by_{group.replace(' ', '_')}.png"
        if plot_group(summary, group, path, f"{title}: {group}", scale):
            plots.append(path.name)
    overall = summary.iloc[0]
    keys = ("n", "correct", "accuracy", "ci_low", "ci_high", "missing", "api_failed",
            "judge_failed", "invalid")
    result: dict[str, Any] = {
        "title": title,
        "scale": scale,
        "n": int(overall["n"]),
        "correct": int(overall["correct"]),
        "accuracy": float(overall["accuracy"]),
        "ci95": [float(overall["ci_low"]), float(overall["ci_high"])],
        "ci_method": "wilson",
        "missing": int(overall["missing"]),
        "api_failed": int(overall["api_failed"]),
        "judge_failed": int(overall["judge_failed"]),
        "invalid": int(overall["invalid"]),
        "invalid_rows": {str(i): p for i, p in zip(df["index"], df["problem"], strict=True)
                         if isinstance(p, str)},
        "methods": {str(k): int(v) for k, v in df["method"].value_counts().items()},
        "plots": plots,
        "groups": {
            str(g): {r["value"]: {k: r[k] for k in keys} for r in part.to_dict("records")}
            for g, part in summary.groupby("group", sort=False) if g != OVERALL
        },
    }
    if extra:
        result.update(extra)
    for what in ("missing", "api_failed", "judge_failed", "invalid"):
        if result[what]:
            log.warning("%s: %d questions %s", title, result[what], {
                "missing": "have no prediction (counted wrong)",
                "api_failed": "failed at the model server (counted wrong)",
                "judge_failed": "were undecidable and the judge failed (Z, counted wrong)",
                "invalid": "are invalid rows (reported, left out of n)"}[what])
    (out_dir / "scores.json").write_text(json.dumps(result, indent=2, default=float),
                                         encoding="utf-8")
    return result


def compare(score_files: list[Path], out: Path | None = None,
            skip_groups: tuple[str, ...] = ("category",), scale: str = "percent") -> pd.DataFrame:
    """Models side by side, every split (VAL, TEST scored with its key, ...) in one table.

    Rows: overall and each group value; columns: ``model [split]``. Accuracies are recomputed
    from each file's counts, so files written in percent and in fractions mix. The ~1,000
    per-label (``category``) rows stay in each model's own scores files. With ``out``, also
    writes ``overview.{csv,md}``: one row per model, per split accuracy, interval and n.
    """
    factor = SCALES[scale]
    columns: dict[str, dict[tuple[str, str], float]] = {}
    overview: dict[str, dict[str, Any]] = {}
    for path in score_files:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
        name = res.get("model") or Path(path).parent.parent.name
        split = res.get("split") or Path(path).parent.name
        col = columns.setdefault(f"{name} [{split}]", {})

        def acc(stats: dict[str, Any], file_scale: str = res.get("scale", "percent")) -> float:
            n = stats.get("n", 0)
            if "correct" in stats and n:
                return factor * stats["correct"] / n
            # Older scores.json files: no counts, accuracy in the file's own scale.
            return factor * float(stats.get("accuracy", float("nan"))) / SCALES[file_scale]

        col[(OVERALL, OVERALL)] = acc(res)
        lo, hi = wilson_ci(res.get("n", 0), res.get("correct", 0))
        overview.setdefault(name, {"model": name})[split] = (
            f"{acc(res):.{_digits(scale)}f} [{factor * lo:.{_digits(scale)}f}, "
            f"{factor * hi:.{_digits(scale)}f}] n={res.get('n', 0)}")
        for group, values in res["groups"].items():
            if group in skip_groups:
                continue
            for value, stats in values.items():
                col[(group, value)] = acc(stats)
    table = pd.DataFrame(columns)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["group", "value"])
    table = table.reset_index()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "comparison.csv", index=False)
        unit = "%" if scale == "percent" else "fraction"
        (out / "comparison.md").write_text(
            f"# Model comparison (accuracy, {unit})\n\n"
            + markdown_table(table, _digits(scale)), encoding="utf-8")
        view = pd.DataFrame(list(overview.values())).fillna("")
        view.to_csv(out / "overview.csv", index=False)
        (out / "overview.md").write_text(
            f"# Overall accuracy ({unit}, 95% Wilson interval, n) per model and split\n\n"
            + markdown_table(view), encoding="utf-8")
    return table
