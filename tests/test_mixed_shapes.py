"""Datasets where every mask has its own size: the store costs what one shape costs, and is exact.

20,000 masks of 5,000 distinct 2-D shapes, and 50 volumes of distinct depths: the store equals
computing each map alone; a killed run resumed, a Dask run and the torch Dataset all agree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import weightmaps as wm
from tests.processes import process_group
from weightmaps.sample_data import make_masks
from weightmaps.store import open_store

SIGMA = 2.0


def _shapes_2d(n_shapes: int) -> list[tuple[int, int]]:
    return [(12 + i // 100, 12 + i % 100) for i in range(n_shapes)]  # 12..61 x 12..111


def _write_masks(folder: Path, shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    masks = []
    for i, shape in enumerate(shapes):
        mask = rng.integers(0, 3, size=tuple(max(1, s // 6) for s in shape), dtype=np.uint8)
        mask = np.kron(mask, np.ones((6,) * len(shape), np.uint8))[tuple(slice(0, s) for s in shape)]
        np.save(folder / f"m{i:05d}.npy", np.ascontiguousarray(mask))
        masks.append(mask)
    return masks


@pytest.fixture(scope="module")
def many_shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    root = tmp_path_factory.mktemp("mixed")
    shapes = _shapes_2d(5000) * 4  # 20,000 masks, every shape four times
    return root / "masks", _write_masks(root / "masks", shapes, seed=1)


def test_twenty_thousand_masks_of_five_thousand_shapes(many_shapes: tuple[Path, list[np.ndarray]], tmp_path: Path) -> None:
    folder, masks = many_shapes
    out = tmp_path / "w.zarr"
    result = wm.compute(folder, out, sigma=SIGMA, class_weights="none", device="cpu")
    assert result.n_samples == 20_000
    # A few KB of root metadata and files in proportion to the bytes, not to the shapes.
    root_json = (out / "zarr.json").stat().st_size
    files = sum(len(f) for _, _, f in os.walk(out))
    assert root_json < 16_000, root_json
    assert files < 60, files
    start = time.perf_counter()
    store = open_store(out)
    opened = time.perf_counter() - start
    assert store.complete and len(store) == 20_000 and opened < 0.5
    ids = store.ids
    for i in range(0, 20_000, 1):
        expected = wm.weight_map(masks[i], sigma=SIGMA, class_weights={0: 1.0, 1: 1.0, 2: 1.0}, device="cpu")
        np.testing.assert_allclose(store[i], expected, rtol=1e-6)
        assert ids[i] == f"m{i:05d}"


def _small_mixed(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    shapes = _shapes_2d(300) * 2
    return tmp_path / "small", _write_masks(tmp_path / "small", shapes, seed=2)


def test_volumes_of_distinct_depths(tmp_path: Path) -> None:
    folder = tmp_path / "volumes"
    folder.mkdir()
    volumes = []
    for i in range(50):
        volume = make_masks(1, (6 + i, 24, 20), num_classes=3, seed=i)[0]
        tifffile.imwrite(folder / f"case{i:02d}.tif", volume)
        volumes.append(volume)
    result = wm.compute(folder, tmp_path / "w.zarr", sigma=SIGMA, spacing=(2.5, 1.0, 1.0), device="cpu")
    store = open_store(result.store)
    assert len({store.shape(i) for i in range(50)}) == 50
    for i, volume in enumerate(volumes):
        expected = wm.weight_map(volume, sigma=SIGMA, class_weights=store.class_weights, spacing=(2.5, 1.0, 1.0),
                                 device="cpu")
        np.testing.assert_allclose(store[f"case{i:02d}"], expected, rtol=1e-6)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from weightmaps.cli import main; sys.exit(main())", *args]


@pytest.mark.slow  # runs killed with SIGKILL
def test_killed_and_resumed_mixed_store_equals_a_straight_run(tmp_path: Path) -> None:
    folder, _ = _small_mixed(tmp_path)
    straight = wm.compute(folder, tmp_path / "straight.zarr", sigma=SIGMA, device="cpu", workers=1,
                          samples_per_shard=16)
    out = tmp_path / "killed.zarr"
    args = _cli("compute", str(folder), "--out", str(out), "--sigma", str(SIGMA), "--device", "cpu", "--workers", "1",
                "--samples-per-shard", "16", "--no-progress")
    with process_group(args) as proc:
        deadline = time.monotonic() + 120
        while not list(out.glob("maps/_markers/*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert not open_store(out).complete
    subprocess.run([*args, "--resume"], check=True, capture_output=True, timeout=300)
    a, b = open_store(straight.store), open_store(out)
    assert b.complete and a.ids == b.ids
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i], b[i])
        assert a.digest(i) == b.digest(i)


def test_dask_and_the_dataset_read_mixed_stores_alike(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    torch = pytest.importorskip("torch")
    from weightmaps.distributed import compute_on_dask
    from weightmaps.torch import WeightMapDataset

    folder, masks = _small_mixed(tmp_path)
    local = wm.compute(folder, tmp_path / "local.zarr", sigma=SIGMA, device="cpu", workers=1)
    remote = compute_on_dask(2, folder, tmp_path / "dask.zarr", sigma=SIGMA, device="cpu",
                             cluster_kwargs={"dashboard_address": ":0"})
    a, b = open_store(local.store), open_store(remote.store)
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i], b[i])
    dataset = WeightMapDataset(folder, folder, local.store)
    for i in (0, 137, len(dataset) - 1):
        item = dataset[i]
        assert torch.equal(item["weight"], torch.from_numpy(a[i]))
        assert tuple(item["mask"].shape) == masks[i].shape
