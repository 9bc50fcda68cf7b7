"""Intensity normalisation: any 2D array (grey, 16-bit, float, palette-expanded, RGBA) -> RGB uint8.

CT data is windowed (width/level in Hounsfield units, presets in ``config.CT_WINDOWS``); MR and
other high-bit-depth data are clipped at percentiles of their non-zero pixels; 8-bit data is kept
as it is so photographs are reproduced exactly.

NaN and +/-inf values (float NIfTI, float TIFF) are not data: they are left out of percentiles
and shown at the window floor (0). One NaN must not turn every percentile into NaN and the whole
image black, nor one inf saturate it. Whether such pixels are allowed at all is the source's
``intensity.nonfinite`` rule, applied by the pipeline (:mod:`gmai_build.sanity`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from .schemas import Strict

CT_WINDOWS: dict[str, tuple[float, float]] = {  # name -> (width, level) in HU
    "soft_tissue": (400, 40),
    "lung": (1500, -600),
    "bone": (2500, 480),
    "brain": (80, 40),
    "liver": (150, 90),
}


class Window(Strict):
    width: float = Field(gt=0)
    level: float


class IntensityConfig(Strict):
    """How a 3D (or 16-bit) image becomes 8-bit: a CT window or a percentile clip."""

    window: Literal["soft_tissue", "lung", "bone", "brain", "liver"] | Window | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    nonfinite: Literal["floor", "error"] = Field(
        default="floor",
        description="NaN/inf pixels: 'floor' ignores them in percentiles and shows them at the "
        "window floor (black), counted in the summary; 'error' stops naming the file and count",
    )

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        return v

    def window_width_level(self) -> tuple[float, float] | None:
        if self.window is None:
            return None
        if isinstance(self.window, Window):
            return (self.window.width, self.window.level)
        return CT_WINDOWS[self.window]



def to_byte_range(scaled: np.ndarray) -> np.ndarray:
    """Float values in 0..255 units -> uint8, non-finite values at the floor (0)."""
    out = np.clip(np.rint(scaled), 0, 255)
    out[~np.isfinite(out)] = 0
    return out.astype(np.uint8)


def window(array: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map [level - width/2, level + width/2] linearly onto 0..255 (DICOM-style clipping)."""
    low = level - width / 2.0
    scaled = (array.astype(np.float64) - low) / width * 255.0
    return to_byte_range(scaled)


def finite_percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float] | None:
    """Percentiles of the finite non-zero values (None when there are none); hi > lo."""
    data = values[values != 0]
    if data.dtype.kind in "fc":
        data = data[np.isfinite(data)]
    if data.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(data, [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def percentile_clip(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip to percentiles of the finite non-zero pixels (background excluded), scale to 0..255."""
    data = array.astype(np.float64)
    bounds = finite_percentiles(data, low, high)
    if bounds is None:
        return np.zeros(array.shape, np.uint8)
    lo, hi = bounds
    return to_byte_range((data - lo) / (hi - lo) * 255.0)


def to_uint8(array: np.ndarray, intensity: IntensityConfig, is_ct: bool = False) -> np.ndarray:
    """One channel or RGB array of any dtype -> uint8, by the source's declared rule."""
    ww = intensity.window_width_level()
    if ww is not None:
        return window(array, *ww)
    if is_ct:  # CT without a declared window: soft tissue is the safe default
        return window(array, 400, 40)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    return percentile_clip(array, *intensity.percentiles)


def to_rgb(array: np.ndarray) -> np.ndarray:
    """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> HxWx3 uint8 (alpha composited over black)."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.uint16)
        return ((array[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    raise ValueError(f"cannot make an RGB image from an array of shape {array.shape}")


def normalize_2d(array: np.ndarray, intensity: IntensityConfig, is_ct: bool = False) -> np.ndarray:
    """Any 2D image array -> HxWx3 uint8 RGB."""
    if array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype != np.uint8:
        # High bit-depth colour: scale all channels together to keep the hue.
        colour = to_uint8(array[:, :, :3], intensity, is_ct)
        return to_rgb(colour)
    return to_rgb(to_uint8(array, intensity, is_ct))
