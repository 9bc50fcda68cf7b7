"""3D image + label volume pairs found by a glob and a path pattern (``image_label_glob``).

For any folder layout where each image volume (NIfTI, NRRD, MHA/MHD) has a label volume whose
path can be derived from the image's path: BIDS derivatives, KiTS, AMOS-like folders, pyradiomics
samples, ... Options:

* ``image_glob``: images relative to the root, e.g. ``sub-*/anat/*_T2w.nii.gz`` (``**`` allowed);
* ``label_pattern``: the label path relative to the root, with placeholders ``{stem}`` (image file
  name without its volume suffix), ``{name}`` (image file name), ``{dir}`` (alias ``{parent}``:
  the image's folder relative to the root) and every named group of ``image_regex``;
* ``image_regex``: optional regex searched in the image's relative path, e.g.
  ``(?P<subject>sub-[^/_]+)``; a group named ``subject`` or ``patient`` is the default group;
* ``mask_labels``: ``{value: raw label}`` (otherwise the raw label is the value, ``"1"``);
* ``intensity``: ``ct`` (window), ``mr`` (percentile clip) or ``auto`` (CT when the volume holds
  air-like values <= -500, as Hounsfield-unit CT does);
* ``channel`` for 4D / multi-component images; ``missing_label``: ``error`` (default) or ``skip``.

BIDS example: ``image_glob: "sub-*/anat/*_T2w.nii.gz"``,
``image_regex: "(?P<subject>sub-[^/_]+)"``,
``label_pattern: "derivatives/labels/{subject}/anat/{stem}_seg.nii.gz"``.
"""

from __future__ import annotations

import glob
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import valid_regex
from ..samples import Sample
from ..volume_io import read_image_and_labels, strip_volume_suffix, volume_suffix
from .base import Converter, Item, register

BUILTIN_PLACEHOLDERS = {"stem", "name", "dir", "parent"}
AUTO_CT_THRESHOLD = -500.0  # HU: air; MR and most other volumes never go this low


class ImageLabelGlobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_glob: str = Field(description="glob of image volumes relative to the root")
    label_pattern: str = Field(description="label path pattern, e.g. labels/{stem}_seg.nii.gz")
    image_regex: str | None = Field(default=None, description="named groups become placeholders")
    mask_labels: dict[int, str] | None = Field(
        default=None, description="mask value -> raw label (default: the value, e.g. '1')")
    intensity: Literal["ct", "mr", "auto"] = Field(
        default="auto", description="ct: window; mr: percentile clip; auto: CT if values <= -500")
    channel: int | None = Field(default=None, ge=0, description="channel of a 4D/multi-component image")
    missing_label: Literal["error", "skip"] = Field(
        default="error", description="an image without a label volume: error, or skip it")

    @field_validator("image_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return valid_regex(v)

    @model_validator(mode="after")
    def _placeholders(self) -> ImageLabelGlobOptions:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.label_pattern) if f}
        except ValueError as exc:
            raise ValueError(f"label_pattern: {exc}") from None
        groups = set(re.compile(self.image_regex).groupindex) if self.image_regex else set()
        unknown = fields - BUILTIN_PLACEHOLDERS - groups
        if unknown:
            raise ValueError(
                f"label_pattern uses unknown placeholder(s) {sorted(unknown)}; known: "
                f"{sorted(BUILTIN_PLACEHOLDERS | groups)} (named groups come from image_regex)"
            )
        return self


@register
class ImageLabelGlob(Converter):
    """Image volumes by glob, each with a label volume at a path derived from the image's."""

    format = "image_label_glob"
    Options = ImageLabelGlobOptions

    def label_for(self, rel: str) -> tuple[str, str | None] | None:
        """(label path, group from the regex) for an image path, or None if the regex misses."""
        opts: ImageLabelGlobOptions = self.options  # type: ignore[assignment]
        p = Path(rel)
        values = {"stem": strip_volume_suffix(p.name), "name": p.name,
                  "dir": p.parent.as_posix(), "parent": p.parent.as_posix()}
        group = None
        if opts.image_regex:
            m = re.search(opts.image_regex, rel)
            if m is None:
                return None
            named = {k: v for k, v in m.groupdict().items() if v is not None}
            values.update(named)
            group = named.get("subject") or named.get("patient")
        label = opts.label_pattern.format_map(values)
        return Path(label).as_posix(), group

    def discover(self) -> Iterator[Item]:
        opts: ImageLabelGlobOptions = self.options  # type: ignore[assignment]
        matches = sorted(glob.glob(opts.image_glob, root_dir=self.root, recursive=True))
        images = [m for m in matches if volume_suffix(m) and (self.root / m).is_file()]
        if not images:
            raise self.error(f"no image volumes match image_glob '{opts.image_glob}'", self.root)
        for rel in images:
            rel = Path(rel).as_posix()
            found = self.label_for(rel)
            if found is None:
                continue  # image_regex filters images too
            label, group = found
            if label == rel:
                raise self.error(f"label_pattern gives the image itself ({rel})", self.root / rel)
            if not (self.root / label).is_file():
                if opts.missing_label == "skip":
                    self.note("no label volume for this image (missing_label: skip)",
                              self.root / rel, kind="skipped")
                    continue
                self.bad_item(
                    f"label volume for image {rel} not found (label_pattern "
                    f"'{opts.label_pattern}'); set missing_label: skip to ignore such images",
                    self.root / label,
                )
                continue
            yield Item(key=rel, paths=(rel, label), group=group)

    def load(self, item: Item) -> Iterator[Sample]:
        opts: ImageLabelGlobOptions = self.options  # type: ignore[assignment]
        image_path, label_path = self.path(item.paths[0]), self.path(item.paths[1])
        volume, labels = read_image_and_labels(image_path, label_path, opts.channel, self.source,
                                               self.max_pixels, self.max_voxels)
        if opts.intensity == "auto":
            arr = np.asanyarray(volume.array)
            is_ct = arr.size > 0 and float(arr.min()) <= AUTO_CT_THRESHOLD
        else:
            is_ct = opts.intensity == "ct"
        yield Sample(
            source=self.source,
            sample_id=item.key,
            files=item.paths,
            group=item.group or item.key,
            volume=volume,
            label_mask=labels.array,
            mask_labels=dict(opts.mask_labels or {}),
            intensity="ct" if is_ct else "mr",
        )
