"""Reading 2D image files (PNG, JPEG, BMP, TIFF) into arrays, with clear errors.

Pillow decodes every mode (palette, 16-bit grey, RGBA, CMYK); palette images are expanded to
their colours. The caller turns the array into RGB uint8 with :func:`normalize.normalize_2d`.

The image size is read from the header and checked against the pixel budget (``max_pixels``)
before anything is decoded, so a decompression bomb (a small file that declares a huge image)
is an error naming the file, not an exhausted machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS = 100_000_000


def over_budget(shape: tuple[int, ...], max_pixels: int) -> str | None:
    """The error text when an image of ``shape`` (W, H or more) exceeds the pixel budget."""
    pixels = int(np.prod([int(n) for n in shape], dtype=object))
    if pixels > max_pixels:
        dims = "x".join(str(int(n)) for n in shape)
        return (f"image of {dims} = {pixels:,} pixels exceeds the pixel budget of "
                f"{max_pixels:,} (build.max_pixels; checked before decoding)")
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a 2D image file from its header alone (no pixel decoding)."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image: {exc}") from exc


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Pixel array of a 2D image file: HxW (grey, any bit depth) or HxWx3/4 (uint8 colour)."""
    try:
        with Image.open(path) as img:
            too_big = over_budget(img.size, max_pixels)
            if too_big:
                raise ValueError(too_big)
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif mode == "LA":
                img = img.convert("RGBA")
            elif mode == "1":
                img = img.convert("L")
            elif mode == "PA":
                img = img.convert("RGBA")
            array = np.asarray(img)
    except ValueError as exc:
        if "pixel budget" in str(exc):
            raise
        raise ValueError(f"cannot read image: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image: {exc}") from exc
    if array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(f"unexpected image shape {array.shape}")
    return array
