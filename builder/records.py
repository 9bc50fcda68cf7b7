"""Records stage: the store's numbered questions -> manifest records
(:class:`~gmai_build.manifest.ManifestRecord`) in index order, and what a record's TSV rows show.

The manifest record is the contract between the builder and everything that reads a build
(the evaluator, audit, exports, the next incremental build). Records stream from the store one
at a time (:func:`records`): every output is written from that one stream. The split report
gets its final form here, naming questions by index (never by sample id or group, which may be
identifying folder names).

TEST shows nothing that gives the answer away (:func:`test_views`): its ``category`` column holds
the clinical VQA task instead of the label (GMAI-MMBench's TEST ``category`` equals the correct
option's text), so VLMEvalKit's ``report_acc`` still groups by it; the task and department
columns are shown only when every option of the question shares them (else empty, which
VLMEvalKit groups as 'None'). The true values go to the answer key and the manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .errors import BuildError
from .manifest import BlindColumns, ManifestRecord
from .questions import Question
from .samples import Case
from .split import VAL
from .store import BuildStore, StoredQuestion
from .taxonomy import FROM_SOURCE, Vocabulary
from .writer import HIDDEN_TASK


def records(store: BuildStore, vocab: Vocabulary, seed: int
            ) -> Iterator[tuple[ManifestRecord, StoredQuestion]]:
    """Every question of the store as its manifest record, in index order, one at a time."""
    placed = first_placements(store)
    for q in store.questions():
        view = test_view(q.case, q.options, placed, vocab)
        yield manifest_record(q, seed, view), q


def split_report(store: BuildStore, report: dict[str, Any]) -> dict[str, Any]:
    """The split report completed from the questions: VAL share of groups, groups per source,
    near-duplicate pairs and groups kept together named by question index."""
    together = {tuple(g) for unit in report["kept_together"] for g in unit}
    first_index: dict[tuple[str, str], int] = {}
    per_source: dict[str, dict[str, int]] = {}
    n_groups = n_val = 0
    for source, grp, split, other, first in store.query(
            "SELECT c.source, c.grp, MIN(q.split), MAX(q.split), MIN(q.idx) FROM questions q "
            "JOIN cases c ON c.seq = q.case_seq GROUP BY c.source, c.grp "
            "ORDER BY c.source, c.grp"):
        if split != other:  # cannot happen (a split is a function of the group): an invariant
            raise BuildError(f"group {grp} would be in both VAL and TEST", source=source)
        n_groups += 1
        n_val += split == VAL
        per_source.setdefault(source, {"VAL": 0, "TEST": 0})[split] += 1
        if (source, grp) in together:
            first_index[(source, grp)] = first

    def index_of(case_id: str) -> int | None:
        row = next(store.query("SELECT q.idx FROM questions q JOIN cases c ON c.seq = q.case_seq"
                               " WHERE c.case_id = ?", (case_id,)), None)
        return row[0] if row else None

    pairs = [{"a": index_of(p["a_case"]), "b": index_of(p["b_case"]),
              "distance": p["distance"]} for p in report["near_duplicates"]]
    kept = [sorted(first_index[tuple(g)] for g in unit if tuple(g) in first_index)
            for unit in report["kept_together"]]
    return {
        **report,
        "kept_together": [k for k in kept if len(k) > 1],
        "groups": n_groups,
        "val_groups": n_val,
        "val_share_groups": round(100 * n_val / max(1, n_groups), 2),
        "groups_per_source": per_source,
        "near_duplicates": pairs,
    }


def manifest_record(q: StoredQuestion, seed: int, test_view: BlindColumns) -> ManifestRecord:
    """The record of a stored question. Its ``image_sha256`` is empty: the output stage
    fills it in, from the checksum the TSV pieces take of each PNG as they write it
    (:mod:`gmai_build.outputs`), so the image is read and hashed once, after selection."""
    c = q.case
    return ManifestRecord(
        index=q.index,
        case_id=c.case_id,
        pair_id=c.pair_id,
        split=q.split,
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
        image_sha256="",
        image_phash=c.phash,
        test_view=test_view,
    )


Placements = dict[str, tuple[str, str]]  # label -> (task, department) it was given


def first_placements(store: BuildStore) -> Placements:
    """The task and department each answer label got, from its first question in index order."""
    placed: Placements = {}
    for label, task, department in store.query(
            "SELECT c.label, c.task, c.department FROM questions q "
            "JOIN cases c ON c.seq = q.case_seq ORDER BY q.idx"):
        placed.setdefault(label, (task, department))
    return placed


def test_view(c: Case, options: Sequence[str], placed: Placements,
              vocab: Vocabulary) -> BlindColumns:
    """What a question's TEST row shows in place of the truth (see :func:`test_views`)."""

    def placement(label: str, modality: str) -> tuple[str, str] | None:
        if label in placed:
            return placed[label]
        entry = vocab.resolve(label)
        if entry is None or entry.placement(modality)[1] == FROM_SOURCE:
            return None
        return entry.placement(modality)

    others = [placement(o, c.modality) for o in options if o != c.label]
    task = c.task if all(p is not None and p[0] == c.task for p in others) else ""
    dept = (c.department if all(p is not None and p[1] == c.department for p in others)
            else "")
    # VLMEvalKit's report_acc sorts the category values: one may never be empty (NaN).
    return BlindColumns(category=task or HIDDEN_TASK, task=task, department=dept)


def test_views(questions: Sequence[Question], vocab: Vocabulary) -> list[BlindColumns]:
    """What each question's TEST row shows in place of the truth (questions in index order).

    An option's task and department are what the build gave that label (as an answer; the
    first question in index order wins) or else what the vocabulary gives it on the question's
    modality; a column whose value differs between options (or is unknown for one) would point
    at the answer, so it is left empty.
    """
    placed: Placements = {}
    for q in questions:
        placed.setdefault(q.case.label, (q.case.task, q.case.department))
    return [test_view(q.case, q.options, placed, vocab) for q in questions]


def tsv_row(r: ManifestRecord) -> dict[str, Any]:
    """The VAL row of a record but its image (TEST rows replace some columns by
    :attr:`test_view`; :mod:`gmai_build.assembly` adds the image)."""
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
    }
    for letter, text in zip("ABCDE", r.options):
        row[letter] = text
    return row
