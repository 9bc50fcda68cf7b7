"""Questions: a template, 2-5 options (answer + distractors) and a balanced answer letter.

Everything random is drawn from a generator seeded by (build seed, case id). Answer letters
(and the answer's length rank) are balanced per (source, split, option count), distractor
counts per granularity (:class:`AnswerBalance`): for every option count each letter's share
stays within a question or two of uniform in VAL and in TEST, and an incremental build that
adds a source keeps every existing question's letter.

Options that contain each other as text ('normal' / 'abnormal sperm head', two classes of one
dataset) are allowed: the letter is the answer, and VLMEvalKit's text matching, which cannot
tell such options apart, falls back to the letter as it does for any ambiguous reply.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from .manifest import ManifestRecord
from .relations import Relations, load_relations
from .samples import IMAGE_LEVEL, Case, LabelSeen
from .schemas import Strict
from .taxonomy import Vocabulary, normalize_key
from .templates import DEFAULT_POOL, QuestionPool, Template  # noqa: F401  (moved; re-exported)

LETTERS = "ABCDE"


class OptionCount(Strict):
    min: int = Field(default=2, ge=2, le=5)
    max: int = Field(default=5, ge=2, le=5)

    @model_validator(mode="after")
    def _ordered(self) -> OptionCount:
        if self.min > self.max:
            raise ValueError("options.min must be <= options.max")
        return self


@dataclass
class Question:
    case: Case
    template_id: str
    question: str
    options: list[str]  # in letter order A, B, ...
    answer: str  # letter


def case_rng(seed: int, case_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


_STOPWORDS = {"of", "the", "and", "with", "in", "on", "to", "a", "an", "or"}
MAX_DISTRACTORS = 4  # GMAI-MMBench: randint(1, min(4, pool)) distractors


def _shares_word(a: str, b: str) -> bool:
    """Vocabulary distractors sharing a word with the answer ('liver lesion' for 'liver tumor')
    may be near-synonyms, so they are not offered."""
    wa = set(normalize_key(a).split()) - _STOPWORDS
    return bool(wa & (set(normalize_key(b).split()) - _STOPWORDS))


class Balancer:
    """Hands out the least-used value of a unit (``(source, ...)``).

    Ties go to the value least used by the same unit key over all sources (``unit[1:]``), then
    to the question's own random draw. Every run of ``k`` questions of a unit thus takes each
    of ``k`` values once in an unpredictable order, a unit's shares stay within a question of
    uniform whatever other sources do, and across sources the leftovers of partial runs even
    out instead of adding up.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], Counter[Any]] = defaultdict(Counter)
        self.totals: dict[tuple[str, ...], Counter[Any]] = defaultdict(Counter)

    def take(self, unit: tuple[str, ...], values: Sequence[Any], rng: random.Random | None) -> Any:
        """The least-used value; ties as above, or the last of ``values`` without ``rng``."""
        c, t = self.counts[unit], self.totals[unit[1:]]
        least = min(c[v] for v in values)
        tied = [v for v in values if c[v] == least]
        fewest = min(t[v] for v in tied)
        tied = [v for v in tied if t[v] == fewest]
        value = rng.choice(tied) if rng is not None else tied[-1]
        self.add(unit, value)
        return value

    def add(self, unit: tuple[str, ...], value: Any) -> None:
        self.counts[unit][value] += 1
        self.totals[unit[1:]][value] += 1

    def move(self, unit: tuple[str, ...], taken: Any, got: Any) -> None:
        """Count what a question actually got when it could not have the value it took."""
        if taken != got:
            for counter in (self.counts[unit], self.totals[unit[1:]]):
                counter[taken] -= 1
                counter[got] += 1


class AnswerBalance:
    """Answer letters (and the answer's length rank) balanced per (source, split, option count);
    distractor counts per granularity over the build.

    A unit never spans sources, so within a source the shares stay within a question of uniform
    whatever other sources do, and VAL and TEST are each balanced on their own. Counts cycle
    so each granularity's mean stays at GMAI-MMBench's expectation (3.5 options where
    candidates abound) instead of drifting with a few random draws.
    """

    def __init__(self, split_of: Callable[[Case], str] = lambda c: "") -> None:
        self.letters = Balancer()
        self.counts = Balancer()
        self.ranks = Balancer()  # the answer's length rank among its options
        self.split_of = split_of

    def rank_unit(self, case: Case, n_options: int) -> tuple[str, ...]:
        return (case.source, self.split_of(case), str(n_options))

    def letter_unit(self, case: Case, n_options: int) -> tuple[str, ...]:
        return (case.source, self.split_of(case), str(n_options))

    @staticmethod
    def count_unit(case: Case) -> tuple[str, ...]:
        return ("*", case.granularity)  # every source together

    def record(self, case: Case, options: list[str], answer: str, partner: bool = False) -> None:
        n = len(options)
        self.letters.add(self.letter_unit(case, n), answer)
        if not partner:
            self.counts.add(self.count_unit(case), n - 1)
            label = options[LETTERS.index(answer)]
            self.ranks.add(self.rank_unit(case, n),
                           length_rank(label, [o for o in options if o != label]))


class DistractorPools:
    """Where distractors come from, in order of preference (see question_pools/default.yaml).

    * Image level: the other labels of the same source (a dataset's classes exclude each
      other; labels also true for this image are excluded).
    * Box / Mask / Contour: the build's labels of the same modality x task x granularity, then
      the vocabulary's labels of the same task, same modality first, then the same body region
      and department first, until the drawn number of distractors is reached.

    A label related to the answer (synonym, spelling variant, part, whole, kind or parent kind:
    :mod:`gmai_build.relations`) is never a candidate.
    """

    def __init__(self, seen: Iterable[Case | LabelSeen], vocab: Vocabulary, pool: QuestionPool,
                 relations: Relations | None = None):
        """``seen``: every target of the build (cases, or :class:`LabelSeen` of them)."""
        self.by_source: dict[str, set[str]] = defaultdict(set)
        self.local: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for c in seen:
            if c.granularity == IMAGE_LEVEL:
                self.by_source[c.source].add(c.label)
            else:
                self.local[(c.modality, c.task, c.granularity)].add(c.label)
        self.vocab = vocab
        self.relations = relations or load_relations()
        self.fallback = pool.vocabulary_fallback
        self._vocab_tiers: dict[tuple[str, ...], list[list[str]]] = {}
        # How often each label is an answer and a distractor so far: a label offered as a
        # distractor much more often than it is right would let a solver that learnt label
        # frequencies rule it out, so the least-offered candidates (per answer) come first.
        self.answered: Counter[str] = Counter()
        self.offered: Counter[str] = Counter()

    def order(self, tier: list[str], rng: random.Random) -> list[str]:
        """A tier's candidates, least offered per time answered first (ties: random)."""
        shuffled = rng.sample(tier, len(tier))
        return sorted(shuffled, key=lambda x: self.offered[x] / (1 + self.answered[x]))

    def record(self, answer: str, options: list[str]) -> None:
        self.answered[answer] += 1
        self.offered.update(o for o in options if o != answer)

    def related(self, a: str, b: str) -> str | None:
        return self.relations.relation(a, b)

    def candidates(self, case: Case) -> list[list[str]]:
        """Candidate distractors in tiers of preference, each sorted (draws are seeded)."""
        excluded = set(case.exclude) | {case.label}

        def ok(x: str) -> bool:
            return x not in excluded and not self.related(case.label, x)

        if case.granularity == IMAGE_LEVEL:
            return [sorted(x for x in self.by_source[case.source] if ok(x))]
        primary = sorted(x for x in self.local[(case.modality, case.task, case.granularity)]
                         if ok(x))
        if not self.fallback:
            return [primary]
        taken = set(primary)
        return [primary, *([x for x in tier if x not in taken and x not in excluded]
                           for tier in self._vocabulary_tiers(case))]

    def _vocabulary_tiers(self, case: Case) -> list[list[str]]:
        """The vocabulary's candidates for a case's answer, task, modality and department:
        same modality first, then any modality; each by closeness (memoised: many cases)."""
        key = (case.label, case.task, case.modality, case.department)
        if key not in self._vocab_tiers:

            def good(x: str) -> bool:
                return not self.related(case.label, x) and not _shares_word(x, case.label)

            same = [x for x in self.vocab.labels_for(case.task, case.modality) if good(x)]
            seen = set(same)
            others = [x for x in self.vocab.labels_for(case.task, None)
                      if x not in seen and good(x)]
            self._vocab_tiers[key] = [*self._by_closeness(case, same),
                                      *self._by_closeness(case, others)]
        return self._vocab_tiers[key]

    def _by_closeness(self, case: Case, labels: list[str]) -> list[list[str]]:
        """Same body region and department first, then same region, then same department."""
        region = self.relations.region(case.label)
        tiers: dict[tuple[bool, bool], list[str]] = defaultdict(list)
        for x in labels:
            x_region = self.relations.region(x)
            far = region is not None and x_region is not None and x_region != region
            dept = self.vocab.entries[x].placement(case.modality)[1]
            tiers[(far, dept != case.department)].append(x)
        return [tiers[k] for k in sorted(tiers)]


def length_rank(answer: str, distractors: list[str]) -> int:
    """How many distractors are shorter than the answer (0: the answer is the shortest)."""
    return sum(len(d) < len(answer) for d in distractors)


def pick_distractors(
    answer: str, ordered: list[str], target: int, shorter: int,
    related: Callable[[str, str], str | None],
) -> list[str]:
    """``target`` candidates in order of preference, ``shorter`` of them shorter than the answer.

    Balancing the answer's length rank (per source and option count, like its letter) keeps
    "pick the shortest / longest option" at chance: labels that are answers are often short
    everyday words ('liver') beside long vocabulary distractors. Where the candidates cannot
    give the wanted rank, the preference order fills the rest. Two related candidates are
    never both taken: a blind solver could rule out both.
    """
    need = {True: shorter, False: target - shorter}
    chosen: list[str] = []
    for strict in (True, False):
        for x in ordered:
            if len(chosen) == target:
                return chosen
            if x in chosen or any(related(x, d) for d in chosen):
                continue
            side = len(x) < len(answer)
            if strict and need[side] <= 0:
                continue
            need[side] -= 1
            chosen.append(x)
    return chosen


def make_question(
    case: Case, pools: DistractorPools, templates: QuestionPool, seed: int,
    option_count: OptionCount, balance: AnswerBalance,
    partner: tuple[Sequence[str], str] | None = None,
) -> Question | None:
    """One question for a case, or None when no distractor exists (reported as skipped).

    The number of distractors is GMAI-MMBench's ``randint(1, min(4, candidates))`` (within the
    configured option counts), balanced per granularity; the answer letter and the answer's
    length rank are balanced per (source, split, option count) (:class:`AnswerBalance`); the
    distractors follow :meth:`DistractorPools.candidates`. ``partner`` is the (options, answer
    letter) of the question of the same target at the other segmentation granularity (mask <->
    contour): they are reused so the pair differs only in the visual prompt (and template).
    """
    rng = case_rng(seed, case.case_id)
    choices = templates.templates_for(case.granularity, case.task, case.modality)
    template = choices[rng.randrange(len(choices))]
    text = template.render(case.modality)
    if partner is not None:
        options, answer = list(partner[0]), partner[1]
        balance.record(case, options, answer, partner=True)
        pools.record(case.label, options)
        return Question(case, template.id, text, options, answer)
    tiers = pools.candidates(case)
    available = sum(len(t) for t in tiers)
    if available == 0:
        return None
    hi = min(option_count.max - 1, MAX_DISTRACTORS, available)
    lo = max(1, min(option_count.min - 1, hi))
    # Counts cycle 4, 3, 2, 1 (within what is available): any run of questions averages at
    # least GMAI-MMBench's expected 2.5 distractors, however few questions a granularity has.
    target = balance.counts.take(balance.count_unit(case), range(lo, hi + 1), None)
    ordered = [x for tier in tiers for x in pools.order(tier, rng)]
    rank_unit = balance.rank_unit(case, target + 1)
    shorter = balance.ranks.take(rank_unit, range(target + 1), rng)
    distractors = pick_distractors(case.label, ordered, target, shorter, pools.related)
    balance.ranks.move(rank_unit, shorter, length_rank(case.label, distractors))
    rng.shuffle(distractors)
    n = len(distractors) + 1
    letter = balance.letters.take(balance.letter_unit(case, n), LETTERS[:n], rng)
    options = list(distractors)
    options.insert(LETTERS.index(letter), case.label)
    pools.record(case.label, options)
    return Question(case, template.id, text, options, letter)


def reuse_question(case: Case, record: ManifestRecord, balance: AnswerBalance,
                   partner: bool = False, pools: DistractorPools | None = None) -> Question:
    """The question of a previous build, unchanged (stable identity across rebuilds)."""
    options = list(record.options)
    balance.record(case, options, record.answer, partner)
    if pools is not None:
        pools.record(case.label, options)
    return Question(case, record.template_id, record.question, options, record.answer)
