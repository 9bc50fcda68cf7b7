"""Near-duplicate detection on real images: the perceptual hash pairs exactly the pictures that
are the same, and keeps copies of one picture (re-encoded, brightened, resampled) together."""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
from gmai_build.dedup import DEFAULT_MAX_DISTANCE, hamming, image_phash, near_duplicate_pairs
from helpers import realdata


def _as_built(grey: np.ndarray) -> np.ndarray:
    """A 28 px MedMNIST image as the build shows it: upscaled bicubically to 224, RGB."""
    big = cv2.resize(grey, (224, 224), interpolation=cv2.INTER_CUBIC)
    return np.repeat(big[:, :, None], 3, axis=2)


def test_real_chest_xrays_pair_exactly_their_duplicates() -> None:
    """PneumoniaMNIST (3,166 chest X-rays, all alike) holds 7 sets of pixel-identical images:
    within the build's distance, the hash finds each of them and pairs nothing else."""
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    images = np.concatenate([arrays[f"{s}_images"] for s in ("train", "val", "test")])
    hashes = [image_phash(_as_built(g)) for g in images]
    found = {(i, j) for i, j, _ in near_duplicate_pairs(hashes, range(len(hashes)),
                                                       DEFAULT_MAX_DISTANCE)}
    same: dict[bytes, list[int]] = defaultdict(list)
    for k, g in enumerate(images):
        same[g.tobytes()].append(k)
    identical = {(a, b) for ks in same.values() for n, a in enumerate(ks) for b in ks[n + 1:]}
    assert len(identical) == 9  # 6 pairs and a triple
    assert found == identical


def test_copies_of_a_picture_stay_close_and_other_pictures_far() -> None:
    arrays = np.load(realdata("medmnist", "pneumoniamnist.npz"))
    images = arrays["test_images"][:40]
    for k, grey in enumerate(images):
        base = _as_built(grey)
        brighter = np.clip(base.astype(np.int16) + 6, 0, 255).astype(np.uint8)
        jpeg = cv2.imdecode(cv2.imencode(".jpg", brighter)[1], cv2.IMREAD_COLOR)
        resampled = cv2.resize(cv2.resize(base, (180, 180), interpolation=cv2.INTER_AREA),
                               (224, 224), interpolation=cv2.INTER_LINEAR)
        h = image_phash(base)
        assert hamming(h, image_phash(jpeg)) <= 8
        assert hamming(h, image_phash(resampled)) <= 8
        assert hamming(h, image_phash(_as_built(images[(k + 1) % len(images)]))) > DEFAULT_MAX_DISTANCE


def test_a_grey_image_and_its_rgb_copy_hash_alike() -> None:
    rng = np.random.default_rng(0)
    grey = cv2.GaussianBlur(rng.integers(0, 256, (300, 200), dtype=np.uint8), (9, 9), 3)
    assert image_phash(grey) == image_phash(np.repeat(grey[:, :, None], 3, axis=2))
