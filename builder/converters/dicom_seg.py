"""DICOM image series + DICOM SEG objects -> one 3D sample per SEG, one mask per segment.

Options (YAML): ``images`` is a folder or glob (relative to the root) holding the image series,
``segs`` a glob of the SEG files; both default to the whole root (non-image objects are skipped
when scanning for images, non-SEG objects when scanning for SEGs).

Each SEG names the image series it annotates (ReferencedSeriesSequence; else the series of the
SOP instances its frames derive from). Frames are placed on the source slices they reference
(DerivationImageSequence > SourceImageSequence > ReferencedSOPInstanceUID [+ frame number]); when
a frame references nothing it is placed by its PlanePositionSequence position on the slice
normal. Frames must share the image's in-plane grid (rows, columns, pixel spacing, orientation,
origin): SEGs on another grid are reported, not resampled.

Segments may overlap, so each segment becomes its own boolean mask in ``Sample.target_masks``
(raw label = SegmentLabel, e.g. "Liver"; segments sharing a label are merged). BINARY SEGs are
used as they are, FRACTIONAL ones are thresholded at half of MaximumFractionalValue, LABELMAP
SEGs compare pixel values with segment numbers. Masks are built in the series' native grid and
reoriented with the image (:meth:`gmai_build.dicom_io.DicomSeries.to_canonical`).

The pixel decoding uses pydicom directly (``pydicom.pixels.pixel_array`` decodes one frame at a
time and unpacks 1-bit frames); the frame-to-slice mapping is done here so that positional
fallback and grid checks report errors that name the SEG file.

Partial series: a frame whose source slice is not on disk (and whose position matches no slice
on disk) is skipped and counted; frames of segments the label map drops are never decoded; a
segment left with no usable frame is an error naming it (a skip under ``on_error: skip``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from ..dicom_io import SEG_SOP_CLASSES, DicomError, DicomSeries, read_header
from .base import Item, register
from .dicom_series import (
    ImageIndex,
    SeriesAnnotationConverter,
    ignore_note,
    keep_all,
    raise_dicom_error,
)


class DicomSegOptions(BaseModel):
    """Options of ``format: dicom_seg``."""

    model_config = ConfigDict(extra="forbid")
    images: str = Field(default=".", description="folder or glob (relative to root) holding the image series")
    segs: str = Field(
        default="**/*", description="glob (relative to root) of the SEG files; non-SEG files are ignored")


def is_seg(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES or str(ds.get("Modality", "")) == "SEG"


def referenced_series(ds: Dataset, index: ImageIndex) -> tuple[str | None, str]:
    """The SeriesInstanceUID a SEG annotates, and how it was found (for error messages)."""
    for item in ds.get("ReferencedSeriesSequence", []) or []:
        uid = str(item.get("SeriesInstanceUID", ""))
        if uid:
            return uid, "ReferencedSeriesSequence"
    for fg in ds.get("PerFrameFunctionalGroupsSequence", []) or []:
        for uid, _ in _frame_sources(fg):
            if uid in index.sop_to_series:
                return index.sop_to_series[uid], "SourceImageSequence"
    for_uid = str(ds.get("FrameOfReferenceUID", ""))
    candidates = index.frame_of_reference.get(for_uid, set()) if for_uid else set()
    if len(candidates) == 1:
        return next(iter(candidates)), "FrameOfReferenceUID"
    return None, "no ReferencedSeriesSequence, source images or unique FrameOfReferenceUID"


def _frame_sources(fg: Dataset) -> list[tuple[str, int | None]]:
    """(ReferencedSOPInstanceUID, ReferencedFrameNumber) of one frame's source images."""
    out = []
    for der in fg.get("DerivationImageSequence", []) or []:
        for src in der.get("SourceImageSequence", []) or []:
            uid = str(src.get("ReferencedSOPInstanceUID", ""))
            frame = src.get("ReferencedFrameNumber")
            if isinstance(frame, (list, tuple)) or (frame is not None and hasattr(frame, "__len__")
                                                     and not isinstance(frame, str)):
                frame = frame[0] if len(frame) else None
            if uid:
                out.append((uid, int(frame) if frame not in (None, "") else None))
    return out


def _macro(ds: Dataset, fg: Dataset | None, seq: str, attr: str):
    for group in (fg, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if group is not None and seq in group and len(group[seq].value) and attr in group[seq].value[0]:
            return group[seq].value[0].get(attr)
    return None


def segment_labels(ds: Dataset) -> dict[int, str]:
    """SegmentNumber -> raw label (SegmentLabel, else SegmentDescription, else the number)."""
    out = {}
    for seg in ds.get("SegmentSequence", []) or []:
        number = int(seg.SegmentNumber)
        label = str(seg.get("SegmentLabel", "") or seg.get("SegmentDescription", "") or number).strip()
        out[number] = label
    return out


def seg_masks(
    seg: Dataset, series: DicomSeries, path: Path,
    wanted: Callable[[str], bool] = keep_all,
    note: Callable[..., None] = ignore_note,
    no_usable_slice: Callable[[str, Path], None] = raise_dicom_error,
) -> dict[str, np.ndarray]:
    """Boolean masks (canonical LPS+ grid of ``series``) per raw segment label of one SEG.

    ``wanted(label)`` is False for segments the label map drops: their frames are not decoded.
    Frames on slices not on disk are counted through ``note``; a segment with frames but no
    usable one goes to ``no_usable_slice`` (an error by default).
    """
    if (int(seg.Rows), int(seg.Columns)) != series.native_shape[1::-1]:
        raise DicomError(f"SEG frames are {seg.Rows}x{seg.Columns} but the image series is "
                         f"{series.native_shape[1]}x{series.native_shape[0]}; resampled SEGs are "
                         "not supported", path)
    labels = segment_labels(seg)
    if not labels:
        raise DicomError("SEG has no SegmentSequence", path)
    n_frames = int(seg.get("NumberOfFrames", 1) or 1)

    def frame_pixels(f: int) -> np.ndarray:
        try:
            return pixel_array(seg, index=f) if n_frames > 1 else seg.pixel_array
        except Exception as exc:
            raise DicomError(f"cannot decode SEG pixel data (frame {f + 1}): "
                             f"{type(exc).__name__}: {exc}", path) from None

    seg_type = str(seg.get("SegmentationType", "BINARY")).upper()
    threshold = 0.5
    if seg_type == "FRACTIONAL":
        threshold = 0.5 * float(seg.get("MaximumFractionalValue", 255) or 255)
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or [None] * n_frames
    if len(per_frame) != n_frames:
        raise DicomError(f"{n_frames} frames but {len(per_frame)} per-frame groups", path)
    keep = {num for num, raw in labels.items() if wanted(raw)}
    iop = _macro(seg, None, "PlaneOrientationSequence", "ImageOrientationPatient")
    if iop is not None and not np.allclose([float(v) for v in iop], series.orientation, atol=1e-3):
        raise DicomError(f"SEG orientation {list(iop)} differs from the image's "
                         f"{series.orientation.tolist()}", path)
    ps = _macro(seg, None, "PixelMeasuresSequence", "PixelSpacing")
    if ps is not None and not np.allclose([float(v) for v in ps], series.pixel_spacing, rtol=1e-3):
        raise DicomError(f"SEG pixel spacing {list(ps)} differs from the image's "
                         f"{list(series.pixel_spacing)}", path)

    native: dict[int, np.ndarray] = {}
    frames_of: dict[int, int] = {}  # segment number -> frames that name it
    off_disk: dict[int, int] = {}  # segment number (0: LABELMAP, all) -> frames not on disk
    for f, fg in enumerate(per_frame):
        if fg is None:
            raise DicomError("SEG without PerFrameFunctionalGroupsSequence", path)
        number = _macro(seg, fg, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        if seg_type != "LABELMAP":
            if number is None:
                raise DicomError(f"frame {f + 1}: no SegmentIdentificationSequence", path)
            number = int(number)
            if number not in labels:
                raise DicomError(f"frame {f + 1}: segment number {number} is not in "
                                 "SegmentSequence", path)
            if number not in keep:
                continue  # dropped by the label map: never decoded
            frames_of[number] = frames_of.get(number, 0) + 1
        elif not keep:
            break
        k = None
        for uid, frame_no in _frame_sources(fg):
            k = series.native_index(uid, frame_no)
            if k is not None:
                break
        ipp = _macro(seg, fg, "PlanePositionSequence", "ImagePositionPatient")
        if ipp is not None:
            ijk = series.world_to_native(np.array([float(v) for v in ipp]))[0]
            if abs(ijk[0]) > 0.5 or abs(ijk[1]) > 0.5:
                raise DicomError(f"frame {f + 1}: origin {list(ipp)} is offset by "
                                 f"({ijk[0]:.2f}, {ijk[1]:.2f}) pixels from the image grid", path)
            if k is None:
                k = series.native_index_at([float(v) for v in ipp])
        if k is None:  # its slice is not on disk (partial series)
            key = 0 if seg_type == "LABELMAP" else number
            off_disk[key] = off_disk.get(key, 0) + 1
            continue
        frame = frame_pixels(f)
        if seg_type == "LABELMAP":
            for num in sorted(keep):
                hit = frame == num
                if hit.any():
                    native.setdefault(num, np.zeros(series.native_shape, bool))[:, :, k] |= hit.T
            continue
        hit = frame >= threshold if seg_type == "FRACTIONAL" else frame > 0
        native.setdefault(number, np.zeros(series.native_shape, bool))[:, :, k] |= hit.T

    for number, n_off in sorted(off_disk.items()):
        what = "LABELMAP" if number == 0 else f"segment '{labels[number]}'"
        total = n_frames if number == 0 else frames_of[number]
        note(f"{what}: {n_off} of {total} frame(s) lie on slices that are not on disk: skipped",
             path, n_off)
    for number in sorted(frames_of):
        if number not in native and off_disk.get(number):
            no_usable_slice(f"segment '{labels[number]}' has no frame on a slice that is on disk "
                            f"({off_disk[number]} of {frames_of[number]} frame(s) reference "
                            f"slices not on disk; {len(series.sop_uids)} slice(s) present)", path)
    masks: dict[str, np.ndarray] = {}
    for number in sorted(native):
        raw = labels[number]
        m = series.to_canonical(native[number])
        masks[raw] = masks[raw] | m if raw in masks else m
    return masks


@register
class DicomSeg(SeriesAnnotationConverter):
    """``format: dicom_seg``: image series + SEG objects -> one volume sample per SEG."""

    format = "dicom_seg"
    Options = DicomSegOptions
    kind = "SEG"
    objects_option = "segs"

    def is_annotation(self, ds: Dataset) -> bool:
        return is_seg(ds)

    def referenced_series(self, ds: Dataset, index: ImageIndex) -> tuple[str | None, str]:
        return referenced_series(ds, index)

    def masks(self, ds: Dataset, series: DicomSeries, path: Path) -> dict[str, np.ndarray]:
        return seg_masks(ds, series, path, self.wanted, self.note, self.bad_item)

    def header_labels(self, ds: Dataset) -> tuple[str, ...]:
        return tuple(dict.fromkeys(segment_labels(ds).values()))

    def problems_without_pixels(self, item: Item) -> list[str]:
        """A SEG on another in-plane grid than its series (size, orientation, pixel spacing),
        seen by comparing the SEG's header with the first image's."""
        seg_path = self.path(item.paths[0])
        try:
            seg, image = read_header(seg_path), read_header(self.path(item.paths[1]))
        except DicomError:
            return []  # the build names an unreadable file when it reads it
        problems = []
        if "Rows" in image and (int(seg.Rows), int(seg.Columns)) != (int(image.Rows), int(image.Columns)):
            problems.append(f"SEG frames are {seg.Rows}x{seg.Columns} but the image series is "
                            f"{image.Rows}x{image.Columns}; resampled SEGs are not supported")
        iop = _macro(seg, None, "PlaneOrientationSequence", "ImageOrientationPatient")
        if iop is not None and "ImageOrientationPatient" in image and not np.allclose(
                [float(v) for v in iop], [float(v) for v in image.ImageOrientationPatient], atol=1e-3):
            problems.append(f"SEG orientation {list(iop)} differs from the image's "
                            f"{list(image.ImageOrientationPatient)}")
        ps = _macro(seg, None, "PixelMeasuresSequence", "PixelSpacing")
        if ps is not None and "PixelSpacing" in image and not np.allclose(
                [float(v) for v in ps], [float(v) for v in image.PixelSpacing], rtol=1e-3):
            problems.append(f"SEG pixel spacing {list(ps)} differs from the image's "
                            f"{list(image.PixelSpacing)}")
        return [str(self.error(p, seg_path)) for p in problems]
