"""The converter contract and the registry that maps a source's ``format:`` to a converter.

A converter knows one on-disk *layout* (not one dataset). It works in two steps so the pipeline
can plan, cap and parallelise before any pixels are read:

* :meth:`Converter.discover` lists :class:`Item` objects cheaply (paths, and raw labels when a
  table or folder name already tells them);
* :meth:`Converter.load` reads one item and yields :class:`~gmai_build.samples.Sample` objects.

Items must be picklable: worker processes receive them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import BuildError
from ..samples import Sample


class NoOptions(BaseModel):
    """Options model for converters that take none (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Item:
    """One unit of work of a source: typically one image file, volume or series."""

    key: str  # stable id within the source, e.g. the path relative to the root
    paths: tuple[str, ...]  # files it will read, relative to the source root
    labels: tuple[str, ...] | None = None  # raw image-level labels, when known before loading
    group: str | None = None  # patient/group key when the layout knows it
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """Something a converter left out (``skipped``) or changed (``note``), for the summary.

    ``file`` is the path as the converter knows it; the pipeline turns it into the token the
    outputs use before anything is written or printed.
    """

    kind: Literal["skipped", "note"]
    reason: str
    file: str | None = None
    count: int = 1



def want_all(raw: str) -> bool:
    """Every raw label is wanted (a module function, unlike a lambda, pickles)."""
    return True

class Converter:
    """Base class: subclasses set ``format`` and ``Options`` and implement discover/load.

    The pipeline sets the build's policies with :meth:`configure` (defaults are the strict
    ones): ``on_error`` (``fail`` or ``skip``), ``allow_outside_root``, the pixel budgets and
    ``wanted(raw_label)`` (False for labels the label map drops, so their data is never read).
    Converters report what they leave out with :meth:`note` / :meth:`bad_item`; nothing is
    dropped silently.
    """

    format: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, source_name: str, root: Path, options: BaseModel):
        self.source = source_name
        self.root = Path(root).absolute()  # globbed paths and table entries join onto it
        self.options = options
        self.on_error: Literal["fail", "skip"] = "fail"
        self.allow_outside_root = False
        self.max_pixels = 100_000_000
        self.max_voxels = 1_000_000_000
        self.wanted: Callable[[str], bool] = want_all
        self.notes: list[Note] = []
        self._root_resolved: tuple[Path, str] | None = None  # (root, with symlinks followed)
        self._real_folders: dict[str, str] = {}  # folder -> with symlinks followed

    def configure(self, *, on_error: Literal["fail", "skip"] = "fail",
                  allow_outside_root: bool = False, max_pixels: int = 100_000_000,
                  max_voxels: int = 1_000_000_000,
                  wanted: Callable[[str], bool] | None = None) -> None:
        self.on_error = on_error
        self.allow_outside_root = allow_outside_root
        self.max_pixels = max_pixels
        self.max_voxels = max_voxels
        if wanted is not None:
            self.wanted = wanted

    def discover(self) -> Iterable[Item]:
        raise NotImplementedError

    def load(self, item: Item) -> Iterator[Sample]:
        raise NotImplementedError

    def declared_labels(self, item: Item) -> tuple[str, ...] | None:
        """The raw labels ``item`` will yield, as far as its table, annotation file or DICOM
        headers tell without decoding pixels; None when only the pixels know (mask values).

        ``gmai-build validate`` checks them against the label map, so that an unknown label is
        found before the build reads any image.
        """
        return item.labels

    def problems_without_pixels(self, item: Item) -> list[str]:
        """What the build would reject in ``item`` that file headers already tell (e.g. a box
        outside the image, a mask of another size); run by ``gmai-build validate``."""
        return []

    # Helpers shared by converters -------------------------------------------------------
    def path(self, entry: str | Path) -> Path:
        """The file an entry names (relative to the root, or absolute), confined to the root.

        Every path a converter reads goes through here: after following symlinks it must lie
        inside the source root unless the source sets ``allow_outside_root: true``. The error
        names the source, the entry and where it resolves to.
        """
        p = Path(entry)
        full = p if p.is_absolute() else self.root / p
        if self.allow_outside_root:
            return full
        resolved = self._real_path(full)
        root = self._real_root()
        if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
            raise self.error(
                f"entry '{entry}' resolves to {resolved}, outside the source root (tables, "
                "globs and symlinks may not leave it); set allow_outside_root: true on the "
                "source to allow this", full)
        return full

    def _real_root(self) -> str:
        """The root with symlinks followed, resolved once (every file's check needs it)."""
        cached = self._root_resolved
        if cached is None or cached[0] != self.root:
            cached = (self.root, os.path.realpath(self.root))
            self._root_resolved = cached
        return cached[1]

    def _real_path(self, full: Path) -> str:
        """``os.path.realpath(full)``, each folder resolved once: a dataset's files share few
        folders, and following every component of every path again was 6 lstat calls a file."""
        if full.name in ("", ".", "..") or os.path.islink(full):
            return os.path.realpath(full)
        folder = str(full.parent)
        real = self._real_folders.get(folder)
        if real is None:
            if len(self._real_folders) >= 4096:
                self._real_folders.clear()
            real = self._real_folders[folder] = os.path.realpath(folder)
        return os.path.join(real, full.name)

    def __getstate__(self) -> dict[str, Any]:
        """(What a worker task carries: the resolution caches stay behind.)"""
        return {**self.__dict__, "_root_resolved": None, "_real_folders": {}}

    def error(self, reason: str, file: str | Path | None = None) -> BuildError:
        return BuildError(reason, source=self.source, file=file)

    def note(self, reason: str, file: str | Path | None = None, count: int = 1,
             kind: Literal["skipped", "note"] = "note") -> None:
        """Record something left out or changed, for summary.md/json (never silent)."""
        self.notes.append(Note(kind, reason, None if file is None else str(file), count))

    def bad_item(self, reason: str, file: str | Path | None = None) -> None:
        """One item cannot be used: an error, or (``on_error: skip``) a recorded skip.

        Callers ``continue`` after it returns.
        """
        if self.on_error != "skip":
            raise self.error(reason, file)
        self.note(reason, file, kind="skipped")

    def take_notes(self) -> list[Note]:
        notes, self.notes = self.notes, []
        return notes

    def read_2d(self, path: Path, missing: str = "image file does not exist") -> Any:
        """A 2D image file as an array; a clear error naming the source and file otherwise."""
        from ..image2d import read_image

        if not path.is_file():
            raise self.error(missing, path)
        try:
            return read_image(path, max_pixels=self.max_pixels)
        except ValueError as exc:
            raise self.error(str(exc), path) from None

    def image_level_sample(self, item: Item, path: Path) -> Sample:
        """The sample of an image-level item (its labels known at discovery)."""
        return Sample(
            source=self.source,
            sample_id=item.key,
            files=item.paths,
            group=item.group or item.key,
            image=self.read_2d(path),
            labels=item.labels or (),
        )

    def relative(self, path: Path) -> str:
        """Path relative to the source root (provenance); absolute if it lies outside it.

        Outside paths are only accepted with ``allow_outside_root`` (:meth:`path` checks every
        item path); the outputs then name them by token only.
        """
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


_REGISTRY: dict[str, type[Converter]] = {}


def register(cls: type[Converter]) -> type[Converter]:
    """Class decorator: make a converter available under its ``format`` name."""
    if cls.format in _REGISTRY and _REGISTRY[cls.format] is not cls:
        raise ValueError(f"two converters claim format '{cls.format}'")
    _REGISTRY[cls.format] = cls
    return cls


# The lazy lookup by format name (built-ins, entry points) is in ._builtin: get_converter().
