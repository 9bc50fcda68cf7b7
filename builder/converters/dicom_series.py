"""DICOM image series + a CSV/TSV label table -> image-level samples (one 3D volume per series).

Layout: DICOM files anywhere under ``image_root`` (one folder per series, or many series mixed
under one folder). The table names each series either by its folder (relative to
``image_root``; the folder must hold exactly one image series) or by its SeriesInstanceUID, with
a label column and optionally a patient column. Several rows for one series merge their labels.

The volume is read by :func:`gmai_build.dicom_io.read_series` (canonical LPS+, rescaled CT HU) and
the volume slicer shows a representative slice (see ``slicing`` in sources.yaml). The group (the
VAL/TEST split unit) is the table's patient column, else the DICOM PatientID, else the
StudyInstanceUID.

This module also holds what the DICOM SEG and RTSTRUCT converters share: glob resolution under
the root, an index of the image series found there, and their common base class.
"""

from __future__ import annotations

from collections.abc import Iterator
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

    @classmethod
    def build(cls, root: Path, pattern: str) -> ImageIndex:
        """Scan every folder/file matched by ``pattern`` (folders recursively) for image objects."""
        index = cls()
        for match in glob_under(root, pattern):
            for path, ds in scan(match):
                if not is_image(ds):
                    continue
                uid = str(ds.get("SeriesInstanceUID", ""))
                files = index.series.setdefault(uid, [])
                if path not in files:
                    files.append(path)
                index.sop_to_series[str(ds.get("SOPInstanceUID", ""))] = uid
                index.frame_of_reference.setdefault(str(ds.get("FrameOfReferenceUID", "")), set()).add(uid)
        return index


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
        if value is None:
            return self.root
        p = Path(value)
        return p if p.is_absolute() else self.root / p


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
                raise self.error(f"row {row_no}: empty series reference", table)
            if not cell:
                raise self.error(f"row {row_no}: empty label for series {ref}", table)
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
                    found = ImageIndex.build(folder, ".").series
                    if len(found) != 1:
                        raise self.error(
                            f"series folder '{ref}' holds {len(found)} image series (expected 1); "
                            "name series by SeriesInstanceUID instead", folder)
                    files = next(iter(found.values()))
                else:
                    if index is None:
                        index = ImageIndex.build(image_root, ".")
                    if ref not in index.series:
                        raise self.error(
                            f"'{ref}' in column '{opts.series_column}' is neither a folder under "
                            f"{image_root} nor the SeriesInstanceUID of an image series there "
                            f"({len(index.series)} series found)", table)
                    files = index.series[ref]
            except DicomError as exc:
                raise self.error(exc.reason, exc.file) from None
            yield Item(key=ref, paths=tuple(self.relative(p) for p in sorted(files)),
                       labels=tuple(labels[ref]), group=groups.get(ref))

    def load(self, item: Item) -> Iterator[Sample]:
        try:
            series = read_series([self.path(p) for p in item.paths])
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
        return read_series(paths)
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
        try:
            index = ImageIndex.build(self.root, images)
            objects = [(p, ds) for m in glob_under(self.root, pattern) for p, ds in scan(m)
                       if self.is_annotation(ds)]
        except DicomError as exc:
            raise self.error(exc.reason, exc.file) from None
        if not objects:
            raise self.error(f"no {self.kind} object matches options.{self.objects_option} "
                             f"'{pattern}'", self.root)
        seen: set[Path] = set()
        for path, ds in objects:
            if path in seen:
                continue
            seen.add(path)
            uid, how = self.referenced_series(ds, index)
            if uid is None or uid not in index.series:
                # UIDs are not printed: they can identify a patient (the user can read them
                # from the headers); the message says how the reference was looked for.
                looked = f"the series named by its {how}" if uid else how
                raise self.error(
                    f"{self.kind} has no matching image series under options.images '{images}' "
                    f"(looked for {looked}; {len(index.series)} image series found there)",
                    path)
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
