"""The CUDA backend against the CPU one on the same inputs (runs on GPU days; skips elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

import weightmaps as wm
from tests.test_engine import blobs

pytestmark = pytest.mark.gpu



def test_cupy_in_cupy_out_on_the_device_in_both_dtypes() -> None:
    """The engine's own tests run on CUDA too (tests/test_engine.py, DEVICES); here: CuPy stays CuPy."""
    import cupy

    labels = blobs((17, 40, 33), seed=7)
    labels[0, 0, 0] = 9  # an ignore-label pixel
    kwargs = dict(sigma=3.0, class_weights={0: 0.4, 1: 2.5, 2: 7.0}, spacing=(3.0, 0.8, 0.8), ignore_index=9)
    for dtype, tolerance in (("float32", 1e-5), ("float16", 2e-3)):
        gpu = wm.weight_map(cupy.asarray(labels), dtype=dtype, **kwargs)
        assert isinstance(gpu, cupy.ndarray) and gpu.dtype == np.dtype(dtype) and gpu.device.id == 0
        np.testing.assert_allclose(gpu.get(), wm.weight_map(labels, dtype=dtype, device="cpu", **kwargs),
                                   rtol=tolerance, atol=tolerance * 1e-2)
    edges = wm.edge_mask(cupy.asarray(labels), connectivity=3)
    assert isinstance(edges, cupy.ndarray)
    np.testing.assert_array_equal(edges.get(), wm.edge_mask(labels, connectivity=3))


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

    from weightmaps.cuda_plan import stack_groups

    # 150 masks of 96 x 128: one full 128³ cube stacked, the 22 left over one by one.
    stack = np.stack([blobs((96, 128), seed=i) for i in range(150)])
    stack[3] = 2
    stack[140] = 1
    stacked = wm.get_backend("cuda")  # stacks by default
    assert stacked.stack_batches and [g[2] for g in stack_groups(150, (96, 128), stacked.free_memory())] == [True, False]
    weights = {0: 1.0, 1: 2.0, 2: 3.0}
    for spacing in (None, (0.5, 2.0)):
        gpu = wm.weight_map(cupy.asarray(stack), sigma=2.0, class_weights=weights, spacing=spacing, batch=True, device=stacked)
        cpu = wm.weight_map(stack, sigma=2.0, class_weights=weights, spacing=spacing, batch=True, device="cpu")
        np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-5, atol=1e-7)


def test_cuda_isotropic_spacing_scales_like_the_cpu() -> None:
    labels = blobs((70, 90), seed=11)
    for spacing in ((2.5, 2.5), (0.5, 0.5)):
        np.testing.assert_allclose(
            wm.distance_to_edges(labels, spacing=spacing, device="cuda"),
            wm.distance_to_edges(labels, spacing=spacing, device="cpu"), rtol=1e-5)


def test_a_volume_beyond_cucims_cube_limit_takes_the_cpu_transform() -> None:
    """(6, 5, 1300) pads to a 1312³ cube, past cuCIM's int index: edt on the host, exact all the same."""
    import dataclasses

    import cupy

    volume = np.zeros((6, 5, 1300), dtype=np.uint8)
    volume[2:4, 1:3, 100:900] = 1
    volume[:, :, 1250:] = 2
    weights = {0: 1.0, 1: 3.0, 2: 0.5}
    gpu = wm.weight_map(cupy.asarray(volume), sigma=4.0, class_weights=weights, spacing=(3.0, 1.0, 1.0))
    cpu = wm.weight_map(volume, sigma=4.0, class_weights=weights, spacing=(3.0, 1.0, 1.0), device="cpu")
    assert isinstance(gpu, cupy.ndarray)
    np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-5, atol=1e-7)
    strict = dataclasses.replace(wm.get_backend("cuda"), cpu_fallback=False)
    with pytest.raises(wm.WeightmapsError, match="cube of side 1312"):
        wm.weight_map(volume, sigma=4.0, class_weights=weights, device=strict)


def test_compute_maps_copies_once_into_pinned_memory() -> None:
    from weightmaps.params import MapParams
    from weightmaps.shards import ShardSettings, compute_maps

    masks = np.stack([blobs((64, 96), seed=i) for i in range(5)])
    settings = ShardSettings(MapParams(sigma=2.0, class_weights={0: 1.0, 1: 2.0, 2: 3.0}), batch_size=2)
    gpu = compute_maps(masks, settings, wm.get_backend("cuda"))
    cpu = compute_maps(masks, settings, wm.get_backend("cpu"))
    assert isinstance(gpu, np.ndarray) and gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-7)


def test_pipeline_on_the_gpu_writes_the_cpu_maps(tmp_path) -> None:
    from weightmaps.sample_data import write_dataset

    # Shards of 100 masks of 60 x 64: per shard a full 64³ cube stacked, then 36 masks stacked too.
    root = write_dataset(tmp_path, n=200, shape=(60, 64), num_classes=4, with_images=False)
    gpu = wm.compute(root / "masks", tmp_path / "gpu.zarr", sigma=3.0, device="cuda", samples_per_shard=100)
    cpu = wm.compute(root / "masks", tmp_path / "cpu.zarr", sigma=3.0, device="cpu", workers=1)
    assert gpu.device == "cuda" and gpu.n_samples == 200 and gpu.steady_masks_per_second
    a, b = wm.open_store(tmp_path / "gpu.zarr"), wm.open_store(tmp_path / "cpu.zarr")
    assert a.complete and a.ids == b.ids
    for sample_id in a.ids:
        np.testing.assert_allclose(a[sample_id], b[sample_id], rtol=1e-5, atol=1e-7)


def test_unet_cupy_in_cupy_out_equals_the_cpu() -> None:
    """The U-Net map's windows go to cuCIM stacked; the map equals the CPU's."""
    import cupy

    from tests.test_unet import cells

    instances = cells((70, 90), count=30, seed=3)
    classes = (instances != 0).astype(np.uint8)
    classes[:5] = 9
    kwargs = dict(w0=10.0, sigma=4.0, class_weights={0: 0.5, 1: 2.0}, spacing=(1.5, 1.0), ignore_index=9)
    gpu = wm.unet_weights(cupy.asarray(instances), classes=cupy.asarray(classes), **kwargs)
    assert isinstance(gpu, cupy.ndarray) and gpu.dtype == np.float32
    np.testing.assert_allclose(gpu.get(), wm.unet_weights(instances, classes=classes, device="cpu", **kwargs),
                               rtol=1e-5, atol=1e-5)
    made = wm.instances_from_labels(cupy.asarray(classes), ignore_index=9)
    assert isinstance(made, cupy.ndarray)
    np.testing.assert_array_equal(made.get(), wm.instances_from_labels(classes, ignore_index=9))


def test_worker_processes_share_the_device_and_group_shards(tmp_path) -> None:
    """Two worker processes, each with its own CUDA context and memory share, computing groups of
    four shards of 64² masks as one stacked batch: the CPU's maps."""
    from weightmaps.sample_data import write_dataset

    root = write_dataset(tmp_path, n=128, shape=(64, 64), num_classes=3, with_images=False)
    gpu = wm.compute(root / "masks", tmp_path / "gpu.zarr", sigma=3.0, device="cuda", workers=2, samples_per_shard=16)
    cpu = wm.compute(root / "masks", tmp_path / "cpu.zarr", sigma=3.0, device="cpu", workers=1)
    assert gpu.device == "cuda" and gpu.n_computed == 128
    a, b = wm.open_store(tmp_path / "gpu.zarr"), wm.open_store(tmp_path / "cpu.zarr")
    assert a.complete and a.ids == b.ids
    for sample_id in a.ids:
        np.testing.assert_allclose(a[sample_id], b[sample_id], rtol=1e-5, atol=1e-7)


def test_a_memory_share_bounds_what_the_plan_sees() -> None:
    import cupy

    backend = wm.get_backend("cuda")
    pool = cupy.get_default_memory_pool()
    before = pool.get_limit()
    try:
        backend.limit_memory(256 * 2**20)
        assert 0 < backend.free_memory() <= 256 * 2**20
        assert backend.total_memory() > 256 * 2**20
    finally:
        pool.set_limit(size=before)
