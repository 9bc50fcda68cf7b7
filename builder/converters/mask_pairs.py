"""2D image + mask image pairs (``mask_pairs``): ISIC, Kvasir-SEG, DRIVE, most Kaggle seg sets.

Images are found with a glob relative to the source root (``images``); each image's mask path
comes from a pattern (``masks``) with placeholders ``{stem}`` (file name without suffix),
``{name}`` (file name) and ``{parent}`` (the image's folder relative to the root), e.g.
``masks/{stem}_mask.png``. Mask pixel values become raw labels ``str(value)`` (0 = background)
unless ``mask_labels`` names them (``{255: lesion}``); colour masks need ``colors`` mapping
``"#rrggbb"`` to a raw label. Lossy (JPEG) binary masks can be cleaned with ``threshold``.
The mask must have the image's exact size: a resized mask would not line up, so it is an error
naming both files. The group (VAL/TEST split unit) is the image file stem.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import BuildError
from ..image2d import IMAGE_SUFFIXES, image_size, read_image
from ..samples import Sample
from .base import Converter, Item, register


class MaskPairOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: str = Field(description="glob of images relative to the root, e.g. images/*.jpg")
    masks: str = Field(description="mask path pattern, e.g. masks/{stem}_mask.png")
    mask_labels: dict[int, str] | None = Field(
        default=None, description="mask value -> raw label (default str(value))")
    colors: dict[str, str] | None = Field(
        default=None, description="'#rrggbb' -> raw label, for RGB masks")
    threshold: int | None = Field(default=None, ge=0, description="value > threshold -> 1 (JPEG masks)")
    missing_mask: str = Field(default="error", pattern="^(error|skip)$",
                              description="an image without a mask: error, or skip it")

    @field_validator("colors")
    @classmethod
    def _hex(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            for key in v:
                _parse_hex(key)
        return v


def _parse_hex(text: str) -> tuple[int, int, int]:
    s = text.strip().lstrip("#")
    if len(s) != 6:
        raise ValueError(f"colour '{text}' is not #rrggbb")
    try:
        return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)
    except ValueError:
        raise ValueError(f"colour '{text}' is not #rrggbb") from None


@register
class MaskPairs(Converter):
    """2D image + mask image pairs: images glob, mask path pattern with {stem}/{name}/{parent}."""

    format = "mask_pairs"
    Options = MaskPairOptions

    def _mask_for(self, image: Path) -> Path:
        opts: MaskPairOptions = self.options  # type: ignore[assignment]
        parent = image.parent.relative_to(self.root).as_posix()
        try:
            rel = opts.masks.format(stem=image.stem, name=image.name, parent=parent)
        except (KeyError, IndexError, ValueError) as exc:
            raise self.error(f"options.masks '{opts.masks}': unknown placeholder {exc} "
                             "(use {stem}, {name}, {parent})") from None
        return self.root / rel

    def discover(self) -> Iterator[Item]:
        opts: MaskPairOptions = self.options  # type: ignore[assignment]
        pattern = (self.root / opts.images).as_posix()
        images = sorted(
            Path(p) for p in glob.glob(pattern, recursive=True)
            if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES
        )
        mask_paths = {self._mask_for(p) for p in images}
        images = [p for p in images if p not in mask_paths]  # a broad glob may catch the masks
        if not images:
            raise self.error(f"no images match options.images '{opts.images}'", self.root)
        for image in images:
            mask = self._mask_for(image)
            if not mask.is_file():
                if opts.missing_mask == "skip":
                    self.note("no mask for this image (missing_mask: skip)", image, kind="skipped")
                    continue
                self.bad_item(f"no mask for this image: expected {mask} (options.masks "
                              f"'{opts.masks}'; set missing_mask: skip to ignore)", image)
                continue
            rel = self.relative(image)
            yield Item(key=rel, paths=(rel, self.relative(mask)), group=image.stem)

    def load(self, item: Item) -> Iterator[Sample]:
        image_path, mask_path = self.path(item.paths[0]), self.path(item.paths[1])
        image = self.read_2d(image_path)
        try:
            mask = read_image(mask_path, max_pixels=self.max_pixels)
        except ValueError as exc:
            raise self.error(f"mask: {exc}", mask_path) from None
        if mask.shape[:2] != image.shape[:2]:
            raise self._size_error(image_path, mask_path, image.shape[1::-1], mask.shape[1::-1])
        label_mask, mask_labels = self._labels(mask, mask_path)
        yield Sample(
            source=self.source,
            sample_id=item.key,
            files=item.paths,
            group=item.group or Path(item.key).stem,
            image=image,
            label_mask=label_mask,
            mask_labels=mask_labels,
        )

    def _size_error(self, image_path: Path, mask_path: Path, image_wh: tuple[int, ...],
                    mask_wh: tuple[int, ...]) -> BuildError:
        return self.error(
            f"mask {mask_path} is {mask_wh[0]}x{mask_wh[1]} but image {image_path} is "
            f"{image_wh[0]}x{image_wh[1]}; masks must be in the image's pixel grid", mask_path)

    def problems_without_pixels(self, item: Item) -> list[str]:
        """A mask of another size than its image, seen in the two files' headers."""
        image_path, mask_path = self.path(item.paths[0]), self.path(item.paths[1])
        try:
            image_wh, mask_wh = image_size(image_path), image_size(mask_path)
        except ValueError:
            return []  # an unreadable file is reported by the file check
        if image_wh != mask_wh:
            return [str(self._size_error(image_path, mask_path, image_wh, mask_wh))]
        return []

    def _labels(self, mask: np.ndarray, mask_path: Path) -> tuple[np.ndarray, dict[int, str]]:
        """Integer label mask (0 = background) and its value -> raw label table."""
        opts: MaskPairOptions = self.options  # type: ignore[assignment]
        if mask.ndim == 3 and mask.shape[2] == 4:
            mask = mask[..., :3]  # alpha carries no label
        if opts.colors:
            if mask.ndim != 3:
                raise self.error("options.colors is set but the mask is single-channel", mask_path)
            out = np.zeros(mask.shape[:2], np.int32)
            labels: dict[int, str] = {}
            for k, (hex_colour, raw) in enumerate(sorted(opts.colors.items()), start=1):
                rgb = np.array(_parse_hex(hex_colour), dtype=mask.dtype)
                out[np.all(mask == rgb, axis=2)] = k
                labels[k] = raw
            stray = np.any(mask != 0, axis=2) & (out == 0)
            if stray.any():
                ys, xs = np.nonzero(stray)
                colour = "#" + "".join(f"{int(c):02x}" for c in mask[ys[0], xs[0]])
                raise self.error(f"{int(stray.sum())} mask pixels have a colour not in options.colors "
                                 f"(first: {colour} at x={xs[0]}, y={ys[0]})", mask_path)
            return out, labels
        if mask.ndim == 3:
            grey = np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])
            if not grey and opts.threshold is None:
                raise self.error("colour mask: give options.colors ('#rrggbb': label)", mask_path)
            mask = mask[..., 0] if opts.threshold is None else mask.max(axis=2)
        if opts.threshold is not None:
            mask = (mask > opts.threshold).astype(np.int32)
        elif not np.issubdtype(mask.dtype, np.integer):
            raise self.error(f"mask values must be integers, got {mask.dtype}", mask_path)
        labels = {int(k): str(v) for k, v in (opts.mask_labels or {}).items()}
        return mask.astype(np.int64), labels
