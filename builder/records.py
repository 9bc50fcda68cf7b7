"""Records stage: questions -> numbered manifest records, the TSV row of a record.

The manifest record is the contract between the builder and everything that reads a build
(the evaluator, audit, exports, the next incremental build). Reused questions keep their index;
new ones follow the previous maximum. The split report gets its final form here, naming
questions by index (never by sample id or group, which may be identifying folder names).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .config import Config
from .errors import BuildError
from .questions import Question
from .split import VAL
from .writer import ImageSlice


def number_and_split(
    questions: list[Question], reused_ids: set[str], previous: dict[str, dict],
    config: Config, image_sha256: dict[str, str], splits: dict[tuple[str, str], str],
    report: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Manifest records sorted by index (reused questions keep theirs, new ones follow), and
    the split report completed: VAL share of groups, groups per source, pairs by index."""
    b = config.build
    next_index = max((r["index"] for r in previous.values()), default=-1) + 1
    records = []
    for q in questions:
        c = q.case
        if c.case_id in previous:  # reused or regenerated: the same target keeps its index
            index = previous[c.case_id]["index"]
        else:
            index, next_index = next_index, next_index + 1
        split = splits[(c.source, c.group)]
        records.append(manifest_record(q, index, split, b.seed, image_sha256[c.case_id]))
    records.sort(key=lambda r: r["index"])
    check_no_leak(records)
    index_of = {r["case_id"]: r["index"] for r in records}
    asked = {(r["source"], r["group"]): r["split"] for r in records}
    per_source: dict[str, dict[str, int]] = {}
    for (src, _), split in sorted(asked.items()):
        per_source.setdefault(src, {"VAL": 0, "TEST": 0})[split] += 1
    n_val = sum(v == VAL for v in asked.values())
    pairs = [{"a": index_of.get(p["a_case"]), "b": index_of.get(p["b_case"]),
              "distance": p["distance"]} for p in report["near_duplicates"]]
    first_index: dict[tuple[str, str], int] = {}
    for r in records:
        first_index.setdefault((r["source"], r["group"]), r["index"])
    together = [sorted(first_index[tuple(g)] for g in unit if tuple(g) in first_index)
                for unit in report["kept_together"]]
    return records, {
        **report,
        "kept_together": [t for t in together if len(t) > 1],
        "groups": len(asked),
        "val_groups": n_val,
        "val_share_groups": round(100 * n_val / max(1, len(asked)), 2),
        "groups_per_source": per_source,
        "near_duplicates": pairs,
    }


def check_no_leak(records: list[dict[str, Any]]) -> None:
    splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        splits[(r["source"], r["group"])].add(r["split"])
    leaked = [k for k, v in splits.items() if len(v) > 1]
    if leaked:  # cannot happen (a split is a function of the group): an invariant, not a check
        raise BuildError(f"group {leaked[0][1]} would be in both VAL and TEST", source=leaked[0][0])


def manifest_record(q: Question, index: int, split: str, seed: int, image_sha256: str) -> dict[str, Any]:
    c = q.case
    return {
        "index": index,
        "case_id": c.case_id,
        "pair_id": c.pair_id,
        "split": split,
        "source": c.source,
        "sample_id": c.sample_id,
        "files": list(c.files),
        "group": c.group,
        "raw_label": c.raw_label,
        "category": c.label,
        "task": c.task,
        "department": c.department,
        "modality": c.modality,
        "granularity": c.granularity,
        "original_task": c.original_task,
        "axis": c.axis,
        "slice_index": c.slice_index,
        "region": c.region,
        "template_id": q.template_id,
        "question": q.question,
        "options": q.options,
        "answer": q.answer,
        "seed": seed,
        "image_sha256": image_sha256,
        "image_phash": c.phash,
    }


def tsv_row(r: dict[str, Any], image: ImageSlice) -> dict[str, Any]:
    """The TSV row of a record; ``image``: where its base64 PNG lies (a worker wrote it)."""
    row = {
        "index": r["index"],
        "question": r["question"],
        "answer": r["answer"],
        "category": r["category"],
        "clinical VQA task": r["task"],
        "department": r["department"],
        "perceptual granularity": r["granularity"],
        "modality": r["modality"],
        "original task": r["original_task"],
        "image": image,
    }
    for letter, text in zip("ABCDE", r["options"]):
        row[letter] = text
    return row


