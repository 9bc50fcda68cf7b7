"""Question stage: one question per selected case, previous questions reused as they were.

Selection (:func:`gmai_build.selection.select_by_cap`) has already run on metadata; here the
distractor pools are built from every label seen, answer letters are balanced within each split,
and a source that yields no question is an error naming it and why.
"""

from __future__ import annotations

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
from .rebuild import Previous, Reuse, pair_staleness
from .samples import IMAGE_LEVEL, Case, LabelSeen
from .selection import askable_cases, cap_family, select_by_cap
from .taxonomy import Vocabulary


@dataclass
class CaseBook:
    """The reading stage's cases as the later stages see them: full metadata of those that may
    be asked about, where every label was seen (distractor pools), skipped cases by reason."""

    cases: list[Case] = field(default_factory=list)
    seen: set[LabelSeen] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)
    sources_with_cases: set[str] = field(default_factory=set)


def make_questions(
    book: CaseBook, vocab: Vocabulary, pool: QuestionPool, config: Config,
    previous: Previous, splits: dict[tuple[str, str], str] | None = None,
) -> tuple[list[Question], Counter[str], Reuse]:
    """Cap, then one question per selected case: previous questions reused as they were.

    Previous questions whose answer, task, options or template changed are regenerated
    (rebuild.py). Returns the questions, skipped cases counted by reason, and which previous
    questions were regenerated (and why) or could not be made.
    ``splits`` ((source, group) -> split, from :func:`plan_split`) lets answer letters balance
    within each split, so VAL and TEST are each unbiased on their own.
    """
    b = config.build
    skipped = Counter(book.skipped)
    selected = select_by_cap(askable_cases(book.cases), b.per_label_cap, b.seed, previous)
    assert all(c.rendered for c in selected), "the render rule skipped a selectable case"
    pools = DistractorPools(sorted(book.seen), vocab, pool)  # every label, not only the capped
    split_map = splits or {}
    balance = AnswerBalance(lambda c: split_map.get((c.source, c.group), ""))
    questions: list[Question] = []
    reuse = Reuse(pair_staleness(selected, previous, pools, pool, b.options))
    reused = [c for c in selected if c.case_id in previous and c.case_id not in reuse.regenerated]
    # The mask and contour questions of one target share their options and answer letter.
    partners: dict[str, Question] = {}
    for c in reused:
        questions.append(reuse_question(c, previous[c.case_id], balance,
                                        partner=c.pair_id in partners, pools=pools))
        if cap_family(c.granularity) == "segmentation":
            partners.setdefault(c.pair_id, questions[-1])
    reused_ids = {c.case_id for c in reused}
    # Sources in name order, not config order: reordering sources.yaml changes no question.
    for c in sorted(selected, key=lambda c: c.source):
        if c.case_id in reused_ids:
            continue
        q = make_question(c, pools, pool, b.seed, b.options, balance,
                          partner=partners.get(c.pair_id))
        if q is None:
            why = (" (Image Level: distractors are the source's other labels, and it has none)"
                   if c.granularity == IMAGE_LEVEL else f" ({c.granularity})")
            skipped[f"{c.source}: no distractor for '{c.label}'{why}"] += 1
            reuse.unanswerable.add(c.case_id)
            continue
        questions.append(q)
        if cap_family(c.granularity) == "segmentation":
            partners.setdefault(c.pair_id, q)
    check_every_source_asks(config, questions, book.sources_with_cases, skipped)
    if not questions:
        raise BuildError("no question could be made: every source yields none ("
                         + "; ".join(f"{k} x{n}" for k, n in sorted(skipped.items())) + ")")
    return questions, skipped, reuse


def check_every_source_asks(
    config: Config, questions: list[Question], with_cases: set[str], skipped: Counter[str],
) -> None:
    """A source that yields no question is an error naming it and why (unless allowed)."""
    asked = {q.case.source for q in questions}
    for src in config.sources:
        if src.name in asked or src.allow_no_questions:
            continue
        reasons = [f"{k.split(': ', 1)[1]} ({n} case(s))" for k, n in sorted(skipped.items())
                   if k.startswith(f"{src.name}: ")]
        why = ("; ".join(reasons) if reasons else "its items had no labelled target"
               if src.name not in with_cases else "every case was left out by the per-label cap")
        raise BuildError(f"the source yields no question: {why}; fix the source or its label "
                         "map, or set 'allow_no_questions: true' for it", source=src.name)


