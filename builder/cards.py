"""Dataset cards: one YAML file per dataset, so that ``- {dataset: NAME, root: PATH}`` is a source.

A card holds everything the project knows about one public dataset, as data a clinician can
review: what it is (``name``, ``title``, ``homepage``, ``license``, ``citation``, ``access``), how
a download of it looks on disk (``folder``, ``layout``), how it is read (the *source settings*:
``format`` and its ``options``, ``modality``, ``intensity``, ``slicing``, ``patient_key``,
``boxes_from_masks``, ``segmentation``, ``max_side``), its label map (``labels``,
``department``, ``new_labels``, ``default``: the same keys as a label-map file, read by
:class:`~gmai_build.taxonomy.LabelMap` from the card itself) and how the card was checked
(``verified``).

The source settings are not redeclared here: a card's settings are validated by
:class:`~gmai_build.config.SourceConfig` itself (every field but ``name``, ``root`` and
``label_map``), and the options by the format's converter, so a card always accepts exactly what
a ``sources.yaml`` entry accepts.

Cards are found, first match wins, in the folders a sources file lists under ``build.cards``,
then in a ``cards/`` folder beside the sources file, then among the bundled cards
(``label_maps/cards/``). :func:`expand_dataset_entries` turns every ``dataset:`` entry of a sources
file into a full source before the file is validated; entry keys override the card's (mappings
such as ``options`` are merged key by key).
"""

from __future__ import annotations

import difflib
import glob
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import SourceConfig, _loc, expand_path
from .errors import ConfigError
from .schemas import load_yaml

# Source settings a card may declare: every SourceConfig field but the entry's own identity.
ENTRY_ONLY = ("name", "root", "label_map")
SETTINGS_KEYS = tuple(k for k in SourceConfig.model_fields if k not in ENTRY_ONLY)
LABEL_MAP_KEYS = ("labels", "department", "new_labels", "default")
MERGED_KEYS = ("options", "intensity", "slicing", "boxes_from_masks")  # merged key by key
GRANULARITY = Literal["Image Level", "Box Level", "Mask Level", "Contour Level"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Access(_Strict):
    """Who may download the data and whether copies may be passed on."""

    registration: bool = Field(description="a login, challenge sign-up or data use agreement is "
                                           "needed to download")
    redistribution: bool = Field(description="the licence allows passing copies on")
    note: str | None = None


class Verification(_Strict):
    """How the card was checked: on real files, on a replica of its documented layout, or (a
    card no converter reads yet) only against its documentation."""

    how: Literal["real_files", "layout_replica", "documentation"]  # the last: unsupported only
    note: str = Field(min_length=1, description="which files, or which documentation")


class LayoutEntry(_Strict):
    """One kind of file in the download, relative to the dataset's root folder.

    ``path`` may hold ``*`` and the placeholders ``{case}`` (one case id) and ``{label}`` (one
    raw label); for a presence check each placeholder counts as ``*``. Entries of role
    ``other`` (files the card does not read) are not checked.
    """

    path: str = Field(min_length=1)
    role: Literal["image", "mask", "table", "dataset_json", "annotation", "arrays", "other"]
    what: str = Field(min_length=1)
    shape: list[int] | None = Field(default=None, description="replica image shape (H, W[, C]) "
                                                                "or volume (D, H, W)")

    def glob(self) -> str:
        out = self.path
        for placeholder in ("{case}", "{label}"):
            out = out.replace(placeholder, "*")
        return out


class CardInfo(_Strict):
    """The card's own keys (its source settings are checked by SourceConfig)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str = Field(min_length=1)
    homepage: str = Field(min_length=1)
    description: str | None = None
    folder: str | None = Field(default=None, description="the folder the download unpacks to")
    access: Access
    verified: Verification
    catalog: bool = Field(default=True, description="false: a bundled example or test fixture")
    supported: bool = True
    reason: str | None = Field(default=None, description="why an unsupported card is unsupported")
    granularities: list[GRANULARITY] = Field(default_factory=list)
    layout: list[LayoutEntry] = Field(default_factory=list)
    notes: str | None = None
    # The label map, in the card itself (read by taxonomy.LabelMap; shape checked there).
    labels: dict[str, Any] | None = None
    department: str | None = None
    new_labels: list[dict[str, Any]] | None = None
    default: Literal["error", "drop"] | None = None


@dataclass
class Card:
    """A validated card: its info, its raw source settings and the file it came from."""

    path: Path
    info: CardInfo
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return self.info.name

    def entry(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """A full sources.yaml entry: the card's settings, then the entry's keys over them."""
        merged: dict[str, Any] = {"name": self.name, "label_map": str(self.path),
                                  **{k: v for k, v in self.settings.items()}}
        for key, value in overrides.items():
            if key in MERGED_KEYS and isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return merged


def bundled_cards_folder() -> Path:
    from .taxonomy import LABEL_MAPS

    return LABEL_MAPS / "cards"


def _problem(path: Path, loc: str, msg: str) -> str:
    return f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}"


def _unknown_key(key: str, valid: list[str]) -> str:
    hint = difflib.get_close_matches(key, valid, n=1)
    return (f"unknown key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f"; valid keys: {', '.join(valid)}")


def parse_card(path: Path) -> Card:
    """Read and validate one card; every problem is reported as ``file: key path: reason``."""
    from .converters import MissingDependency, format_names, get_converter
    from .taxonomy import MODALITIES

    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (a dataset card)")
    info_keys = list(CardInfo.model_fields)
    valid = info_keys + list(SETTINGS_KEYS)
    problems = [_problem(path, str(k), _unknown_key(str(k), valid)) for k in data if k not in valid]
    info_data = {k: v for k, v in data.items() if k in info_keys}
    settings = {k: v for k, v in data.items() if k in SETTINGS_KEYS}
    info: CardInfo | None = None
    try:
        info = CardInfo.model_validate(info_data)
    except ValidationError as exc:
        problems += [_problem(path, _loc(e["loc"]), e["msg"]) for e in exc.errors()]
    if isinstance(data.get("name"), str) and data["name"] != path.stem:
        problems.append(_problem(path, "name", f"'{data['name']}' must match the file name "
                                               f"('{path.stem}')"))
    if info is not None:
        if not info.supported and not info.reason:
            problems.append(_problem(path, "reason", "an unsupported card says why"))
        if info.supported and info.verified.how == "documentation":
            problems.append(_problem(path, "verified.how", "a supported card is verified on "
                                                           "real_files or a layout_replica"))
        if info.supported and (not info.layout or not info.labels or not info.granularities):
            missing = [k for k in ("layout", "labels", "granularities") if not getattr(info, k)]
            problems.append(_problem(path, missing[0], "required for a supported card"))
    needed = ("format", "modality", "license", "citation") if (info is None or info.supported) \
        else ("modality", "license", "citation")
    problems += [_problem(path, k, "required") for k in needed if k not in settings]
    if "format" in settings or (info is not None and info.supported):
        try:  # the settings are exactly what a sources.yaml entry accepts
            SourceConfig.model_validate({**settings, "name": path.stem, "root": ".",
                                         "label_map": str(path)})
        except ValidationError as exc:
            problems += [_problem(path, _loc(e["loc"]), e["msg"]) for e in exc.errors()
                         if e["type"] != "missing"]
    fmt = settings.get("format")
    if isinstance(fmt, str):
        if fmt not in format_names():
            hint = difflib.get_close_matches(fmt, format_names(), n=1)
            problems.append(_problem(path, "format", f"unknown format '{fmt}'"
                                     + (f" (did you mean '{hint[0]}'?)" if hint else "")))
        else:
            try:
                get_converter(fmt).Options.model_validate(settings.get("options") or {})
            except MissingDependency as exc:
                problems.append(_problem(path, "format", exc.reason))
            except ValidationError as exc:
                problems += [_problem(path, f"options.{_loc(e['loc'])}", e["msg"])
                             for e in exc.errors()]
    modality = settings.get("modality")
    if isinstance(modality, str) and modality not in MODALITIES:
        hint = difflib.get_close_matches(modality, MODALITIES, n=1)
        problems.append(_problem(path, "modality", f"'{modality}' is not a GMAI-MMBench modality"
                                 + (f" (did you mean '{hint[0]}'?)" if hint else "")))
    if problems or info is None:
        raise ConfigError("\n".join(problems))
    return Card(path, info, settings)


def card_folders(sources_file: Path | None = None, extra: list[Path] | tuple[Path, ...] = ()
                 ) -> list[Path]:
    """Where cards are looked for, first match wins: ``build.cards``, ``cards/`` beside the
    sources file, the bundled cards."""
    folders = list(extra)
    if sources_file is not None and (sources_file.parent / "cards").is_dir():
        folders.append(sources_file.parent / "cards")
    folders.append(bundled_cards_folder())
    return folders


def card_files(folders: list[Path]) -> dict[str, Path]:
    """name -> card file over the folders (an earlier folder shadows a later one)."""
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


@lru_cache(maxsize=256)
def _cached_card(path: Path, mtime_ns: int) -> Card:
    return parse_card(path)


def load_card(path: Path) -> Card:
    return _cached_card(path, path.stat().st_mtime_ns)


def find_card(name: str, folders: list[Path], where: str) -> Card:
    files = card_files(folders)
    if name not in files:
        hint = difflib.get_close_matches(name, list(files), n=1)
        raise ConfigError(f"{where}: unknown dataset '{name}'"
                          + (f" (did you mean '{hint[0]}'?)" if hint else "")
                          + f"; cards are looked for in {', '.join(str(f) for f in folders)} "
                          "(gmai-build datasets lists them)")
    return load_card(files[name])


def all_cards(folders: list[Path] | None = None) -> list[Card]:
    """Every card in the folders (bundled ones by default), by name; errors reported at once."""
    files = card_files(folders or [bundled_cards_folder()])
    cards, problems = [], []
    for path in files.values():
        try:
            cards.append(load_card(path))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return cards


@dataclass
class Expanded:
    """What :func:`expand_dataset_entries` did: the card behind each source, skipped sources."""

    cards: dict[str, Card] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # kept source -> its index in the file

    def original_loc(self, loc: tuple[Any, ...]) -> tuple[Any, ...]:
        """A validation error's location with the source's index as written in the file."""
        if len(loc) > 1 and loc[0] == "sources" and isinstance(loc[1], int) \
                and loc[1] < len(self.positions):
            return (loc[0], self.positions[loc[1]], *loc[2:])
        return loc


def _resolved_root(raw_root: Any, base: Path, where: str) -> Path | str | None:
    """The source's root, or why it cannot be resolved (None: not a path; the schema says so)."""
    if not isinstance(raw_root, str | os.PathLike):
        return None
    try:
        return expand_path(str(raw_root), base, where)
    except ConfigError as exc:
        return str(exc).split(": ", 2)[-1]


def _absent(root: Path | str | None, card: Card | None, shared: bool) -> str | None:
    """Why an optional source counts as missing (None: present).

    Missing: its root is absent; or, where several sources share one root (the MedMNIST
    ``.npz`` files in one folder), none of the card's layout is there. A dataset folder of its
    own that exists is present, and laid out wrongly if its layout does not match.
    """
    if root is None:
        return None
    if isinstance(root, str):
        return root
    if not root.exists():
        return f"{root} does not exist"
    if shared and card is not None and root.is_dir() and not any(
            glob.glob(e.glob(), root_dir=root, recursive=True) for e in card.info.layout):
        return f"none of {', '.join(e.path for e in card.info.layout)} in {root}"
    return None


def expand_dataset_entries(data: dict[str, Any], path: Path) -> tuple[dict[str, Any], Expanded]:
    """Replace every ``dataset:`` entry of a parsed sources file by the full source its card
    gives, and drop ``optional: true`` sources whose root is absent (one line each).

    Raises ConfigError naming file, key path and reason (all problems at once).
    """
    done = Expanded()
    sources = data.get("sources")
    if not isinstance(sources, list):
        return data, done
    done.positions = list(range(len(sources)))  # until optional sources are dropped
    build = data.get("build") if isinstance(data.get("build"), dict) else {}
    base = path.parent
    extra: list[Path] = []
    problems: list[str] = []
    for j, folder in enumerate(build.get("cards") or []):
        where = f"{path}: build.cards[{j}]"
        try:
            p = expand_path(str(folder), base, where)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if not p.is_dir():
            problems.append(f"{where}: {p} is not a folder")
        extra.append(p)
    folders = card_folders(path, extra)
    expanded: list[tuple[Any, Card | None, bool, str]] = []
    for i, entry in enumerate(sources):
        if not isinstance(entry, dict):
            expanded.append((entry, None, False, f"{path}: sources[{i}]"))
            continue
        entry = dict(entry)
        where = f"{path}: sources[{i}]"
        optional = entry.pop("optional", False)
        if not isinstance(optional, bool):
            problems.append(f"{where}.optional: must be true or false")
        card: Card | None = None
        if "dataset" in entry:
            name = entry.pop("dataset")
            try:
                card = find_card(str(name), folders, f"{where}.dataset")
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            if not card.info.supported:
                problems.append(f"{where}.dataset: '{card.name}' cannot be built yet: "
                                f"{card.info.reason} (card {card.path})")
                continue
            inline = [k for k in LABEL_MAP_KEYS if k in entry]
            if inline:
                problems.append(f"{where}.{inline[0]}: labels come from the card; to change them "
                                "give label_map: a file of your own (or a card of your own)")
                continue
            if "root" not in entry:
                problems.append(f"{where}.root: required: the folder you downloaded "
                                f"'{card.name}' into (gmai-build datasets {card.name} shows its "
                                "layout)")
                continue
            entry = card.entry(entry)
        expanded.append((entry, card, optional is True, where))
    if problems:
        raise ConfigError("\n".join(problems))
    done.positions = []
    roots = [_resolved_root(e.get("root") if isinstance(e, dict) else None, base, f"{w}.root")
             for e, _, _, w in expanded]
    out: list[Any] = []
    for position, ((entry, card, optional, _), root) in enumerate(zip(expanded, roots)):
        if optional:
            shared = isinstance(root, Path) and sum(r == root for r in roots) > 1
            missing = _absent(root, card, shared)
            if missing is not None:
                done.skipped.append(f"skipped optional source '{entry.get('name')}': {missing}")
                continue
        if card is not None:
            done.cards[str(entry.get("name"))] = card
        done.positions.append(position)
        out.append(entry)
    if not out and sources:
        raise ConfigError(f"{path}: sources: every source is optional and absent:\n"
                          + "\n".join(done.skipped))
    return {**data, "sources": out}, done


def layout_problems(card: Card, root: Path) -> list[str]:
    """What the card's layout expects under ``root`` that is not there (empty: laid out right)."""
    problems = []
    for entry in card.info.layout:
        if entry.role == "other":  # listed for the reader (e.g. unlabelled test images)
            continue
        pattern = entry.glob()
        if not glob.glob(pattern, root_dir=root, recursive=True):
            problems.append(f"expected {entry.path} ({entry.what}), found none")
    if problems:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:8]
        problems.append(f"{root} holds: {', '.join(top) or 'nothing'}"
                        f" (gmai-build datasets {card.name} shows the expected layout)")
    return problems
