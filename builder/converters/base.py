"""The converter contract and the registry that maps a source's ``format:`` to a converter.

A converter knows one on-disk *layout* (not one dataset). It works in two steps so the pipeline
can plan, cap and parallelise before any pixels are read:

* :meth:`Converter.discover` lists :class:`Item` objects cheaply (paths, and raw labels when a
  table or folder name already tells them);
* :meth:`Converter.load` reads one item and yields :class:`~gmai_build.samples.Sample` objects.

Items must be picklable: worker processes receive them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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


class Converter:
    """Base class: subclasses set ``format`` and ``Options`` and implement discover/load."""

    format: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, source_name: str, root: Path, options: BaseModel):
        self.source = source_name
        self.root = root
        self.options = options

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
    def path(self, relative: str) -> Path:
        return self.root / relative

    def error(self, reason: str, file: str | Path | None = None) -> BuildError:
        return BuildError(reason, source=self.source, file=file)

    def read_2d(self, path: Path, missing: str = "image file does not exist") -> Any:
        """A 2D image file as an array; a clear error naming the source and file otherwise."""
        from ..image2d import read_image

        if not path.is_file():
            raise self.error(missing, path)
        try:
            return read_image(path)
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
        """Path relative to the source root (provenance); absolute if it lies outside it."""
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
