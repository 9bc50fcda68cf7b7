"""The manifest record: one typed line of ``manifest.jsonl``, the contract of a build.

Everything that reads a build reads its questions here: the next incremental build
(:mod:`gmai_build.rebuild`), ``gmai-build audit``, ``subset``, ``preview`` and ``gmai-eval``.
The build makes them (:func:`gmai_build.records.manifest_record`) and writes them
(:func:`write_manifest`); nobody spells the keys of a line anywhere else.

On disk a record is one JSON object per line, keys sorted, UTF-8 as is
(:meth:`ManifestRecord.to_json`); reading a line back and writing it again gives the same bytes.
A line that does not hold a valid record (a hand edit, another version's manifest) is a
:class:`ManifestError` naming the file, the line, the field and what to do, never a traceback.

This module needs only pydantic (and :mod:`gmai_build.errors` and ``schemas.key_path``):
``gmai-eval`` imports it without the build's stages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .errors import BuildError
from .schemas import key_path

MANIFEST = "manifest.jsonl"
LETTERS = "ABCDE"


def _one_of(*allowed: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"'{value}' is none of {', '.join(allowed)}")
        return value

    return AfterValidator(check)


# Text checked against its few values (plain ``str`` to the code: splits and letters are text
# everywhere else).
Split = Annotated[str, _one_of("VAL", "TEST")]
Letter = Annotated[str, _one_of(*LETTERS)]


class ManifestError(BuildError):
    """A manifest line that is not a valid record, or two lines for one question."""


class BlindColumns(BaseModel):
    """What a question's TEST row shows in place of the truth (:func:`gmai_build.records.test_views`)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", populate_by_name=True)
    category: str
    task: str = Field(validation_alias="clinical VQA task",
                      serialization_alias="clinical VQA task")
    department: str

    def columns(self) -> dict[str, str]:
        """The TEST row's columns, by their TSV names."""
        return self.model_dump(by_alias=True)


class ManifestRecord(BaseModel):
    """One question of a build: where it comes from, what it asks, its answer and its split.

    ``category`` is the canonical label (the correct option's text); ``files``, ``group`` and
    ``sample_id`` are privacy tokens. ``region`` is the target's provenance (box, mask area and
    bounding box, rescaling): JSON values whose keys depend on the granularity.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    index: int = Field(ge=0)
    case_id: str
    pair_id: str  # shared by the mask and contour questions of one target
    split: Split
    source: str
    sample_id: str
    files: tuple[str, ...]
    group: str
    raw_label: str
    category: str
    task: str
    department: str  # "" where the label has none
    modality: str
    granularity: str
    original_task: str
    axis: str | None
    slice_index: int | None
    region: dict[str, JsonValue] = Field(strict=False)
    template_id: str
    question: str
    options: tuple[str, ...] = Field(min_length=1, max_length=len(LETTERS))
    answer: Letter
    seed: int
    image_sha256: str
    image_phash: str
    test_view: BlindColumns

    @field_validator("answer")
    @classmethod
    def _answer_is_an_option(cls, answer: str, info: ValidationInfo) -> str:
        options = info.data.get("options")  # absent when the options were invalid themselves
        if options is not None and LETTERS.index(answer) >= len(options):
            raise ValueError(f"{answer} names no option (the question has {len(options)})")
        return answer

    def to_json(self) -> str:
        """The manifest line of this record, without its newline."""
        return json.dumps(self.model_dump(by_alias=True), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str | bytes, file: str | Path | None = None, line_no: int = 0,
                  hint: str = "") -> ManifestRecord:
        """The record of one manifest line; :class:`ManifestError` naming what is wrong."""
        where = f"line {line_no}: " if line_no else ""
        try:
            return cls.model_validate_json(line)
        except ValidationError as exc:
            raise ManifestError(where + _problem(exc) + hint, file=file) from None


def _problem(exc: ValidationError) -> str:
    """The first problem of a line, as a user fixes it: ``field: what is wrong``."""
    err = exc.errors()[0]
    kind, field = err["type"], key_path(err["loc"])
    if kind == "json_invalid":
        return f"not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})"
    if kind == "model_type" or (kind.endswith("_type") and not field):
        return "not a JSON object (a manifest line holds one question)"
    if kind == "missing":
        return f"{field}: missing (every line has all fields of a question)"
    if kind == "extra_forbidden":
        return f"{field}: not a field of a manifest record"
    if kind in ("too_short", "too_long"):
        ctx = err.get("ctx", {})
        bound = (f"at least {ctx.get('min_length')}" if kind == "too_short"
                 else f"at most {ctx.get('max_length')}")
        return f"{field}: {ctx.get('actual_length')} item(s), expected {bound}"
    return f"{field or 'record'}: {err['msg'].removeprefix('Value error, ')}"


def iter_manifest(path: Path, hint: str = "") -> Iterator[ManifestRecord]:
    """The records of a manifest file in file order, checked line by line.

    Every way of failing (unreadable, not UTF-8, a bad line, one question twice) is a
    :class:`ManifestError` naming the file and the line; ``hint`` (starting with ``"; "``)
    tells the user of this reader what to do about it.
    """
    case_ids: set[str] = set()
    indices: set[int] = set()
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rec = ManifestRecord.from_json(line, path, n, hint)
                if rec.case_id in case_ids or rec.index in indices:
                    what = (f"case_id {rec.case_id}" if rec.case_id in case_ids
                            else f"index {rec.index}")
                    raise ManifestError(f"line {n}: {what} occurs on an earlier line too (each "
                                        f"question has one line){hint}", file=path)
                case_ids.add(rec.case_id)
                indices.add(rec.index)
                yield rec
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8 text ({exc.reason}){hint}", file=path) from None
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest: {exc.strerror or exc}{hint}",
                            file=path) from None


def read_manifest(path: Path, hint: str = "") -> list[ManifestRecord]:
    """Every record of a manifest file (:func:`iter_manifest`), in file order."""
    return list(iter_manifest(path, hint))


def write_manifest(path: Path, records: Iterable[ManifestRecord]) -> None:
    """One line per record, in the order given."""
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(rec.to_json() + "\n")
