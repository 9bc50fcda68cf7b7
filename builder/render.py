"""Visual prompts drawn on the image: a thin box, a semi-transparent mask, a solid contour.

Styles follow the published GMAI-MMBench images; questions never name the colour. Everything is
computed on the image's own pixel grid, so overlays line up with the source annotation exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_RGB = (255, 0, 0)  # red reads on grey-scale medical images and on most photographs
MASK_ALPHA = 0.4
# cv2.imencode parameters of every output PNG: OpenCV's default (zlib level 1, Z_RLE strategy).
# Measured trade-off of explicit levels in docs/SCALING.md (bench/build_throughput.py --png-levels).
PNG_PARAMS: list[int] = []


def _scale(rgb: np.ndarray) -> int:
    return max(rgb.shape[:2])


def draw_box(rgb: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Thin rectangle whose inner edge follows the box [x0, x1) x [y0, y1)."""
    out = rgb.copy()
    thickness = max(1, round(_scale(rgb) / 400))
    p0 = (int(round(x0)), int(round(y0)))
    p1 = (max(p0[0], int(round(x1)) - 1), max(p0[1], int(round(y1)) - 1))
    cv2.rectangle(out, p0, p1, OVERLAY_RGB, thickness, lineType=cv2.LINE_8)
    return out


def draw_mask(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend the overlay colour into exactly the mask's pixels (alpha MASK_ALPHA)."""
    out = rgb.copy()
    m = mask.astype(bool)
    colour = np.array(OVERLAY_RGB, np.float64)
    blended = rgb[m].astype(np.float64) * (1 - MASK_ALPHA) + colour * MASK_ALPHA
    out[m] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def contour_thickness(rgb: np.ndarray) -> int:
    return max(2, round(_scale(rgb) / 200))


def draw_contour(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Solid outline of every connected part of the mask (holes included)."""
    out = rgb.copy()
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
    )
    cv2.drawContours(out, contours, -1, OVERLAY_RGB, contour_thickness(rgb), lineType=cv2.LINE_8)
    return out


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG of an RGB image (cv2 encodes BGR, as the GMAI-MMBench authors did)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), PNG_PARAMS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_png` (RGB uint8)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
