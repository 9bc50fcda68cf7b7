"""CSV/TSV label table: one row per image with its path, its label and optionally a patient id.

Image paths in the table are relative to ``image_root`` (default: the source root); Windows
separators are accepted, and ``image_suffix`` completes bare ids (ISIC: ``ISIC_0024306`` ->
``ISIC_0024306.jpg``). The label is one column (``label_column``, optionally split on
``label_separator``) or a set of one-hot columns (``label_columns``: the raw labels are the names
of the columns holding 1 / 1.0 / true / yes, as in HAM10000 or CheXpert tables). Several rows may
name the same image (multi-label); their labels are merged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..samples import Sample
from .base import Converter, Item, register


class TableOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str = Field(description="path relative to the source root (or absolute)")
    image_column: str = Field(description="column holding the image path (relative to image_root)")
    label_column: str | None = Field(default=None, description="column holding the raw label")
    label_columns: list[str] | None = Field(
        default=None, description="one-hot columns: raw label = the column's name")
    patient_column: str | None = Field(
        default=None, description="column holding the patient id (the VAL/TEST split unit)")
    image_suffix: str = Field(
        default="", description="appended to each image cell, e.g. \".jpg\" for bare ids")
    separator: str | None = Field(default=None, description="default: tab for .tsv, comma otherwise")
    image_root: str | None = Field(
        default=None, description="folder the image paths are relative to (default: root)")
    label_separator: str | None = Field(default=None, description="e.g. \"|\" for \"a|b\" multi-label cells")

    @model_validator(mode="after")
    def _one_label_source(self) -> TableOptions:
        if (self.label_column is None) == (self.label_columns is None):
            raise ValueError("give exactly one of label_column or label_columns")
        return self


TRUE_CELLS = {"1", "1.0", "true", "yes", "y", "t"}


def read_table(path: Path, opts: TableOptions) -> pd.DataFrame:
    sep = opts.separator or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    # Labels stay text: "0"/"1" must not become floats, "None" must not become NaN silently.
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


@register
class CsvTable(Converter):
    format = "csv_table"
    Options = TableOptions

    def _table_path(self) -> Path:
        return self.path(self.options.table)  # type: ignore[attr-defined]

    def _image_root(self) -> Path:
        opts: TableOptions = self.options  # type: ignore[assignment]
        return self.root if opts.image_root is None else self.path(opts.image_root)

    def discover(self) -> Iterator[Item]:
        opts: TableOptions = self.options  # type: ignore[assignment]
        table = self._table_path()
        if not table.is_file():
            raise self.error("label table not found (options.table)", table)
        try:
            df = read_table(table, opts)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise self.error(f"cannot parse label table: {exc}", table) from None
        label_cols = opts.label_columns or [opts.label_column]
        needed = [opts.image_column, *label_cols] + ([opts.patient_column] if opts.patient_column else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise self.error(
                f"column(s) {missing} not in the table; it has {list(df.columns)}", table
            )
        labels: dict[str, list[str]] = {}
        groups: dict[str, str] = {}
        for row_no, row in enumerate(df.itertuples(index=False), start=2):
            rec = dict(zip(df.columns, row))
            image = rec[opts.image_column].strip().replace("\\", "/")
            if not image:
                self.bad_item(f"row {row_no}: empty image path", table)
                continue
            image += opts.image_suffix
            if opts.label_columns:
                parts = [c for c in opts.label_columns if rec[c].strip().lower() in TRUE_CELLS]
                if not parts:
                    self.bad_item(f"row {row_no}: no label column is set for {image}", table)
                    continue
            else:
                cell = rec[opts.label_column].strip()
                if cell == "":
                    self.bad_item(f"row {row_no}: empty label for {image}", table)
                    continue
                parts = cell.split(opts.label_separator) if opts.label_separator else [cell]
            bucket = labels.setdefault(image, [])
            bucket.extend(p.strip() for p in parts if p.strip() and p.strip() not in bucket)
            if opts.patient_column:
                groups[image] = rec[opts.patient_column].strip() or image
        image_root = self._image_root()
        base = self.root
        for image in sorted(labels):
            path = image_root / image
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                rel = path.as_posix()
            yield Item(key=rel, paths=(rel,), labels=tuple(labels[image]), group=groups.get(image))

    def load(self, item: Item) -> Iterator[Sample]:
        path = self.path(item.paths[0])
        if not path.is_file():
            raise self.error(f"image listed in {self._table_path().name} does not exist", path)
        yield self.image_level_sample(item, path)
