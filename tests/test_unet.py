"""U-Net separation weights against the full per-instance loop (tests/reference.py) and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

import weightmaps as wm
from tests.reference import (
    brute_two_nearest,
    reference_instances_from_labels,
    reference_two_nearest,
    reference_unet,
)
from tests.test_engine import DEVICES
from weightmaps.unet import nearest_two_instances, reach

W0, SIGMA, TOLERANCE = 10.0, 5.0, 1e-4
# float32 distances and exp: a few ulp of w0 on top of the tolerance the windows are allowed.
SLACK = 2e-5


def cells(shape: tuple[int, ...], count: int, seed: int = 0, gap: float = 0.35) -> np.ndarray:
    """Touching cells: a Voronoi tessellation of random seeds; pixels far from every seed are background."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, shape, size=(count, len(shape)))
    grid = np.indices(shape).reshape(len(shape), -1).T
    squared = ((grid[:, None, :] - seeds[None]) ** 2).sum(-1)
    nearest = squared.argmin(axis=1)
    radius = gap * (np.prod(shape) / count) ** (1.0 / len(shape))
    inside = squared.min(axis=1) <= (radius * rng.uniform(1.0, 2.0, size=count)[nearest]) ** 2
    ids = rng.choice(np.arange(1, 60_000), size=count, replace=False)  # gapped, unordered ids
    return np.where(inside, ids[nearest], 0).reshape(shape).astype(np.int32)


def discs(shape: tuple[int, int], count: int, seed: int = 0, radius: tuple[float, float] = (4, 9)) -> np.ndarray:
    """Separate discs, later ones drawn over earlier ones (so some touch)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    out = np.zeros(shape, dtype=np.int32)
    for k in range(1, count + 1):
        cy, cx = rng.uniform(0, shape)
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(*radius) ** 2] = k
    return out


def assert_within_tolerance(got, expected, w0=W0, tolerance=TOLERANCE) -> None:
    error = np.abs(np.asarray(got, dtype=np.float64) - expected)
    assert error.max() <= tolerance * w0 + SLACK * max(w0, 1.0), float(error.max())


# --- d1, d2 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_two_nearest_matches_brute_force_on_small_maps(device) -> None:
    instances = cells((13, 17), count=6, seed=3)
    for spacing in (None, (1.5, 0.5)):
        d1, d2 = nearest_two_instances(instances, spacing=spacing, device=device)
        b1, b2 = brute_two_nearest(instances, spacing)
        np.testing.assert_allclose(d1, b1, rtol=1e-6)
        np.testing.assert_allclose(d2, b2, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_two_nearest_in_windows_is_exact_where_both_are_within_reach(device) -> None:
    instances = cells((60, 70), count=25, seed=1)
    within = 6.0
    d1, d2 = nearest_two_instances(instances, within=within, device=device)
    r1, r2 = reference_two_nearest(instances)
    close = r2 <= within
    assert close.mean() > 0.3  # the check below covers a real part of the map
    np.testing.assert_allclose(d1[close], r1[close], rtol=1e-6)
    np.testing.assert_allclose(d2[close], r2[close], rtol=1e-6)
    # Elsewhere the windows only leave instances out: never nearer than the truth.
    assert (d1 >= r1 - 1e-4).all() and (d2 >= r2 - 1e-4).all()


def test_two_nearest_without_instances_is_infinite() -> None:
    d1, d2 = nearest_two_instances(np.zeros((4, 5), dtype=np.uint8), device="cpu")
    assert np.isinf(d1).all() and np.isinf(d2).all()
    d1, d2 = nearest_two_instances(np.array([[0, 3, 0]]), device="cpu")
    assert d1.tolist() == [[1.0, 0.0, 1.0]] and np.isinf(d2).all()


# --- the map against the full per-instance loop ----------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_touching_cells_match_the_full_loop(device) -> None:
    instances = cells((90, 110), count=40, seed=0)
    assert len(np.unique(instances)) > 30
    got = wm.unet_weights(instances, w0=W0, sigma=SIGMA, device=device)
    assert got.dtype == np.float32
    expected = reference_unet(instances, w0=W0, sigma=SIGMA)
    assert_within_tolerance(got, expected)
    # The term is there: the background between touching cells weighs well above 1.
    assert got.max() > 1.0 + 0.5 * W0


@pytest.mark.parametrize("device", DEVICES)
def test_one_pixel_ridges_between_instances(device) -> None:
    instances = np.zeros((21, 40), dtype=np.int64)
    instances[:, :19] = 7
    instances[:, 20:30] = 2**31 - 1  # the largest id the issue promises
    instances[:, 31:] = 12
    got = wm.unet_weights(instances, w0=W0, sigma=SIGMA, device=device)
    expected = reference_unet(instances, w0=W0, sigma=SIGMA)
    assert_within_tolerance(got, expected)
    # On a one-pixel ridge d1 = d2 = 1: w = 1 + w0·exp(−4 / 2σ²).
    np.testing.assert_allclose(got[:, 19], 1.0 + W0 * math.exp(-4.0 / (2 * SIGMA**2)), rtol=1e-6)
    assert (got[instances != 0] == 1.0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_fewer_than_two_instances_give_class_weights_only(device) -> None:
    one = np.zeros((30, 30), dtype=np.uint16)
    one[10:15, 5:9] = 4
    for instances in (one, np.zeros_like(one)):
        got = wm.unet_weights(instances, class_weights={0: 0.5, 1: 3.0}, device=device)
        np.testing.assert_array_equal(got, np.where(instances != 0, 3.0, 0.5).astype(np.float32))


@pytest.mark.parametrize("device", DEVICES)
def test_two_instances_far_apart_stay_below_tolerance(device) -> None:
    instances = np.zeros((8, 400), dtype=np.uint8)
    instances[:, :3] = 1
    instances[:, -3:] = 2
    got = wm.unet_weights(instances, w0=W0, sigma=SIGMA, device=device)
    expected = reference_unet(instances, w0=W0, sigma=SIGMA)
    assert_within_tolerance(got, expected)
    middle = expected[:, 150:250]
    assert (middle - 1.0 < TOLERANCE * W0).all()  # the exact term is below tolerance there ...
    assert (got[:, 150:250] == 1.0).all()  # ... and the windows never computed it


@pytest.mark.parametrize("device", DEVICES)
def test_anisotropic_volume(device) -> None:
    instances = cells((12, 30, 28), count=14, seed=5)
    spacing = (3.0, 0.7, 0.9)
    got = wm.unet_weights(instances, w0=5.0, sigma=4.0, spacing=spacing, device=device)
    expected = reference_unet(instances, w0=5.0, sigma=4.0, spacing=spacing)
    assert_within_tolerance(got, expected, w0=5.0)


@pytest.mark.parametrize("device", DEVICES)
def test_ignored_pixels_weigh_zero_and_are_no_instance(device) -> None:
    instances = cells((40, 50), count=12, seed=2)
    classes = (instances != 0).astype(np.uint8)
    classes[5:25, 10:20] = 255
    got = wm.unet_weights(instances, classes=classes, ignore_index=255, class_weights={0: 1.0, 1: 2.0},
                          device=device)
    expected = reference_unet(instances, w0=W0, sigma=SIGMA, classes=classes, ignore_index=255,
                              class_weights={0: 1.0, 1: 2.0})
    assert_within_tolerance(got, expected)
    assert (got[5:25, 10:20] == 0).all()
    # The same with the ignore label written into the instance map itself.
    marked = np.where(classes == 255, 255, instances)
    np.testing.assert_array_equal(
        wm.unet_weights(marked, ignore_index=255, class_weights={0: 1.0, 1: 2.0}, device=device), got
    )


def test_semantic_classes_weigh_per_class() -> None:
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[5:20, 5:25] = 1
    labels[5:20, 26:40] = 2
    labels[25:35, 5:50] = 1
    instances = wm.instances_from_labels(labels)
    weights = {0: 0.2, 1: 1.5, 2: 4.0}
    got = wm.unet_weights(instances, classes=labels, class_weights=weights, device="cpu")
    assert_within_tolerance(got, reference_unet(instances, w0=W0, sigma=SIGMA, classes=labels, class_weights=weights))
    assert got[10, 10] == np.float32(1.5) and got[10, 30] == np.float32(4.0)


def test_float16_and_a_loose_tolerance() -> None:
    instances = discs((80, 80), count=20, seed=4)
    expected = reference_unet(instances, w0=W0, sigma=SIGMA)
    half = wm.unet_weights(instances, dtype="float16", device="cpu")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, expected, rtol=2e-3, atol=TOLERANCE * W0 + 1e-3)
    loose = wm.unet_weights(instances, tolerance=0.05, device="cpu")
    assert_within_tolerance(loose, expected, tolerance=0.05)


@given(
    instances=hnp.arrays(np.int32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
                         elements=st.sampled_from([0, 0, 0, 1, 2, 3, 9, 70_000])),
    sigma=st.floats(0.5, 8.0),
    tolerance=st.sampled_from([1e-2, 1e-4, 1e-6]),
)
def test_random_instance_maps_match_the_full_loop(instances, sigma, tolerance) -> None:
    got = wm.unet_weights(instances, w0=W0, sigma=sigma, tolerance=tolerance, device="cpu")
    assert_within_tolerance(got, reference_unet(instances, w0=W0, sigma=sigma), tolerance=tolerance)


def test_reach_is_where_the_term_falls_to_the_tolerance() -> None:
    r = reach(SIGMA, TOLERANCE)
    assert math.isclose(math.exp(-(r**2) / (2 * SIGMA**2)), TOLERANCE, rel_tol=1e-12)


# --- instances_from_labels -------------------------------------------------------------------


@given(
    labels=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=9),
                      elements=st.integers(0, 3)),
    connectivity=st.integers(1, 3),
)
def test_instances_from_labels_are_the_components_of_every_class(labels, connectivity) -> None:
    connectivity = min(connectivity, labels.ndim)
    got = wm.instances_from_labels(labels, connectivity=connectivity, ignore_index=3)
    assert got.dtype == np.int32
    assert ((got == 0) == np.isin(labels, (0, 3))).all()
    structure = ndimage.generate_binary_structure(labels.ndim, connectivity)
    expected_count = 0
    for value in (1, 2):
        components, count = ndimage.label(labels == value, structure=structure)
        expected_count += count
        for k in range(1, count + 1):
            ids = np.unique(got[components == k])
            assert len(ids) == 1 and ids[0] != 0  # one component, one instance
    present = np.unique(got[got != 0])
    assert len(present) == expected_count  # distinct components never share an id
    if expected_count:
        assert present.tolist() == list(range(1, expected_count + 1))


@given(
    labels=hnp.arrays(
        st.sampled_from([np.uint8, np.uint16, np.int64, np.uint64]),
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=12),
        elements=st.sampled_from([0, 1, 2, 3, 5, 200]),
    ),
    connectivity=st.integers(1, 3),
    background=st.sampled_from([0, 2]),
    ignore_index=st.sampled_from([None, 3, 200, 2**40]),
    sparse=st.booleans(),
)
def test_instances_from_labels_equal_the_per_label_loop(labels, connectivity, background, ignore_index,
                                                        sparse) -> None:
    """The one-pass labelling gives the very ids of one whole-array ndimage.label per label (issue 20)."""
    connectivity = min(connectivity, labels.ndim)
    if sparse and labels.dtype.itemsize == 8:
        labels = labels * np.array(2**37 + 1, dtype=labels.dtype)  # ids far beyond the pixel count
    got = wm.instances_from_labels(labels, connectivity=connectivity, background=background,
                                   ignore_index=ignore_index)
    expected = reference_instances_from_labels(labels, connectivity, background, ignore_index)
    assert got.dtype == np.int32 and got.shape == labels.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_instances_from_labels_on_a_mask_of_thousands_of_labels() -> None:
    """Issue 20's case: 1024², ~3,900 labels (touching cells as a semantic mask), every connectivity."""
    from weightmaps.sample_data import make_instance_masks

    labels = make_instance_masks(1, (1024, 1024), instances=4000, seed=1)[0]
    assert len(np.unique(labels)) > 3000
    for connectivity in (1, 2):
        np.testing.assert_array_equal(wm.instances_from_labels(labels, connectivity=connectivity),
                                      reference_instances_from_labels(labels, connectivity))


def test_instances_from_labels_make_no_pass_per_label(monkeypatch) -> None:
    """The cost does not grow with the number of labels: no whole-mask labelling per label (issue 20).

    The per-label loop made 1,000 whole-array ``ndimage.label`` calls for a mask of 1,000 labels;
    the one-pass labelling makes at most one.
    """
    import scipy.ndimage

    labels = np.arange(1, 1001, dtype=np.int32).reshape(20, 50).repeat(3, axis=0).repeat(3, axis=1)
    whole_mask_calls = []
    original = scipy.ndimage.label

    def counting(input, *args, **kwargs):
        if np.shape(input) == labels.shape:
            whole_mask_calls.append(1)
        return original(input, *args, **kwargs)

    monkeypatch.setattr(scipy.ndimage, "label", counting)
    got = wm.instances_from_labels(labels)
    assert got.max() == 1000
    assert len(whole_mask_calls) <= 1


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instances", "kwargs", "words"),
    [
        (np.ones((3, 3), dtype=np.float32), {}, "integer"),
        (np.array([[1, -2], [0, 0]]), {}, ">= 0"),
        (np.ones((3, 3), dtype=np.int32), {"sigma": 0.0}, "sigma"),
        (np.ones((3, 3), dtype=np.int32), {"w0": -1.0}, "w0"),
        (np.ones((3, 3), dtype=np.int32), {"w0": float("nan")}, "w0"),
        (np.ones((3, 3), dtype=np.int32), {"tolerance": 0.0}, "tolerance"),
        (np.ones((3, 3), dtype=np.int32), {"tolerance": 1.0}, "tolerance"),
        (np.ones((3, 3), dtype=np.int32), {"classes": np.ones((3, 4), dtype=np.uint8)}, "shape"),
        (np.array([[1, 0, 2]]), {"class_weights": {0: 1.0}}, "no class weight"),
        # class 1 lies inside the weight table's range but has no weight: named, not NaN
        (np.array([[1, 0, 2]]), {"classes": np.array([[1, 0, 2]], np.uint8), "class_weights": {0: 1.0, 2: 1.0}},
         r"\[1\] occur"),
    ],
)
def test_bad_input_is_named(instances, kwargs, words) -> None:
    with pytest.raises(wm.WeightmapsError, match=words):
        wm.unet_weights(instances, device="cpu", **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(70, 90), (9, 30, 26)])
def test_stacked_windows_equal_one_window_at_a_time(device, shape) -> None:
    """The GPU's stacked windows (size classes, padded canvases) against the window loop, on every backend."""
    from weightmaps.backend import get_backend
    from weightmaps.unet import _two_nearest

    backend = get_backend(device)
    instances = backend.asarray(cells(shape, count=20, seed=6))
    spacing = (1.0, 0.8, 1.3)[-len(shape):]
    for within in (4.0, None):
        one = _two_nearest(backend, instances, spacing, within, None, stacked=False)
        stacked = _two_nearest(backend, instances, spacing, within, None, stacked=True)
        for a, b in zip(one, stacked):  # equal up to the transforms' rounding (canvas sizes pick edt or scipy)
            np.testing.assert_allclose(np.asarray(a.get() if hasattr(a, "get") else a),
                                       np.asarray(b.get() if hasattr(b, "get") else b), rtol=1e-6)
