"""Stream GMAI-MMBench-style TSVs item by item, with images decoded only when asked for.

Why streaming: the published VAL TSV is 9.3 GB of base64 PNGs. Reading it with
``pandas.read_csv(chunksize=...)`` keeps at most one chunk of rows in memory, so peak memory
depends on the chunk size, not on the file size.

Reader semantics follow VLMEvalKit's loader (pandas defaults): texts such as ``None``/``NA`` in
an option become NaN and the option disappears; ``index`` is an integer when it looks like one.
Pass ``keep_na_text=True`` to keep such texts verbatim instead.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "image_path")
GROUP_COLUMNS = (
    "clinical VQA task",
    "department",
    "modality",
    "perceptual granularity",
    "source",
    "category",
)
NONE_GROUP = "(none)"
_INT_RE = re.compile(r"^[+-]?\d+$")

Index = int | str


@dataclass
class Item:
    """One multiple-choice question; the image stays base64 until ``image()`` is called."""

    index: Index
    ordinal: int  # 0-based row number in the file; used for data-parallel sharding
    question: str
    options: dict[str, str]  # letter -> text, only the non-empty options, in letter order
    answer: str | None = None
    hint: str | None = None
    image_b64: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    _decoded: Any = field(default=None, repr=False, compare=False)

    def image(self) -> Any:
        """Decode the base64 image to an RGB ``PIL.Image`` (lazily, once per item)."""
        if self._decoded is None:
            from PIL import Image

            data = base64.b64decode(self.image_b64, validate=False)
            with Image.open(io.BytesIO(data)) as img:
                self._decoded = img.convert("RGB")
        return self._decoded

    def problem(self) -> str | None:
        """Why this row cannot be asked (``None`` when it can): see ``row_problem``; the image
        is decoded here, so that one bad image is reported for its row instead of failing the
        batch (and every resume) inside a model adapter."""
        found = row_problem(self.options, self.answer)
        if found:
            return found
        if not self.image_b64:
            return "empty image"
        try:
            self.image()
        except Exception as err:  # PIL raises many types (OSError, ValueError, SyntaxError...)
            return f"undecodable image ({type(err).__name__}: {str(err)[:120]})"
        return None

    def image_mime(self) -> str:
        """The image's MIME type, read from the base64 magic prefix (PNG unless JPEG/GIF/WebP)."""
        head = self.image_b64[:16]
        if head.startswith("/9j/"):
            return "image/jpeg"
        if head.startswith("R0lGOD"):
            return "image/gif"
        if head.startswith("UklGR"):
            return "image/webp"
        return "image/png"


def normalize_index(value: Any) -> Index:
    """VLMEvalKit reads ``index`` as an integer when it looks like one (``001`` -> 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    return int(text) if _INT_RE.match(text) else text


def is_missing(value: Any) -> bool:
    """True for NaN/None/empty strings (pandas turns empty cells and 'None'/'NA' into NaN)."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and value.strip() == ""


def row_problem(options: dict[str, str], answer: str | None) -> str | None:
    """Why a question is invalid, from its options and answer (``None`` when it is fine).

    Invalid rows are reported and skipped (counted as ``invalid``, apart from wrong answers).
    """
    if not options:
        return "no options (every option cell is empty)"
    if answer is not None and answer not in options:
        return f"answer {answer!r} is not one of the options {''.join(options)}"
    return None


def duplicate_indices(path: str | Path, chunksize: int = 4096) -> set[Index]:
    """Indexes that occur more than once in the TSV (read from the ``index`` column only)."""
    seen: set[Index] = set()
    dups: set[Index] = set()
    read_header(path)
    for chunk in read_chunks(path, usecols=["index"], dtype={"index": str}, chunksize=chunksize):
        for value in chunk["index"]:
            index = normalize_index(value)
            if index in seen:
                dups.add(index)
            seen.add(index)
    return dups


def group_value(value: Any) -> str:
    """A group label for scoring: missing values become their own group, ``(none)``."""
    return NONE_GROUP if is_missing(value) else str(value).strip()


def read_chunks(path: str | Path, **kwargs: Any) -> Iterator[pd.DataFrame]:
    """``pandas.read_csv(path, sep="\\t", chunksize=...)`` whose decoding and parsing errors
    name the file (a ``ValueError``), instead of a bare codec or tokenizer message."""
    try:
        yield from pd.read_csv(path, sep="\t", **kwargs)
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: unreadable TSV ({type(err).__name__}: {err}); gmai-eval "
                         "reads UTF-8, tab-separated files") from err


def read_header(path: str | Path) -> list[str]:
    """The TSV's column names, without reading any rows; checks the ones gmai-eval needs."""
    try:
        columns = list(pd.read_csv(path, sep="\t", nrows=0).columns)
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable TSV ({err})") from err
    missing = [c for c in ("index", "question") if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (a GMAI-MMBench TSV has index, "
                         f"question, A-E, answer, ..., image; found {columns[:12]})")
    return columns


def _read_kwargs(keep_na_text: bool) -> dict[str, Any]:
    # Every column as text: pandas would otherwise infer types per chunk, and a chunk whose
    # option D holds only numbers and blanks would print "5.0" where VLMEvalKit, reading the
    # whole (mixed-text) column at once, prints "5".
    kwargs: dict[str, Any] = {"dtype": str}
    if keep_na_text:
        kwargs.update(keep_default_na=False, na_values=[""])
    return kwargs


def iter_items(
    path: str | Path,
    chunksize: int = 32,
    answers: dict[Index, str] | None = None,
    keep_na_text: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[Item]:
    """Yield the file's items in order, reading ``chunksize`` rows at a time.

    ``answers`` (from a held-apart key) overrides/provides the answer column. ``shard=(rank,
    world)`` keeps only rows whose ordinal satisfies ``ordinal % world == rank``. Rows with an
    empty image are yielded too, and ``Item.problem`` reports them (VLMEvalKit drops them
    silently).
    """
    rank, world = shard
    read_header(path)  # fails early, with the file's name, on a TSV without index/question
    ordinal = 0
    skipped = 0
    gaps: list[Index] = []  # options read as missing between present ones ('None', 'NA', ...)
    reader = read_chunks(path, chunksize=chunksize, **_read_kwargs(keep_na_text))
    for chunk in reader:
        columns = list(chunk.columns)
        letters = [c for c in columns if len(c) == 1 and c in string.ascii_uppercase]
        meta_cols = [c for c in columns if c not in IMAGE_COLUMNS and c not in letters]
        for row in chunk.itertuples(index=False, name=None):
            this = ordinal
            ordinal += 1
            if this % world != rank:
                continue
            rec = dict(zip(columns, row, strict=True))
            image = rec.get("image")
            if is_missing(image):
                skipped += 1
                image = ""
            index = normalize_index(rec["index"])
            options = {
                k: str(rec[k]) for k in letters if not is_missing(rec[k])
            }
            if options and len(options) != letters.index(max(options)) + 1:
                gaps.append(index)
            answer = rec.get("answer")
            if answers is not None:
                answer = answers.get(index, answer)
            yield Item(
                index=index,
                ordinal=this,
                question="" if is_missing(rec.get("question")) else str(rec["question"]),
                options=options,
                answer=None if is_missing(answer) else str(answer).strip(),
                hint=None if is_missing(rec.get("hint")) else str(rec["hint"]),
                image_b64=str(image),
                meta={c: rec[c] for c in meta_cols},
            )
        del chunk
    if skipped:
        log.warning("%s: %d rows have an empty image (reported as invalid)", path, skipped)
    if gaps:
        log.warning("%s: %d items have an empty option before a non-empty one (texts such as "
                    "'None'/'NA' read as missing, as VLMEvalKit does; --keep-na-text keeps "
                    "them), e.g. index %s", path, len(gaps), gaps[:5])


def iter_metadata(
    path: str | Path, chunksize: int = 32, keep_na_text: bool = False
) -> Iterator[pd.DataFrame]:
    """Yield chunks of every column except the images (cheap to keep; used for scoring)."""
    cols = [c for c in read_header(path) if c not in IMAGE_COLUMNS]
    kwargs = _read_kwargs(keep_na_text)
    yield from read_chunks(path, usecols=cols, chunksize=chunksize, **kwargs)


def load_answer_key(path: str | Path) -> dict[Index, str]:
    """Read a held-apart answer key: CSV or TSV with columns ``index,answer`` (either accepted)."""
    text_head = Path(path).open(encoding="utf-8", newline="").readline()
    sep = "\t" if "\t" in text_head else ","
    if sep == "," and ";" in text_head and "," not in text_head:
        sep = ";"
    frame = pd.read_csv(path, sep=sep, dtype={"index": str, "answer": str},
                        keep_default_na=False)
    missing = {"index", "answer"} - set(frame.columns)
    if missing:
        raise ValueError(f"answer key {path} lacks column(s) {sorted(missing)}")
    return {
        normalize_index(i): str(a).strip() for i, a in zip(frame["index"], frame["answer"],
                                                           strict=True)
    }


def load_key_groups(path: str | Path) -> dict[Index, dict[str, str]]:
    """Group columns carried by an answer key (e.g. the true ``category`` that a TEST TSV leaves
    out), per index; empty when the key has only ``index,answer``."""
    head = Path(path).open(encoding="utf-8", newline="").readline()
    sep = "\t" if "\t" in head else ","
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    groups = [c for c in GROUP_COLUMNS if c in frame.columns]
    if not groups or "index" not in frame.columns:
        return {}
    return {normalize_index(rec["index"]): {g: rec[g] for g in groups}
            for rec in frame[["index", *groups]].to_dict("records")}


def answer_counts(path: str | Path, answers: dict[Index, str] | None = None) -> dict[str, int]:
    """How often each answer letter occurs (key if given, else the TSV's answer column)."""
    counts: dict[str, int] = {}
    if answers is not None:
        values: list[str] = list(answers.values())
    elif "answer" in read_header(path):
        values = []
        for chunk in pd.read_csv(path, sep="\t", usecols=["answer"], chunksize=32):
            values.extend(str(v).strip() for v in chunk["answer"] if not is_missing(v))
    else:
        values = []
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts

