"""Accuracy overall and per group, bootstrap confidence intervals, tables and plots.

Groups: ``clinical VQA task``, ``department``, ``modality``, ``perceptual granularity``,
``source`` (only when the column exists) and ``category`` (the label). Missing group values
(e.g. the empty department) form their own group, ``(none)``, instead of VLMEvalKit's NaN.

Accuracy = correct / questions, in percent; a question without a prediction counts as wrong
(and is reported as missing). The 95% interval is a seeded percentile bootstrap over the
group's questions (1000 resamples by default). Resampling n 0/1 outcomes with replacement
gives a Binomial(n, accuracy) count, so it is drawn as such: same distribution, no n x 1000
index matrix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import GROUP_COLUMNS, Index, group_value, is_missing, iter_metadata, normalize_index
from .runner import best_records, prediction_files

log = logging.getLogger(__name__)
OVERALL = "overall"
PLOT_GROUPS = ("clinical VQA task", "department")


def manifest_sources(data: str | Path) -> dict[Index, str] | None:
    """index -> source from a gmai-build ``manifest.jsonl`` beside the TSV, if there is one.

    Built TSVs keep GMAI-MMBench's exact columns (no ``source``); the build's manifest has it.
    """
    path = Path(data).parent / "manifest.jsonl"
    if not path.is_file():
        return None
    out: dict[Index, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if "index" in rec and "source" in rec:
                    out[normalize_index(rec["index"])] = str(rec["source"])
    return out or None


def collect(data: str | Path, pred_dir: str | Path, answers: dict[Index, str] | None = None,
            keep_na_text: bool = False) -> pd.DataFrame:
    """One row per question: answer, prediction, method, correct, and the group columns."""
    records = best_records(prediction_files(Path(pred_dir)))
    sources = manifest_sources(data)
    key_groups = getattr(answers, "groups", None) or {}  # true category etc. from the key
    rows = []
    for chunk in iter_metadata(data, keep_na_text=keep_na_text):
        groups = [c for c in GROUP_COLUMNS if c in chunk.columns]
        for rec in chunk.to_dict("records"):
            index = normalize_index(rec["index"])
            if sources is not None and "source" not in chunk.columns:
                rec["source"] = sources.get(index)
                if "source" not in groups:
                    groups.append("source")
            rec.update(key_groups.get(index, {}))
            answer = answers.get(index) if answers is not None else None
            if answer is None and not is_missing(rec.get("answer")):
                answer = str(rec["answer"]).strip()
            pred = records.get(index, {})
            prediction = pred.get("prediction")
            row = {
                "index": index,
                "answer": answer,
                "prediction": prediction,
                "method": pred.get("method", "missing"),
                "correct": bool(prediction is not None and prediction == answer),
            }
            row.update({g: group_value(rec.get(g)) for g in groups})
            rows.append(row)
    return pd.DataFrame(rows)


def bootstrap_ci(n: int, correct: int, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of an accuracy (percent) from n questions."""
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.binomial(n, correct / n, size=n_boot) / n * 100
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def summarize(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rows (group, value, n, correct, accuracy, ci_low, ci_high, missing), overall first."""
    out = []

    def add(group: str, value: str, part: pd.DataFrame) -> None:
        n, k = len(part), int(part["correct"].sum())
        lo, hi = bootstrap_ci(n, k, n_boot, seed)
        out.append({"group": group, "value": value, "n": n, "correct": k,
                    "accuracy": 100 * k / n if n else float("nan"), "ci_low": lo, "ci_high": hi,
                    "missing": int((part["method"] == "missing").sum())})

    add(OVERALL, OVERALL, df)
    for group in GROUP_COLUMNS:
        if group not in df.columns:
            continue
        for value, part in sorted(df.groupby(group, sort=False), key=lambda kv: str(kv[0])):
            add(group, str(value), part)
    return pd.DataFrame(out)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of a small frame (no tabulate dependency)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def scores_markdown(summary: pd.DataFrame, title: str) -> str:
    """One Markdown section per group."""
    parts = [f"# {title}\n"]
    for group, part in summary.groupby("group", sort=False):
        view = part[["value", "n", "correct", "accuracy", "ci_low", "ci_high"]]
        parts.append(f"\n## {group}\n\n" + markdown_table(view))
    return "".join(parts)


def plot_group(summary: pd.DataFrame, group: str, path: Path, title: str) -> None:
    """Horizontal bar chart of one group's accuracies with 95% CI whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = summary[summary["group"] == group].sort_values("accuracy")
    if part.empty:
        return
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(part) + 1.5))
    err = np.vstack([part["accuracy"] - part["ci_low"], part["ci_high"] - part["accuracy"]])
    ax.barh(part["value"], part["accuracy"], xerr=err, color="#4C72B0", capsize=2)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%) with 95% bootstrap CI")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_scores(df: pd.DataFrame, out_dir: str | Path, title: str, n_boot: int = 1000,
                 seed: int = 0, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write scores.csv/.json/.md and per-task/department plots; return the JSON content."""
    out_dir = Path(out_dir)
    summary = summarize(df, n_boot, seed)
    summary.to_csv(out_dir / "scores.csv", index=False)
    (out_dir / "scores.md").write_text(scores_markdown(summary, title), encoding="utf-8")
    for group in PLOT_GROUPS:
        slug = group.replace(" ", "_")
        plot_group(summary, group, out_dir / f"accuracy_by_{slug}.png", f"{title}: {group}")
    overall = summary.iloc[0]
    result: dict[str, Any] = {
        "title": title,
        "n": int(overall["n"]),
        "accuracy": float(overall["accuracy"]),
        "ci95": [float(overall["ci_low"]), float(overall["ci_high"])],
        "missing": int(overall["missing"]),
        "methods": {str(k): int(v) for k, v in df["method"].value_counts().items()},
        "bootstrap": {"resamples": n_boot, "seed": seed},
        "groups": {
            str(g): {r["value"]: {k: r[k] for k in ("n", "correct", "accuracy", "ci_low",
                                                    "ci_high", "missing")}
                     for r in part.to_dict("records")}
            for g, part in summary.groupby("group", sort=False) if g != OVERALL
        },
    }
    if extra:
        result.update(extra)
    if result["missing"]:
        log.warning("%s: %d questions have no prediction (counted wrong)", title,
                    result["missing"])
    (out_dir / "scores.json").write_text(json.dumps(result, indent=2, default=float),
                                         encoding="utf-8")
    return result


def compare(score_files: list[Path], out: Path | None = None,
            skip_groups: tuple[str, ...] = ("category",)) -> pd.DataFrame:
    """Models side by side: overall and per-group accuracy (per-label rows left out).

    The ~1,000 per-label (``category``) rows stay in each model's own scores files.
    """
    columns: dict[str, dict[tuple[str, str], float]] = {}
    for path in score_files:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
        name = res.get("model") or Path(path).parent.parent.name
        split = res.get("split") or Path(path).parent.name
        col = columns.setdefault(f"{name} [{split}]", {})
        col[(OVERALL, OVERALL)] = res["accuracy"]
        for group, values in res["groups"].items():
            if group in skip_groups:
                continue
            for value, stats in values.items():
                col[(group, value)] = stats["accuracy"]
    table = pd.DataFrame(columns)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["group", "value"])
    table = table.reset_index()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "comparison.csv", index=False)
        (out / "comparison.md").write_text(
            "# Model comparison (accuracy, %)\n\n" + markdown_table(table), encoding="utf-8")
    return table
