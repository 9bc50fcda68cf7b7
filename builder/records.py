"""Records stage: questions -> numbered manifest records
(:class:`~gmai_build.manifest.ManifestRecord`), and what a record's TSV rows show.

The manifest record is the contract between the builder and everything that reads a build
(the evaluator, audit, exports, the next incremental build). Reused questions keep their index;
new ones follow the previous maximum. The split report gets its final form here, naming
questions by index (never by sample id or group, which may be identifying folder names).

TEST shows nothing that gives the answer away (:func:`test_views`): its ``category`` column holds
the clinical VQA task instead of the label (GMAI-MMBench's TEST ``category`` equals the correct
option's text), so VLMEvalKit's ``report_acc`` still groups by it; the task and department
columns are shown only when every option of the question shares them (else empty, which
VLMEvalKit groups as 'None'). The true values go to the answer key and the manifest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .config import Config
from .errors import BuildError
from .manifest import BlindColumns, ManifestRecord
from .questions import Question
from .split import VAL
from .taxonomy import FROM_SOURCE, Vocabulary
from .writer import HIDDEN_TASK, ImageSlice


def number_and_split(
    questions: list[Question], previous: Mapping[str, ManifestRecord], config: Config,
    image_sha256: dict[str, str], splits: dict[tuple[str, str], str], report: dict[str, Any],
    vocab: Vocabulary,
) -> tuple[list[ManifestRecord], dict[str, Any]]:
    """Manifest records sorted by index (reused questions keep theirs, new ones follow), and
    the split report completed: VAL share of groups, groups per source, pairs by index."""
    b = config.build
    next_index = max((r.index for r in previous.values()), default=-1) + 1
    numbered: list[tuple[int, Question]] = []
    for q in questions:
        old = previous.get(q.case.case_id)
        if old is not None:  # reused or regenerated: the same target keeps its index
            index = old.index
        else:
            index, next_index = next_index, next_index + 1
        numbered.append((index, q))
    numbered.sort(key=lambda n: n[0])
    views = test_views([q for _, q in numbered], vocab)
    records = [manifest_record(q, index, splits[(q.case.source, q.case.group)], b.seed,
                               image_sha256[q.case.case_id], view)
               for (index, q), view in zip(numbered, views, strict=True)]
    check_no_leak(records)
    index_of = {r.case_id: r.index for r in records}
    asked = {(r.source, r.group): r.split for r in records}
    per_source: dict[str, dict[str, int]] = {}
    for (src, _), split in sorted(asked.items()):
        per_source.setdefault(src, {"VAL": 0, "TEST": 0})[split] += 1
    n_val = sum(v == VAL for v in asked.values())
    pairs = [{"a": index_of.get(p["a_case"]), "b": index_of.get(p["b_case"]),
              "distance": p["distance"]} for p in report["near_duplicates"]]
    first_index: dict[tuple[str, str], int] = {}
    for r in records:
        first_index.setdefault((r.source, r.group), r.index)
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


def check_no_leak(records: list[ManifestRecord]) -> None:
    splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        splits[(r.source, r.group)].add(r.split)
    leaked = [k for k, v in splits.items() if len(v) > 1]
    if leaked:  # cannot happen (a split is a function of the group): an invariant, not a check
        raise BuildError(f"group {leaked[0][1]} would be in both VAL and TEST", source=leaked[0][0])


def manifest_record(q: Question, index: int, split: str, seed: int, image_sha256: str,
                    test_view: BlindColumns) -> ManifestRecord:
    c = q.case
    return ManifestRecord(
        index=index,
        case_id=c.case_id,
        pair_id=c.pair_id,
        split=split,
        source=c.source,
        sample_id=c.sample_id,
        files=tuple(c.files),
        group=c.group,
        raw_label=c.raw_label,
        category=c.label,
        task=c.task,
        department=c.department,
        modality=c.modality,
        granularity=c.granularity,
        original_task=c.original_task,
        axis=c.axis,
        slice_index=c.slice_index,
        region=c.region,
        template_id=q.template_id,
        question=q.question,
        options=tuple(q.options),
        answer=q.answer,
        seed=seed,
        image_sha256=image_sha256,
        image_phash=c.phash,
        test_view=test_view,
    )


def test_views(questions: Sequence[Question], vocab: Vocabulary) -> list[BlindColumns]:
    """What each question's TEST row shows in place of the truth (questions in index order).

    An option's task and department are what the build gave that label (as an answer; the
    first question in index order wins) or else what the vocabulary gives it on the question's
    modality; a column whose value differs between options (or is unknown for one) would point
    at the answer, so it is left empty.
    """
    placed: dict[str, tuple[str, str]] = {}
    for q in questions:
        placed.setdefault(q.case.label, (q.case.task, q.case.department))

    def placement(label: str, modality: str) -> tuple[str, str] | None:
        if label in placed:
            return placed[label]
        entry = vocab.resolve(label)
        if entry is None or entry.placement(modality)[1] == FROM_SOURCE:
            return None
        return entry.placement(modality)

    views = []
    for q in questions:
        c = q.case
        others = [placement(o, c.modality) for o in q.options if o != c.label]
        task = c.task if all(p is not None and p[0] == c.task for p in others) else ""
        dept = (c.department if all(p is not None and p[1] == c.department for p in others)
                else "")
        # VLMEvalKit's report_acc sorts the category values: one may never be empty (NaN).
        views.append(BlindColumns(category=task or HIDDEN_TASK, task=task, department=dept))
    return views


def tsv_row(r: ManifestRecord, image: ImageSlice) -> dict[str, Any]:
    """The VAL row of a record (TEST rows replace some columns by :attr:`test_view`);
    ``image``: where its base64 PNG lies (a worker wrote it)."""
    row: dict[str, Any] = {
        "index": r.index,
        "question": r.question,
        "answer": r.answer,
        "category": r.category,
        "clinical VQA task": r.task,
        "department": r.department,
        "perceptual granularity": r.granularity,
        "modality": r.modality,
        "original task": r.original_task,
        "image": image,
    }
    for letter, text in zip("ABCDE", r.options):
        row[letter] = text
    return row
