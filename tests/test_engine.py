"""The engine against brute force (tiny arrays) and scipy (the reference path), on both CPU paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import weightmaps as wm
from tests.reference import (
    brute_distance,
    brute_edge_mask,
    reference_uncertainty,
    reference_weight,
    scipy_distance,
    scipy_edge_mask,
)

CPU_DEVICES = ("scipy", "cpu")
# Every engine test that takes a device runs on the CUDA backend too where a GPU is (marked gpu,
# skipped elsewhere): one body for every backend, as CuPy's own ndimage tests do.
DEVICES = (*CPU_DEVICES, pytest.param("cuda", marks=pytest.mark.gpu))


def label_arrays(ndim: int, max_side: int = 7, max_label: int = 3) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int32, np.int64]),
        shape=hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=max_side),
        elements=st.integers(0, max_label),
    )


any_labels = st.one_of(label_arrays(2), label_arrays(3, max_side=5))
spacings = st.floats(0.25, 4.0, allow_nan=False)


def spacing_for(draw_spacing: list[float], ndim: int) -> tuple[float, ...]:
    return tuple(draw_spacing[:ndim])


def blobs(shape: tuple[int, ...], seed: int = 0, num_classes: int = 3) -> np.ndarray:
    """Overlapping discs/balls: real-looking labels for mid-size checks."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    labels = np.zeros(shape, dtype=np.uint8)
    for _ in range(6):
        centre = rng.uniform(0, shape, size=len(shape))
        radius = rng.uniform(2, max(3, min(shape) / 3))
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
        labels[inside] = rng.integers(1, num_classes)
    return labels


# --- edges -----------------------------------------------------------------------------------


@given(labels=any_labels, full=st.booleans())
def test_edge_mask_matches_brute_force(labels: np.ndarray, full: bool) -> None:
    connectivity = labels.ndim if full else 1
    np.testing.assert_array_equal(wm.edge_mask(labels, connectivity=connectivity), brute_edge_mask(labels, connectivity))


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_edge_mask_matches_scipy_morphology_in_3d(connectivity: int) -> None:
    labels = blobs((9, 17, 13), seed=connectivity)
    np.testing.assert_array_equal(
        wm.edge_mask(labels, connectivity=connectivity), scipy_edge_mask(labels, connectivity)
    )


def test_edge_mask_examples() -> None:
    labels = np.array([[0, 0, 1], [0, 0, 0], [2, 0, 0]])
    face = wm.edge_mask(labels).astype(int)
    full = wm.edge_mask(labels, connectivity=2).astype(int)
    np.testing.assert_array_equal(face, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(full, [[0, 1, 1], [1, 1, 1], [1, 1, 0]])
    # The border is not an edge and a constant array has none.
    assert not wm.edge_mask(np.full((3, 4), 7)).any()


# --- distances -------------------------------------------------------------------------------


@given(labels=any_labels, spacing=st.lists(spacings, min_size=3, max_size=3), full=st.booleans())
def test_scipy_path_matches_brute_force(labels: np.ndarray, spacing: list[float], full: bool) -> None:
    connectivity = labels.ndim if full else 1
    spacing_t = spacing_for(spacing, labels.ndim)
    got = wm.distance_to_edges(labels, spacing=spacing_t, connectivity=connectivity, device="scipy")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, brute_distance(labels, spacing_t, connectivity), rtol=1e-6)


@given(labels=any_labels, spacing=st.lists(spacings, min_size=3, max_size=3))
def test_cpu_path_matches_scipy_path(labels: np.ndarray, spacing: list[float]) -> None:
    spacing_t = spacing_for(spacing, labels.ndim)
    fast = wm.distance_to_edges(labels, spacing=spacing_t, device="cpu")
    slow = wm.distance_to_edges(labels, spacing=spacing_t, device="scipy")
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((64, 96), None), ((128, 37), (0.5, 2.0)), ((16, 40, 24), (3.0, 0.7, 0.7)), ((1, 50), None), ((50, 1), (2.0, 1.0))],
)
@pytest.mark.parametrize("device", DEVICES)
def test_distance_on_real_looking_masks_matches_scipy_recipe(shape, spacing, device) -> None:
    labels = blobs(shape, seed=len(shape))
    np.testing.assert_allclose(
        wm.distance_to_edges(labels, spacing=spacing, device=device), scipy_distance(labels, spacing), rtol=1e-6
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("labels", [np.zeros((5, 5), np.uint8), np.full((1, 1), 3), np.ones((2, 3, 4), np.int64)])
def test_no_edge_gives_infinite_distance_and_full_uncertainty(labels: np.ndarray, device: str) -> None:
    assert np.isposinf(wm.distance_to_edges(labels, device=device)).all()
    assert (wm.uncertainty(labels, sigma=2.0, device=device) == 1.0).all()
    weights = wm.weight_map(labels, sigma=2.0, class_weights={int(labels.flat[0]): 2.5}, device=device)
    assert (weights == 2.5).all()


def test_one_pixel_one_row_and_non_square() -> None:
    row = np.array([[0, 0, 1, 1, 1, 2]])
    np.testing.assert_allclose(wm.distance_to_edges(row, device="cpu"), [[1, 0, 0, 1, 0, 0]])
    column = row.T
    np.testing.assert_allclose(wm.distance_to_edges(column, spacing=(2.0, 5.0), device="cpu"), [[2], [0], [0], [2], [0], [0]])
    assert np.isposinf(wm.distance_to_edges(np.array([[4]]), device="cpu")).all()


# --- uncertainty and weights -----------------------------------------------------------------


@given(labels=any_labels, sigma=st.floats(0.1, 10.0), spacing=st.lists(spacings, min_size=3, max_size=3))
def test_uncertainty_matches_formula_and_stays_in_range(labels, sigma, spacing) -> None:
    spacing_t = spacing_for(spacing, labels.ndim)
    got = wm.uncertainty(labels, sigma=sigma, spacing=spacing_t, device="cpu")
    expected = reference_uncertainty(brute_distance(labels, spacing_t), sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    distance = wm.distance_to_edges(labels, spacing=spacing_t, device="cpu").astype(np.float64)
    # 0 <= δ < 1 at finite distance; float32 can only resolve δ < 1 while d²/2σ² < ~16.
    resolvable = np.isfinite(distance) & (distance**2 / (2 * sigma**2) < 15)
    assert (got >= 0).all() and (got <= 1).all()
    assert (got[resolvable] < 1).all()
    assert (got[np.isinf(distance)] == 1).all()
    assert (got[wm.edge_mask(labels)] == 0).all()


def test_uncertainty_is_below_one_at_finite_distance() -> None:
    # float32 rounds 1 - exp(-x) to 1 only for x > ~17; up to there δ < 1 strictly.
    labels = np.zeros((1, 12), np.uint8)
    labels[0, 0] = 1
    delta = wm.uncertainty(labels, sigma=3.0, device="cpu")
    assert (delta < 1).all() and delta[0, 1] == 0 and np.all(np.diff(delta[0, 1:]) > 0)


@pytest.mark.parametrize("device", DEVICES)
@given(
    labels=any_labels,
    sigma=st.floats(0.2, 8.0),
    weights=st.lists(st.floats(0.01, 50.0), min_size=4, max_size=4),
    ignore=st.sampled_from([None, 0, 3, 255]),
    dtype=st.sampled_from(["float32", "float16"]),
)
def test_weight_map_matches_reference(labels, sigma, weights, ignore, dtype, device) -> None:
    class_weights = {c: w for c, w in enumerate(weights) if c != ignore}
    got = wm.weight_map(labels, sigma=sigma, class_weights=class_weights, ignore_index=ignore, dtype=dtype, device=device)
    assert got.dtype == np.dtype(dtype) and got.shape == labels.shape
    expected = reference_weight(labels, brute_distance(labels), sigma, class_weights, ignore)
    tolerance = {"float32": 2e-6, "float16": 1e-3}[dtype]
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=tolerance, atol=tolerance * 1e-2)
    if ignore is not None:
        assert (got[labels == ignore] == 0).all()


def test_ignore_label_still_forms_edges() -> None:
    labels = np.array([[1, 1, 1, 255, 255]])
    got = wm.weight_map(labels, sigma=1.0, class_weights={1: 1.0}, ignore_index=255, device="cpu")
    np.testing.assert_allclose(got, [[1 - np.exp(-2), 1 - np.exp(-0.5), 0, 0, 0]], rtol=1e-6)


# --- properties ------------------------------------------------------------------------------


@given(labels=any_labels, axis_seed=st.integers(0, 100))
def test_flip_and_transpose_equivariance(labels: np.ndarray, axis_seed: int) -> None:
    rng = np.random.default_rng(axis_seed)
    axis = int(rng.integers(labels.ndim))
    order = tuple(rng.permutation(labels.ndim))
    spacing = tuple(float(s) for s in rng.uniform(0.5, 2.0, labels.ndim))
    base = wm.distance_to_edges(labels, spacing=spacing, device="cpu")
    flipped = wm.distance_to_edges(np.flip(labels, axis), spacing=spacing, device="cpu")
    np.testing.assert_allclose(flipped, np.flip(base, axis), rtol=1e-6)
    moved = wm.distance_to_edges(np.transpose(labels, order), spacing=tuple(spacing[i] for i in order), device="cpu")
    np.testing.assert_allclose(moved, np.transpose(base, order), rtol=1e-6)


@given(labels=any_labels, scale=st.floats(0.1, 20.0), sigma=st.floats(0.3, 5.0))
def test_scaling_spacing_and_sigma_together_leaves_uncertainty_unchanged(labels, scale, sigma) -> None:
    spacing = (1.0, 2.0, 0.5)[: labels.ndim]
    base = wm.uncertainty(labels, sigma=sigma, spacing=spacing, device="cpu")
    scaled = wm.uncertainty(labels, sigma=sigma * scale, spacing=tuple(s * scale for s in spacing), device="cpu")
    np.testing.assert_allclose(scaled, base, rtol=1e-4, atol=1e-6)


@given(labels=any_labels, permutation_seed=st.integers(0, 1000))
def test_permuting_labels_with_their_weights_leaves_weights_unchanged(labels, permutation_seed) -> None:
    rng = np.random.default_rng(permutation_seed)
    permutation = rng.permutation(4)
    weights = {c: float(w) for c, w in enumerate(rng.uniform(0.1, 5.0, 4))}
    permuted_weights = {int(permutation[c]): w for c, w in weights.items()}
    base = wm.weight_map(labels, sigma=1.5, class_weights=weights, device="cpu")
    permuted = wm.weight_map(permutation[labels], sigma=1.5, class_weights=permuted_weights, device="cpu")
    np.testing.assert_array_equal(permuted, base)


# --- batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(5, 20, 30), (3, 6, 10, 8)])
def test_batch_equals_one_call_per_sample(shape, device) -> None:
    stack = np.stack([blobs(shape[1:], seed=i) for i in range(shape[0])])
    stack[1] = 2  # a sample without edges inside the batch
    weights = {0: 0.5, 1: 2.0, 2: 4.0}
    batch = wm.weight_map(stack, sigma=2.0, class_weights=weights, device=device, batch=True)
    singles = np.stack([wm.weight_map(s, sigma=2.0, class_weights=weights, device=device) for s in stack])
    np.testing.assert_array_equal(batch, singles)
    # Edges never cross the batch axis.
    np.testing.assert_array_equal(wm.edge_mask(stack, batch=True), np.stack([wm.edge_mask(s) for s in stack]))


def test_three_d_array_is_a_volume_unless_batch() -> None:
    stack = np.zeros((2, 4, 4), np.uint8)
    stack[1] = 1
    assert wm.edge_mask(stack).any()  # the two slices touch: a volume has an edge between them
    assert not wm.edge_mask(stack, batch=True).any()


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: wm.distance_to_edges(np.zeros((3, 3), np.float32)), "integer"),
        (lambda: wm.distance_to_edges(np.full((3, 3), np.nan)), "NaN"),
        (lambda: wm.distance_to_edges(np.array([[0, -1]])), "found label -1"),
        (lambda: wm.distance_to_edges(np.zeros(5, np.uint8)), "2-D or 3-D"),
        (lambda: wm.distance_to_edges(np.zeros((2, 2, 2, 2), np.uint8)), "batch=True"),
        (lambda: wm.distance_to_edges(np.zeros((0, 4), np.uint8)), "empty"),
        (lambda: wm.distance_to_edges(np.zeros((3, 3), np.uint8), batch=True), "2-D or 3-D per sample"),
        (lambda: wm.uncertainty(np.zeros((3, 3), np.uint8), sigma=0), "sigma"),
        (lambda: wm.uncertainty(np.zeros((3, 3), np.uint8), sigma=-1.0), "sigma"),
        (lambda: wm.uncertainty(np.zeros((3, 3), np.uint8), sigma=float("nan")), "sigma"),
        (lambda: wm.distance_to_edges(np.zeros((3, 3), np.uint8), spacing=(1.0, 1.0, 1.0)), "one value per axis"),
        (lambda: wm.distance_to_edges(np.zeros((3, 3), np.uint8), spacing=(1.0, 0.0)), "spacing"),
        (lambda: wm.distance_to_edges(np.zeros((3, 3), np.uint8), connectivity=3), "connectivity"),
        (lambda: wm.distance_to_edges(np.zeros((3, 3), np.uint8), device="tpu"), "unknown device"),
        (lambda: wm.weight_map(np.array([[0, 1, 2]]), sigma=1, class_weights={0: 1.0, 1: 1.0}), r"label\(s\) \[2\]"),
        (lambda: wm.weight_map(np.array([[0, 1, 9]]), sigma=1, class_weights={0: 1.0, 9: 1.0}), r"label\(s\) \[1\]"),
        (lambda: wm.weight_map(np.array([[0, 1]]), sigma=1, class_weights="balanced"), "mapping"),
        (lambda: wm.weight_map(np.array([[0, 1]]), sigma=1, class_weights={0: 1, 1: 1}, dtype="int8"), "dtype"),
    ],
)
def test_bad_input_is_a_weightmaps_error_naming_the_problem(call, message) -> None:
    with pytest.raises(wm.WeightmapsError, match=message):
        call()


def test_weightmaps_error_is_a_value_error() -> None:
    assert issubclass(wm.WeightmapsError, ValueError)


def test_cuda_request_without_gpu_names_what_is_missing() -> None:
    from weightmaps.backend import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is None:
        pytest.skip("this machine has a usable CUDA backend")
    with pytest.raises(wm.WeightmapsError, match="device 'cuda' is not available"):
        wm.get_backend("cuda")


def test_backend_pickles_by_name() -> None:
    import pickle

    backend = wm.get_backend("cpu")
    assert pickle.loads(pickle.dumps(backend)) is backend


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spacing", [None, (0.5, 3.0)])
def test_stacked_batch_equals_one_transform_per_sample(device: str, spacing) -> None:
    """The GPU batching trick (one 3-D transform, batch axis spaced out of reach), on every backend."""
    import dataclasses
    import pickle

    from weightmaps.cuda_plan import stack_groups

    # 60 samples of 40 x 56 fill 55 % of cuCIM's 64³ cube: the plan stacks them.
    stack = np.stack([blobs((40, 56), seed=i) for i in range(60)])
    stack[2] = 1  # no edge: must stay +inf, not see the neighbours' edges
    stack[4, :, :] = 0
    stack[4, 0, 0] = 2  # a single edge pair in a corner: the farthest pixel is a full diagonal away
    stacked = dataclasses.replace(wm.get_backend(device), free_memory=lambda: 2**30)
    assert stacked.stack_batches and stack_groups(len(stack), stack.shape[1:], 2**30) == [(0, 60, True)]
    one_by_one = dataclasses.replace(stacked, stack_batches=False)
    assert not pickle.loads(pickle.dumps(one_by_one)).stack_batches
    looped = wm.distance_to_edges(stack, spacing=spacing, device=one_by_one, batch=True)
    np.testing.assert_allclose(wm.distance_to_edges(stack, spacing=spacing, device=stacked, batch=True), looped, rtol=1e-6)
    assert np.isposinf(looped[2]).all()
    weights = {0: 0.5, 1: 2.0, 2: 4.0}
    np.testing.assert_allclose(
        wm.weight_map(stack, sigma=2.0, class_weights=weights, spacing=spacing, device=stacked, batch=True),
        wm.weight_map(stack, sigma=2.0, class_weights=weights, spacing=spacing, device=one_by_one, batch=True),
        rtol=1e-6,
    )


@pytest.mark.parametrize("device", CPU_DEVICES)
def test_label_checks_always_run_on_the_cpu(device: str) -> None:
    """validate=False spares a GPU its device reads; the numpy lookup has no NaN guard, so the CPU checks anyway."""
    labels = np.array([[0, 1, 5]], dtype=np.int64)
    with pytest.raises(wm.WeightmapsError, match=r"\[5\]"):
        wm.weight_map(labels, sigma=1.0, class_weights={0: 1.0, 1: 2.0}, device=device, validate=False)
    with pytest.raises(wm.WeightmapsError, match="found label -15"):
        wm.weight_map(-3 * labels, sigma=1.0, class_weights={0: 1.0}, device=device, validate=False)


def test_label_range_reads_both_ends() -> None:
    from weightmaps.validation import label_range

    assert label_range(np.array([[3, -2], [7, 0]], dtype=np.int16)) == (-2, 7)
    assert label_range(np.array([4, 9], dtype=np.uint8)) == (0, 9)
    assert label_range(np.array([True, False])) == (0, 1)


# --- extreme σ and spacing: never NaN, never a silent overflow ----------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_sigma_gives_zero_on_edges_and_full_weight_elsewhere(device: str) -> None:
    labels = blobs((30, 40), seed=2)
    weights = {0: 0.5, 1: 2.0, 2: 4.0}
    for sigma in (3e-20, 1e-162, 5e-324):
        got = wm.weight_map(labels, sigma=sigma, class_weights=weights, device=device)
        edges = wm.edge_mask(labels)
        assert np.isfinite(got).all()
        assert (got[edges] == 0).all()
        np.testing.assert_array_equal(got[~edges], np.vectorize(weights.get)(labels[~edges]).astype(np.float32))


@pytest.mark.parametrize("device", DEVICES)
@given(scale_exponent=st.integers(-300, 300))
def test_spacing_and_sigma_in_any_units_give_the_same_maps(device: str, scale_exponent: int) -> None:
    """Nanometres or light years: (spacing, σ) and (c·spacing, c·σ) are the same map, never NaN."""
    labels = blobs((24, 20), seed=4)
    weights = {0: 0.5, 1: 2.0, 2: 4.0}
    c = 10.0**scale_exponent
    base = wm.weight_map(labels, sigma=2.0, spacing=(1.0, 0.5), class_weights=weights, device=device)
    scaled = wm.weight_map(labels, sigma=2.0 * c, spacing=(c, 0.5 * c), class_weights=weights, device=device)
    np.testing.assert_allclose(scaled, base, rtol=1e-5, atol=1e-7)
    delta = wm.uncertainty(labels, sigma=2.0 * c, spacing=(c, 0.5 * c), device=device)
    np.testing.assert_allclose(delta, wm.uncertainty(labels, sigma=2.0, spacing=(1.0, 0.5), device=device),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_distances_in_huge_or_tiny_units_overflow_to_inf_never_nan(device: str) -> None:
    labels = np.zeros((3, 40), np.uint8)
    labels[:, 0] = 1
    for spacing, expected_far in ((1e30, 38 * 1e30), (1e37, np.inf), (1e-30, 38 * 1e-30), (1e-300, 0.0)):
        d = wm.distance_to_edges(labels, spacing=spacing, device=device)
        assert not np.isnan(d).any() and (d[:, :2] == 0).all()
        np.testing.assert_allclose(d[0, -1], np.float32(expected_far), rtol=1e-6)


def test_a_huge_sigma_gives_the_tiny_weights_it_should() -> None:
    labels = np.zeros((1, 50), np.uint8)
    labels[0, 25:] = 1
    got = wm.weight_map(labels, sigma=1e9, class_weights={0: 1.0, 1: 1.0}, device="cpu")
    d = np.abs(np.arange(50) - 24.5) - 0.5
    np.testing.assert_allclose(got[0], d**2 / 2e18, rtol=1e-5)


def test_spacing_values_a_million_fold_apart_are_refused() -> None:
    with pytest.raises(wm.WeightmapsError, match="differ by more than a factor"):
        wm.distance_to_edges(np.eye(4, dtype=np.uint8), spacing=(1.0, 1e-7))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("big", "dtype"), [(2_000_000_000, np.int64), (2**64 - 1, np.uint64), (70_000, np.int32)])
def test_sparse_huge_labels_use_a_compact_table(device: str, big: int, dtype: type) -> None:
    """A label of 2e9 (or the uint64 maximum) costs a table of its labels, not of 2e9 entries."""
    from weightmaps.engine import class_weight_table

    small = blobs((32, 32), seed=6)  # labels 0..2
    labels = small.astype(dtype)
    labels[small == 2] = big
    weights = {0: 0.5, 1: 2.0, big: 4.0}
    assert class_weight_table(weights, None).keys is not None
    got = wm.weight_map(labels, sigma=2.0, class_weights=weights, device=device)
    want = wm.weight_map(small, sigma=2.0, class_weights={0: 0.5, 1: 2.0, 2: 4.0}, device=device)
    np.testing.assert_array_equal(got, want)
    ignored = wm.weight_map(labels, sigma=2.0, class_weights={0: 0.5, 1: 2.0}, ignore_index=big, device=device)
    assert (ignored[labels == big] == 0).all()
    with pytest.raises(wm.WeightmapsError, match=rf"label\(s\) \[{big}\] occur in the mask but have no class weight"):
        wm.weight_map(labels, sigma=2.0, class_weights={0: 0.5, 1: 2.0, 5: 1.0}, device=device)
