"""DICOM image series + RTSTRUCT -> one 3D sample per structure set, one mask per ROI.

Options (YAML): ``images`` is a folder or glob (relative to the root) holding the image series,
``structs`` a glob of the RTSTRUCT files (both default to the whole root; objects of other kinds
are skipped).

Each RTSTRUCT names its image series through ReferencedFrameOfReferenceSequence >
RTReferencedStudySequence > RTReferencedSeriesSequence (else through the SOP instances its
contours reference, else through a FrameOfReferenceUID that only one series has). Every
CLOSED_PLANAR contour (ContourData, patient LPS mm) is mapped to native voxel coordinates with
the inverse of the series' affine and filled on its slice: the slice is the referenced image
(ContourImageSequence) or, without a reference, the slice whose plane holds the points. Filling
is even-odd: every contour of a ROI on a slice is XOR-ed into that slice, so a contour inside
another is a hole (the RTSTRUCT convention), and pixels count when their centre is inside the
polygon (skimage.draw.polygon). POINT and OPEN_PLANAR contours enclose nothing and are skipped.

The raw label of a mask is the ROI's ROIName (StructureSetROISequence, joined on ROINumber); ROIs
may overlap, so each is its own boolean mask in ``Sample.target_masks``.

Partial series (a clinical export with a few of the planned slices): a contour whose referenced
image is not on disk, or whose plane holds no slice on disk, is skipped and counted in the
summary; ROIs the label map drops are never read; an ROI left with no usable slice is an error
naming it (a skip under ``on_error: skip``). An ROI without any contour is listed too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset
from skimage.draw import polygon

from ..dicom_io import RTSTRUCT_SOP_CLASS, DicomError, DicomSeries
from .base import register
from .dicom_series import (
    ImageIndex,
    SeriesAnnotationConverter,
    ignore_note,
    keep_all,
    raise_dicom_error,
)

PLANE_TOLERANCE = 0.25  # max distance (in slices) of contour points from their slice's plane


class RtstructOptions(BaseModel):
    """Options of ``format: dicom_rtstruct``."""

    model_config = ConfigDict(extra="forbid")
    images: str = Field(default=".", description="folder or glob (relative to root) holding the image series")
    structs: str = Field(
        default="**/*", description="glob (relative to root) of RTSTRUCT files; other files are ignored")


def is_rtstruct(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS or str(ds.get("Modality", "")) == "RTSTRUCT"


def _contour_image_uids(ds: Dataset) -> list[str]:
    uids = []
    for roi in ds.get("ROIContourSequence", []) or []:
        for c in roi.get("ContourSequence", []) or []:
            for img in c.get("ContourImageSequence", []) or []:
                uids.append(str(img.get("ReferencedSOPInstanceUID", "")))
    return uids


def referenced_series(ds: Dataset, index: ImageIndex) -> tuple[str | None, str]:
    """The SeriesInstanceUID an RTSTRUCT is drawn on, and how it was found."""
    for frame_ref in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for study in frame_ref.get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                uid = str(series.get("SeriesInstanceUID", ""))
                if uid:
                    return uid, "RTReferencedSeriesSequence"
    for uid in _contour_image_uids(ds):
        if uid in index.sop_to_series:
            return index.sop_to_series[uid], "ContourImageSequence"
    rois = ds.get("StructureSetROISequence", []) or []
    fors = {str(r.get("ReferencedFrameOfReferenceUID", "")) for r in rois}
    candidates = set().union(*(index.frame_of_reference.get(f, set()) for f in fors if f)) if fors else set()
    if len(candidates) == 1:
        return next(iter(candidates)), "FrameOfReferenceUID"
    return None, "no RTReferencedSeriesSequence, contour images or unique FrameOfReferenceUID"


def roi_names_with_contours(ds: Dataset) -> list[str]:
    """ROIName of every ROI with at least one CLOSED_PLANAR contour of three or more points."""
    names = {int(r.ROINumber): str(r.get("ROIName", "") or r.ROINumber).strip()
             for r in ds.get("StructureSetROISequence", []) or []}
    out = []
    for roi in ds.get("ROIContourSequence", []) or []:
        closed = [c for c in roi.get("ContourSequence", []) or []
                  if str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper() == "CLOSED_PLANAR"
                  and len(c.get("ContourData", []) or []) >= 9]
        if closed:
            number = int(roi.ReferencedROINumber)
            out.append(names.get(number, str(number)))
    return out


def roi_masks(
    ds: Dataset, series: DicomSeries, path: Path,
    wanted: Callable[[str], bool] = keep_all,
    note: Callable[..., None] = ignore_note,
    no_usable_slice: Callable[[str, Path], None] = raise_dicom_error,
) -> dict[str, np.ndarray]:
    """Boolean masks (canonical LPS+ grid of ``series``) per ROIName of one RTSTRUCT.

    ``wanted(name)`` is False for ROIs the label map drops: their contours are not read.
    Contours on slices not on disk are counted through ``note``; an ROI with contours but no
    usable one goes to ``no_usable_slice`` (an error by default).
    """
    names = {int(r.ROINumber): str(r.get("ROIName", "") or r.ROINumber).strip()
             for r in ds.get("StructureSetROISequence", []) or []}
    n_i, n_j, n_k = series.native_shape
    present = set(series.sop_uids)
    masks: dict[str, np.ndarray] = {}
    for roi in ds.get("ROIContourSequence", []) or []:
        number = int(roi.ReferencedROINumber)
        if number not in names:
            raise DicomError(f"ROIContourSequence references ROI number {number}, which is not in "
                             "StructureSetROISequence", path)
        name = names[number]
        if not wanted(name):
            continue  # dropped by the label map: its contours are never read
        native = np.zeros(series.native_shape, bool)
        contours = roi.get("ContourSequence", []) or []
        off_disk = no_area = 0
        for c_no, contour in enumerate(contours, start=1):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
                no_area += 1
                continue
            data = [float(v) for v in contour.get("ContourData", [])]
            if len(data) < 9 or len(data) % 3:
                no_area += 1  # fewer than three points enclose nothing
                continue
            ijk = series.world_to_native(np.asarray(data).reshape(-1, 3))
            k = None
            images = contour.get("ContourImageSequence", []) or []
            refs = [str(i.get("ReferencedSOPInstanceUID", "")) for i in images]
            for uid in refs:
                k = series.native_index(uid)
                if k is not None:
                    break
            if k is None and refs and not present.intersection(refs):
                off_disk += 1  # its image is not on disk (partial export)
                continue
            if k is None:
                k_float = float(np.mean(ijk[:, 2]))
                k = int(round(k_float))
                if not (0 <= k < n_k) or abs(k_float - k) > PLANE_TOLERANCE:
                    off_disk += 1  # no slice on disk at its position
                    continue
            if np.max(np.abs(ijk[:, 2] - k)) > PLANE_TOLERANCE:
                raise DicomError(f"ROI '{name}' contour {c_no} is not in the plane of its image "
                                 f"slice (off by {np.max(np.abs(ijk[:, 2] - k)):.2f} slices)", path)
            rr, cc = polygon(ijk[:, 1], ijk[:, 0], shape=(n_j, n_i))  # rows = j, columns = i
            native[cc, rr, k] ^= True  # even-odd: holes and nested contours cancel
        if off_disk:
            note(f"ROI '{name}': {off_disk} of {len(contours)} contour(s) lie on slices that are "
                 "not on disk: skipped", path, off_disk)
        if no_area:
            note(f"ROI '{name}': {no_area} POINT/OPEN or degenerate contour(s) enclose nothing",
                 path, no_area)
        if not contours:
            note(f"ROI '{name}' has no contour", path)
            continue
        if not native.any():
            if off_disk:
                no_usable_slice(f"ROI '{name}' has no contour on a slice that is on disk "
                                f"({off_disk} of {len(contours)} contour(s) reference slices "
                                f"not on disk; {len(series.sop_uids)} slice(s) present)", path)
            else:
                note(f"ROI '{name}' covers no pixel centre on any slice", path)
            continue
        m = series.to_canonical(native)
        masks[name] = masks[name] | m if name in masks else m
    return masks


@register
class DicomRtstruct(SeriesAnnotationConverter):
    """``format: dicom_rtstruct``: image series + RTSTRUCT -> one volume sample per RTSTRUCT."""

    format = "dicom_rtstruct"
    Options = RtstructOptions
    kind = "RTSTRUCT"
    objects_option = "structs"

    def is_annotation(self, ds: Dataset) -> bool:
        return is_rtstruct(ds)

    def referenced_series(self, ds: Dataset, index: ImageIndex) -> tuple[str | None, str]:
        return referenced_series(ds, index)

    def masks(self, ds: Dataset, series: DicomSeries, path: Path) -> dict[str, np.ndarray]:
        return roi_masks(ds, series, path, self.wanted, self.note, self.bad_item)

    def header_labels(self, ds: Dataset) -> tuple[str, ...]:
        """ROINames of the ROIs that have a closed contour (the others yield no mask)."""
        return tuple(dict.fromkeys(roi_names_with_contours(ds)))
