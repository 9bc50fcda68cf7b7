"""Questions: a template, 2-5 options (answer + distractors) and a balanced answer letter.

Everything random is drawn from a generator seeded by (build seed, case id), so a question does
not change when other questions are added or removed. Answer letters are balanced across the
build greedily: each question takes the least-used letter among the positions it has.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from .config import OptionCount
from .samples import IMAGE_LEVEL, Case
from .taxonomy import Vocabulary, normalize_key
from .templates import DEFAULT_POOL, QuestionPool, Template  # noqa: F401  (moved; re-exported)

LETTERS = "ABCDE"


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


def _conflicts(a: str, b: str) -> bool:
    """Options that contain each other ('normal'/'abnormal') defeat VLMEvalKit's text matching."""
    ka, kb = normalize_key(a), normalize_key(b)
    return ka == kb or ka in kb or kb in ka


_STOPWORDS = {"of", "the", "and", "with", "in", "on", "to", "a", "an", "or"}


def _shares_word(a: str, b: str) -> bool:
    """Vocabulary distractors sharing a word with the answer ('liver lesion' for 'liver tumor')
    may be near-synonyms, so they are not offered."""
    wa = set(normalize_key(a).split()) - _STOPWORDS
    return bool(wa & (set(normalize_key(b).split()) - _STOPWORDS))


class DistractorPools:
    """Where distractors come from, per GMAI-MMBench's rules (see question_pools/default.yaml)."""

    def __init__(self, cases: list[Case], vocab: Vocabulary, pool: QuestionPool):
        self.by_source: dict[str, set[str]] = defaultdict(set)
        self.local: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for c in cases:
            if c.granularity == IMAGE_LEVEL:
                self.by_source[c.source].add(c.label)
            else:
                self.local[(c.modality, c.task, c.granularity)].add(c.label)
        self.vocab = vocab
        self.fallback = pool.vocabulary_fallback

    def candidates(self, case: Case, wanted: int) -> list[str]:
        excluded = set(case.exclude) | {case.label}
        if case.granularity == IMAGE_LEVEL:
            base = self.by_source[case.source]
        else:
            base = self.local[(case.modality, case.task, case.granularity)]
        out = sorted(x for x in base if x not in excluded and not _conflicts(x, case.label))
        if case.granularity != IMAGE_LEVEL and len(out) < wanted and self.fallback:
            # Too few labels in the build for this modality x task x granularity: borrow
            # the vocabulary's, same department first (a brain finding gets brain findings).
            extra = [
                x for x in self.vocab.labels_for(case.task, case.modality)
                if x not in excluded and x not in out
                and not _conflicts(x, case.label) and not _shares_word(x, case.label)
            ]
            same_dept = [x for x in extra if self.vocab.entries[x].department == case.department]
            out += same_dept if len(same_dept) >= wanted else extra
        return out


def make_question(
    case: Case, pools: DistractorPools, templates: QuestionPool, seed: int,
    option_count: OptionCount, letter_counts: Counter[str], partner: Question | None = None,
) -> Question | None:
    """One question for a case, or None when no distractor exists (reported as skipped).

    ``partner`` is the question of the same target at the other segmentation granularity
    (mask <-> contour): its options and answer letter are reused so the pair differs only in
    the visual prompt (and template).
    """
    rng = case_rng(seed, case.case_id)
    if partner is not None:
        letter_counts[partner.answer] += 1
        choices = templates.templates_for(case.granularity, case.task, case.modality)
        template = choices[rng.randrange(len(choices))]
        return Question(case, template.id, template.render(case.modality), list(partner.options),
                        partner.answer)
    candidates = pools.candidates(case, option_count.min - 1)
    # Drop candidates that conflict with each other as options (keep the earlier, sorted).
    if not candidates:
        return None
    hi = min(option_count.max - 1, len(candidates))
    lo = min(option_count.min - 1, hi)
    n_distractors = rng.randint(max(1, lo), hi)
    distractors: list[str] = []
    for x in rng.sample(candidates, len(candidates)):
        if len(distractors) == n_distractors:
            break
        if not any(_conflicts(x, d) for d in distractors):
            distractors.append(x)
    n = len(distractors) + 1
    least = min(letter_counts[letter] for letter in LETTERS[:n])
    letter = rng.choice([x for x in LETTERS[:n] if letter_counts[x] == least])
    letter_counts[letter] += 1
    options = list(distractors)
    options.insert(LETTERS.index(letter), case.label)
    choices = templates.templates_for(case.granularity, case.task, case.modality)
    template = choices[rng.randrange(len(choices))]
    return Question(case, template.id, template.render(case.modality), options, letter)


def reuse_question(case: Case, record: dict[str, Any], letter_counts: Counter[str]) -> Question:
    """The question of a previous build, unchanged (stable identity across rebuilds)."""
    letter_counts[record["answer"]] += 1
    return Question(case, record["template_id"], record["question"], record["options"], record["answer"])
