"""The typed contracts that flow between pipeline stages.

A converter yields :class:`Sample` objects. A sample holds one image (2D RGB/grey, or a 3D
volume with its geometry) plus its raw annotations, and the provenance needed to find it again.
``normalize`` turns samples into :class:`Slice2D` objects (2D RGB uint8 + annotations in the same
pixel grid); ``cases`` turns those into :class:`Case` objects (one image x target x granularity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

# Perceptual granularities exactly as GMAI-MMBench names them.
IMAGE_LEVEL = "Image Level"
BOX_LEVEL = "Box Level"
MASK_LEVEL = "Mask Level"
CONTOUR_LEVEL = "Contour Level"

# `original task` values.
CLS_2D = "CLS_2D"
DET_2D = "DET_2D"
SEG_2D = "SEG_2D"
SEG_3D = "SEG_3D"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates of its image: [x0, x1) x [y0, y1)."""

    x0: float
    y0: float
    x1: float
    y1: float
    raw_label: str

    def clipped(self, width: int, height: int) -> Box:
        return Box(
            max(0.0, min(self.x0, width)),
            max(0.0, min(self.y0, height)),
            max(0.0, min(self.x1, width)),
            max(0.0, min(self.y1, height)),
            self.raw_label,
        )

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


@dataclass
class Volume:
    """A 3D image in the project's canonical voxel order, LPS+, with its geometry.

    ``array`` is indexed ``[x, y, z]`` where x increases towards the patient's Left, y towards
    Posterior and z towards Superior (DICOM's patient axes; SimpleITK ``DICOMOrient('LPS')``
    then ``GetArrayFromImage(...).transpose(2, 1, 0)``; nibabel ``as_closest_canonical`` then
    flipping axes 0 and 1). ``spacing`` is millimetres per index step along x, y, z and
    ``affine`` maps (x, y, z, 1) voxel indices to LPS millimetres. Every reader returns this, so
    display in radiological convention is the same code for every format (see volumes.py).
    ``array`` may be a lazily read array-like (NIfTI: ``volume_io.LazyOrientedArray``) that
    reads one plane per integer index; ``np.asarray`` gives the whole volume.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


@dataclass
class Sample:
    """One image with its raw annotations, as a converter found it on disk.

    Exactly one of ``image`` (2D: HxW, HxWx3 or HxWx4, any dtype) or ``volume`` is set.
    Annotations are raw (source vocabulary): ``labels`` are image-level class labels, ``boxes``
    are in pixel coordinates of ``image`` (2D only), ``label_mask`` is an integer mask in the
    same grid as ``image`` (HxW) or ``volume.array`` (XxYxZ) whose values are looked up in
    ``mask_labels`` (value -> raw label; without an entry the raw label is ``str(value)``).
    Alternatively ``target_masks`` maps raw label -> boolean mask in the same grid (for
    overlapping segments such as DICOM SEG or RTSTRUCT ROIs).
    """

    # Converters fill these with raw values; the pipeline replaces them by salted tokens
    # (gmai_build.privacy) before anything else sees the sample.
    source: str
    sample_id: str  # stable id within the source (relative path, plus slice/frame if needed)
    files: tuple[str, ...]  # files read, relative to the source root (provenance)
    group: str  # patient / group key used for the VAL/TEST split
    image: np.ndarray | None = None
    volume: Volume | None = None
    labels: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    label_mask: np.ndarray | None = None
    mask_labels: dict[int, str] = field(default_factory=dict)
    target_masks: dict[str, np.ndarray] | None = None
    # Intensity hints for normalize: "ct" (Hounsfield units), "mr", or None for photographic.
    intensity: str | None = None
    # Slice index of a 2D image taken from a 3D series (provenance only).
    slice_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Slice2D:
    """A normalised 2D RGB uint8 image with annotations in its own pixel grid."""

    source: str
    sample_id: str
    files: tuple[str, ...]
    group: str
    rgb: np.ndarray  # HxWx3 uint8
    labels: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    target_masks: dict[str, np.ndarray] = field(default_factory=dict)  # raw label -> bool HxW
    original_task: str = CLS_2D
    axis: str | None = None
    slice_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """One (image, target, granularity): everything a question needs except its options.

    ``png`` is the rendered image (overlay included) encoded losslessly; ``raw_label`` is the
    source's label and ``label`` its canonical form after standardisation.
    """

    case_id: str  # stable identity: hash of provenance + target + granularity
    pair_id: str  # shared by the mask and contour cases of one target (cap + split unit)
    source: str
    sample_id: str
    files: tuple[str, ...]
    group: str
    granularity: str
    original_task: str
    raw_label: str
    label: str
    task: str
    department: str
    modality: str
    png: bytes
    region: dict[str, Any] = field(default_factory=dict)  # box coords / mask area, provenance
    axis: str | None = None
    slice_index: int | None = None
    exclude: tuple[str, ...] = ()  # other canonical labels also true here: never distractors
    rendered: bool = True  # False: the cap had already ruled it out, so no image was drawn
    phash: str = ""  # perceptual hash of the image without overlay (near-duplicate detection)
    skipped: str = ""  # why this case is not asked about (counted in the summary), "" if asked
    image: tuple[int, int] = (0, 0)  # (offset, size) of its PNG in its task's file


class LabelSeen(NamedTuple):
    """Where a label was seen as a target (what the distractor pools need of every case, kept
    for the cases the cap drops, whose other metadata is not)."""

    source: str
    granularity: str
    modality: str
    task: str
    label: str

    @classmethod
    def of(cls, case: Case) -> LabelSeen:
        return cls(case.source, case.granularity, case.modality, case.task, case.label)
