"""Reading the YAML files a user writes, and the shapes of label maps and vocabulary files.

Every file a user edits (sources.yaml, label maps, vocabulary files, question pools) is read by
:func:`read_yaml`, which turns every way of failing (missing, a folder, not UTF-8, not YAML,
a YAML value Python cannot build) into one :class:`~gmai_build.errors.ConfigError` line naming
the file, the line and the reason.

The pydantic models here check the *types* of a file's known keys (a list where a list belongs,
text where text belongs) so that the loaders in taxonomy.py can trust them; the meaning of the
values (is this a canonical label, a known task) is still checked by those loaders, with their
own messages. The models allow keys they do not know: the loaders decide which keys exist, so
adding a key there needs no change here. Each problem is reported as ``file: key.path: reason``.
"""

from __future__ import annotations

import datetime
import functools
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictStr,
    Tag,
    ValidationError,
)

from .errors import ConfigError

# libyaml's safe loader when PyYAML was built with it (4x faster on the 3,000-line vocabulary).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """YAML text -> data with the fastest safe loader (for the package's own files)."""
    return yaml.load(text, Loader=_LOADER)


@functools.lru_cache(maxsize=8)
def bundled_yaml(path: Path) -> Any:
    """A YAML file shipped with the package, parsed once per process (treat as read-only)."""
    return load_yaml(Path(path).read_text(encoding="utf-8"))


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def read_yaml_text(path: Path, what: str = "YAML file") -> tuple[str, Any]:
    """The text of a user's YAML file and what it holds; ConfigError for every failure."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: line {_line_of(raw, exc.start)}: not UTF-8 text (byte 0x{raw[exc.start]:02x} "
            f"at offset {exc.start}); save the {what} as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"{path}: {where}not valid YAML: {reason}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a date like 2024-13-45
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return text, data


def read_yaml(path: Path, what: str = "YAML file") -> Any:
    return read_yaml_text(path, what)[1]


def _yaml_text(key: Any) -> str:
    """A key as it was written in the YAML (true, 2024-01-01, 3)."""
    return {True: "true", False: "false", None: "null"}.get(key, str(key)) if not isinstance(
        key, str) else key


def key_path(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as the user writes it: ``labels[2].synonyms``, ``labels.yes``.

    List positions are ints; a mapping key is followed by pydantic's ``[key]`` marker when the
    key itself is wrong, and may be any YAML scalar.
    """
    out = ""
    parts = [p for p in loc if p != _MAPPING]
    for n, part in enumerate(parts):
        if part == "[key]":
            continue
        is_key = n + 1 < len(parts) and parts[n + 1] == "[key]"
        if isinstance(part, int) and not isinstance(part, bool) and not is_key:
            out += f"[{part}]"
        else:
            out += f".{_yaml_text(part)}" if out else _yaml_text(part)
    return out


def validate_file(model: type[BaseModel], data: Any, path: Path, what: str) -> BaseModel:
    """``model`` of the file's data, or one ConfigError listing every problem with its key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a {what} (a mapping of keys), found "
                          f"{_kind(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err["loc"][:-1] if err["type"] == "invalid_key" else err["loc"]
            where = key_path(loc)
            lines.append(f"{path}: {where + ': ' if where else ''}{_reason(err)}")
        raise ConfigError("\n".join(lines)) from None


def _kind(value: Any) -> str:
    if value is None:
        return "an empty file"
    return {list: "a list", dict: "a mapping", str: "text", int: "a number", float: "a number",
            bool: "true/false"}.get(type(value), type(value).__name__)


def _reason(err: Any) -> str:
    value, kind = err.get("input"), err["type"]
    if kind == "invalid_key":
        return f"the key {value!r} must be text (quote it in the YAML)"
    reason = str(err["msg"]).removeprefix("Value error, ")
    if kind in ("value_error", "missing"):
        return reason
    if isinstance(value, bool):
        return (f"{reason}, found true/false (YAML reads yes/no/on/off/true/false as true or "
                "false: quote it)")
    return f"{reason}, found {_kind(value)}"


def _raw_label_key(value: Any) -> str:
    """Raw labels may be written as numbers (mask values); a YAML yes/no or a date may not."""
    if isinstance(value, bool) or value is None or isinstance(value, datetime.date):
        shown = "an empty key" if value is None else _yaml_text(value)
        hint = " (YAML reads yes/no/on/off as true/false)" if isinstance(value, bool) else ""
        raise ValueError(f"the raw label {shown} is not text{hint}; quote it in the YAML")
    if isinstance(value, int | float):
        return str(value)
    return value


RawLabel = Annotated[str, BeforeValidator(_raw_label_key)]
TextList = list[StrictStr]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class VocabularyEntryShape(_Shape):
    """One entry of ``labels:`` in a vocabulary file (or ``new_labels:`` in a label map)."""

    label: StrictStr
    task: StrictStr | None = None
    department: StrictStr | None = None
    modalities: TextList = Field(default_factory=list)
    synonyms: TextList = Field(default_factory=list)


class VocabularyFileShape(_Shape):
    labels: list[VocabularyEntryShape] | None = None


class LabelTargetShape(_Shape):
    """A label-map target written out: ``{label, task?, department?}``."""

    label: StrictStr
    task: StrictStr | None = None
    department: StrictStr | None = None


_MAPPING = "{...}"  # the tag of the written-out form; left out of key paths


def _target_form(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    return _MAPPING if isinstance(value, dict | BaseModel) else None


LabelTarget = Annotated[
    Annotated[StrictStr, Tag("text")] | Annotated[LabelTargetShape, Tag(_MAPPING)],
    Discriminator(_target_form, custom_error_type="label_target",
                  custom_error_message="expected a canonical label (text), 'drop', or "
                                       "{label, task?, department?}"),
]


class LabelMapShape(_Shape):
    labels: dict[RawLabel, LabelTarget] | None = None
    department: StrictStr | None = None
    new_labels: list[VocabularyEntryShape] | None = None
    source: StrictStr | None = None
    description: StrictStr | None = None
    default: StrictStr | None = None


def _plain(model: BaseModel) -> dict[str, Any]:
    """Back to plain data (only the keys the file set; raw-label keys now text)."""
    return model.model_dump(exclude_unset=True)


# The keys of a dataset card (cards.py) that make up its label map.
CARD_LABEL_KEYS = ("labels", "department", "new_labels", "default", "description")


def label_map_data(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "label map")
    if isinstance(data, dict) and "verified" in data:  # a dataset card: its label keys only
        data = {k: v for k, v in data.items() if k in CARD_LABEL_KEYS}
    return _plain(validate_file(LabelMapShape, data, path, "label map"))


def vocabulary_data(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "vocabulary file")
    return _plain(validate_file(VocabularyFileShape, data, path, "vocabulary file"))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def valid_regex(pattern: str | None) -> str | None:
    """Pydantic validator body: the pattern compiles (the message says why not)."""
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
    return pattern
