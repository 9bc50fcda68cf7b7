"""Samples -> normalised 2D slices (:class:`Slice2D`): the ``normalize`` stage's entry point.

2D samples are normalised directly; 3D samples (``Sample.volume``) are oriented, resampled and
sliced by :mod:`gmai_build.volumes` according to the source's ``slicing`` settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import Field

from .normalize import normalize_2d
from .samples import CLS_2D, DET_2D, SEG_2D, Box, Sample, Slice2D
from .schemas import Strict

if TYPE_CHECKING:
    from .config import SourceConfig


class SlicingConfig(Strict):
    """How a 3D volume becomes 2D questions: which axis, and which slices per label."""

    axis: Literal["axial", "coronal", "sagittal"] = "axial"
    min_area: int = Field(default=16, ge=1, description="min label pixels on a slice")
    per_label: int = Field(default=1, ge=1, description="slices per label per volume")
    strategy: Literal["largest", "even"] = "largest"
    min_gap_mm: float = Field(default=10.0, ge=0, description="min distance between the "
                              "per_label slices of one label (mm along the slicing axis)")
    min_gap_slices: int = Field(default=2, ge=1, description="...and in slices")


def label_mask_targets(
    label_mask: np.ndarray, mask_labels: dict[int, str]
) -> dict[str, np.ndarray]:
    """Integer label mask -> {raw label: boolean mask}; 0 is background.

    Without ``mask_labels`` the raw label is the value itself ("1", "2", ...), which the label map
    translates, as MSD/nnU-Net ``dataset.json`` or a BIDS label table would.
    """
    targets: dict[str, np.ndarray] = {}
    for value in np.unique(label_mask):
        if value == 0:
            continue
        raw = mask_labels.get(int(value), str(int(value)))
        m = label_mask == value
        targets[raw] = targets[raw] | m if raw in targets else m
    return targets


def limit_side(s: Slice2D, max_side: int | None) -> Slice2D:
    """Downscale a slice whose longer side exceeds ``max_side``, annotations included.

    The image is resampled with area averaging, masks with nearest-exact on the same output
    size and boxes are scaled, so overlays stay aligned; the scale is recorded in ``extra``.
    """
    h, w = s.rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return s
    f = max_side / max(h, w)
    return _rescaled(s, f, cv2.INTER_AREA, "max_side_scale")


UPSCALE_MAX_SIDE = 2048


def raise_side(s: Slice2D, min_side: int, max_side: int | None) -> Slice2D:
    """Upscale a slice whose shorter side is below ``min_side`` (a 28x28 MedMNIST image).

    Done before any overlay is drawn, so boxes and outlines are drawn at the published size
    and stay one crisp line; the image is resampled bicubically, masks with nearest-exact on
    the same output size, boxes scaled. The longer side never exceeds ``max_side`` (or
    UPSCALE_MAX_SIDE: a 3-slice volume cut coronally is a strip, not worth 28,000 pixels).
    The scale is recorded.
    """
    h, w = s.rgb.shape[:2]
    if min(h, w) >= min_side:
        return s
    f = min(min_side / min(h, w), (max_side or UPSCALE_MAX_SIDE) / max(h, w))
    if f <= 1:
        return s
    return _rescaled(s, f, cv2.INTER_CUBIC, "min_side_scale")


def _rescaled(s: Slice2D, f: float, interpolation: int, record: str) -> Slice2D:
    """The slice scaled by ``f``: image with ``interpolation``, masks nearest-exact on the same
    output size, boxes scaled; the (y, x) scale is recorded in ``extra[record]``."""
    h, w = s.rgb.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))  # cv2: (width, height)
    sx, sy = size[0] / w, size[1] / h
    nearest = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)
    s.rgb = cv2.resize(s.rgb, size, interpolation=interpolation)
    s.target_masks = {
        raw: cv2.resize(m.astype(np.uint8), size, interpolation=nearest).astype(bool)
        for raw, m in s.target_masks.items()
    }
    s.boxes = tuple(
        Box(b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy, b.raw_label) for b in s.boxes
    )
    s.extra = {**s.extra, record: [sy, sx]}
    return s


def to_slices(sample: Sample, source: SourceConfig) -> list[Slice2D]:
    return [limit_side(raise_side(s, source.min_side, source.max_side), source.max_side)
            for s in _to_slices(sample, source)]


def _to_slices(sample: Sample, source: SourceConfig) -> list[Slice2D]:
    if sample.volume is not None:
        from .volumes import slices_from_volume

        return slices_from_volume(sample, source)
    assert sample.image is not None, "a sample carries an image or a volume"
    rgb = normalize_2d(sample.image, source.intensity, is_ct=sample.intensity == "ct")
    targets = dict(sample.target_masks or {})
    if sample.label_mask is not None:
        if sample.label_mask.shape[:2] != rgb.shape[:2]:
            raise ValueError(
                f"mask shape {sample.label_mask.shape[:2]} differs from image shape {rgb.shape[:2]}"
            )
        for raw, m in label_mask_targets(sample.label_mask, sample.mask_labels).items():
            targets[raw] = targets[raw] | m if raw in targets else m
    for raw, m in targets.items():
        if m.shape[:2] != rgb.shape[:2]:
            raise ValueError(f"mask '{raw}' shape {m.shape} differs from image {rgb.shape[:2]}")
    # Every non-empty target goes on: one too small to ask about becomes a case that is
    # counted as skipped (cases.py, ``source.targets``), never a silent loss.
    targets = {raw: m for raw, m in targets.items() if m.any()}
    task = SEG_2D if (targets or sample.label_mask is not None) else DET_2D if sample.boxes else CLS_2D
    return [
        Slice2D(
            source=sample.source,
            sample_id=sample.sample_id,
            files=sample.files,
            group=sample.group,
            rgb=rgb,
            labels=sample.labels,
            boxes=sample.boxes,
            target_masks=targets,
            original_task=task,
            slice_index=sample.slice_index,
            extra=sample.extra,
        )
    ]
