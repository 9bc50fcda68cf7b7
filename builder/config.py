"""``sources.yaml``: the declarative description of a build, validated before any work starts.

Each stage declares its own settings next to its code (intensity in :mod:`normalize`, slicing
in :mod:`slicing`, target limits in :mod:`cases`, option counts in :mod:`questions`); this
module composes them into a source and a build.

Every problem is reported as ``<file>: <key path>: <reason>`` (for example
``sources.yaml: sources[1].format: unknown format 'niftii'; known: ...``) and raises
:class:`~gmai_build.errors.ConfigError`. Paths in the file are relative to the file itself;
``${VAR}`` / ``${VAR:-default}`` expand environment variables (a relative value set in the
environment is taken relative to the current directory, a default relative to the file) and
``{pkg:NAME}`` expands to the folder of an installed Python package (so examples can use real
files shipped on PyPI).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from .cases import BoxesFromMasks, TargetLimits
from .errors import ConfigError
from .normalize import CT_WINDOWS, IntensityConfig  # noqa: F401  (CT_WINDOWS: re-exported)
from .questions import OptionCount
from .schemas import Strict, read_yaml_text, valid_regex
from .slicing import SlicingConfig

if TYPE_CHECKING:
    from .cards import Card

class SourceConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    format: str
    root: Path
    modality: str
    label_map: Path
    license: str = Field(min_length=1)
    citation: str = Field(min_length=1)
    patient_key: str | None = Field(
        default=None,
        description="regex on the item's relative path; first group (or whole match) = group",
    )
    options: dict[str, Any] = Field(default_factory=dict)
    intensity: IntensityConfig = Field(default_factory=IntensityConfig)
    slicing: SlicingConfig = Field(default_factory=SlicingConfig)
    boxes_from_masks: BoxesFromMasks | None = None
    segmentation: bool = Field(default=True, description="emit mask+contour cases for masks")
    max_side: int | None = Field(
        default=None, ge=32, description="downscale images whose longer side exceeds this"
    )
    on_error: Literal["fail", "skip"] | None = Field(
        default=None, description="override build.on_error for this source")
    allow_outside_root: bool = Field(
        default=False, description="let tables, globs and symlinks reach files outside root")
    identifying_paths: bool = Field(
        default=True, description="file paths may identify patients: record them as tokens")
    max_pixels: int | None = Field(default=None, ge=1, description="override build.max_pixels")
    min_side: int = Field(
        default=224, ge=1, description="upscale images whose shorter side is below this "
        "(before overlays are drawn, so lines stay crisp)"
    )
    targets: TargetLimits = Field(default_factory=TargetLimits)
    allow_no_questions: bool = Field(
        default=False, description="a source that yields no question is an error unless set"
    )

    @field_validator("patient_key")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return valid_regex(v)


class BuildSettings(Strict):
    name: str = Field(default="GMAI-build", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    out: Path | None = None
    seed: int = 0
    val_fraction: float = Field(default=0.18, gt=0, lt=1)
    per_label_cap: int = Field(default=30, ge=1)
    options: OptionCount = Field(default_factory=OptionCount)
    workers: int = Field(default=0, ge=0, description="0 = one per CPU core this process may use")
    question_pool: Path | None = None
    near_duplicate_distance: int = Field(
        default=32, ge=0, le=128, description="max Hamming distance (of 256 bits) between the "
        "perceptual hashes of two images that count as near duplicates across VAL/TEST"
    )
    vocabulary: list[Path] = Field(default_factory=list, description="extra vocabulary files")
    cards: list[Path] = Field(default_factory=list, description="folders of your own dataset cards")
    circular: bool = Field(
        default=False, description="also write CircularEval copies (options rotated) of each split"
    )
    salt: str | None = Field(
        default=None, min_length=1,
        description="key for the tokens that replace groups, ids and paths (${VAR} allowed); "
        "default: a per-user key kept outside the outputs (see gmai_build.privacy)")
    on_error: Literal["fail", "skip"] = Field(
        default="fail", description="fail: stop before publishing; skip: skip bad samples, "
        "list them with reasons in summary.md/json")
    max_pixels: int = Field(default=100_000_000, ge=1,
                            description="largest 2D image or volume plane, checked before decoding")
    max_voxels: int = Field(default=1_000_000_000, ge=1,
                            description="largest 3D volume, checked before decoding")


class SourcesFile(Strict):
    build: BuildSettings = Field(default_factory=BuildSettings)
    sources: list[SourceConfig] = Field(min_length=1)


class Config:
    """A validated sources.yaml with paths resolved against its own folder."""

    def __init__(self, path: Path, model: SourcesFile, raw_text: str):
        self.path = path
        self.build = model.build
        self.sources = model.sources
        salt = model.build.salt
        # The hash must not let anyone test guesses of a salt written in the file.
        hashed_text = raw_text.replace(salt, "<salt>") if salt else raw_text
        self.config_hash = hashlib.sha256(hashed_text.encode()).hexdigest()
        self.cards: dict[str, Card] = {}  # source name -> the dataset card it came from
        self.skipped: list[str] = []  # one line per optional source whose root is absent

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PKG = re.compile(r"\{pkg:([A-Za-z_][A-Za-z0-9_.]*)\}")


def expand_env(text: str, where: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` in a plain value (not a path)."""

    def env(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is None:
            raise ConfigError(f"{where}: environment variable {m.group(1)} is not set")
        return m.group(2)

    return _ENV.sub(env, text)


def expand_path(text: str, base: Path, where: str) -> Path:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``{pkg:NAME}``, then resolve against base."""

    def env(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:  # typed in a shell: relative to where the command runs
            return str(Path(value).expanduser().resolve()) if m.start() == 0 else value
        if m.group(2) is None:
            raise ConfigError(f"{where}: environment variable {m.group(1)} is not set")
        return m.group(2)  # the default is written in the YAML: relative to the YAML

    def pkg(m: re.Match[str]) -> str:
        spec = importlib.util.find_spec(m.group(1))
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{where}: Python package '{m.group(1)}' is not installed")
        return str(Path(list(spec.submodule_search_locations)[0]))

    expanded = _PKG.sub(pkg, _ENV.sub(env, text))
    path = Path(expanded).expanduser()
    return path if path.is_absolute() else (base / path)


def load_config(path: str | Path) -> Config:
    """Read and validate a sources.yaml; raise ConfigError naming file, key path and reason."""
    from .converters import MissingDependency, format_names, get_converter
    from .taxonomy import MODALITIES

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    text, data = read_yaml_text(path, "sources file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'build' and 'sources' keys")
    from .cards import expand_dataset_entries  # `dataset:` entries -> full sources (cards.py)

    data, expanded = expand_dataset_entries(data, path)
    try:
        model = SourcesFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _loc(expanded.original_loc(err["loc"]))  # positions as in the file
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key '{err['loc'][-1]}'"
                allowed = _allowed_keys(err["loc"])
                hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
                if hint:
                    msg += f" (did you mean '{hint[0]}'?)"
                if allowed:
                    msg += f"; valid keys: {', '.join(allowed)}"
            loc = err["loc"]
            if len(loc) > 1 and loc[0] == "sources" and isinstance(loc[1], int):
                raw = (data.get("sources") or [])[loc[1]]
                if isinstance(raw, dict) and raw.get("name"):
                    msg += f" [source '{raw['name']}']"
            lines.append(f"{path}: {where}: {msg}")
        raise ConfigError("\n".join(lines)) from None

    base = path.parent
    converters = format_names()
    seen: set[str] = set()
    problems: list[str] = []
    for i, src in enumerate(model.sources):
        where = f"{path}: sources[{expanded.positions[i]}]"
        first_problem = len(problems)
        if src.name in seen:
            problems.append(f"{where}.name: duplicate source name '{src.name}'")
        seen.add(src.name)
        if src.format not in converters:
            hint = difflib.get_close_matches(src.format, list(converters), n=1)
            problems.append(
                f"{where}.format: unknown format '{src.format}'"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; known: {', '.join(converters)}"
            )
        else:
            try:
                options_model = get_converter(src.format).Options
                src.options = options_model.model_validate(src.options)
            except MissingDependency as exc:
                problems.append(f"{where}.format: {exc.reason}")
            except ValidationError as exc:
                problems.extend(f"{where}.options.{_loc(err['loc'])}: "
                                + _option_problem(err, src.format, options_model)
                                for err in exc.errors())
        if src.modality not in MODALITIES:
            hint = difflib.get_close_matches(src.modality, MODALITIES, n=1)
            problems.append(
                f"{where}.modality: '{src.modality}' is not a GMAI-MMBench modality"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
            )
        try:
            src.root = expand_path(str(src.root), base, f"{where}.root")
            if not src.root.exists():
                problems.append(f"{where}.root: {src.root} does not exist")
        except ConfigError as exc:
            problems.append(str(exc))
        try:
            src.label_map = _resolve_label_map(str(src.label_map), base, f"{where}.label_map")
        except ConfigError as exc:
            problems.append(str(exc))
        for k in range(first_problem, len(problems)):  # name the source, not just its position
            problems[k] += f" [source '{src.name}']"
    b = model.build
    if b.salt is not None:
        try:
            b.salt = expand_env(b.salt, f"{path}: build.salt")
        except ConfigError as exc:
            problems.append(str(exc))
    if b.out is not None:
        b.out = expand_path(str(b.out), base, f"{path}: build.out")
    if b.question_pool is not None:
        b.question_pool = expand_path(str(b.question_pool), base, f"{path}: build.question_pool")
        if not b.question_pool.is_file():
            problems.append(f"{path}: build.question_pool: {b.question_pool} does not exist")
    resolved = []
    for j, voc in enumerate(b.vocabulary):
        p = expand_path(str(voc), base, f"{path}: build.vocabulary[{j}]")
        if not p.is_file():
            problems.append(f"{path}: build.vocabulary[{j}]: {p} does not exist")
        resolved.append(p)
    b.vocabulary = resolved
    if problems:
        raise ConfigError("\n".join(problems))
    config = Config(path, model, text)
    config.cards, config.skipped = expanded.cards, expanded.skipped
    return config


def _option_problem(err: Any, format_name: str, options_model: type[BaseModel]) -> str:
    """One option error; an unknown option lists the valid ones (and the closest)."""
    if err["type"] != "extra_forbidden":
        return str(err["msg"])
    valid = list(options_model.model_fields)
    hint = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1)
    return (f"unknown option '{err['loc'][-1]}' for format '{format_name}'"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f"; valid options: {', '.join(valid) or 'none'} (gmai-build formats {format_name})")


def _resolve_label_map(value: str, base: Path, where: str) -> Path:
    """A label map path relative to sources.yaml, else a bundled one in label_maps/sources/."""
    candidate = expand_path(value, base, where)
    if candidate.is_file():
        return candidate
    from .taxonomy import BUNDLED_SOURCE_MAPS

    for folder in (BUNDLED_SOURCE_MAPS, BUNDLED_SOURCE_MAPS.parent / "cards"):  # a card is one too
        for name in (value, value + ".yaml"):
            bundled = folder / name
            if bundled.is_file():
                return bundled
    raise ConfigError(
        f"{where}: label map '{value}' not found (looked for {candidate}, in {BUNDLED_SOURCE_MAPS}"
        f" and among the bundled dataset cards)"
    )


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SourcesFile
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        candidates = [ann, *(inner or ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            for c in candidates:
                for a in getattr(c, "__args__", ()) or ():
                    if isinstance(a, type) and issubclass(a, BaseModel):
                        nxt = a
        if nxt is None:
            return []
        model = nxt
    return list(model.model_fields)
