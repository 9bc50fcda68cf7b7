"""Per-source cache: what the reading stage made of a source, reused while nothing it depends on
changed.

A source's entry lives in ``<out>/.cache/<source>/<fingerprint>/``: one ``images-NNNNNN.png``
per worker task (the PNGs that task drew, back to back; the TSV pieces base64-encode them from
there: :mod:`gmai_build.assembly`), ``cases.pkl`` (the metadata of the cases the source
kept, one pickle after the other with the task file of each one's image, in filing order: read
back as a stream, never as a list), ``dropped.txt`` (the ids of the others) and ``result.pkl``
(what else the source gave: labels seen, counts, skipped/notes entries, input checksums).
The fingerprint covers everything that decides that result: the tool version, the
source's settings, its label map, the vocabulary and question pool files, the build settings
that reach the workers (seed, cap, salt, message style), and the list of items with the size and
modification time of every file they read. Rendering rules are per source
(:mod:`gmai_build.selection`), so the entry does not depend on the other sources: adding a
source re-reads only that source.

An entry is written under ``.partial-<fingerprint>`` and renamed when its source is complete;
a killed build leaves only partial entries, which the next build removes. Reading the cache
trusts this folder as much as the build outputs next to it (``result.pkl`` is a pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections import Counter
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .converters import Item
from .manifest import ManifestRecord
from .report import Entry
from .samples import Case, LabelSeen
from .sources import SourceContext

CACHE_DIR = ".cache"
RESULT = "result.pkl"
CASES = "cases.pkl"
DROPPED = "dropped.txt"
PARTIAL = ".partial-"
FORMAT = 6  # bump when an entry changes shape or meaning (3: image_phash by area average,
#             4: cases streamed in cases.pkl, 5: task files hold PNG bytes, not base64,
#             6: cases carry no PNG checksum: the TSV pieces hash each image as they write it)


@dataclass
class SourceResult:
    """What the reading stage keeps of one source in memory: bounded by its labels, not its
    size. Its cases are in the build's store (and the entry's ``cases.pkl``), PNGs in
    ``images``."""

    name: str
    # Of every case, what the distractor pools and the summary need: where each label was
    # seen, skipped cases by reason. (Full metadata of the cases that may be asked about, the
    # rendered ones and the previous build's, went to the store.)
    seen: set[LabelSeen] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)  # "source: reason" -> cases
    n_cases: int = 0
    n_kept: int = 0  # cases in the store
    inputs: dict[str, str] = field(default_factory=dict)  # file token -> sha256
    report: list[Entry] = field(default_factory=list)  # skipped samples and notes
    items_read: frozenset[str] = frozenset()  # salted ids of the items read (after the prefilter)
    image_files: set[str] = field(default_factory=set)  # task files holding drawn images
    images: Path = Path()  # the folder of the task files
    cached: bool = False  # reused from the cache by this build


class CaseLog:
    """A source's kept cases, appended one by one as they are filed (``cases.pkl``), each with
    the task file holding its image (None when it was not drawn)."""

    def __init__(self, path: Path | None):
        self._f = open(path, "wb") if path is not None else None  # noqa: SIM115 (close())

    def add(self, case: Case, image_file: str | None) -> None:
        if self._f is not None:
            pickle.dump((case, image_file), self._f, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def read_case_log(path: Path) -> Iterator[tuple[Case, str | None]]:
    """The (case, image file) pairs of a ``cases.pkl``, one at a time."""
    with open(path, "rb") as f:
        while True:
            try:
                case, image_file = pickle.load(f)
            except EOFError:
                return
            if not isinstance(case, Case):
                raise pickle.UnpicklingError("not a case")
            yield case, image_file


class DroppedIds:
    """Ids of the cases not kept (neither drawn nor asked by a previous build), one per line:
    on disk, for the cache's check that a later build's previous questions were drawn."""

    def __init__(self, path: Path):
        self._f = open(path, "w", encoding="ascii")  # noqa: SIM115  (closed in close())

    def add(self, case_id: str) -> None:
        self._f.write(case_id + "\n")

    def close(self) -> None:
        self._f.close()


def _file_hash(path: Path | None) -> str:
    if path is None:
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(ctx: SourceContext, items: list[Item], build_key: dict[str, object]) -> str:
    """What decides a source's reading result, hashed (see the module docstring)."""
    src = ctx.config
    h = hashlib.sha256()
    head = {
        "format": FORMAT, "tool": __version__, "build": build_key,
        "source": src.model_dump(mode="json", exclude={"options"}),
        "options": _options(src.options),
        "label_map": _file_hash(src.label_map),
        "salt": ctx.privacy.check_value, "show_paths": ctx.privacy.show_paths,
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for item in items:
        h.update(json.dumps([item.key, list(item.paths), list(item.labels or ()), item.group],
                            default=str).encode())
        for p in item.paths:
            try:
                st = ctx.converter.path(p).stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except (OSError, Exception):  # gone or refused: the read will say so; no reuse
                h.update(os.urandom(16))
    return h.hexdigest()


def _options(options: object) -> object:
    """A converter's options as plain data (validated options are a pydantic model)."""
    dump = getattr(options, "model_dump", None)
    return dump(mode="json") if callable(dump) else options


def shared_files_key(paths: list[Path]) -> str:
    """The vocabulary and question pool files, by content: every source depends on them."""
    return hashlib.sha256("".join(_file_hash(p) for p in paths).encode()).hexdigest()


class SourceCache:
    """The cache folder of an output folder; ``root=None``: no cache (``--no-cache``), PNGs go
    to the staging folder and nothing is reused or kept."""

    def __init__(self, root: Path | None, scratch: Path):
        self.root = root
        self.scratch = scratch  # where PNGs go without a cache (the build's staging folder)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def remove_partial(self) -> None:
        """Entries a killed build was writing."""
        if self.root is None or not self.root.is_dir():
            return
        for source_dir in self.root.iterdir():
            if source_dir.is_dir():
                for entry in source_dir.iterdir():
                    if entry.name.startswith(PARTIAL):
                        shutil.rmtree(entry, ignore_errors=True)

    def load(self, name: str, key: str, read_now: frozenset[str],
             previous: Mapping[str, ManifestRecord]) -> CachedSource | None:
        """The cached entry of source ``name`` under ``key``, if it holds what this build needs:
        every item this build would read, and a drawn image for every previous question (the
        latter is checked again as its cases are read: :meth:`CachedSource.cases`)."""
        if self.root is None:
            return None
        entry = self.root / _safe(name) / key
        try:
            with open(entry / RESULT, "rb") as f:
                result = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None
        if not isinstance(result, SourceResult) or not (entry / CASES).is_file():
            return None
        if not read_now <= result.items_read:
            return None
        if previous and _any_line_in(entry / DROPPED, previous):
            return None  # a previous question this entry did not draw: read the source again
        if any(not (entry / f).is_file() for f in result.image_files):
            return None
        result.images = entry
        result.cached = True
        return CachedSource(result, entry, previous)

    def open_folder(self, name: str, key: str) -> Path:
        """An empty folder for the task files of a source this build reads."""
        folder = (self.scratch / _safe(name) if self.root is None
                  else self.root / _safe(name) / f"{PARTIAL}{key}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def store(self, result: SourceResult, key: str) -> None:
        """Make a complete source's entry the one to reuse (older entries of it are removed)."""
        if self.root is None:
            return
        source_dir = self.root / _safe(result.name)
        partial = source_dir / f"{PARTIAL}{key}"
        with open(partial / RESULT, "wb") as f:
            pickle.dump(_without_path(result), f, protocol=pickle.HIGHEST_PROTOCOL)
        for old in source_dir.iterdir():
            if not old.name.startswith(PARTIAL) and old.name != key:
                shutil.rmtree(old, ignore_errors=True)
        final = source_dir / key
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        result.images = final

    def prune(self, names: set[str]) -> None:
        """Drop the entries of sources no longer in the config."""
        if self.root is None or not self.root.is_dir():
            return
        keep = {_safe(n) for n in names}
        for source_dir in self.root.iterdir():
            if source_dir.name not in keep:
                shutil.rmtree(source_dir, ignore_errors=True)


def _any_line_in(path: Path, wanted: Container[str]) -> bool:
    try:
        with open(path, encoding="ascii") as f:
            return any(line.rstrip("\n") in wanted for line in f)
    except (OSError, ValueError):
        return True  # unreadable: do not trust the entry


class StaleEntry(Exception):
    """A cache entry turned out not to hold what this build needs (read the source again)."""


@dataclass
class CachedSource:
    """A cache hit: the source's result, and its cases to stream into the build's store."""

    result: SourceResult
    entry: Path
    previous: Mapping[str, ManifestRecord]

    def cases(self) -> Iterator[tuple[Case, str | None]]:
        """(case, image file) in filing order; :class:`StaleEntry` when a previous question's
        case was not drawn, or the file is damaged."""
        try:
            for case, image_file in read_case_log(self.entry / CASES):
                if not case.rendered and case.case_id in self.previous:
                    raise StaleEntry(case.case_id)
                yield case, image_file
        except (OSError, pickle.UnpicklingError, AttributeError, ImportError, ValueError,
                TypeError) as exc:
            raise StaleEntry(str(exc)) from None


def _without_path(result: SourceResult) -> SourceResult:
    from dataclasses import replace

    return replace(result, images=Path(), cached=False)


def _safe(name: str) -> str:
    """A source name as a folder name (names are free text in sources.yaml)."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60]
    return f"{clean}-{digest}"
