"""Signed distance maps against Kervadec et al.'s one_hot2dist (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import weightmaps as wm
from tests.reference import one_hot2dist
from tests.test_engine import DEVICES, blobs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "spacing"), [((40, 56), None), ((40, 56), (2.0, 0.5)), ((10, 24, 20), (3.0, 1.0, 0.8))])
def test_matches_one_hot2dist(device, shape, spacing) -> None:
    labels = blobs(shape, seed=4, num_classes=4)
    got = wm.signed_distance(labels, num_classes=5, spacing=spacing, device=device)  # class 4 absent
    assert got.shape == (5, *shape) and got.dtype == np.float32
    np.testing.assert_allclose(got, one_hot2dist(labels, 5, spacing), rtol=1e-5, atol=1e-5)
    assert (got[4] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_batch_equals_one_at_a_time(device) -> None:
    stack = np.stack([blobs((30, 30), seed=i) for i in range(3)])
    stack[1] = 2  # one class covering everything: no boundary, 0
    got = wm.signed_distance(stack, num_classes=3, batch=True, device=device)
    assert got.shape == (3, 3, 30, 30)
    for i in range(3):
        np.testing.assert_array_equal(got[i], wm.signed_distance(stack[i], num_classes=3, device=device))
    assert (got[1] == 0).all()


def test_ignore_pixels_are_zero_and_not_the_class() -> None:
    labels = blobs((36, 44), seed=2)
    labels[5:15, 5:15] = 255
    got = wm.signed_distance(labels, num_classes=3, ignore_index=255, device="cpu")
    assert (got[:, 5:15, 5:15] == 0).all()
    # Elsewhere: the definition with the ignored pixels counted as "not k".
    expected = one_hot2dist(labels, 3)
    keep = labels != 255
    np.testing.assert_allclose(got[:, keep], expected[:, keep], rtol=1e-5, atol=1e-5)


def test_float16() -> None:
    labels = blobs((48, 48), seed=1)
    half = wm.signed_distance(labels, num_classes=3, dtype="float16", device="cpu")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, one_hot2dist(labels, 3), rtol=1e-3, atol=1e-3)


@given(labels=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=9),
                         elements=st.integers(0, 2)),
       spacing=st.sampled_from([None, 1.0, 2.0, 3.5]))
def test_sign_matches_membership_and_neighbours_differ_by_at_most_one(labels, spacing) -> None:
    """Sign = membership for spacings of 1 or more; with unit spacing |∇| ≤ 1 between neighbours.

    Kervadec's −1 is one spacing unit, not one pixel: with a spacing s the boundary pixels of k
    read 1 − s (positive for s < 1) and the step across the boundary is up to 2s − 1; README says so.
    """
    sdf = wm.signed_distance(labels, num_classes=3, spacing=spacing, device="cpu")
    for k in range(3):
        inside = labels == k
        if not inside.any() or inside.all():
            assert (sdf[k] == 0).all()
            continue
        assert (sdf[k][inside] <= 0).all() and (sdf[k][~inside] > 0).all()
        step = 1.0 if spacing is None else 2 * spacing - 1  # across the boundary; inside or outside: spacing
        for axis in range(labels.ndim):
            jump = np.abs(np.diff(sdf[k].astype(np.float64), axis=axis))
            assert (jump <= max(step, spacing or 1.0) * (1 + 1e-5) + 1e-5).all()


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"num_classes": 2}, r"label\(s\) \[2\] >= num_classes=2"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 3, "dtype": "float64"}, "dtype"),
])
def test_bad_input_is_named(kwargs, words) -> None:
    with pytest.raises(wm.WeightmapsError, match=words):
        wm.signed_distance(np.array([[0, 1, 2]]), device="cpu", **kwargs)
