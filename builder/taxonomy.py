"""The lexical tree, the canonical label vocabulary, and per-source label maps.

``standardize`` (in the pipeline's terms) is :meth:`LabelMap.lookup`: a source's raw label (a
mask value, a folder name, a CSV cell) becomes a :class:`StandardLabel` carrying the canonical
label text and its place on the tree (task, department). Unknown raw labels are errors that name
the source, the raw value and the label-map file; a map may say ``drop`` instead.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .schemas import bundled_yaml, label_map_data, read_yaml, vocabulary_data

LABEL_MAPS = Path(__file__).resolve().parent.parent / "label_maps"
if not (LABEL_MAPS / "tree.yaml").is_file():  # installed (non-editable): data is a subpackage
    LABEL_MAPS = Path(__file__).resolve().parent / "label_maps"
BUNDLED_SOURCE_MAPS = LABEL_MAPS / "sources"

_TREE = bundled_yaml(LABEL_MAPS / "tree.yaml")
TASKS: dict[str, str] = dict(_TREE["tasks"])
DEPARTMENTS: dict[str, str] = dict(_TREE["departments"])
MODALITIES: list[str] = list(_TREE["modalities"])
GRANULARITIES: list[str] = list(_TREE["granularities"])

NO_DEPARTMENT = ""  # attributes that belong to no department
FROM_SOURCE = "from_source"
DROP = "drop"
# Texts that pandas (and so VLMEvalKit) reads back as missing values: never emit them.
NA_TEXTS = {
    "", "#n/a", "#n/a n/a", "#na", "-1.#ind", "-1.#qnan", "-nan", "1.#ind", "1.#qnan",
    "<na>", "n/a", "na", "nan", "null", "none", "nat",
}


def normalize_key(text: str) -> str:
    """Case-, separator- and whitespace-insensitive key for matching label texts."""
    return re.sub(r"\s+", " ", re.sub(r"[_]+", " ", str(text))).strip().lower()


@dataclass(frozen=True)
class VocabularyEntry:
    """A canonical label and its place on the tree.

    ``task``/``department`` are the default placement; ``placements`` override them per
    modality where the published tree places the label differently by modality (``fibrosis``
    is a lung finding on X-ray and an eye finding on fundus photographs).
    """

    label: str
    task: str
    department: str  # "" = none, FROM_SOURCE = the label map decides
    modalities: tuple[str, ...] = ()
    synonyms: tuple[str, ...] = ()
    placements: tuple[tuple[str, str, str], ...] = ()  # (modality, task, department)

    def placement(self, modality: str | None) -> tuple[str, str]:
        """(task, department) of this label on images of ``modality``."""
        for mod, task, dept in self.placements:
            if mod == modality:
                return task, dept
        return self.task, self.department

    def lists(self, modality: str) -> bool:
        """Whether the vocabulary lists this label for ``modality`` (any listed: no opinion)."""
        return not self.modalities or modality in self.modalities


@dataclass(frozen=True)
class StandardLabel:
    """A raw label after standardisation: canonical text and its tree coordinates."""

    label: str
    task: str
    department: str


def _check_department(value: str, where: str) -> str:
    if value in ("none", NO_DEPARTMENT, None):
        return NO_DEPARTMENT
    if value == FROM_SOURCE or value in DEPARTMENTS:
        return value
    hint = difflib.get_close_matches(str(value), list(DEPARTMENTS), n=1)
    raise ConfigError(
        f"{where}: unknown department '{value}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    )


def _check_task(value: str, where: str) -> str:
    if value in TASKS:
        return value
    hint = difflib.get_close_matches(str(value), list(TASKS), n=1)
    raise ConfigError(
        f"{where}: unknown clinical VQA task '{value}'"
        + (f" (did you mean '{hint[0]}'?)" if hint else "")
    )


def check_label_text(label: str, where: str) -> None:
    if normalize_key(label) in NA_TEXTS or any(c in label for c in "\t\r\n"):
        raise ConfigError(
            f"{where}: label text {label!r} would be read back as missing or break the TSV; "
            "spell it out (e.g. 'no finding')"
        )


class Vocabulary:
    """Canonical labels with synonyms; looks labels up by text or synonym."""

    def __init__(self) -> None:
        self.entries: dict[str, VocabularyEntry] = {}
        self._keys: dict[str, str] = {}

    def add_file(self, path: Path) -> None:
        """Add every entry of a vocabulary file; all bad entries are reported in one error."""
        data = vocabulary_data(path)
        problems = []
        for i, raw in enumerate(data.get("labels") or []):
            try:
                self.add(raw, f"{path}: labels[{i}]")
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))

    def add(self, raw: dict[str, Any], where: str) -> None:
        if not isinstance(raw, dict) or "label" not in raw:
            raise ConfigError(f"{where}: each entry needs a 'label'")
        unknown = set(raw) - {"label", "task", "department", "modalities", "synonyms",
                              "placements"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        label = str(raw["label"])
        check_label_text(label, where)
        old = self.entries.get(label)
        task = raw.get("task", old.task if old else None)
        if task is None:
            raise ConfigError(f"{where}: new label '{label}' needs a 'task'")
        dept = raw.get("department", old.department if old else None)
        if dept is None:
            raise ConfigError(f"{where}: new label '{label}' needs a 'department' (or none)")
        synonyms = tuple(old.synonyms if old else ()) + tuple(str(s) for s in raw.get("synonyms", []))
        for s in synonyms:
            check_label_text(s, where)
        modalities = tuple(raw.get("modalities", old.modalities if old else ()))
        placements = list(old.placements if old else ())
        given = raw.get("placements") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{where}: placements: expected a mapping modality -> "
                              f"{{task, department}}, got {type(given).__name__}")
        for mod, place in given.items():
            if not isinstance(place, dict) or set(place) - {"task", "department"}:
                raise ConfigError(f"{where}: placements.{mod}: expected {{task, department}}")
            placements = [p for p in placements if p[0] != mod]
            placements.append((
                str(mod), _check_task(place.get("task", task), f"{where}: placements.{mod}"),
                _check_department(place.get("department", dept), f"{where}: placements.{mod}"),
            ))
        entry = VocabularyEntry(
            label, _check_task(task, where), _check_department(dept, where), modalities, synonyms,
            tuple(sorted(placements)),
        )
        self.entries[label] = entry
        for text in (label, *synonyms):
            self._keys.setdefault(normalize_key(text), label)

    def merge(self, alias: str, into: str) -> None:
        """Fold the entry ``alias`` into ``into``: its texts become synonyms of ``into``."""
        if alias == into or alias not in self.entries or into not in self.entries:
            return
        gone, kept = self.entries.pop(alias), self.entries[into]
        modalities = tuple(sorted(set(kept.modalities) | set(gone.modalities)))
        synonyms = tuple(dict.fromkeys((*kept.synonyms, gone.label, *gone.synonyms)))
        self.entries[into] = VocabularyEntry(
            kept.label, kept.task, kept.department, modalities, synonyms, kept.placements)
        for key, label in self._keys.items():
            if label == alias:
                self._keys[key] = into
        for text in synonyms:
            self._keys.setdefault(normalize_key(text), into)

    def merge_related(self) -> None:
        """Merge synonym groups of ``relations.yaml`` and folded spelling variants.

        The group's first member that is an entry is kept (else the alphabetically first of
        a set of spelling variants), so a label map naming either text gets the same label.
        """
        from .relations import fold, load_relations

        rel = load_relations()
        groups: dict[str, list[str]] = {}
        for label in sorted(self.entries):
            groups.setdefault(rel.key(label), []).append(label)
        for key, labels in groups.items():
            head = rel.display.get(key)
            keep = head if head in self.entries else labels[0]
            for label in labels:
                self.merge(label, keep)
        for label in list(self.entries):  # texts only listed as synonyms fold too
            self._keys.setdefault(fold(label), label)

    def resolve(self, text: str) -> VocabularyEntry | None:
        """Canonical entry for a label text or synonym; left/right qualifiers are merged."""
        key = normalize_key(text)
        if key in self._keys:
            return self.entries[self._keys[key]]
        m = re.match(r"^(left|right)\s+(.*)$", key)
        if m and m.group(2) in self._keys:
            return self.entries[self._keys[m.group(2)]]
        from .relations import fold

        folded = self._keys.get(fold(text))
        return self.entries[folded] if folded in self.entries else None

    def suggest(self, text: str) -> list[str]:
        close = difflib.get_close_matches(normalize_key(text), self._keys, 5)
        return list(dict.fromkeys(self._keys[k] for k in close))[:3]  # synonyms name one label once

    def labels_for(self, task: str, modality: str | None) -> list[str]:
        """Canonical labels the tree places on this task for this modality (any: None), sorted."""
        return sorted(
            e.label for e in self.entries.values()
            if (modality is None or modality in e.modalities) and e.placement(modality)[0] == task
        )

    def unlisted_modality(self, label: str, modality: str) -> bool:
        """True when the vocabulary lists modalities for ``label`` and not this one.

        ``validate`` warns about such labels: the source may be mislabelled, or the label's
        placement (task, department) on this modality is a guess from its other modalities.
        """
        entry = self.resolve(label)
        return entry is not None and not entry.lists(modality)


@lru_cache(maxsize=8)
def _base_vocabulary_files() -> tuple[Path, ...]:
    return (LABEL_MAPS / "vocabulary.yaml", LABEL_MAPS / "vocabulary_additions.yaml")


def load_vocabulary(extra: list[Path] | tuple[Path, ...] = ()) -> Vocabulary:
    vocab = Vocabulary()
    for path in (*_base_vocabulary_files(), *extra):
        vocab.add_file(path)
    vocab.merge_related()
    return vocab


class LabelMap:
    """One source's raw label -> canonical label mapping (a YAML file in ``label_maps/``)."""

    def __init__(self, path: Path, source: str, vocab: Vocabulary, modality: str | None = None):
        self.path = path
        self.source = source
        self.modality = modality  # a label's placement may depend on the source's modality
        self.vocab = vocab
        data = label_map_data(path)
        unknown = set(data) - {"labels", "department", "new_labels", "source", "description",
                               "default"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; expected labels, "
                              "department, new_labels, default")
        # `default: drop` drops every raw label the map does not name (e.g. the dozens of
        # planning structures of a clinical RTSTRUCT); without it, unknown labels are errors.
        self.drop_unknown = data.get("default", "error") == DROP
        if data.get("default", "error") not in ("error", DROP):
            raise ConfigError(f"{path}: default: must be 'error' or 'drop'")
        # Every problem of the map is collected and reported in one error, not one per run.
        problems: list[str] = []
        for i, raw in enumerate(data.get("new_labels") or []):
            try:
                vocab.add(raw, f"{path}: new_labels[{i}]")
            except ConfigError as exc:
                problems.append(str(exc))
        self.default_department = None
        if "department" in data:
            try:
                self.default_department = _check_department(data["department"], f"{path}: department")
            except ConfigError as exc:
                problems.append(str(exc))
        labels = data.get("labels")
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{path}: 'labels' must be a non-empty mapping raw -> canonical")
            labels = {}
        self._map: dict[str, StandardLabel | None] = {}
        self._norm: dict[str, StandardLabel | None] = {}
        for raw_value, target in labels.items():
            where = f"{path}: labels.{raw_value}"
            try:
                std = self._standard(target, vocab, where)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            self._map[str(raw_value)] = std
            self._norm.setdefault(normalize_key(str(raw_value)), std)
        if problems:
            raise ConfigError("\n".join(problems))

    def _standard(self, target: Any, vocab: Vocabulary, where: str) -> StandardLabel | None:
        if target == DROP:
            return None
        override: dict[str, Any] = {}
        if isinstance(target, dict):
            override = dict(target)
            unknown = set(override) - {"label", "task", "department"}
            if unknown or "label" not in override:
                raise ConfigError(f"{where}: expected {{label, task?, department?}}")
            target = override["label"]
        entry = vocab.resolve(str(target))
        if entry is None:
            hint = vocab.suggest(str(target))
            raise ConfigError(
                f"{where}: '{target}' is not a canonical label or synonym"
                + (f" (close: {', '.join(hint)})" if hint else "")
                + "; add it under new_labels in this file or in a build vocabulary file"
            )
        task, dept = entry.placement(self.modality)
        if "task" in override:
            task = _check_task(override["task"], where)
        if "department" in override:
            dept = _check_department(override["department"], where)
        if dept == FROM_SOURCE:
            if self.default_department is None:
                raise ConfigError(
                    f"{where}: label '{entry.label}' takes its department from the source; "
                    "set a top-level 'department:' in this label map"
                )
            dept = self.default_department
        return StandardLabel(entry.label, task, dept)

    def lookup(self, raw: Any, file: str | None = None) -> StandardLabel | None:
        """Standard label for a raw value, None if the map drops it; error if unknown.

        An unknown label is a problem of the label map (ConfigError), never a bad sample: it
        stops the build even under ``on_error: skip``.
        """
        text = _raw_text(raw)
        if text in self._map:
            return self._map[text]
        key = normalize_key(text)
        if key in self._norm:
            return self._norm[key]
        if self.drop_unknown:
            return None
        raise ConfigError(
            f"raw label {text!r} is not in label map {self.path}; map it to a canonical label "
            "or to 'drop'",
            source=self.source,
            file=file,
        )

    def wants(self, raw: Any) -> bool:
        """False for a raw label the map drops: converters then never read its data. (A bound
        method, unlike a lambda, pickles with the map for worker processes.)"""
        return self.lookup(raw) is not None

    def unlisted_modality_labels(self) -> list[str]:
        """Canonical labels of this map that the vocabulary does not list for its modality."""
        if self.modality is None:
            return []
        return sorted(std.label for std in self.targets
                      if self.vocab.unlisted_modality(std.label, self.modality))

    @property
    def targets(self) -> list[StandardLabel]:
        seen: dict[str, StandardLabel] = {}
        for std in self._map.values():
            if std is not None:
                seen.setdefault(std.label, std)
        return list(seen.values())


def _raw_text(raw: Any) -> str:
    """Raw labels from arrays come as numpy scalars/floats: 1.0 and 1 are both "1"."""
    try:
        f = float(raw)
        if f.is_integer():
            return str(int(f))
    except (TypeError, ValueError):
        pass
    return str(raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    return data
