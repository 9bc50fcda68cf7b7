"""From a normalised 2D image to cases: one per (image, target, granularity).

* image-level labels -> one Image Level case per label;
* each segmentation target -> a Mask Level and a Contour Level case (same ``pair_id``);
* each box (or each connected component of a mask, when ``boxes_from_masks`` is set) -> a Box
  Level case, unless it overlaps a box of another label so much that the question is ambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydantic import Field

from .dedup import image_phash
from .render import draw_box, draw_contour, draw_mask, encode_png
from .samples import (
    BOX_LEVEL,
    CONTOUR_LEVEL,
    DET_2D,
    IMAGE_LEVEL,
    MASK_LEVEL,
    Box,
    Case,
    Slice2D,
)
from .schemas import Strict
from .taxonomy import LabelMap, StandardLabel

if TYPE_CHECKING:
    from .config import SourceConfig

AMBIGUOUS_BOX_IOU = 0.5


class TargetLimits(Strict):
    """Which marked areas are fit to ask about, in pixels of the image before upscaling.

    A mask or box below ``min_area`` pixels or thinner than ``min_extent`` pixels in either
    direction is not asked about (a 1-pixel sliver of a segment is no question); such cases
    are counted in the summary. A Box question never offers a label whose own annotated box
    covers more than ``box_overlap`` of the smaller of the two boxes (it may be inside the
    marked area too, as image-level questions never offer another true label).
    """

    min_area: int = Field(default=64, ge=1)
    min_extent: int = Field(default=4, ge=1)
    box_overlap: float = Field(default=0.25, ge=0, le=1)


class BoxesFromMasks(Strict):
    """Derive Box-level cases from segmentation masks by connected components."""

    min_area: int = Field(default=20, ge=1)


def stable_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:20]


def box_coverage(a: Box, b: Box) -> float:
    """Intersection over the smaller box: 1 when one box lies inside the other."""
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    smaller = min(a.area, b.area)
    return ix * iy / smaller if smaller > 0 else 0.0


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def keep_all(pair_id: str, case_id: str, label: str, granularity: str) -> bool:
    """Draw every case (a module function, unlike a lambda, pickles)."""
    return True


class CaseMaker:
    """Turns Slice2D objects of one source into Cases (labels standardised, overlays drawn)."""

    def __init__(self, source: SourceConfig, label_map: LabelMap):
        self.source = source
        self.label_map = label_map
        # Asked before drawing and encoding a case: (pair_id, case_id, label, granularity) ->
        # False when the per-label cap can no longer select it. Such cases are still returned
        # (their labels feed the distractor pools) but with ``png=b""`` and ``rendered=False``.
        self.keep: Callable[[str, str, str, str], bool] = keep_all
        self._hashed: tuple[Slice2D | None, str] = (None, "")

    def _std(self, raw: str, s: Slice2D) -> StandardLabel | None:
        return self.label_map.lookup(raw, file=s.files[0] if s.files else None)

    def _case(
        self, s: Slice2D, std: StandardLabel, raw: str, granularity: str,
        render: Callable[[], bytes], region: dict, pair_key: str, original_task: str,
        exclude: tuple[str, ...] = (), skipped: str = "",
    ) -> Case:
        # A target's identity is where it is (source, sample, raw label, region), not the answer:
        # when a label map or vocabulary change renames the answer, the question keeps its id
        # and index and is regenerated (rebuild.py).
        pair_id = stable_id(s.source, s.sample_id, raw, pair_key)
        case_id = stable_id(pair_id, granularity)
        for key in ("max_side_scale", "min_side_scale"):  # region coordinates are rescaled
            if key in s.extra:
                region = {**region, key: s.extra[key]}
        keep = not skipped and self.keep(pair_id, case_id, std.label, granularity)
        png = render() if keep else b""
        return Case(
            case_id=case_id,
            pair_id=pair_id,
            source=s.source,
            sample_id=s.sample_id,
            files=s.files,
            group=s.group,
            granularity=granularity,
            original_task=original_task,
            raw_label=raw,
            label=std.label,
            task=std.task,
            department=std.department,
            modality=self.source.modality,
            png=png,
            rendered=keep,
            region=region,
            axis=s.axis,
            slice_index=s.slice_index,
            exclude=exclude,
            phash=self._phash(s) if keep else "",
            skipped=skipped,
        )

    def _phash(self, s: Slice2D) -> str:
        """The slice's hash without overlay, computed once per slice (all its cases share it)."""
        if self._hashed[0] is not s:
            self._hashed = (s, image_phash(s.rgb))
        return self._hashed[1]

    def too_small(self, s: Slice2D, width: float, height: float, area: float) -> str:
        """The reason a marked area is not fit to ask about, or "" when it is.

        Sizes count pixels of the image before any upscaling (a 1-pixel sliver stays one
        pixel of information however large it is drawn). Thickness is the smaller side of the
        bounding box and, for a mask, its mean width (area / longer side), so a 1-pixel
        diagonal line is as thin as a 1-pixel row.
        """
        sy, sx = s.extra.get("min_side_scale", (1.0, 1.0))
        width, height, area = width / sx, height / sy, area / (sx * sy)
        lim = self.source.targets
        if min(width, height, area / max(width, height, 1)) < lim.min_extent:
            return f"marked area thinner than {lim.min_extent} px"
        if area < lim.min_area:
            return f"marked area below {lim.min_area} px"
        return ""

    def cases(self, s: Slice2D) -> Iterator[Case]:
        yield from self._image_level(s)
        yield from self._segmentation(s)
        yield from self._boxes(s)

    def _image_level(self, s: Slice2D) -> Iterator[Case]:
        if not s.labels:
            return
        stds = [(raw, self._std(raw, s)) for raw in s.labels]
        kept = [(raw, std) for raw, std in stds if std is not None]
        true_labels = tuple(sorted({std.label for _, std in kept}))
        encoded: list[bytes] = []

        def png() -> bytes:  # one encoding shared by all labels of the image
            if not encoded:
                encoded.append(encode_png(s.rgb))
            return encoded[0]

        seen: set[str] = set()
        for raw, std in kept:
            if std.label in seen:
                continue
            seen.add(std.label)
            others = tuple(x for x in true_labels if x != std.label)
            yield self._case(s, std, raw, IMAGE_LEVEL, png, {}, "image", s.original_task, others)

    def _merged_masks(self, s: Slice2D) -> dict[str, tuple[StandardLabel, str, np.ndarray]]:
        """Canonical label -> (std, raw labels, union mask): 'left/right kidney' -> 'kidney'."""
        merged: dict[str, tuple[StandardLabel, str, np.ndarray]] = {}
        for raw, mask in sorted(s.target_masks.items()):
            std = self._std(raw, s)
            if std is None or not mask.any():
                continue
            if std.label in merged:
                old_std, old_raw, old_mask = merged[std.label]
                merged[std.label] = (old_std, f"{old_raw}+{raw}", old_mask | mask)
            else:
                merged[std.label] = (std, raw, mask.astype(bool))
        return merged

    def _segmentation(self, s: Slice2D) -> Iterator[Case]:
        if not s.target_masks:
            return
        merged = self._merged_masks(s)
        all_labels = tuple(sorted(merged))
        for label, (std, raw, mask) in merged.items():
            ys, xs = np.nonzero(mask)
            region = {
                "mask_area": int(mask.sum()),
                "mask_bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
            }
            x0, y0, x1, y1 = region["mask_bbox"]
            small = self.too_small(s, x1 - x0, y1 - y0, region["mask_area"])
            if s.extra.get("target_slices"):
                region["slice_policy"] = s.extra["target_slices"].get(raw)
            others = tuple(x for x in all_labels if x != label and _overlaps(mask, merged[x][2]))
            if self.source.segmentation:
                for granularity, draw in ((MASK_LEVEL, draw_mask), (CONTOUR_LEVEL, draw_contour)):
                    yield self._case(
                        s, std, raw, granularity,
                        lambda draw=draw, mask=mask: encode_png(draw(s.rgb, mask)),
                        region, "segment", s.original_task, others, skipped=small,
                    )
            if self.source.boxes_from_masks is not None:
                yield from self._component_boxes(s, std, raw, mask, others)

    def _component_boxes(
        self, s: Slice2D, std: StandardLabel, raw: str, mask: np.ndarray, others: tuple[str, ...]
    ) -> Iterator[Case]:
        min_area = self.source.boxes_from_masks.min_area  # type: ignore[union-attr]
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for k in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[k])
            if area < min_area:
                continue
            box = Box(x, y, x + w, y + h, raw)
            region = {"box": [x, y, x + w, y + h], "component_area": area}
            yield self._case(
                s, std, raw, BOX_LEVEL, lambda box=box: encode_png(draw_box(s.rgb, *box_xyxy(box))),
                region,
                f"component:{x},{y},{w},{h}", s.original_task, others,
                skipped=self.too_small(s, w, h, w * h),
            )

    def _boxes(self, s: Slice2D) -> Iterator[Case]:
        h, w = s.rgb.shape[:2]
        boxes = [b.clipped(w, h) for b in s.boxes]
        stds = [self._std(b.raw_label, s) for b in boxes]
        limit = self.source.targets.box_overlap
        for i, (box, std) in enumerate(zip(boxes, stds)):
            if std is None or box.area <= 0:
                continue
            others = [(boxes[j], o.label) for j, o in enumerate(stds)
                      if j != i and o is not None and o.label != std.label]
            ambiguous = any(box_iou(box, b) > AMBIGUOUS_BOX_IOU for b, _ in others)
            covering = tuple(sorted({label for b, label in others if box_coverage(box, b) > limit}))
            region = {"box": [round(v, 2) for v in box_xyxy(box)]}
            small = self.too_small(s, box.x1 - box.x0, box.y1 - box.y0, box.area)
            yield self._case(
                s, std, box.raw_label, BOX_LEVEL,
                lambda box=box: encode_png(draw_box(s.rgb, *box_xyxy(box))),
                region, f"box:{i}:{box_xyxy(box)}", DET_2D, covering,
                skipped="box overlaps another label's box (IoU > 0.5)" if ambiguous else small,
            )


def box_xyxy(b: Box) -> tuple[float, float, float, float]:
    return (b.x0, b.y0, b.x1, b.y1)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """Another target that covers most of this one would also be a right answer."""
    inter = np.logical_and(a, b).sum()
    return bool(inter > 0.5 * min(a.sum(), b.sum()))


