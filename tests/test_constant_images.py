"""The histogram test for nearly constant images decides exactly as the per-pixel definition."""

from __future__ import annotations

import numpy as np
from gmai_build.sanity import _is_constant_exact, is_constant
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


@st.composite
def images(draw) -> np.ndarray:
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4)]))
    base = draw(st.integers(0, 255))
    spread = draw(st.sampled_from([0, 1, 2, 3, 255]))
    noise = draw(arrays(np.int16, shape, elements=st.integers(-spread, spread)))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    # a few outliers: the share within 2 levels of the median decides
    n_out = draw(st.integers(0, 3))
    flat = img.reshape(-1)
    for k in range(n_out):
        flat[(k * 7919) % flat.size] = draw(st.integers(0, 255))
    return img


@settings(max_examples=300, deadline=None)
@given(images())
def test_histogram_decision_equals_the_definition(img: np.ndarray) -> None:
    assert is_constant(img) == _is_constant_exact(img)


def test_large_images_near_the_threshold() -> None:
    """0.1% of pixels off the median is the boundary (NEAR_FRACTION = 0.999)."""
    img = np.full((500, 500, 3), 100, np.uint8)
    img.reshape(-1, 3)[:250] = 200  # 0.1% off: still constant
    assert is_constant(img) and _is_constant_exact(img)
    img.reshape(-1, 3)[:251] = 200  # just over: an image
    assert not is_constant(img) and not _is_constant_exact(img)
    img = np.full((500, 500), 7, np.uint8)
    img[:, :250] = 9  # two levels apart: within NEAR_LEVELS, constant
    assert is_constant(img)
    img[:, :10] = 200  # 2% of the pixels far from the rest: an image
    assert not is_constant(img) and not _is_constant_exact(img)
