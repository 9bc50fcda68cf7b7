"""Numerical sanity of what is about to be published: NaN/inf, constant images, empty results.

* NaN/inf pixel values follow the source's declared rule ``intensity.nonfinite``: ``floor``
  (default) ignores them when percentiles are computed and shows them at the window floor
  (black), counted in the summary; ``error`` stops with the file and the count. The mapping
  itself is in :mod:`gmai_build.normalize` and :mod:`gmai_build.volumes`.
* An image that is constant, or nearly so, after intensity mapping shows nothing a question
  could be about (typically a slice of NaNs, or one saturated by inf): it is not published and
  the summary lists it.
* An item that gives no case although it carries annotations the label map keeps gets a reason
  (empty mask, targets below ``slicing.min_area``, ...), so no sample disappears silently.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import SourceConfig
from .samples import Sample, Slice2D
from .taxonomy import LabelMap

NEAR_LEVELS = 2  # grey levels (0..255) within which pixels count as the same value
NEAR_FRACTION = 0.999  # this share of pixels within NEAR_LEVELS of the median: nearly constant


def count_nonfinite(array: np.ndarray) -> int:
    """NaN and +/-inf values in an array (0 for integer arrays)."""
    a = np.asanyarray(array)
    if a.dtype.kind not in "fc":
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def check_nonfinite(sample: Sample) -> int:
    """Non-finite values of a 2D sample's image (volumes count theirs plane by plane)."""
    return 0 if sample.image is None else count_nonfinite(sample.image)


def is_constant(rgb: np.ndarray) -> bool:
    """True when (nearly) every pixel has the same value: nothing to ask a question about.

    A pixel's value is its brightest channel; the image is nearly constant when its values span
    at most ``NEAR_LEVELS`` or ``NEAR_FRACTION`` of them lie within ``NEAR_LEVELS`` of the
    median. 8-bit images are judged from a 256-bin histogram (one pass; the per-pixel
    channel maximum and a median by sorting cost more than encoding the PNG).
    """
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or rgb.size == 0:
        return _is_constant_exact(rgb)
    grey = rgb
    if rgb.ndim == 3:  # the brightest channel, per pixel (one pass to split, one per maximum)
        channels = cv2.split(np.ascontiguousarray(rgb)) if rgb.shape[2] <= 4 else \
            [np.ascontiguousarray(rgb[..., c]) for c in range(rgb.shape[2])]
        grey = channels[0]
        for channel in channels[1:]:
            grey = cv2.max(grey, channel)
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    present = np.flatnonzero(hist)
    if int(present[-1]) - int(present[0]) <= NEAR_LEVELS:
        return True
    cumulative = np.cumsum(hist)
    n = int(cumulative[-1])
    low = int(np.searchsorted(cumulative, (n - 1) // 2 + 1))  # the middle order statistics
    high = int(np.searchsorted(cumulative, n // 2 + 1))
    median = (low + high) // 2  # as int(np.median(...)) of integers
    near = int(hist[max(0, median - NEAR_LEVELS):median + NEAR_LEVELS + 1].sum())
    return near >= NEAR_FRACTION * n


def _is_constant_exact(rgb: np.ndarray) -> bool:
    grey = rgb.astype(np.int16).max(axis=2) if rgb.ndim == 3 else rgb.astype(np.int16)
    if int(grey.max()) - int(grey.min()) <= NEAR_LEVELS:
        return True
    median = int(np.median(grey))
    near = np.count_nonzero(np.abs(grey - median) <= NEAR_LEVELS)
    return near >= NEAR_FRACTION * grey.size


def _kept(raw: object, label_map: LabelMap) -> bool:
    try:
        return label_map.lookup(raw) is not None
    except Exception:  # unknown labels are reported by the case stage itself
        return True


def raw_targets(sample: Sample) -> set[str]:
    """Raw labels of the mask targets that have at least one pixel in the sample."""
    found: set[str] = set()
    if sample.label_mask is not None and "label_values" in sample.extra:  # (volumes.py)
        values = sample.extra["label_values"]
        found.update(sample.mask_labels.get(int(v), str(int(v))) for v in values if v != 0)
    elif sample.label_mask is not None:
        lm = np.asanyarray(sample.label_mask)
        if lm.dtype.kind in "iub" and lm.size and int(lm.min()) >= 0 and int(lm.max()) < 1 << 16:
            values = np.flatnonzero(np.bincount(lm.ravel().astype(np.intp, copy=False)))
        else:
            values = np.unique(lm)
        found.update(sample.mask_labels.get(int(v), str(int(v))) for v in values if v != 0)
    for raw, m in (sample.target_masks or {}).items():
        if np.any(m):
            found.add(raw)
    return found


def asked_boxes(s: Slice2D, label_map: LabelMap) -> list[int]:
    """Indices of a slice's boxes whose label the label map keeps (each should be asked)."""
    return [i for i, b in enumerate(s.boxes) if _kept(b.raw_label, label_map)]


def unasked_targets(sample: Sample, slices: list[Slice2D], label_map: LabelMap) -> list[str]:
    """Targets the label map keeps that are on no published slice (below slicing.min_area)."""
    if sample.label_mask is None and not sample.target_masks:
        return []
    shown = {raw for s in slices for raw in s.target_masks}
    return sorted(raw for raw in raw_targets(sample) - shown if _kept(raw, label_map))


def why_no_case(sample: Sample, slices: list[Slice2D], source: SourceConfig,
                label_map: LabelMap) -> str | None:
    """Why a sample with annotations the label map keeps gave no case; None when declared.

    Samples whose every label the label map drops (``drop``) are intended, not reported.
    """
    if sample.label_mask is not None:
        values = [int(v) for v in np.unique(np.asanyarray(sample.label_mask)) if v != 0]
        if not values:
            return "mask is empty (no labelled pixel)"
        raws = [sample.mask_labels.get(v, str(v)) for v in values]
        if not any(_kept(r, label_map) for r in raws):
            return None
        return (f"no target reaches slicing.min_area ({source.slicing.min_area} pixels) on any "
                "slice")
    if sample.target_masks is not None:
        kept = {raw: m for raw, m in sample.target_masks.items() if _kept(raw, label_map)}
        if not kept:  # none, or all dropped by the label map (a converter notes its own skips)
            return None
        if not any(np.any(m) for m in kept.values()):
            return "every target mask is empty"
        return (f"no target reaches slicing.min_area ({source.slicing.min_area} pixels) on any "
                "slice")
    if sample.boxes:
        if not any(_kept(b.raw_label, label_map) for b in sample.boxes):
            return None
        return "every box is empty or ambiguous (overlaps a box of another label)"
    if sample.labels:
        return None if not any(_kept(r, label_map) for r in sample.labels) else \
            "no image could be made"
    return "no annotation (no label, box or mask)"
