"""Per-source cache: what the reading stage made of a source, reused while nothing it depends on
changed.

A source's entry lives in ``<out>/.cache/<source>/<fingerprint>/``: one ``images-NNNNNN.b64``
per worker task (the base64 PNGs that task drew, back to back; the writer copies them from there,
so a cold build writes each image once), ``dropped.txt`` and ``result.pkl`` (case metadata,
image offsets and checksums, skipped/notes entries, input checksums).
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
from collections.abc import Mapping
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
DROPPED = "dropped.txt"
PARTIAL = ".partial-"
FORMAT = 3  # bump when SourceResult changes shape or meaning (3: image_phash by area average)


@dataclass
class SourceResult:
    """What the reading stage keeps of one source (PNGs stay in ``images``)."""

    name: str
    # Full metadata (png=b"") only of the cases that may be asked about: rendered ones, and
    # previous-build ones (their removal is explained). Of the others, what the distractor
    # pools and the summary need: where each label was seen, skipped cases by reason.
    cases: list[Case] = field(default_factory=list)
    seen: set[LabelSeen] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)  # "source: reason" -> cases
    n_cases: int = 0
    # case id -> (task file name, offset, size) of its base64 PNG, in the folder ``images``
    refs: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    image_sha256: dict[str, str] = field(default_factory=dict)  # case id -> PNG checksum
    inputs: dict[str, str] = field(default_factory=dict)  # file token -> sha256
    report: list[Entry] = field(default_factory=list)  # skipped samples and notes
    items_read: frozenset[str] = frozenset()  # salted ids of the items read (after the prefilter)
    images: Path = Path()  # the folder of the task files
    cached: bool = False  # reused from the cache by this build


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
             previous: Mapping[str, ManifestRecord]) -> SourceResult | None:
        """The cached result of source ``name`` under ``key``, if it holds what this build needs:
        every item this build would read, and a rendered image for every previous question."""
        if self.root is None:
            return None
        entry = self.root / _safe(name) / key
        try:
            with open(entry / RESULT, "rb") as f:
                result = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None
        if not isinstance(result, SourceResult):
            return None
        if not read_now <= result.items_read:
            return None
        if any(c.case_id in previous and not c.rendered for c in result.cases):
            return None
        kept = {c.case_id for c in result.cases}
        asked_before = {cid for cid, r in previous.items() if r.source == name} - kept
        if asked_before and _any_line_in(entry / DROPPED, asked_before):
            return None  # a previous question this entry did not draw: read the source again
        if any(not (entry / name).is_file() for name in {ref[0] for ref in result.refs.values()}):
            return None
        result.images = entry
        result.cached = True
        return result

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


def _any_line_in(path: Path, wanted: set[str]) -> bool:
    try:
        with open(path, encoding="ascii") as f:
            return any(line.rstrip("\n") in wanted for line in f)
    except (OSError, ValueError):
        return True  # unreadable: do not trust the entry


def _without_path(result: SourceResult) -> SourceResult:
    from dataclasses import replace

    return replace(result, images=Path(), cached=False)


def _safe(name: str) -> str:
    """A source name as a folder name (names are free text in sources.yaml)."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60]
    return f"{clean}-{digest}"
