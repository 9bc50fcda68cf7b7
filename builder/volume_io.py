"""Readers for 3D medical volumes, all returning the canonical :class:`~gmai_build.samples.Volume`.

Every reader gives the same thing whatever the file format: an array indexed ``[x, y, z]`` in
LPS+ (x towards the patient's Left, y towards Posterior, z towards Superior), the voxel
``spacing`` in millimetres along x, y, z, and the 4x4 ``affine`` mapping voxel indices to LPS
millimetres. Display code (:mod:`gmai_build.volumes`) can then be written once.

* NIfTI (``.nii``, ``.nii.gz``) is read with nibabel, lazily: the array is a
  :class:`LazyOrientedArray` over nibabel's ArrayProxy that reads one plane when indexed with one
  integer (all a CT slice needs) and loads the volume only when asked for all of it (label
  areas, MR percentiles). Its axes are the native axes permuted and flipped into LPS+ (nibabel
  orientation transforms), and the affine is adjusted accordingly.
* NRRD / MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) is read with SimpleITK, whose
  physical space already is LPS: ``DICOMOrient(img, "LPS")`` then
  ``GetArrayFromImage(...).transpose(2, 1, 0)``.

Label volumes go through the same readers; their integer dtype is kept.

Before any voxel is decoded, every reader checks the declared size against the budgets
(``max_voxels`` for the volume, ``max_pixels`` for its largest plane), and a NIfTI file is
checked to hold all the data its header declares: the end of a gzip stream is verified once
(:func:`check_nifti_complete`), so a truncated ``.nii.gz`` is an error even when the planes a
build reads lie before the damage.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import BuildError
from .samples import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES

# RAS+ <-> LPS+ for millimetre coordinates: negate x and y.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_VOXELS = 1_000_000_000


def check_budget(shape: tuple[int, ...], path: Path, max_pixels: int, max_voxels: int) -> None:
    """Refuse volumes whose declared size exceeds the budgets, before decoding anything."""
    dims = [int(n) for n in shape[:3]]
    voxels = int(np.prod(dims, dtype=object))
    largest = sorted(dims)[-2:]
    plane = int(np.prod(largest, dtype=object))
    size = "x".join(str(n) for n in shape)
    if voxels > max_voxels:
        raise BuildError(f"volume of {size} = {voxels:,} voxels exceeds the budget of "
                         f"{max_voxels:,} (build.max_voxels; checked before decoding)", file=path)
    if plane > max_pixels:
        raise BuildError(f"volume planes of {largest[0]}x{largest[1]} = {plane:,} pixels exceed "
                         f"the pixel budget of {max_pixels:,} (build.max_pixels; checked before "
                         "decoding)", file=path)


def _gzip_size(path: Path) -> int:
    """Uncompressed size of a gzip file, reading it to its end once (raises if damaged)."""
    total = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            total += len(chunk)
    return total


def check_nifti_complete(path: Path, data_end: int) -> None:
    """The file holds at least ``data_end`` bytes of (uncompressed) NIfTI: header + voxels.

    Uncompressed: the file size. Gzip: the trailer's ISIZE (uncompressed size mod 2**32) is
    compared first (one seek); on a mismatch (truncated file, trailing bytes, several gzip
    members) the stream is decompressed to its end, which detects truncation and corruption.
    """
    if not path.name.lower().endswith(".gz"):
        size = os.path.getsize(path)
        if size < data_end:
            raise BuildError(f"truncated NIfTI: the header declares {data_end:,} bytes of header "
                             f"and voxels, the file has {size:,}", file=path)
        return
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
        if isize == data_end % (1 << 32):
            return
        total = _gzip_size(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise BuildError(f"truncated or damaged compressed volume ({type(exc).__name__}: {exc}); "
                         "the gzip stream does not end properly", file=path) from None
    if total < data_end:
        raise BuildError(f"truncated NIfTI: the header declares {data_end:,} bytes of header and "
                         f"voxels, the gzip stream holds {total:,}", file=path)


def volume_suffix(path: str | Path) -> str | None:
    """The recognised volume suffix of a file name (".nii.gz", ".nrrd", ...), or None."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def strip_volume_suffix(name: str) -> str:
    """File name without its volume suffix: ``case_0000.nii.gz`` -> ``case_0000``."""
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def _pick_channel(array: np.ndarray, channel: int | None, path: Path) -> np.ndarray:
    """3D arrays pass through; 4D (x, y, z, c) arrays give channel ``channel`` (default 0)."""
    if array.ndim == 3:
        return array
    if array.ndim == 4:
        c = channel or 0
        if not 0 <= c < array.shape[3]:
            raise BuildError(f"channel {c} requested but the volume has {array.shape[3]}", file=path)
        return array[..., c]
    if array.ndim == 5 and array.shape[3] == 1:  # NIfTI vector/time dim of length 1
        return _pick_channel(array[:, :, :, 0, :], channel, path)
    raise BuildError(f"expected a 3D volume, got an array of shape {array.shape}", file=path)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each array axis: the length of each affine column."""
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))  # type: ignore[return-value]


class LazyOrientedArray:
    """A NIfTI volume in canonical LPS+ ``[x, y, z]`` order, read from disk plane by plane.

    ``array[:, :, k]`` (any key with exactly one integer) reads just that plane through nibabel's
    ArrayProxy and reorients it; ``np.asarray(array)`` loads and reorients the whole volume once
    (cached). ``transform`` is nibabel's orientation transform native -> LPS+.
    """

    def __init__(self, proxy, transform: np.ndarray, channel: int | None):
        self._proxy = proxy
        self._t = transform
        self._channel = channel
        native = tuple(int(n) for n in proxy.shape[:3])
        self._native_shape = native
        shape = [0, 0, 0]
        for n, (target, _) in enumerate(transform):
            shape[int(target)] = native[n]
        self.shape = tuple(shape)
        self.ndim = 3
        self.dtype = np.dtype(getattr(proxy, "dtype", np.float64))
        self._full: np.ndarray | None = None

    def _native_key(self, axis: int, index: int) -> tuple:
        n = int(np.flatnonzero(self._t[:, 0] == axis)[0])
        size = self._native_shape[n]
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for axis {axis} of size {size}")
        index %= size
        native_index = index if self._t[n, 1] > 0 else size - 1 - index
        key: list = [slice(None)] * 3
        key[n] = native_index
        if len(self._proxy.shape) == 4:
            key.append(self._channel or 0)
        return tuple(key)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        ints = [i for i, k in enumerate(key) if isinstance(k, (int, np.integer))]
        if len(key) != 3 or len(ints) != 1 or self._full is not None:
            return np.asarray(self)[key]
        axis = ints[0]
        plane = np.asanyarray(self._proxy[self._native_key(axis, int(key[axis]))])
        rest = [n for n in range(3) if int(self._t[n, 0]) != axis]  # native axes kept, in order
        for pos, n in enumerate(rest):
            if self._t[n, 1] < 0:
                plane = np.flip(plane, axis=pos)
        if self._t[rest[0], 0] > self._t[rest[1], 0]:
            plane = plane.T
        return plane[tuple(k for i, k in enumerate(key) if i != axis)]

    def __array__(self, dtype=None, copy=None):
        if self._full is None:
            import nibabel as nib

            data = np.asanyarray(self._proxy)
            if data.ndim == 4:
                data = data[..., self._channel or 0]
            self._full = nib.orientations.apply_orientation(data, self._t)
        return self._full if dtype is None else self._full.astype(dtype)


def read_nifti(path: str | Path, channel: int | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS,
               max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """NIfTI-1/2 via nibabel -> LPS+ :class:`Volume` with a lazily read array (scl_slope applied)."""
    import nibabel as nib
    from nibabel import orientations as nio

    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for broken files
        raise BuildError(f"cannot read NIfTI: {type(exc).__name__}: {exc}", file=path) from None
    shape = img.shape
    check_budget(shape, path, max_pixels, max_voxels)
    header = img.header
    n_values = int(np.prod([int(n) for n in shape], dtype=object))
    check_nifti_complete(
        path, int(header.get_data_offset()) + n_values * header.get_data_dtype().itemsize)
    if len(shape) == 5 and shape[3] == 1:  # rare vector layout: read eagerly
        array = _pick_channel(np.asanyarray(img.dataobj), channel, path)
        img = nib.Nifti1Image(np.ascontiguousarray(array), img.affine)
        shape = img.shape
    if len(shape) == 4:
        c = channel or 0
        if not 0 <= c < shape[3]:
            raise BuildError(f"channel {c} requested but the volume has {shape[3]}", file=path)
    elif len(shape) != 3:
        raise BuildError(f"expected a 3D volume, got an array of shape {shape}", file=path)
    native = nio.io_orientation(img.affine)
    transform = nio.ornt_transform(native, nio.axcodes2ornt(("L", "P", "S")))
    # Voxel index in the LPS-ordered array -> native index -> RAS mm -> LPS mm.
    ras_affine = np.asarray(img.affine, np.float64) @ nio.inv_ornt_aff(transform, shape[:3])
    affine = _RAS_TO_LPS @ ras_affine
    array = LazyOrientedArray(img.dataobj, transform, channel)
    return Volume(array=array, spacing=spacing_of(affine), affine=affine)  # type: ignore[arg-type]


def read_sitk(path: str | Path, channel: int | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS,
              max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """NRRD / MHA / MHD (anything SimpleITK reads) -> LPS+ :class:`Volume`."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # header only: the budget is checked before decoding
        check_budget(tuple(reader.GetSize()), path, max_pixels, max_voxels)
        img = reader.Execute()
    except RuntimeError as exc:
        raise BuildError(f"cannot read with SimpleITK: {str(exc).strip().splitlines()[-1]}",
                         file=path) from None
    if img.GetNumberOfComponentsPerPixel() > 1:
        c = channel or 0
        if not 0 <= c < img.GetNumberOfComponentsPerPixel():
            raise BuildError(f"channel {c} requested but the image has "
                             f"{img.GetNumberOfComponentsPerPixel()} components", file=path)
        img = sitk.VectorIndexSelectionCast(img, c)
    if img.GetDimension() == 4:
        size = list(img.GetSize())
        c = channel or 0
        if not 0 <= c < size[3]:
            raise BuildError(f"channel {c} requested but the volume has {size[3]}", file=path)
        img = sitk.Extract(img, size[:3] + [0], [0, 0, 0, c])
    if img.GetDimension() != 3:
        raise BuildError(f"expected a 3D volume, got {img.GetDimension()}D", file=path)
    img = sitk.DICOMOrient(img, "LPS")
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z), a view
    direction = np.array(img.GetDirection(), np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    return Volume(array=array, spacing=tuple(float(s) for s in img.GetSpacing()), affine=affine)  # type: ignore[arg-type]


def read_volume(path: str | Path, channel: int | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS,
                max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """Read any supported volume, choosing the library by file suffix."""
    suffix = volume_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path, channel, max_pixels, max_voxels)
    if suffix in SITK_SUFFIXES:
        return read_sitk(path, channel, max_pixels, max_voxels)
    raise BuildError(
        f"unsupported volume file type; expected one of {', '.join(VOLUME_SUFFIXES)}", file=path
    )


def check_same_grid(
    image_vol: Volume,
    mask_vol: Volume,
    image_file: str | Path,
    mask_file: str | Path,
    source: str | None = None,
    atol_mm: float = 1e-3,
    rtol_spacing: float = 1e-3,
) -> None:
    """Raise :class:`BuildError` naming both files unless image and mask share one voxel grid.

    Compared: array shape, spacing (relative tolerance ``rtol_spacing``) and the affine (voxel
    axes and origin, absolute tolerance ``atol_mm`` plus float32 header rounding). A mask on
    another grid would put overlays in the wrong place, so this is an error, not a resample.
    """
    problems = []
    if image_vol.array.shape[:3] != mask_vol.array.shape[:3]:
        problems.append(f"shape {image_vol.array.shape[:3]} vs {mask_vol.array.shape[:3]}")
    elif not np.allclose(image_vol.spacing, mask_vol.spacing, rtol=rtol_spacing, atol=0):
        problems.append(
            f"spacing {tuple(round(s, 5) for s in image_vol.spacing)} vs "
            f"{tuple(round(s, 5) for s in mask_vol.spacing)} mm"
        )
    else:
        a, b = image_vol.affine[:3], mask_vol.affine[:3]
        # float32 headers (NIfTI sform) round large origins: allow their precision too.
        tol = atol_mm + 2 * np.finfo(np.float32).eps * np.maximum(np.abs(a), np.abs(b))
        if not np.all(np.abs(a - b) <= tol):
            if not np.all(np.abs(a[:, 3] - b[:, 3]) <= tol[:, 3]):
                problems.append(
                    f"origin {np.round(a[:, 3], 3).tolist()} vs {np.round(b[:, 3], 3).tolist()} mm"
                )
            else:
                problems.append("orientation (direction cosines) differ")
    if problems:
        raise BuildError(
            f"image {image_file} and mask {mask_file} are not on the same voxel grid: "
            + "; ".join(problems),
            source=source,
            file=image_file,
        )


def read_image_and_labels(
    image_file: Path, label_file: Path, channel: int | None = None, source: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS, max_voxels: int = DEFAULT_MAX_VOXELS,
) -> tuple[Volume, Volume]:
    """An image volume and its label volume, checked to share one voxel grid."""
    volume = read_volume(image_file, channel, max_pixels, max_voxels)
    labels = read_volume(label_file, None, max_pixels, max_voxels)
    check_same_grid(volume, labels, image_file, label_file, source=source)
    return volume, labels
