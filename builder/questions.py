"""Questions: a template, 2-5 options (answer + distractors) and a balanced answer letter.

Everything random is drawn from a generator seeded by (build seed, case id), so a question does
not change when other questions are added or removed. Answer letters are balanced across the
build greedily: each question takes the least-used letter among the positions it has.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import OptionCount
from .errors import ConfigError
from .samples import IMAGE_LEVEL, Case
from .schemas import question_pool_data
from .taxonomy import GRANULARITIES, TASKS, Vocabulary, normalize_key

LETTERS = "ABCDE"
DEFAULT_POOL = Path(__file__).resolve().parent.parent / "question_pools" / "default.yaml"
if not DEFAULT_POOL.is_file():  # installed (non-editable): data is a subpackage
    DEFAULT_POOL = Path(__file__).resolve().parent / "question_pools" / "default.yaml"


@dataclass(frozen=True)
class Template:
    id: str
    granularity: str
    text: str
    tasks: tuple[str, ...] = ()

    def render(self, modality: str) -> str:
        return self.text.format(modality=modality)


@dataclass
class Question:
    case: Case
    template_id: str
    question: str
    options: list[str]  # in letter order A, B, ...
    answer: str  # letter


class QuestionPool:
    """Templates and option-pool rules read from a ``question_pools/*.yaml`` file."""

    def __init__(self, path: Path | None = None):
        self.path = path or DEFAULT_POOL
        data = question_pool_data(self.path)  # types checked; meaning checked below
        if not isinstance(data, dict) or not data.get("templates"):
            raise ConfigError(f"{self.path}: expected a 'templates' list")
        self.templates: list[Template] = []
        ids: set[str] = set()
        problems: list[str] = []  # all of them are reported at once
        for i, raw in enumerate(data["templates"]):
            problem = _template_problem(raw, f"{self.path}: templates[{i}]", ids)
            if problem:
                problems.append(problem)
                continue
            ids.add(raw["id"])
            self.templates.append(
                Template(raw["id"], raw["granularity"], raw["text"], tuple(raw.get("tasks", [])))
            )
        missing = [g for g in GRANULARITIES if not any(t.granularity == g for t in self.templates)]
        if missing and not problems:
            problems.append(f"{self.path}: no template for granularity {missing}")
        if problems:
            raise ConfigError("\n".join(problems))
        opts = data.get("options", {}) or {}
        self.vocabulary_fallback = bool(opts.get("local_vocabulary_fallback", True))

    def templates_for(self, granularity: str, task: str) -> list[Template]:
        specific = [t for t in self.templates if t.granularity == granularity and task in t.tasks]
        if specific:
            return specific
        return [t for t in self.templates if t.granularity == granularity and not t.tasks]


def _template_problem(raw: Any, where: str, ids: set[str]) -> str | None:
    """What is wrong with one template entry of a question pool, or None."""
    if not isinstance(raw, dict) or set(raw) - {"id", "granularity", "text", "tasks"}:
        return f"{where}: expected keys id, granularity, text, tasks"
    for key in ("id", "granularity", "text"):
        if key not in raw:
            return f"{where}: missing '{key}'"
    if raw["id"] in ids:
        return f"{where}.id: duplicate template id '{raw['id']}'"
    if raw["granularity"] not in GRANULARITIES:
        return f"{where}.granularity: must be one of {GRANULARITIES}"
    fields = set(re.findall(r"{([^{}]*)}", raw["text"]))
    if fields - {"modality"}:
        return f"{where}.text: only {{modality}} may be used, found {fields}"
    try:
        raw["text"].format(modality="CT")
    except (ValueError, IndexError, KeyError) as exc:  # e.g. a lone '}'
        return f"{where}.text: not a valid template: {exc}"
    unknown = [task for task in raw.get("tasks", []) if task not in TASKS]
    if unknown:
        return f"{where}.tasks: unknown clinical VQA task(s) {unknown}"
    return None


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
        choices = templates.templates_for(case.granularity, case.task)
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
    choices = templates.templates_for(case.granularity, case.task)
    template = choices[rng.randrange(len(choices))]
    return Question(case, template.id, template.render(case.modality), options, letter)


def reuse_question(case: Case, record: dict[str, Any], letter_counts: Counter[str]) -> Question:
    """The question of a previous build, unchanged (stable identity across rebuilds)."""
    letter_counts[record["answer"]] += 1
    return Question(case, record["template_id"], record["question"], record["options"], record["answer"])
