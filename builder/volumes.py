"""3D volumes -> 2D slices: orientation, slice choice, intensity and square pixels.

Input is a :class:`~gmai_build.samples.Sample` whose ``volume`` is in the canonical LPS+
``[x, y, z]`` order (see :mod:`gmai_build.volume_io`), so the display code below is the same for
NIfTI, NRRD, MHA and DICOM. Every slice is shown in the RADIOLOGICAL convention:

==========  ========================  ==================  ====================  ================
axis        2D image (H x W)          image top           image left            slice index
==========  ========================  ==================  ====================  ================
axial       ``a[:, :, z].T``          anterior            patient RIGHT         z (inferior->superior)
coronal     ``a[:, y, ::-1].T``       superior            patient RIGHT         y (anterior->posterior)
sagittal    ``a[x, :, ::-1].T``       superior            anterior              x (right->left)
==========  ========================  ==================  ====================  ================

``Slice2D.slice_index`` is the index along that axis of the LPS+ array (for a NIfTI file read
with nibabel, the axial index equals the RAS-canonical k index; x and y indices count from the
patient's right and front).

Slice choice (``source.slicing``): for every target (raw label of ``label_mask`` values or a key
of ``target_masks``) the slices where its area is at least ``min_area`` qualify; ``per_label`` of
them are chosen per label and volume, either the ``largest`` (ties -> lower index) or ``even``ly
spaced ones (centres of ``per_label`` equal bins of the qualifying slices), never closer than
``min_gap_mm`` / ``min_gap_slices`` to each other. Each chosen slice
gives one :class:`Slice2D` carrying every target that qualifies on that slice (so cases can
exclude overlapping labels from the options). A sample with image-level ``labels`` but no mask
gives the middle slice (or ``per_label`` evenly spaced slices) carrying those labels.

Intensity: CT (``sample.intensity == "ct"`` or a window declared in ``source.intensity``) is
windowed (soft tissue by default); anything else is clipped at percentiles of the non-zero
voxels of the whole VOLUME, so all slices of one volume share one mapping.

Anisotropic pixels are resampled in-plane (OpenCV) to square pixels of the finer spacing; the
image (linear) and the masks (nearest, same output size) get the same transform so overlays stay
aligned. The scale factors are recorded in ``Slice2D.extra``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from .config import SourceConfig
from .normalize import finite_percentiles, to_byte_range, to_rgb, window
from .samples import CLS_2D, SEG_3D, Sample, Slice2D
from .sanity import count_nonfinite

AXES = {"axial": 2, "coronal": 1, "sagittal": 0}
MAX_SIDE = 2048  # cap on the resampled slice size (pixels) for extreme anisotropy
DEFAULT_CT_WINDOW = (400.0, 40.0)  # soft tissue (width, level) in HU
# OpenCV's INTER_NEAREST samples at floor(x * scale), half a pixel off INTER_LINEAR's centre
# alignment; NEAREST_EXACT (OpenCV >= 4.5) uses pixel centres like the image does.
_NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


def display_slice(array: np.ndarray, axis: str, index: int) -> np.ndarray:
    """One slice of an LPS+ ``[x, y, z]`` array in radiological display (see module table)."""
    if axis == "axial":
        return array[:, :, index].T
    if axis == "coronal":
        return array[:, index, ::-1].T
    if axis == "sagittal":
        return array[index, :, ::-1].T
    raise ValueError(f"unknown axis '{axis}'")


def pixel_spacing(spacing: tuple[float, float, float], axis: str) -> tuple[float, float]:
    """(row, column) spacing in mm of a displayed slice along ``axis``."""
    sx, sy, sz = spacing
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[axis]


def square_size(shape: tuple[int, int], spacing_rc: tuple[float, float]) -> tuple[int, int] | None:
    """Output (height, width) with square pixels of the finer spacing, or None if already square."""
    h, w = shape
    row, col = spacing_rc
    if row <= 0 or col <= 0 or abs(row - col) <= 1e-3 * max(row, col):
        return None
    pixel = min(row, col)
    out_h, out_w = h * row / pixel, w * col / pixel
    if max(out_h, out_w) > MAX_SIDE:
        shrink = MAX_SIDE / max(out_h, out_w)
        out_h, out_w = out_h * shrink, out_w * shrink
    return max(1, int(round(out_h))), max(1, int(round(out_w)))


def resample_image(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize a 2D uint8 image to (height, width): linear when enlarging, area when shrinking."""
    if size is None or size == image.shape[:2]:
        return image
    h, w = size
    shrinking = h <= image.shape[0] and w <= image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resample_mask(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize a 2D boolean mask to (height, width) by nearest neighbour (pixel-centre aligned)."""
    if size is None or size == mask.shape[:2]:
        return mask.astype(bool)
    h, w = size
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=_NEAREST).astype(bool)


def volume_percentiles(array: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Percentiles of the finite non-zero voxels of the whole volume (hi > lo guaranteed)."""
    return finite_percentiles(array, low, high) or (0.0, 1.0)


def clip_scale(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto 0..255 (same arithmetic as ``normalize.percentile_clip``)."""
    return to_byte_range((array.astype(np.float64) - lo) / (hi - lo) * 255.0)


def intensity_mapper(
    sample: Sample, source: SourceConfig, array: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """The 2D float -> uint8 function for this volume, and a record of what it does."""
    declared = source.intensity.window_width_level()
    if declared is not None or sample.intensity == "ct":
        width, level = declared if declared is not None else DEFAULT_CT_WINDOW
        return (lambda a: window(a, width, level)), {"window": [width, level]}
    lo, hi = volume_percentiles(np.asanyarray(array), *source.intensity.percentiles)
    return (lambda a: clip_scale(a, lo, hi)), {"percentile_range": [lo, hi]}


def choose_slices(
    areas: np.ndarray, min_area: int, per_label: int, strategy: str, min_gap: int = 1,
) -> list[int]:
    """Indices chosen among slices whose area >= min_area (see module docstring).

    Chosen slices are at least ``min_gap`` slices apart: two adjacent slices of one label are
    nearly the same picture, so ``largest`` takes the next largest slice far enough from those
    already chosen (fewer than ``per_label`` when the label is too short for that).
    """
    qualifying = np.flatnonzero(areas >= min_area)
    if qualifying.size == 0:
        return []
    if strategy == "largest":
        order = sorted(qualifying.tolist(), key=lambda i: (-int(areas[i]), i))
    else:
        order = even_indices(qualifying.tolist(), per_label)
    chosen: list[int] = []
    for i in order:
        if len(chosen) == per_label:
            break
        if all(abs(i - j) >= min_gap for j in chosen):
            chosen.append(i)
    return sorted(chosen)


def slice_gap(source: SourceConfig, spacing: tuple[float, float, float]) -> int:
    """The minimum gap between chosen slices, in slices: the larger of the mm and slice rules."""
    step = float(spacing[AXES[source.slicing.axis]]) or 1.0
    return max(source.slicing.min_gap_slices, math.ceil(source.slicing.min_gap_mm / step - 1e-9))


def even_indices(candidates: list[int], k: int) -> list[int]:
    """``k`` evenly spaced members of ``candidates``: the centres of k equal bins."""
    n = len(candidates)
    if n <= k:
        return list(candidates)
    return sorted({candidates[int((i + 0.5) * n / k)] for i in range(k)})


def _slice_areas(label_mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, areas[n_slices, n_values]) of the non-zero labels of an integer volume."""
    n = label_mask.shape[axis]
    if label_mask.dtype.kind == "f":  # NaN/inf in a float label volume are no label
        label_mask = np.rint(np.nan_to_num(label_mask, nan=0.0, posinf=0.0, neginf=0.0))
        label_mask = label_mask.astype(np.int64)
    elif label_mask.dtype == np.bool_:
        label_mask = label_mask.view(np.uint8)
    planes = (label_mask[(slice(None),) * axis + (i,)] for i in range(n))
    if label_mask.dtype == np.uint8:  # the usual label volume: a 256-bin histogram per slice
        hist = np.stack([_byte_histogram(p) for p in planes])
        values = np.flatnonzero(hist[:, 1:].any(axis=0)) + 1
        return values.astype(np.int64), hist[:, values]
    counts: list[dict[int, int]] = []
    for plane in planes:
        sl = plane.ravel(order="K")  # (a view where the plane is contiguous)
        if sl.size and sl.min() >= 0 and sl.max() < 1 << 16:
            bc = np.bincount(sl.astype(np.intp, copy=False))
            nz = np.flatnonzero(bc)
            counts.append({int(v): int(bc[v]) for v in nz if v != 0})
        else:
            vals, cnt = np.unique(sl, return_counts=True)
            counts.append({int(v): int(c) for v, c in zip(vals, cnt) if v != 0})
    values = np.array(sorted({v for c in counts for v in c}), np.int64)
    areas = np.zeros((n, values.size), np.int64)
    for i, c in enumerate(counts):
        for j, v in enumerate(values):
            areas[i, j] = c.get(int(v), 0)
    return values, areas


def _byte_histogram(plane: np.ndarray) -> np.ndarray:
    """Pixels per value (256 counts) of a uint8 plane, in one pass (OpenCV's histogram; its
    float32 counts are exact below 2**24 pixels, larger planes are counted by numpy)."""
    if plane.size >= 1 << 24:
        return np.bincount(plane.ravel(order="K"), minlength=256).astype(np.int64)
    for axis in range(plane.ndim):  # (counts do not depend on the order: undo flips, no copy)
        if plane.strides[axis] < 0:
            plane = np.flip(plane, axis)
    if not plane.flags.c_contiguous:  # a plane of a Fortran-ordered volume is its transpose
        plane = plane.T if plane.flags.f_contiguous else np.ascontiguousarray(plane)
    counts = cv2.calcHist([plane], [0], None, [256], [0, 256]).ravel()
    return counts.astype(np.int64)


def slices_from_volume(sample: Sample, source: SourceConfig) -> list[Slice2D]:
    """One sample with a 3D volume -> the 2D slices its annotations call for (module docstring)."""
    assert sample.volume is not None
    vol = sample.volume
    array = vol.array  # may be lazy (NIfTI): planes are read on demand
    if array.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {array.shape}")
    axis_name = source.slicing.axis
    axis = AXES[axis_name]
    cfg = source.slicing

    # Targets: raw label -> (per-slice areas, function slice index -> 2D display mask).
    targets: dict[str, tuple[np.ndarray, Callable[[int], np.ndarray]]] = {}
    if sample.label_mask is not None:
        lm = np.asanyarray(sample.label_mask)
        sample.label_mask = lm  # decompressed once: the sanity checks read it again
        if lm.shape[:3] != array.shape:
            raise ValueError(f"label mask shape {lm.shape} differs from volume shape {array.shape}")
        values, areas = _slice_areas(lm, axis)
        sample.extra["label_values"] = values  # the non-zero values present (raw_targets)
        by_raw: dict[str, list[int]] = {}
        for j, v in enumerate(values.tolist()):
            by_raw.setdefault(sample.mask_labels.get(v, str(v)), []).append(j)
        for raw, cols in by_raw.items():
            vals = [int(values[j]) for j in cols]
            targets[raw] = (
                areas[:, cols].sum(axis=1),
                lambda i, vals=vals: np.isin(display_slice(lm, axis_name, i), vals),
            )
    for raw, m in (sample.target_masks or {}).items():
        m = np.asanyarray(m)
        if m.shape[:3] != array.shape:
            raise ValueError(f"mask '{raw}' shape {m.shape} differs from volume shape {array.shape}")
        other = tuple(a for a in range(3) if a != axis)
        area = np.count_nonzero(m, axis=other)

        def get(i: int, m: np.ndarray = m) -> np.ndarray:
            return display_slice(m, axis_name, i).astype(bool)

        if raw in targets:
            old_area, old_get = targets[raw]
            targets[raw] = (old_area + area, lambda i, f=old_get, g=get: f(i) | g(i))
        else:
            targets[raw] = (area, get)

    has_masks = sample.label_mask is not None or sample.target_masks is not None
    chosen: dict[int, dict[str, dict]] = {}  # slice -> raw -> why it is there
    if has_masks:
        for raw, (area, _) in sorted(targets.items()):
            picks = choose_slices(area, cfg.min_area, cfg.per_label, cfg.strategy,
                                  slice_gap(source, vol.spacing))
            n_q = int((area >= cfg.min_area).sum())
            for rank, i in enumerate(picks):
                chosen.setdefault(i, {})[raw] = {
                    "strategy": cfg.strategy, "rank": rank, "of": len(picks),
                    "qualifying_slices": n_q, "area_voxels": int(area[i]),
                }
        for i, why in chosen.items():  # other qualifying targets on a chosen slice come along
            for raw, (area, _) in targets.items():
                if raw not in why and area[i] >= cfg.min_area:
                    why[raw] = {"strategy": "present", "area_voxels": int(area[i])}
    elif sample.labels:
        for i in even_indices(list(range(array.shape[axis])), cfg.per_label):
            chosen[i] = {}
    if not chosen:
        return []

    to_uint8, intensity_info = intensity_mapper(sample, source, array)
    spacing_rc = pixel_spacing(vol.spacing, axis_name)
    out: list[Slice2D] = []
    for i in sorted(chosen):
        plane = np.ascontiguousarray(display_slice(array, axis_name, i))
        nonfinite = count_nonfinite(plane)
        size = square_size(plane.shape, spacing_rc)
        grey = resample_image(to_uint8(plane), size)
        masks = {raw: resample_mask(targets[raw][1](i), size) for raw in sorted(chosen[i])}
        masks = {raw: m for raw, m in masks.items() if m.any()}
        extra = dict(sample.extra)
        extra.update({
            "axis": axis_name,
            "pixel_spacing_mm": [float(s) for s in spacing_rc],
            "source_shape": [int(plane.shape[0]), int(plane.shape[1])],
            "scale": [grey.shape[0] / plane.shape[0], grey.shape[1] / plane.shape[1]],
            **intensity_info,
        })
        if nonfinite:
            extra["nonfinite_pixels"] = nonfinite
        if chosen[i]:
            extra["target_slices"] = chosen[i]
        out.append(Slice2D(
            source=sample.source,
            sample_id=f"{sample.sample_id}#{axis_name}{i}",
            files=sample.files,
            group=sample.group,
            rgb=to_rgb(grey),
            labels=() if has_masks else sample.labels,
            target_masks=masks,
            original_task=SEG_3D if has_masks else CLS_2D,
            axis=axis_name,
            slice_index=i,
            extra=extra,
        ))
    return out
