"""Question templates: the pool file, how modality names read in a sentence, and pool checks.

A pool (``question_pools/*.yaml``) lists templates grouped by perceptual granularity, clinical
VQA task and, where the wording differs, modality family. For a question the pool offers the
task's templates that fit the question's modality; the granularity's generic templates only
where the task has none. Texts use ``{modality}`` (the modality's display form, "CT angiography"
for the tree's "CTA") and ``{a_modality}`` (the same with its article: "an endoscopy").

Everything a pool author can get wrong is a :class:`ConfigError` naming the file, the key path
and the reason: wrong types, unknown tasks/granularities/modalities, unknown placeholders,
hard-coded articles, duplicate and near-duplicate texts, overlay colours. What depends on the
vocabulary or the published tree (texts that contain an answer, cells without enough
templates) is reported by :func:`check_pool`, which ``gmai-build validate`` calls.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .schemas import bundled_yaml, read_yaml
from .taxonomy import GRANULARITIES, LABEL_MAPS, MODALITIES, TASKS, Vocabulary, normalize_key

DEFAULT_POOL = Path(__file__).resolve().parent.parent / "question_pools" / "default.yaml"
if not DEFAULT_POOL.is_file():  # installed (non-editable): data is a subpackage
    DEFAULT_POOL = Path(__file__).resolve().parent / "question_pools" / "default.yaml"
PUBLISHED_TREE = LABEL_MAPS / "published_tree.yaml"

PLACEHOLDERS = ("modality", "a_modality")
MIN_TEMPLATES_PER_CELL = 10
NEAR_DUPLICATE_RATIO = 0.85
# Questions never name the overlay colour (the published images use several).
COLOUR_WORDS = {
    "red", "green", "blue", "yellow", "orange", "purple", "violet", "pink", "cyan", "magenta",
    "white", "black", "grey", "gray", "brown", "golden",
}
# Letters whose spoken name starts with a vowel sound: "an MRI", "an X-ray", "a CT".
_VOWEL_SOUND_LETTERS = set("AEFHILMNORSX")


def indefinite_article(phrase: str) -> str:
    """'a' or 'an' for a modality's display form; acronyms go by how their letters are said."""
    head = re.split(r"[\s-]", phrase.strip(), maxsplit=1)[0]
    if not head:
        return "a"
    if len(head) > 1 and head.upper() == head or len(head) == 1 and head.isupper():
        return "an" if head[0] in _VOWEL_SOUND_LETTERS else "a"
    return "an" if head[0].lower() in "aeiou" else "a"


# On-disk shape --------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ModalityName(_Strict):
    display: str | None = Field(default=None, min_length=1)
    article: Literal["a", "an"] | None = None


class _Group(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    granularity: str
    tasks: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    texts: list[str] = Field(min_length=1)


class _Template(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    granularity: str
    text: str
    tasks: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)


class _PoolFile(_Strict):
    modalities: dict[str, _ModalityName] = Field(default_factory=dict)
    families: dict[str, list[str]] = Field(default_factory=dict)
    groups: list[_Group] = Field(default_factory=list)
    templates: list[_Template] = Field(default_factory=list)
    shared_words: dict[str, list[str]] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class _RawTemplate(NamedTuple):
    owner: str  # key path of the group or template ("groups[3]")
    where: str  # key path of the text ("groups[3].texts[2]")
    id: str
    granularity: str
    tasks: list[str]
    modalities: list[str]
    text: str


def _key_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# In memory ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModalityNames:
    """How each tree modality reads inside a question ("an endoscopy image")."""

    display: dict[str, str] = field(default_factory=dict)
    article: dict[str, str] = field(default_factory=dict)

    def name(self, modality: str) -> str:
        return self.display.get(modality, modality)

    def with_article(self, modality: str) -> str:
        name = self.name(modality)
        return f"{self.article.get(modality) or indefinite_article(name)} {name}"


@dataclass(frozen=True)
class Template:
    id: str
    granularity: str
    text: str
    tasks: tuple[str, ...] = ()
    modalities: frozenset[str] = frozenset()  # tree modality names; empty = every modality
    names: ModalityNames = field(default_factory=ModalityNames, compare=False, repr=False)

    def fits(self, modality: str | None) -> bool:
        if not self.modalities:
            return True
        return modality is not None and modality in self.modalities

    def render(self, modality: str) -> str:
        return self.text.format(modality=self.names.name(modality),
                                a_modality=self.names.with_article(modality))


class QuestionPool:
    """Templates and option-pool rules read from a ``question_pools/*.yaml`` file.

    Every problem of the file is collected and reported at once, as one :class:`ConfigError`.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path or DEFAULT_POOL)
        spec = _read_spec(self.path)
        problems: list[str] = []
        self.names = self._names(spec, problems)
        families = self._families(spec, problems)
        self.templates: list[Template] = [
            self._template(raw, families, problems) for raw in self._raw_templates(spec)]
        problems += self._pool_problems(spec)
        if problems:  # a group's problem is found once per text: report it once
            raise ConfigError("\n".join(f"{self.path}: {p}" for p in dict.fromkeys(problems)))
        self.shared_words = {t: frozenset(w.lower() for w in ws) for t, ws in spec.shared_words.items()}
        self.options = dict(spec.options)
        self.vocabulary_fallback = bool(self.options.get("local_vocabulary_fallback", True))

    def _template(self, raw: _RawTemplate, families: dict[str, frozenset[str]],
                  problems: list[str]) -> Template:
        owner, where, tid, gran, tasks, mods, text = raw
        problems += [f"{where}: {p}" for p in _text_problems(text)]
        problems += _check_axes(owner, gran, tasks)
        resolved: set[str] = set()
        for j, m in enumerate(mods):
            if m in families:
                resolved |= families[m]
            elif m in MODALITIES:
                resolved.add(m)
            else:
                problems.append(f"{owner}.modalities[{j}]: '{m}' is neither a tree modality "
                                f"nor a family ({', '.join(sorted(families)) or 'none defined'})"
                                + _hint(m, [*MODALITIES, *families]))
        return Template(tid, gran, text, tuple(tasks), frozenset(resolved), self.names)

    def _pool_problems(self, spec: _PoolFile) -> list[str]:
        """Problems of the pool as a whole: duplicates, missing generic templates, unknown tasks."""
        if not self.templates:
            return ["expected a non-empty 'groups' (or 'templates') list"]
        problems = _duplicate_problems(self.templates)
        missing = [g for g in GRANULARITIES if not any(
            t.granularity == g and not t.tasks and not t.modalities for t in self.templates)]
        if missing:
            problems.append(f"no generic template (no tasks, no modalities) for {missing}: "
                            "questions of a task without its own templates need one")
        problems += [f"shared_words.{task}: unknown clinical VQA task" + _hint(task, TASKS)
                     for task in spec.shared_words if task not in TASKS]
        return problems

    def _names(self, spec: _PoolFile, problems: list[str]) -> ModalityNames:
        display: dict[str, str] = {}
        article: dict[str, str] = {}
        for m, names in spec.modalities.items():
            if m not in MODALITIES:
                problems.append(f"modalities.{m}: not a modality of the tree" + _hint(m, MODALITIES))
                continue
            if names.display:
                display[m] = names.display
            if names.article:
                article[m] = names.article
        return ModalityNames(display, article)

    @staticmethod
    def _families(spec: _PoolFile, problems: list[str]) -> dict[str, frozenset[str]]:
        out = {}
        for name, members in spec.families.items():
            for j, m in enumerate(members):
                if m not in MODALITIES:
                    problems.append(f"families.{name}[{j}]: '{m}' is not a modality of the tree"
                                    + _hint(m, MODALITIES))
            out[name] = frozenset(members)
        return out

    @staticmethod
    def _raw_templates(spec: _PoolFile) -> Iterator[_RawTemplate]:
        """Every template of the file (groups first, then flat templates), in file order."""
        for i, g in enumerate(spec.groups):
            for j, text in enumerate(g.texts):
                yield _RawTemplate(f"groups[{i}]", f"groups[{i}].texts[{j}]", f"{g.id}-{j + 1}",
                                   g.granularity, g.tasks, g.modalities, text)
        for i, t in enumerate(spec.templates):
            yield _RawTemplate(f"templates[{i}]", f"templates[{i}].text", t.id, t.granularity,
                               t.tasks, t.modalities, t.text)

    def templates_for(self, granularity: str, task: str, modality: str | None = None) -> list[Template]:
        """The task's templates that fit the modality; else the granularity's generic ones.

        Without a modality only templates written for every modality qualify.
        """
        specific = [t for t in self.templates
                    if t.granularity == granularity and task in t.tasks and t.fits(modality)]
        if specific:
            return specific
        generic = [t for t in self.templates
                   if t.granularity == granularity and not t.tasks and t.fits(modality)]
        return generic or [t for t in self.templates
                           if t.granularity == granularity and not t.tasks and not t.modalities]


def _read_spec(path: Path) -> _PoolFile:
    """The pool file, type-checked; wrong types are errors naming file and key path."""
    data = read_yaml(path, "question pool")  # not UTF-8, not YAML...: one ConfigError
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'groups' or 'templates'")
    try:
        return _PoolFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(
            f"{path}: {_key_path(e['loc'])}: "
            + (f"unknown key '{e['loc'][-1]}'" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )) from None


# Checks ---------------------------------------------------------------------------------------
def _hint(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_axes(owner: str, granularity: str, tasks: list[str]) -> list[str]:
    out = []
    if granularity not in GRANULARITIES:
        out.append(f"{owner}.granularity: '{granularity}' must be one of {GRANULARITIES}"
                   + _hint(granularity, GRANULARITIES))
    for j, task in enumerate(tasks):
        if task not in TASKS:
            out.append(f"{owner}.tasks[{j}]: unknown clinical VQA task '{task}'" + _hint(task, TASKS))
    return out


def _text_problems(text: str) -> list[str]:
    """Placeholders, articles and colours of one template text."""
    out = []
    fields = re.findall(r"{([^{}]*)}", text)
    unknown = sorted(set(fields) - set(PLACEHOLDERS))
    if unknown:
        out.append(f"unknown placeholder(s) {unknown}; only {{modality}} and {{a_modality}} exist")
    else:
        try:
            text.format(modality="x", a_modality="an x")
        except (ValueError, IndexError, KeyError) as exc:
            out.append(f"text is not a valid format string ({exc}); write braces as {{{{ }}}}")
    if re.search(r"\b(a|an|A|An)\s+\{(a_)?modality\}", text):
        out.append("an article written before a placeholder reads wrongly for some modalities "
                   "('a Endoscopy'); use {a_modality}")
    if re.search(r"(^|[.?!:]\s+)\{", text):
        out.append("a sentence starts with a placeholder; modality names are not capitalised")
    colours = sorted(set(re.findall(r"[a-z]+", text.lower())) & COLOUR_WORDS)
    if colours:
        out.append(f"names a colour {colours}: questions never name the overlay colour")
    if not re.search(r"[?.]$", text.strip()):
        out.append("a question must end with '?' or '.'")
    return out


def _normal_text(text: str) -> str:
    return re.sub(r"[^a-z0-9{} ]+", "", re.sub(r"\s+", " ", text.lower())).strip()


def _shares_questions(a: Template, b: Template) -> bool:
    """Two templates can be offered for the same question."""
    if a.granularity != b.granularity:
        return False
    if a.tasks and b.tasks and not set(a.tasks) & set(b.tasks):
        return False
    if bool(a.tasks) != bool(b.tasks):
        return False
    return not (a.modalities and b.modalities and not a.modalities & b.modalities)


def _duplicate_problems(templates: list[Template]) -> list[str]:
    out = []
    seen_ids: dict[str, int] = {}
    for i, t in enumerate(templates):
        if t.id in seen_ids:
            out.append(f"template id '{t.id}' is used twice")
        seen_ids.setdefault(t.id, i)
    normal = [_normal_text(t.text) for t in templates]
    letters = [Counter(text) for text in normal]
    for i, a in enumerate(templates):
        for j in range(i + 1, len(templates)):
            b = templates[j]
            if not _shares_questions(a, b):
                continue
            if normal[i] == normal[j]:
                out.append(f"templates '{a.id}' and '{b.id}' have the same text: {a.text!r}")
                continue
            # difflib's real_quick_ratio and quick_ratio bounds, from lengths and letter counts
            # computed once per text: most pairs stop here, before a SequenceMatcher is built.
            total = len(normal[i]) + len(normal[j])
            if 2.0 * min(len(normal[i]), len(normal[j])) / total < NEAR_DUPLICATE_RATIO or \
                    2.0 * (letters[i] & letters[j]).total() / total < NEAR_DUPLICATE_RATIO:
                continue
            ratio = difflib.SequenceMatcher(None, normal[i], normal[j], autojunk=False).ratio()
            if ratio >= NEAR_DUPLICATE_RATIO:
                out.append(f"templates '{a.id}' and '{b.id}' are near-duplicates "
                           f"({ratio:.2f} similar): {a.text!r} / {b.text!r}")
    return out


@dataclass(frozen=True)
class Cell:
    """A (task, granularity) pair that the published tree asks questions in."""

    task: str
    granularity: str
    modalities: tuple[str, ...]


@lru_cache(maxsize=1)
def published_cells() -> tuple[Cell, ...]:
    """The used cells of the published GMAI-MMBench tree (label_maps/published_tree.yaml)."""
    data = bundled_yaml(PUBLISHED_TREE)
    return tuple(Cell(c["task"], c["granularity"], tuple(c["modalities"])) for c in data["cells"])


def cell_counts(pool: QuestionPool) -> dict[tuple[str, str, str], int]:
    """Templates offered per used (task, granularity, modality) of the published tree."""
    return {
        (c.task, c.granularity, m): len([t for t in pool.templates_for(c.granularity, c.task, m)
                                         if c.task in t.tasks])
        for c in published_cells() for m in c.modalities
    }


@dataclass
class PoolReport:
    """What :func:`check_pool` found: errors (texts that give answers away), coverage gaps and
    lexical cues (words a template shares with only some of the labels it may be asked about)."""

    errors: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    cues: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.gaps and not self.cues


def check_pool(pool: QuestionPool, vocab: Vocabulary | None = None,
               minimum: int = MIN_TEMPLATES_PER_CELL) -> PoolReport:
    """Check a loaded pool against the vocabulary and the published tree's cells.

    Errors: a text that contains a label (or synonym) of a task it serves, so the question would
    point at one option. Gaps: used (task, granularity, modality) cells with fewer than
    ``minimum`` task-specific templates (they fall back to generic wording).
    """
    report = PoolReport()
    if vocab is not None:
        report.errors += answer_leaks(pool, vocab)
        report.cues += lexical_cues(pool, vocab)
    by_cell: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for (task, gran, modality), n in cell_counts(pool).items():
        if n < minimum:
            by_cell.setdefault((task, gran), []).append((modality, n))
    for (task, gran), short in sorted(by_cell.items()):
        listing = ", ".join(f"{m}: {n}" for m, n in short)
        report.gaps.append(f"{pool.path}: ({task}, {gran}) has fewer than {minimum} templates "
                           f"for {listing}")
    return report


def answer_leaks(pool: QuestionPool, vocab: Vocabulary) -> list[str]:
    """Templates whose text contains, as whole words, a label or synonym of a task they serve."""
    phrases: dict[str, dict[str, str]] = {}
    for entry in vocab.entries.values():
        for text in (entry.label, *entry.synonyms):
            key = normalize_key(text)
            if len(key) >= 3:
                phrases.setdefault(entry.task, {})[key] = entry.label
    out = []
    for t in pool.templates:
        text = normalize_key(t.text)
        for task in t.tasks or tuple(TASKS):
            # (a whole-word match is a substring first: only those phrases need their pattern)
            hits = sorted({label for k, label in phrases.get(task, {}).items()
                           if k in text and _whole_words(k).search(text)})
            if hits:
                out.append(f"{pool.path}: template '{t.id}' contains the {task} label(s) {hits}: "
                           "it would give the answer away")
    return out


@cache
def _whole_words(phrase: str) -> re.Pattern[str]:
    """``phrase`` not inside a longer word (of normalised text)."""
    return re.compile(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])")


_STOPWORDS = {"of", "the", "and", "with", "in", "on", "to", "a", "an", "or", "this", "that", "is",
              "are", "which", "what", "does", "image", "images", "from", "for", "by", "its", "it",
              "be", "as", "at"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", normalize_key(text)) if w not in _STOPWORDS and len(w) > 2}


def lexical_cues(pool: QuestionPool, vocab: Vocabulary) -> list[str]:
    """Template words that some but not all labels of a used cell's modality contain.

    A question "Which thoracic structure ..." over options that include "thoracic cavity" lets
    a model that sees no image prefer that option by word overlap. Checked per used (task,
    granularity, modality) against the vocabulary's labels of that task and modality; words the
    pool lists under ``shared_words`` for the task are accepted.
    """
    found: dict[tuple[str, str, str], set[str]] = {}
    for cell in published_cells():
        for modality in cell.modalities:
            labels = [_words(label) for label in vocab.labels_for(cell.task, modality)]
            if len(labels) < 2:
                continue
            allowed = pool.shared_words.get(cell.task, frozenset())
            for t in pool.templates_for(cell.granularity, cell.task, modality):
                for word in _words(re.sub(r"{[a-z_]+}", " ", t.text)) - allowed:
                    n = sum(word in ws for ws in labels)
                    if 0 < n < len(labels):
                        found.setdefault((t.id, cell.task, word), set()).add(modality)
    return [f"{pool.path}: template '{tid}' uses '{word}', a word of only some {task} labels "
            f"({', '.join(sorted(mods))}): a lexical cue to those options"
            for (tid, task, word), mods in sorted(found.items())]
