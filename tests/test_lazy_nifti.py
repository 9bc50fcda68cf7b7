"""NIfTI planes read lazily equal the eagerly reoriented volume, for every orientation."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from gmai_build.volume_io import LazyOrientedArray, read_nifti


def _affine(perm: tuple[int, int, int], signs: tuple[int, int, int]) -> np.ndarray:
    a = np.zeros((4, 4))
    for native, (world, sign) in enumerate(zip(perm, signs)):
        a[world, native] = sign * (0.5 + native)  # anisotropic too
    a[:3, 3] = [10.0, -20.0, 5.0]
    a[3, 3] = 1
    return a


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_lazy_planes_equal_eager_volume(tmp_path: Path, perm, suffix: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, (5, 6, 7)).astype(np.int16)
    for signs in ((1, 1, 1), (-1, 1, -1), (1, -1, 1)):
        path = tmp_path / f"v{perm}{signs}{suffix}"
        nib.save(nib.Nifti1Image(data, _affine(perm, signs)), path)
        vol = read_nifti(path)
        assert isinstance(vol.array, LazyOrientedArray)
        full = np.asarray(vol.array)
        assert full.shape == vol.array.shape
        # Eager reference: nibabel's own canonical (RAS) image, then x and y flipped to LPS.
        ras = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
        np.testing.assert_array_equal(full, ras[::-1, ::-1, :])
        lazy = read_nifti(path).array  # fresh: nothing cached, planes come from disk
        # Planes across the file's slowest axis first: they never load the whole volume. A
        # .nii.gz loads it once for planes along the other axes (each such plane is spread over
        # the whole compressed stream); an uncompressed .nii reads every plane from disk.
        slowest = int(lazy._t[2, 0])
        for axis in [slowest] + [a for a in range(3) if a != slowest]:
            for i in (0, full.shape[axis] - 1):
                key = [slice(None)] * 3
                key[axis] = i
                np.testing.assert_array_equal(lazy[tuple(key)], full[tuple(key)])
                key[(axis + 1) % 3] = slice(None, None, -1)
                np.testing.assert_array_equal(lazy[tuple(key)], full[tuple(key)])
            if axis == slowest:
                assert lazy._full is None, "plane reads must not load the whole volume"
        assert (lazy._full is None) == (suffix == ".nii")
        # The affine maps a voxel of the LPS array to LPS millimetres.
        i, j, k = 1, 2, 3
        native = np.argwhere(data == full[i, j, k])
        assert native.size  # the value exists in the native array
        ras_mm = _affine(perm, signs) @ np.r_[native[0], 1]
        if (data == full[i, j, k]).sum() == 1:
            np.testing.assert_allclose(vol.affine @ [i, j, k, 1], ras_mm * [-1, -1, 1, 1])


def test_lazy_channel_of_4d(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6 * 2, dtype=np.float32).reshape(4, 5, 6, 2)
    path = tmp_path / "c.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    vol = read_nifti(path, channel=1)
    np.testing.assert_array_equal(vol.array[:, :, 2], data[::-1, ::-1, 2, 1])
    np.testing.assert_array_equal(np.asarray(vol.array), data[::-1, ::-1, :, 1])


def test_ascending_planes_of_nii_gz_decompress_the_file_once(tmp_path: Path, monkeypatch) -> None:
    """The slicer reads planes in ascending order: one gzip stream, read front to back, serves
    them all (a fresh stream per plane would decompress everything before each plane again)."""
    import gzip

    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 1000, (64, 48, 40)).astype(np.int16)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    decompressed = []
    real_read = gzip._GzipReader.read

    def counting_read(self, size=-1):
        chunk = real_read(self, size)
        decompressed.append(len(chunk))
        return chunk

    monkeypatch.setattr(gzip._GzipReader, "read", counting_read)
    lazy = read_nifti(path).array
    for k in (5, 15, 25, 35):
        np.testing.assert_array_equal(lazy[:, :, k], data[::-1, ::-1, k])
    assert lazy._full is None, "plane reads must not load the whole volume"
    # At most the file once (header + voxels), plus one read-ahead buffer.
    assert sum(decompressed) <= data.nbytes + 352 + 128 * 1024, sum(decompressed)
    # Coronal planes are spread over the whole stream: the volume is loaded once for all.
    decompressed.clear()
    for j in (3, 20, 40):
        np.testing.assert_array_equal(lazy[:, j, :], data[::-1, ::-1, :][:, j, :])
    assert sum(decompressed) <= data.nbytes + 352 + 128 * 1024, sum(decompressed)
