"""Exact and near-duplicate images: a perceptual hash of the image WITHOUT its overlay.

Two questions about the same picture (or a re-encoded, re-windowed or slightly cropped copy of
it, as when one dataset is redistributed inside another) must not sit in VAL and TEST. Each
rendered image gets a 64-bit DCT perceptual hash (:func:`imagehash.phash`) of its bare pixels;
pairs of images from different groups whose hashes differ in at most ``max_distance`` bits are
near duplicates, and the split puts their groups together (:mod:`gmai_build.split`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HASH_BITS = 64


def image_phash(rgb: np.ndarray) -> str:
    """16 hex digits: the DCT perceptual hash of an RGB (or grey) uint8 image."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(np.ascontiguousarray(rgb))))


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (numpy >= 2 has it built in; a byte table otherwise)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_BITS[x.view(np.uint8).reshape(*x.shape, 8)].sum(-1, dtype=np.uint8)


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_duplicate_pairs(
    hashes: Sequence[str], groups: Sequence[object], max_distance: int, block: int = 512,
) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j with different groups and hashes at most ``max_distance`` apart.

    Vectorised XOR + popcount in blocks: 30,000 images compare in seconds without N^2 memory.
    """
    n = len(hashes)
    if n < 2:
        return []
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    group_ids = np.unique(np.array([str(g) for g in groups]), return_inverse=True)[1]
    out: list[tuple[int, int, int]] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        dist = _popcount(values[start:stop, None] ^ values[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii + start, jj):
            if i < j and group_ids[i] != group_ids[j]:
                out.append((int(i), int(j), int(dist[i - start, j])))
    return sorted(out)
