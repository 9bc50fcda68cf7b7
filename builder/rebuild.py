"""Incremental builds: which previous questions are kept, regenerated or removed, and why.

A question is identified by its target (source, sample, raw label, region, granularity: the
case id), not by its answer. Building into a folder that holds a build reuses each previous
question whose target is still produced, *as it was*, unless something it depended on changed:

* its answer: the label map or vocabulary now gives the raw label another canonical label;
* its clinical VQA task (templates and option pools are chosen per task);
* an option: a distractor that this target may no longer be offered (gone from the build's
  labels, from the vocabulary, now a true label of the image, or the pool no longer borrows
  from the vocabulary), or an option count outside the configured ``options`` range;
* its template: gone from the question pool, or its text changed.

Such a question is regenerated (new options and letter, same index, same split); a question
whose target is no longer produced is removed (its index is not reused). A kept question whose
department, modality, original task or split changed (a label map's department, a new
``val_fraction``) keeps its question and options and is listed as updated. What changed, and
why, is printed and recorded in ``build.json`` under ``changes``. ``gmai-build --rebuild``
ignores the previous build altogether.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import OptionCount
from .errors import BuildError
from .manifest import MANIFEST, ManifestRecord, iter_manifest
from .questions import DistractorPools, QuestionPool
from .samples import Case
from .store import BuildStore, PreviousQuestions
from .taxonomy import LabelMap


def previous_questions(out_dir: Path | None, store: BuildStore) -> PreviousQuestions:
    """The questions of the build published in ``out_dir`` (none: ``None`` or no build),
    loaded into the store and read from it by case id.

    A manifest that cannot be continued (edited by hand, written by an incompatible version)
    is an error that names the file, the line and the field, and ``--rebuild``; never a
    traceback.
    """
    path = Path(out_dir) / MANIFEST if out_dir is not None else None
    if path is not None and path.is_file():
        hint = ("; the build in this folder cannot be continued: fix it, or start over with "
                "--rebuild")
        store.add_previous((rec, rec.to_json()) for rec in iter_manifest(path, hint))
    return PreviousQuestions(store)


def stale_reasons(
    old: ManifestRecord, case: Case, pools: DistractorPools, templates: QuestionPool,
    option_count: OptionCount,
) -> list[str]:
    """Why the previous question of this target can no longer be reused (empty: reuse it)."""
    reasons = []
    if old.category != case.label:
        reasons.append(f"answer changed from '{old.category}' to '{case.label}'")
    if old.task != case.task:
        reasons.append(f"task changed from '{old.task}' to '{case.task}'")
    if reasons:
        return reasons  # options and template are redrawn for the new answer anyway
    admissible = {x for tier in pools.candidates(case) for x in tier}  # every tier the pools offer
    for option in old.options:
        if option != case.label and option not in admissible:
            reasons.append(f"option '{option}' may no longer be offered")
    n = len(old.options)
    if n > option_count.max or (n < option_count.min and len(admissible) + 1 > n):
        reasons.append(f"{n} options, outside options {option_count.min}-{option_count.max}")
    by_id = {t.id: t for t in templates.templates}
    template = by_id.get(old.template_id)
    if template is None or template.granularity != case.granularity:
        reasons.append(f"template '{old.template_id}' is no longer in the question pool")
    elif template.render(case.modality) != old.question:
        reasons.append(f"template '{old.template_id}' text changed")
    return reasons


@dataclass
class Changes:
    """What this build changed relative to the build it found in the output folder."""

    previous: int = 0  # questions in the previous build
    kept: int = 0
    added: int = 0
    regenerated: list[dict[str, Any]] = field(default_factory=list)  # index, category, reasons
    removed: list[dict[str, Any]] = field(default_factory=list)  # index, category, reason
    updated: list[dict[str, Any]] = field(default_factory=list)  # kept; columns changed, why
    rebuild: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "rebuild": self.rebuild, "previous_questions": self.previous, "kept": self.kept,
            "added": self.added,
            "regenerated": sorted(self.regenerated, key=lambda r: r["index"]),
            "removed": sorted(self.removed, key=lambda r: r["index"]),
            "updated": sorted(self.updated, key=lambda r: r["index"]),
        }

    def lines(self, limit: int = 20) -> list[str]:
        """What a user reads after the build (the full list is in build.json)."""
        if self.rebuild:
            return ["rebuilt from scratch (--rebuild): previous questions and indices ignored"]
        if not self.previous:
            return []
        out = [f"changes since the previous build: {self.kept} kept, "
               f"{len(self.regenerated)} regenerated, {len(self.removed)} removed, "
               f"{self.added} added"
               + (f" ({len(self.updated)} kept with changed columns)" if self.updated else "")]
        # One line per (what happened, why), listing the questions: a label map edit often
        # touches many questions for the same reason.
        groups: dict[str, list[int]] = {}
        for what, records, why in (("regenerated", self.regenerated, "reasons"),
                                   ("removed", self.removed, "reason"),
                                   ("kept", self.updated, "reasons")):
            for r in records:
                reason = r[why] if isinstance(r[why], str) else "; ".join(r[why])
                groups.setdefault(f"{what}: {reason}", []).append(r["index"])
        ordered = sorted(groups.items(), key=lambda kv: min(kv[1]))
        for event, indices in ordered[:limit]:
            label = "question" if len(indices) == 1 else "questions"
            out.append(f"  {label} {_ranges(sorted(indices))} {event}")
        if len(ordered) > limit:
            out.append(f"  ... and {len(ordered) - limit} more (build.json: changes)")
        return out


def _ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def removal_reason(old: ManifestRecord, store: BuildStore,
                   label_maps: dict[str, LabelMap]) -> str:
    """Why a previous question's target is not in this build."""
    label_map = label_maps.get(old.source)
    if label_map is None:
        return f"source '{old.source}' is no longer in the sources file"
    kept = store.count("case_id = ?", (old.case_id,))
    if kept and store.count("case_id = ? AND unanswerable", (old.case_id,)):
        return "no distractor is left for its answer"
    if kept:
        return "not selected: the per-label cap is full"
    try:
        dropped = label_map.lookup(old.raw_label) is None
    except BuildError:  # not a single raw label (merged masks 'a+b'), or no longer mapped
        dropped = False
    if dropped:
        return f"the label map now drops raw label '{old.raw_label}'"
    return (f"its target (raw label '{old.raw_label}') is no longer produced: its image or "
            "annotation is gone or changed, or the label map now merges or splits it")


def metadata_changes(old: ManifestRecord, new: ManifestRecord) -> list[str]:
    """How a kept question's columns changed (the question, options and answer did not):
    its place in the tree, its split."""
    pairs = (("department", old.department, new.department),
             ("modality", old.modality, new.modality),
             ("original_task", old.original_task, new.original_task),
             ("split", old.split, new.split))
    return [f"{key} changed from '{was}' to '{now}'" for key, was, now in pairs if was != now]


class ChangeLog:
    """What this build changes relative to the previous one, gathered as the records stream
    (:meth:`add`, in index order) and completed by the previous questions no longer asked
    (:meth:`finish`)."""

    def __init__(self, previous: PreviousQuestions, rebuild: bool):
        self.previous = previous
        self.changes = Changes(previous=len(previous), rebuild=rebuild)

    def add(self, r: ManifestRecord, regenerated: list[str] | None) -> None:
        changes = self.changes
        if not changes.previous or r.case_id not in self.previous:
            changes.added += 1
        elif regenerated is not None:
            changes.regenerated.append({"index": r.index, "category": r.category,
                                        "reasons": regenerated})
        else:
            changes.kept += 1
            moved = metadata_changes(self.previous[r.case_id], r)
            if moved:
                changes.updated.append({"index": r.index, "category": r.category,
                                        "reasons": moved})

    def finish(self, store: BuildStore, label_maps: dict[str, LabelMap]) -> Changes:
        for (line,) in store.query(
                "SELECT line FROM previous WHERE case_id NOT IN (SELECT c.case_id FROM "
                "questions q JOIN cases c ON c.seq = q.case_seq) ORDER BY idx"):
            old = ManifestRecord.model_validate_json(line)
            self.changes.removed.append({"index": old.index, "category": old.category,
                                         "reason": removal_reason(old, store, label_maps)})
        return self.changes


def pair_staleness(
    store: BuildStore, previous: PreviousQuestions, pools: DistractorPools,
    templates: QuestionPool, option_count: OptionCount,
) -> Iterator[tuple[str, list[str]]]:
    """(case id, reasons) of every selected case whose previous question must be regenerated.

    The mask and contour questions of one target share options and letter, so when one of
    them must be regenerated, both are. (Cases stream from the store by target.)
    """
    pair: list[Case] = []
    for c in store.cases("selected AND prev", order="pair_id, seq"):
        if pair and pair[0].pair_id != c.pair_id:
            yield from _stale_pair(pair, previous, pools, templates, option_count)
            pair = []
        pair.append(c)
    if pair:
        yield from _stale_pair(pair, previous, pools, templates, option_count)


def _stale_pair(cases: list[Case], previous: PreviousQuestions, pools: DistractorPools,
                templates: QuestionPool, option_count: OptionCount
                ) -> Iterator[tuple[str, list[str]]]:
    olds = [(c, previous[c.case_id]) for c in cases]
    found = {c.case_id: stale_reasons(old, c, pools, templates, option_count) for c, old in olds}
    if any(found.values()):
        shared = list(dict.fromkeys(x for rs in found.values() for x in rs))
        for c, _ in olds:
            yield c.case_id, found[c.case_id] or shared
