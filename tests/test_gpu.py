"""The CUDA backend against the CPU one on the same inputs (runs on GPU days; skips elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

import weightmaps as wm
from tests.test_engine import blobs

pytestmark = pytest.mark.gpu

CASES = [
    ((96, 128), None, 1),
    ((200, 75), (0.5, 2.0), 2),
    ((17, 40, 33), (3.0, 0.8, 0.8), 1),
    ((12, 20, 24), None, 3),
]


@pytest.mark.parametrize(("shape", "spacing", "connectivity"), CASES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_weight_map_matches_cpu(shape, spacing, connectivity, dtype) -> None:
    import cupy

    labels = blobs(shape, seed=7)
    labels[0, 0] = 9  # an ignore-label pixel
    weights = {0: 0.4, 1: 2.5, 2: 7.0}
    kwargs = dict(sigma=3.0, class_weights=weights, spacing=spacing, connectivity=connectivity,
                  ignore_index=9, dtype=dtype)
    cpu = wm.weight_map(labels, device="cpu", **kwargs)
    gpu = wm.weight_map(cupy.asarray(labels), **kwargs)
    assert isinstance(gpu, cupy.ndarray) and gpu.dtype == np.dtype(dtype)
    tolerance = 1e-5 if dtype == "float32" else 2e-3
    np.testing.assert_allclose(gpu.get(), cpu, rtol=tolerance, atol=tolerance * 1e-2)
    # numpy in, device="cuda": numpy out, same numbers.
    np.testing.assert_allclose(wm.weight_map(labels, device="cuda", **kwargs), cpu, rtol=tolerance, atol=tolerance * 1e-2)


@pytest.mark.parametrize(("shape", "spacing", "connectivity"), CASES)
def test_cuda_distance_and_edges_match_cpu(shape, spacing, connectivity) -> None:
    import cupy

    labels = blobs(shape, seed=3)
    np.testing.assert_array_equal(wm.edge_mask(cupy.asarray(labels), connectivity=connectivity).get(),
                                  wm.edge_mask(labels, connectivity=connectivity))
    np.testing.assert_allclose(
        wm.distance_to_edges(labels, spacing=spacing, connectivity=connectivity, device="cuda"),
        wm.distance_to_edges(labels, spacing=spacing, connectivity=connectivity, device="cpu"),
        rtol=1e-5,
    )


def test_cuda_batch_with_an_edgeless_sample() -> None:
    import cupy

    stack = np.stack([blobs((64, 80), seed=i) for i in range(4)])
    stack[2] = 1
    weights = {0: 1.0, 1: 2.0, 2: 3.0}
    gpu = wm.weight_map(cupy.asarray(stack), sigma=2.0, class_weights=weights, batch=True)
    cpu = wm.weight_map(stack, sigma=2.0, class_weights=weights, batch=True, device="cpu")
    np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-5)
    assert (gpu[2] == 2.0).all()


def test_cuda_missing_label_is_named() -> None:
    import cupy

    with pytest.raises(wm.WeightmapsError, match=r"\[2\]"):
        wm.weight_map(cupy.asarray(np.array([[0, 1, 2]])), sigma=1.0, class_weights={0: 1.0, 1: 1.0})


def test_cupy_input_with_cpu_device_returns_cupy() -> None:
    import cupy

    labels = blobs((30, 40))
    out = wm.uncertainty(cupy.asarray(labels), sigma=2.0, device="cpu")
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(out.get(), wm.uncertainty(labels, sigma=2.0, device="cpu"))


def test_cuda_stacked_batch_matches_cpu() -> None:
    """The batching trick on cuCIM (one 3-D transform for a stack of 2-D masks) against the CPU."""
    import dataclasses

    import cupy

    stack = np.stack([blobs((96, 128), seed=i) for i in range(8)])
    stack[3] = 2
    stacked = dataclasses.replace(wm.get_backend("cuda"), stack_batches=True)
    weights = {0: 1.0, 1: 2.0, 2: 3.0}
    for spacing in (None, (0.5, 2.0)):
        gpu = wm.weight_map(cupy.asarray(stack), sigma=2.0, class_weights=weights, spacing=spacing, batch=True, device=stacked)
        cpu = wm.weight_map(stack, sigma=2.0, class_weights=weights, spacing=spacing, batch=True, device="cpu")
        np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-5, atol=1e-7)
