"""DICOM image series -> the canonical LPS+ :class:`~gmai_build.samples.Volume` (pydicom).

What this module does, and why:

* :func:`find_series` scans a folder recursively, reads every header with
  ``stop_before_pixels`` (cheap), skips objects that are not images (SEG, RTSTRUCT, RT plans/doses,
  SR, presentation states, ... by SOP Class or Modality) and groups image files by
  SeriesInstanceUID. A file that looks like DICOM (``.dcm``/``.dicom``/``.ima`` or no suffix) but
  cannot be read raises :class:`DicomError` naming the file and the reason, so a corrupt download
  is never silently half-used.
* :func:`read_series` reads one series (single-frame files, or one enhanced/legacy-converted
  multi-frame file with per-frame ``PlanePositionSequence``) into a :class:`DicomSeries`:

  1. slices are ordered by ``ImagePositionPatient`` projected on the slice normal
     ``n = row_cosines x col_cosines`` (ImageOrientationPatient). InstanceNumber is NOT used: it
     is an acquisition counter that scanners and anonymisers renumber freely.
  2. RescaleSlope/Intercept (the modality LUT) is applied per slice: CT comes out in Hounsfield
     units (int16 when slope 1 and integral intercepts keep it exact, else float32).
  3. geometry: in-plane spacing from PixelSpacing (row spacing, column spacing), the slice step
     from the sorted positions (the mean step vector, so gantry tilt is kept in the affine);
     duplicate positions (multi-echo / 4D series) are an error, uneven gaps are a warning.
  4. the native voxel grid ``[column i, row j, slice k]`` gets the affine
     ``[row_cos * dc, col_cos * dr, step, IPP_first]`` (LPS millimetres, DICOM's patient
     frame), then is reoriented to the project's canonical LPS+ ``[x, y, z]`` order with
     nibabel's ``io_orientation`` on that affine: each voxel axis goes to the patient axis it is
     CLOSEST to and is flipped to increase towards L, P, S. For oblique acquisitions this is a
     permutation/flip only (no resampling): the returned affine keeps the true oblique geometry,
     and the array is "closest to" LPS+ (as SimpleITK's ``DICOMOrient('LPS')`` does).

  The result also maps every source slice (SOPInstanceUID, and (SOPInstanceUID, frame number)
  for multi-frame) to its native slice index and to its index in the canonical volume, which
  DICOM SEG and RTSTRUCT need to put their frames/contours on the right slice.

Masks for the same series are built in the native grid (``[i, j, k]``, k = sorted slice) and
moved to the canonical grid with :meth:`DicomSeries.to_canonical`, the exact same transform as
the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import BuildError
from .samples import Volume

# Objects that carry no image to slice: segmentation, RT, structured reports, states, ...
NON_IMAGE_MODALITIES = {
    "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE_NO", "SR", "PR", "KO", "REG",
    "FID", "RWV", "DOC", "PLAN", "AU", "ECG", "HD",
}
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.3",  # Deformable Spatial Registration
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
}
SEG_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
# Files with these suffixes are never DICOM: skipped by scans instead of reported as unreadable.
NOT_DICOM_SUFFIXES = {
    ".txt", ".csv", ".tsv", ".json", ".md", ".xml", ".yaml", ".yml", ".png", ".jpg", ".jpeg",
    ".nii", ".gz", ".nrrd", ".mha", ".zip", ".py", ".html", ".pdf", ".log", ".bmp", ".tif",
    ".tiff", ".npz", ".npy", ".ini", ".cfg", ".sh", ".bat",
}
GAP_TOLERANCE = 0.01  # relative spread of slice gaps above which read_series warns


class DicomError(BuildError):
    """A DICOM file that cannot be used: always names the file and the reason."""

    def __init__(self, reason: str, file: str | Path | None = None, source: str | None = None):
        super().__init__(reason, source=source, file=file)


def is_candidate(path: Path) -> bool:
    """Whether a scan should try to read ``path`` as DICOM (hidden files and DICOMDIR excluded)."""
    name = path.name
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    return path.suffix.lower() not in NOT_DICOM_SUFFIXES


def read_header(path: str | Path, *, pixels: bool = False) -> Dataset:
    """Read one DICOM file (header only unless ``pixels``); DicomError naming the file if not DICOM.

    Files without the 128-byte preamble (older exports) are retried with ``force=True`` and
    accepted only if they carry a SOP Class UID, so random bytes are not mistaken for DICOM; a
    file with the preamble must carry its SOP Class and Instance UIDs too (a garbage body is an
    error naming the file, not a silently dropped slice).
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        pass
    except Exception as exc:  # truncated file, bad element, permission...
        raise DicomError(f"unreadable DICOM: {type(exc).__name__}: {exc}", path) from None
    else:
        # pydicom reads a damaged body leniently into a few junk elements: without the SOP
        # identity it is no object at all, and must not pass for "not an image".
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise DicomError("unreadable DICOM: DICM marker present but no SOP Class/Instance "
                             "UID could be read (damaged or truncated file)", path)
        return ds
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
    except Exception as exc:
        raise DicomError(f"unreadable DICOM: {type(exc).__name__}: {exc}", path) from None
    if "SOPClassUID" not in ds:
        raise DicomError("not a DICOM file (no DICM preamble and no SOP Class UID)", path)
    return ds


def is_image(ds: Dataset) -> bool:
    """True for objects with a pixel grid to show (not SEG/RTSTRUCT/SR/...)."""
    if str(ds.get("SOPClassUID", "")) in NON_IMAGE_SOP_CLASSES:
        return False
    if str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
        return False
    return "Rows" in ds and "Columns" in ds


def has_dicom_preamble(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 marker ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def scan(
    folder: str | Path, pattern: str = "**/*",
    check: Callable[[Path], object] | None = None,
    on_broken: Callable[[Path, DicomError], None] | None = None,
) -> list[tuple[Path, Dataset]]:
    """All DICOM headers under ``folder`` matching the glob ``pattern``, in sorted path order.

    ``check`` is called on every path before it is read (the source-root confinement). A file
    that is DICOM (``.dcm``/``.dicom``/``.ima`` suffix, or the DICM marker) but cannot be read
    is an error naming it, never a silently missing slice; ``on_broken`` receives it instead
    when given (``on_error: skip``). Stray files without suffix or marker (README, LICENSE)
    are ignored.
    """
    folder = Path(folder)
    if folder.is_file():
        paths = [folder]
    else:
        paths = sorted(p for p in folder.glob(pattern) if p.is_file() and is_candidate(p))
    found = []
    for p in paths:
        if check is not None:
            try:
                check(p)
            except BuildError as exc:  # outside the source root
                if on_broken is None:
                    raise
                on_broken(p, DicomError(exc.reason, p))
                continue
        try:
            found.append((p, read_header(p)))
        except DicomError as exc:
            if (p.suffix.lower() in (".dcm", ".dicom", ".ima") or folder.is_file()
                    or has_dicom_preamble(p)):
                if on_broken is None:
                    raise
                on_broken(p, exc)
    return found


def find_series(folder: str | Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> image files (sorted paths) of every image series under ``folder``.

    Non-image objects (SEG, RTSTRUCT, ...) are skipped; unreadable DICOM-looking files raise
    :class:`DicomError` naming the file.
    """
    series: dict[str, list[Path]] = {}
    for path, ds in scan(folder):
        if not is_image(ds):
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or f"no-series-uid:{path.parent}"
        series.setdefault(uid, []).append(path)
    return dict(sorted(series.items()))


@dataclass
class DicomSeries:
    """One image series read into the canonical LPS+ grid, plus what SEG/RTSTRUCT need.

    ``volume`` is canonical ``[x, y, z]``. ``native_affine`` maps native ``[i, j, k]`` (column,
    row, sorted slice) to LPS mm; ``ornt`` is nibabel's orientation from native to canonical.
    ``sop_uids[k]`` / ``frames[k]`` are the SOPInstanceUID and 1-based frame number of native slice
    k. ``slice_axis`` is the canonical axis (0 x, 1 y, 2 z) the slices are stacked along and
    ``sop_to_index`` maps a SOPInstanceUID (single-frame) or "UID#frame" (multi-frame) to the slice
    index along that canonical axis.
    """

    volume: Volume
    native_affine: np.ndarray
    native_shape: tuple[int, int, int]
    ornt: np.ndarray
    sop_uids: list[str]
    frames: list[int]
    positions: np.ndarray  # (n, 3) sorted ImagePositionPatient (LPS mm)
    normal: np.ndarray
    modality: str
    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    files: list[Path]
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    orientation: np.ndarray  # (6,) ImageOrientationPatient
    slice_axis: int = 2
    sop_to_index: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def intensity(self) -> str | None:
        """Intensity hint for normalisation: "ct" (HU) or "mr", None otherwise."""
        return {"CT": "ct", "MR": "mr"}.get(self.modality.upper())

    @property
    def group(self) -> str:
        """Patient key for the split: PatientID, else StudyInstanceUID, else SeriesInstanceUID."""
        return self.patient_id or self.study_uid or self.series_uid

    def native_index(self, sop_uid: str, frame: int | None = None) -> int | None:
        """Native slice k of a referenced SOP instance (and 1-based frame for multi-frame).

        None when the instance is not in this series, or when a multi-frame instance is named
        without a frame number (ambiguous).
        """
        hits = [k for k, (uid, fr) in enumerate(zip(self.sop_uids, self.frames))
                if uid == sop_uid and (frame is None or fr == frame)]
        return hits[0] if len(hits) == 1 else None

    def native_index_at(self, position: Any, tolerance: float | None = None) -> int | None:
        """Native slice k whose plane contains the LPS point ``position`` (within tolerance mm)."""
        d = float(np.dot(np.asarray(position, float), self.normal))
        dist = self.positions @ self.normal
        k = int(np.argmin(np.abs(dist - d)))
        step = float(np.median(np.abs(np.diff(dist)))) if len(dist) > 1 else 1.0
        tol = tolerance if tolerance is not None else max(0.25 * step, 1e-3)
        return k if abs(dist[k] - d) <= tol else None

    def world_to_native(self, points: np.ndarray) -> np.ndarray:
        """LPS mm points (N, 3) -> continuous native voxel coordinates (N, 3) ``[i, j, k]``."""
        pts = np.c_[np.asarray(points, float).reshape(-1, 3), np.ones(len(np.asarray(points).reshape(-1, 3)))]
        return (np.linalg.inv(self.native_affine) @ pts.T).T[:, :3]

    def to_canonical(self, native: np.ndarray) -> np.ndarray:
        """An array in the native ``[i, j, k]`` grid -> the canonical LPS+ grid (same as the image)."""
        if native.shape[:3] != self.native_shape:
            raise ValueError(f"array shape {native.shape} is not the series grid {self.native_shape}")
        return np.ascontiguousarray(nib.orientations.apply_orientation(native, self.ornt))


def _floats(value: Any, n: int, what: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], float)
    except (TypeError, ValueError):
        raise DicomError(f"{what} is missing or not numeric ({value!r})", path) from None
    if arr.shape != (n,):
        raise DicomError(f"{what} has {arr.size} values, expected {n}", path)
    return arr


def _rescale(ds: Dataset, fg: Dataset | None) -> tuple[float, float]:
    """RescaleSlope/Intercept of a frame: per-frame or shared functional group, else top level."""
    for group in (fg, _shared(ds)):
        if group is not None and "PixelValueTransformationSequence" in group:
            item = group.PixelValueTransformationSequence[0]
            return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def _shared(ds: Dataset) -> Dataset | None:
    seq = ds.get("SharedFunctionalGroupsSequence")
    return seq[0] if seq else None


def _group_attr(ds: Dataset, fg: Dataset | None, seq_name: str, attr: str) -> Any:
    """Attribute of a functional-group macro: per-frame first, then shared."""
    for group in (fg, _shared(ds)):
        if group is not None and seq_name in group and len(group[seq_name].value):
            item = group[seq_name].value[0]
            if attr in item:
                return item.get(attr)
    return None


@dataclass
class _Frame:
    path: Path
    ds: Dataset
    frame: int  # 1-based frame number (1 for single-frame)
    ipp: np.ndarray
    iop: np.ndarray
    spacing: np.ndarray  # (row spacing, col spacing)
    slope: float
    intercept: float


def _frames_of(path: Path, ds: Dataset) -> list[_Frame]:
    """Geometry of every frame of one file (single-frame or enhanced multi-frame)."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames <= 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise DicomError("no ImagePositionPatient/ImageOrientationPatient: not a 3D series slice "
                             "(projection images such as CR/DX/US are 2D)", path)
        slope, intercept = _rescale(ds, None)
        return [_Frame(path, ds, 1, _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", path),
                       _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", path),
                       _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path), slope, intercept)]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        raise DicomError(f"multi-frame image with {n_frames} frames but no "
                         "PerFrameFunctionalGroupsSequence: frame positions are unknown", path)
    if len(per_frame) != n_frames:
        raise DicomError(f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for "
                         f"{n_frames} frames", path)
    frames = []
    for f, fg in enumerate(per_frame, start=1):
        ipp = _group_attr(ds, fg, "PlanePositionSequence", "ImagePositionPatient")
        iop = _group_attr(ds, fg, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _group_attr(ds, fg, "PixelMeasuresSequence", "PixelSpacing")
        if ipp is None or iop is None or ps is None:
            raise DicomError(f"frame {f}: PlanePosition/PlaneOrientation/PixelMeasures missing", path)
        slope, intercept = _rescale(ds, fg)
        frames.append(_Frame(path, ds, f, _floats(ipp, 3, f"frame {f} ImagePositionPatient", path),
                             _floats(iop, 6, f"frame {f} ImageOrientationPatient", path),
                             _floats(ps, 2, f"frame {f} PixelSpacing", path), slope, intercept))
    return frames


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise DicomError(f"cannot decode pixel data: {type(exc).__name__}: {exc}", path) from None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError("colour (SamplesPerPixel > 1) series are not supported as volumes", path)
    return arr[None] if n_frames <= 1 and arr.ndim == 2 else arr


def check_series_budget(frames: list[_Frame], max_pixels: int, max_voxels: int) -> None:
    """Refuse a series whose declared size exceeds the budgets, before any pixel is decoded."""
    first = frames[0]
    rows, cols = int(first.ds.Rows), int(first.ds.Columns)
    if rows * cols > max_pixels:
        raise DicomError(f"image of {cols}x{rows} = {rows * cols:,} pixels exceeds the pixel "
                         f"budget of {max_pixels:,} (build.max_pixels; checked before decoding)",
                         first.path)
    voxels = rows * cols * len(frames)
    if voxels > max_voxels:
        raise DicomError(f"series of {len(frames)} slices of {cols}x{rows} = {voxels:,} voxels "
                         f"exceeds the budget of {max_voxels:,} (build.max_voxels)", first.path)


def read_series(paths: list[str | Path] | list[Path], max_pixels: int = 100_000_000,
                max_voxels: int = 1_000_000_000) -> DicomSeries:
    """Read one series (file paths) into a :class:`DicomSeries` in canonical LPS+ (module doc).

    Raises :class:`DicomError` (naming the offending file) for unreadable files, mixed series,
    missing geometry, mixed orientations or in-plane grids, several slices at one position, or
    a size over the budgets (checked from the headers, before decoding).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DicomError("empty series: no files")
    headers = [(p, read_header(p, pixels=True)) for p in sorted(paths)]
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in headers}
    if len(uids) > 1:
        raise DicomError(f"files of {len(uids)} different series given as one series", headers[0][0])
    frames: list[_Frame] = []
    for p, ds in headers:
        if not is_image(ds):
            raise DicomError(f"not an image (Modality {ds.get('Modality')}, SOP Class "
                             f"{ds.get('SOPClassUID')})", p)
        frames.extend(_frames_of(p, ds))

    first = frames[0]
    iop = first.iop
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DicomError(f"ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors",
                         first.path)
    normal /= np.linalg.norm(normal)
    shape_rc = (int(first.ds.Rows), int(first.ds.Columns))
    for fr in frames[1:]:
        if not np.allclose(fr.iop, iop, atol=1e-4):
            raise DicomError(f"orientation {fr.iop.tolist()} differs from the series' {iop.tolist()} "
                             "(localiser or mixed series?)", fr.path)
        if not np.allclose(fr.spacing, first.spacing, rtol=1e-4):
            raise DicomError(f"PixelSpacing {fr.spacing.tolist()} differs from {first.spacing.tolist()}",
                             fr.path)
        if (int(fr.ds.Rows), int(fr.ds.Columns)) != shape_rc:
            raise DicomError(f"image size {fr.ds.Rows}x{fr.ds.Columns} differs from {shape_rc}", fr.path)

    # 1. order by position along the normal (never by InstanceNumber)
    dist = np.array([float(np.dot(fr.ipp, normal)) for fr in frames])
    order = np.argsort(dist, kind="stable")
    frames = [frames[i] for i in order]
    dist = dist[order]
    gaps = np.diff(dist)
    notes: list[str] = []
    check_series_budget(frames, max_pixels, max_voxels)
    if len(frames) > 1:
        if np.any(gaps < 1e-3):
            k = int(np.argmin(gaps))
            raise DicomError(
                f"two slices at the same position ({dist[k]:.3f} mm along the normal): "
                f"{frames[k].path.name} and {frames[k + 1].path.name}; a multi-echo, multi-phase or "
                "4D series must be split into one series per volume", frames[k + 1].path)
        spread = (gaps.max() - gaps.min()) / float(np.median(gaps))
        if spread > GAP_TOLERANCE:
            notes.append(f"uneven slice gaps {gaps.min():.3f}..{gaps.max():.3f} mm (missing "
                         f"slices?); using the mean {gaps.mean():.3f} mm")

    # 2. pixels with the modality LUT (rescale) applied
    decoded: dict[Path, np.ndarray] = {}
    slices = []
    exact_int = True
    for fr in frames:
        if fr.path not in decoded:
            decoded[fr.path] = _pixels(fr.ds, fr.path)
        raw = decoded[fr.path][fr.frame - 1]
        if fr.slope == 1.0 and float(fr.intercept).is_integer():
            slices.append(raw.astype(np.int32) + int(fr.intercept))
        else:
            exact_int = False
            slices.append(raw.astype(np.float32) * np.float32(fr.slope) + np.float32(fr.intercept))
    stack = np.stack(slices)  # (k, rows, cols)
    if exact_int and stack.min() >= np.iinfo(np.int16).min and stack.max() <= np.iinfo(np.int16).max:
        stack = stack.astype(np.int16)
    elif exact_int and stack.min() >= 0 and stack.max() <= np.iinfo(np.uint16).max:
        stack = stack.astype(np.uint16)
    else:
        stack = stack.astype(np.float32)
    native = np.ascontiguousarray(stack.transpose(2, 1, 0))  # [i (column), j (row), k]

    # 3. geometry: native affine, [i, j, k] -> LPS mm
    dr, dc = float(first.spacing[0]), float(first.spacing[1])
    positions = np.stack([fr.ipp for fr in frames])
    if len(frames) > 1:
        step = (positions[-1] - positions[0]) / (len(frames) - 1)
    else:
        thickness = float(first.ds.get("SpacingBetweenSlices") or first.ds.get("SliceThickness") or 1.0)
        step = normal * thickness
    affine = np.eye(4)
    affine[:3, 0] = row_cos * dc
    affine[:3, 1] = col_cos * dr
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]

    # 4. reorient to canonical LPS+ (closest axes, flips only)
    ornt = nib.orientations.io_orientation(affine)
    canonical = np.ascontiguousarray(nib.orientations.apply_orientation(native, ornt))
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, native.shape)
    spacing = tuple(float(s) for s in np.linalg.norm(can_affine[:3, :3], axis=0))
    slice_axis = int(ornt[2, 0])
    flip_k = ornt[2, 1] < 0
    n = len(frames)
    sop_uids = [str(fr.ds.SOPInstanceUID) for fr in frames]
    frame_nos = [fr.frame for fr in frames]
    multi = len(set(sop_uids)) != len(sop_uids)
    sop_to_index = {}
    for k, (uid, f) in enumerate(zip(sop_uids, frame_nos)):
        sop_to_index[f"{uid}#{f}" if multi else uid] = (n - 1 - k) if flip_k else k

    ds0 = first.ds
    return DicomSeries(
        volume=Volume(array=canonical, spacing=spacing, affine=can_affine),  # type: ignore[arg-type]
        native_affine=affine,
        native_shape=native.shape,  # type: ignore[arg-type]
        ornt=ornt,
        sop_uids=sop_uids,
        frames=frame_nos,
        positions=positions,
        normal=normal,
        modality=str(ds0.get("Modality", "")),
        patient_id=str(ds0.get("PatientID", "") or ""),
        study_uid=str(ds0.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds0.get("SeriesInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID", "") or ""),
        files=[p for p, _ in headers],
        pixel_spacing=(dr, dc),
        orientation=iop,
        slice_axis=slice_axis,
        sop_to_index=sop_to_index,
        warnings=notes,
    )
