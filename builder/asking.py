"""Question stage: one question per selected case, previous questions reused as they were.

Selection (:func:`gmai_build.selection.select_by_cap`) has already run on metadata; here the
distractor pools are built from every label seen, answer letters are balanced within each split,
questions are numbered and filed in the build's store, and a source that yields no question is
an error naming it and why.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from .config import Config
from .errors import BuildError
from .questions import (
    AnswerBalance,
    DistractorPools,
    Question,
    QuestionPool,
    make_question,
    reuse_question,
)
from .rebuild import pair_staleness
from .samples import IMAGE_LEVEL, Case, LabelSeen
from .selection import cap_family
from .store import BuildStore, PreviousQuestions
from .taxonomy import Vocabulary


@dataclass
class CaseBook:
    """The reading stage's cases as the later stages see them: full metadata of those that may
    be asked about in the store, where every label was seen (distractor pools), skipped cases by
    reason."""

    store: BuildStore
    seen: set[LabelSeen] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)
    sources_with_cases: set[str] = field(default_factory=set)


# The selected cases whose previous question is reused as it was, and all the others.
REUSED = "selected AND prev AND regenerated IS NULL"
TO_MAKE = "selected AND NOT (prev AND regenerated IS NULL)"


def make_questions(
    book: CaseBook, vocab: Vocabulary, pool: QuestionPool, config: Config,
    previous: PreviousQuestions, splits: dict[tuple[str, str], str],
) -> Counter[str]:
    """One question per selected case, numbered, into the store; returns skipped cases counted
    by reason. Selection (:func:`gmai_build.selection.select_by_cap`) has marked the cases.

    Previous questions are reused as they were (same index); those whose answer, task, options
    or template changed are regenerated at their index (rebuild.py, the store's
    ``regenerated``); new questions are numbered after the previous build's last. ``splits``
    ((source, group) -> split, from :func:`plan_split`) lets answer letters balance within
    each split, so VAL and TEST are each unbiased on their own. Cases stream from the store:
    the questions made are never all in memory.
    """
    b = config.build
    store = book.store
    skipped = Counter(book.skipped)
    if store.count("selected AND image_file IS NULL"):
        raise AssertionError("the render rule skipped a selectable case")
    pools = DistractorPools(sorted(book.seen), vocab, pool)  # every label, not only the capped
    balance = AnswerBalance(lambda c: splits.get((c.source, c.group), ""))
    stale = list(pair_staleness(store, previous, pools, pool, b.options))  # (then marked)
    for case_id, reasons in stale:
        store.mark("regenerated", case_id, json.dumps(reasons, ensure_ascii=False))
    asked: set[str] = set()

    def file(c: Case, index: int, q: Question) -> None:
        store.add_question(index, c.case_id, splits[(c.source, c.group)], q.template_id,
                           q.question, q.options, q.answer)
        asked.add(c.source)

    for c in store.cases(REUSED):
        segment = cap_family(c.granularity) == "segmentation"
        q = reuse_question(c, previous[c.case_id], balance, pools=pools,
                           partner=segment and store.pair_question(c.pair_id) is not None)
        file(c, previous[c.case_id].index, q)
    next_index = previous.max_index() + 1
    # Sources in name order, not config order: reordering sources.yaml changes no question.
    for c in store.cases(TO_MAKE, order="source, seq"):
        partner = store.pair_question(c.pair_id) \
            if cap_family(c.granularity) == "segmentation" else None
        q = make_question(c, pools, pool, b.seed, b.options, balance, partner=partner)
        if q is None:
            why = (" (Image Level: distractors are the source's other labels, and it has none)"
                   if c.granularity == IMAGE_LEVEL else f" ({c.granularity})")
            skipped[f"{c.source}: no distractor for '{c.label}'{why}"] += 1
            store.mark("unanswerable", c.case_id)
            continue
        if c.case_id in previous:  # regenerated: the same target keeps its index
            index = previous[c.case_id].index
        else:
            index, next_index = next_index, next_index + 1
        file(c, index, q)
    check_every_source_asks(config, asked, book.sources_with_cases, skipped)
    if not asked:
        raise BuildError("no question could be made: every source yields none ("
                         + "; ".join(f"{k} x{n}" for k, n in sorted(skipped.items())) + ")")
    return skipped


def check_every_source_asks(
    config: Config, asked: set[str], with_cases: set[str], skipped: Counter[str],
) -> None:
    """A source that yields no question is an error naming it and why (unless allowed)."""
    for src in config.sources:
        if src.name in asked or src.allow_no_questions:
            continue
        reasons = [f"{k.split(': ', 1)[1]} ({n} case(s))" for k, n in sorted(skipped.items())
                   if k.startswith(f"{src.name}: ")]
        why = ("; ".join(reasons) if reasons else "its items had no labelled target"
               if src.name not in with_cases else "every case was left out by the per-label cap")
        raise BuildError(f"the source yields no question: {why}; fix the source or its label "
                         "map, or set 'allow_no_questions: true' for it", source=src.name)


