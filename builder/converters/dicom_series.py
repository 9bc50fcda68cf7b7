"""DICOM image series + a CSV/TSV label table -> image-level samples (one 3D volume per series).

Layout: DICOM files anywhere under ``image_root`` (one folder per series, or many series mixed
under one folder). The table names each series either by its folder (relative to
``image_root``; the folder must hold exactly one image series) or by its SeriesInstanceUID, with
a label column and optionally a patient column. Several rows for one series merge their labels.

The volume is read by :func:`gmai_build.dicom_io.read_series` (canonical LPS+, rescaled CT HU) and
the volume slicer shows a representative slice (see ``slicing`` in sources.yaml). The group (the
VAL/TEST split unit) is the table's patient column, else the DICOM PatientID, else the
StudyInstanceUID; like every identifier it is published only as a salted token.

This module also holds what the DICOM SEG and RTSTRUCT converters share: glob resolution under
the root, an index of the image series found there, and their common base class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset

from ..dicom_io import DicomError, DicomSeries, is_image, read_header, read_series, scan
from ..errors import BuildError
from ..samples import Sample
from .base import Converter, Item, register
from .csv_table import read_table


def glob_under(root: Path, pattern: str) -> list[Path]:
    """Paths matching ``pattern`` relative to ``root`` ("." or "" = the root itself), sorted."""
    if pattern in ("", "."):
        return [root]
    p = Path(pattern)
    if p.is_absolute():
        return [p] if p.exists() else sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor))))
    return sorted(root.glob(pattern))


@dataclass
class ImageIndex:
    """Image series found under some folders: SeriesInstanceUID -> files, SOP UID -> series."""

    series: dict[str, list[Path]] = field(default_factory=dict)
    sop_to_series: dict[str, str] = field(default_factory=dict)
    frame_of_reference: dict[str, set[str]] = field(default_factory=dict)  # FoR UID -> series
    broken: dict[str, tuple[Path, str]] = field(default_factory=dict)  # series -> (file, why)

    @classmethod
    def build(cls, root: Path, pattern: str, check: Callable[[Path], object] | None = None,
              skip_broken: bool = False) -> ImageIndex:
        """Scan every folder/file matched by ``pattern`` (folders recursively) for image objects.

        ``check`` confines every path before it is read. A DICOM file that cannot be read is an
        error; with ``skip_broken`` (``on_error: skip``) every series with files in the broken
        file's folder is left out instead (listed in ``broken``): it may have been one of their
        slices, and a series with a silently missing slice must not be published.
        """
        index = cls()
        bad: list[tuple[Path, DicomError]] = []
        for match in glob_under(root, pattern):
            for path, ds in scan(match, check=check,
                                 on_broken=(lambda p, e: bad.append((p, e))) if skip_broken
                                 else None):
                if not is_image(ds):
                    continue
                uid = str(ds.get("SeriesInstanceUID", ""))
                files = index.series.setdefault(uid, [])
                if path not in files:
                    files.append(path)
                index.sop_to_series[str(ds.get("SOPInstanceUID", ""))] = uid
                index.frame_of_reference.setdefault(str(ds.get("FrameOfReferenceUID", "")), set()).add(uid)
        for path, exc in bad:
            for uid, files in list(index.series.items()):
                if any(f.parent == path.parent for f in files):
                    index.broken[uid] = (path, exc.reason)
                    del index.series[uid]
        return index


# Defaults of the SEG/RTSTRUCT mask builders when called without a converter (tests, scripts):
# every target wanted, nothing recorded, a target without usable slice is an error.
def keep_all(raw: str) -> bool:
    return True


def ignore_note(reason: str, file: Path | None = None, count: int = 1) -> None:
    return None


def raise_dicom_error(reason: str, file: Path | None = None) -> None:
    raise DicomError(reason, file)


def series_group(series: DicomSeries) -> str:
    """Split group of a series: PatientID, else StudyInstanceUID."""
    return series.group


class DicomSeriesTableOptions(BaseModel):
    """Options of ``format: dicom_series_table``."""

    model_config = ConfigDict(extra="forbid")
    table: str = Field(description="CSV/TSV path relative to the source root (or absolute)")
    series_column: str = Field(description="series folder (relative to image_root) or SeriesInstanceUID")
    label_column: str = Field(description="column holding the raw label")
    patient_column: str | None = Field(default=None, description="default: the DICOM PatientID")
    separator: str | None = Field(default=None, description="default: tab for .tsv, comma otherwise")
    label_separator: str | None = Field(default=None, description="e.g. \"|\" for multi-label cells")
    image_root: str | None = Field(
        default=None, description="folder the series folders are relative to (default: root)")


@register
class DicomSeriesTable(Converter):
    """``format: dicom_series_table``: one image-level sample per DICOM series named in a table."""

    format = "dicom_series_table"
    Options = DicomSeriesTableOptions

    def _resolve(self, value: str | None) -> Path:
        return self.root if value is None else self.path(value)

    def _index(self, folder: Path) -> ImageIndex:
        index = ImageIndex.build(folder, ".", check=self.path, skip_broken=self.on_error == "skip")
        for path, reason in index.broken.values():
            self.note(f"series left out: a file in its folder cannot be used ({reason})",
                      path, kind="skipped")
        return index

    def discover(self) -> Iterator[Item]:
        opts: DicomSeriesTableOptions = self.options  # type: ignore[assignment]
        table = self._resolve(opts.table)
        if not table.is_file():
            raise self.error("label table not found (options.table)", table)
        try:
            df = read_table(table, opts)  # type: ignore[arg-type]
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise self.error(f"cannot parse label table: {exc}", table) from None
        needed = [opts.series_column, opts.label_column]
        needed += [opts.patient_column] if opts.patient_column else []
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise self.error(f"column(s) {missing} not in the table; it has {list(df.columns)}", table)
        image_root = self._resolve(opts.image_root)
        labels: dict[str, list[str]] = {}
        groups: dict[str, str] = {}
        for row_no, row in enumerate(df.itertuples(index=False), start=2):
            rec = dict(zip(df.columns, row))
            ref = rec[opts.series_column].strip()
            cell = rec[opts.label_column].strip()
            if not ref:
                self.bad_item(f"row {row_no}: empty series reference", table)
                continue
            if not cell:
                self.bad_item(f"row {row_no}: empty label for series {ref}", table)
                continue
            parts = cell.split(opts.label_separator) if opts.label_separator else [cell]
            bucket = labels.setdefault(ref, [])
            bucket.extend(p.strip() for p in parts if p.strip() and p.strip() not in bucket)
            if opts.patient_column and rec[opts.patient_column].strip():
                groups[ref] = rec[opts.patient_column].strip()

        index: ImageIndex | None = None  # scanned lazily, only if a row names a UID
        for ref in sorted(labels):
            folder = image_root / ref
            try:
                if folder.is_dir():
                    self.path(folder)
                    sub = self._index(folder)
                    found = sub.series
                    if not found and sub.broken:
                        continue  # recorded by _index
                    if len(found) != 1:
                        self.bad_item(
                            f"series folder holds {len(found)} image series (expected 1); "
                            "name series by SeriesInstanceUID instead", folder)
                        continue
                    files = next(iter(found.values()))
                else:
                    if index is None:
                        index = self._index(image_root)
                    if ref in index.broken:
                        continue  # recorded by _index
                    if ref not in index.series:
                        self.bad_item(
                            f"a value in column '{opts.series_column}' is neither a folder under "
                            f"{image_root} nor the SeriesInstanceUID of an image series there "
                            f"({len(index.series)} series found): {ref}", table)
                        continue
                    files = index.series[ref]
            except DicomError as exc:
                raise self.error(exc.reason, exc.file) from None
            yield Item(key=ref, paths=tuple(self.relative(p) for p in sorted(files)),
                       labels=tuple(labels[ref]), group=groups.get(ref))

    def load(self, item: Item) -> Iterator[Sample]:
        try:
            series = read_series([self.path(p) for p in item.paths], self.max_pixels,
                                 self.max_voxels)
        except DicomError as exc:
            raise self.error(exc.reason, exc.file or self.path(item.paths[0])) from None
        yield Sample(
            source=self.source,
            sample_id=item.key,
            files=item.paths,
            group=item.group or series.group or item.key,
            volume=series.volume,
            labels=item.labels or (),
            intensity=series.intensity,
            extra={"series_uid": series.series_uid, "modality": series.modality,
                   **({"dicom_warnings": series.warnings} if series.warnings else {})},
        )


def load_series_or_fail(conv: Converter, paths: list[Path], referrer: Path) -> DicomSeries:
    """Read a referenced image series; DICOM problems become BuildErrors naming the source."""
    try:
        return read_series(paths, conv.max_pixels, conv.max_voxels)
    except DicomError as exc:
        raise BuildError(f"image series referenced by {referrer.name}: {exc.reason}",
                         source=conv.source, file=exc.file or referrer) from None


class SeriesAnnotationConverter(Converter):
    """Shared by ``dicom_seg`` and ``dicom_rtstruct``: annotation objects drawn on a series.

    Subclasses say what the object is (``kind``, :meth:`is_annotation`), which option globs
    them (``objects_option``), how it names its series (:meth:`referenced_series`) and how its
    masks are made (:meth:`masks`); discovery, error messages and samples are the same.
    """

    kind: ClassVar[str]
    objects_option: ClassVar[str]

    def is_annotation(self, ds: Dataset) -> bool:
        raise NotImplementedError

    def referenced_series(self, ds: Dataset, index: ImageIndex) -> tuple[str | None, str]:
        raise NotImplementedError

    def masks(self, ds: Dataset, series: DicomSeries, path: Path) -> dict[str, np.ndarray]:
        """Boolean masks per raw label (canonical grid) of the targets ``self.wanted`` keeps.

        Partial series are normal (clinical exports): contours/frames on slices that are not on
        disk are skipped and counted (:meth:`note`); a target with no usable slice at all is
        :meth:`bad_item` (an error, or a skip under ``on_error: skip``).
        """
        raise NotImplementedError

    def header_labels(self, ds: Dataset) -> tuple[str, ...]:
        """Raw labels an annotation object names in its header (no pixel data needed)."""
        raise NotImplementedError

    def declared_labels(self, item: Item) -> tuple[str, ...]:
        path = self.path(item.paths[0])
        try:
            return self.header_labels(read_header(path))
        except DicomError as exc:
            raise self.error(exc.reason, exc.file or path) from None

    def discover(self) -> Iterator[Item]:
        images = self.options.images  # type: ignore[attr-defined]
        pattern = getattr(self.options, self.objects_option)
        skip = self.on_error == "skip"
        broken: list[tuple[Path, DicomError]] = []
        try:
            index = ImageIndex.build(self.root, images, check=self.path, skip_broken=skip)
            objects = [(p, ds) for m in glob_under(self.root, pattern)
                       for p, ds in scan(m, check=self.path,
                                         on_broken=(lambda p, e: broken.append((p, e))) if skip
                                         else None)
                       if self.is_annotation(ds)]
        except DicomError as exc:
            raise self.error(exc.reason, exc.file) from None
        for path, exc in broken:
            self.note(exc.reason, path, kind="skipped")
        if not objects:
            raise self.error(f"no {self.kind} object matches options.{self.objects_option} "
                             f"'{pattern}'", self.root)
        seen: set[Path] = set()
        for path, ds in objects:
            if path in seen:
                continue
            seen.add(path)
            uid, how = self.referenced_series(ds, index)
            if uid is not None and uid in index.broken:
                self.note(f"{self.kind} left out: a file beside its image series cannot be "
                          f"used ({index.broken[uid][1]})", path, kind="skipped")
                continue
            if uid is None or uid not in index.series:
                # UIDs are not printed: they can identify a patient (the user can read them
                # from the headers); the message says how the reference was looked for.
                looked = f"the series named by its {how}" if uid else how
                self.bad_item(
                    f"{self.kind} has no matching image series under options.images '{images}' "
                    f"(looked for {looked}; {len(index.series)} image series found there); "
                    "none of its targets has a slice on disk", path)
                continue
            files = sorted(index.series[uid])
            group = str(ds.get("PatientID", "") or ds.get("StudyInstanceUID", "") or "") or None
            yield Item(key=self.relative(path),
                       paths=(self.relative(path), *(self.relative(p) for p in files)),
                       group=group, data={"series_uid": uid})

    def load(self, item: Item) -> Iterator[Sample]:
        obj_path = self.path(item.paths[0])
        series = load_series_or_fail(self, [self.path(p) for p in item.paths[1:]], obj_path)
        try:
            masks = self.masks(read_header(obj_path, pixels=True), series, obj_path)
        except DicomError as exc:
            raise self.error(exc.reason, exc.file or obj_path) from None
        yield Sample(
            source=self.source,
            sample_id=item.key,
            files=item.paths,
            group=item.group or series.group or item.key,
            volume=series.volume,
            target_masks=masks,
            intensity=series.intensity,
            extra={"series_uid": series.series_uid, "modality": series.modality},
        )
