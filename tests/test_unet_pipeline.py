"""The U-Net map through the pipeline, the store, the CLI and the Dataset, like the paper's map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import weightmaps as wm
from tests.reference import reference_unet
from tests.test_cli import _restore_logging, run  # noqa: F401  (the CLI tests' autouse logging fixture)
from tests.test_unet import cells
from weightmaps.errors import ResumeMismatchError
from weightmaps.pipeline import compute
from weightmaps.store import open_store

SIGMA, W0 = 4.0, 8.0
ARGS = {"sigma": SIGMA, "device": "cpu", "workers": 1, "kind": "unet", "w0": W0}


@pytest.fixture(scope="module")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six uint16 TIFF instance masks of touching cells, gapped ids beyond 255, two shapes."""
    root = tmp_path_factory.mktemp("instances")
    for i in range(6):
        shape = (48, 56) if i % 2 else (40, 64)
        tifffile.imwrite(root / f"cells_{i}.tif", cells(shape, count=14, seed=i).astype(np.uint16))
    return root


@pytest.fixture(scope="module")
def semantic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four PNG semantic masks: classes 1 and 2 in touching blobs."""
    root = tmp_path_factory.mktemp("semantic")
    rng = np.random.default_rng(0)
    for i in range(4):
        labels = np.zeros((40, 50), dtype=np.uint8)
        for _ in range(8):
            y, x = rng.integers(0, 34), rng.integers(0, 44)
            labels[y:y + rng.integers(3, 7), x:x + rng.integers(3, 7)] = rng.integers(1, 3)
        Image.fromarray(labels).save(root / f"s{i}.png")
    return root


def test_instance_masks_store_equals_unet_weights(instance_dir: Path, tmp_path: Path) -> None:
    result = compute(instance_dir, tmp_path / "w.zarr", **ARGS)
    store = open_store(tmp_path / "w.zarr")
    assert store.complete and result.n_samples == 6
    # Two classes, background and instance: ids are not classes.
    assert sorted(store.class_counts) == [0, 1] and sorted(result.class_weights) == [0, 1]
    params = store.params
    assert (params.kind, params.w0, params.tolerance, params.instances) == ("unet", W0, 1e-4, "as-is")
    for path in sorted(instance_dir.glob("*.tif")):
        instances = tifffile.imread(path)
        got = store[path.stem]
        np.testing.assert_array_equal(
            got, wm.unet_weights(instances, w0=W0, sigma=SIGMA, class_weights=store.class_weights, device="cpu")
        )
        expected = reference_unet(instances.astype(np.int64), w0=W0, sigma=SIGMA, class_weights=store.class_weights)
        assert np.abs(got - expected).max() <= 1e-4 * W0 + 1e-4


def test_semantic_masks_with_connected_instances(semantic_dir: Path, tmp_path: Path) -> None:
    compute(semantic_dir, tmp_path / "w.zarr", instances="connected", connectivity=2, **ARGS)
    store = open_store(tmp_path / "w.zarr")
    assert sorted(store.class_weights) == [0, 1, 2]  # the semantic classes weigh
    for path in sorted(semantic_dir.glob("*.png")):
        labels = np.asarray(Image.open(path))
        instances = wm.instances_from_labels(labels, connectivity=2)
        np.testing.assert_array_equal(store[path.stem], wm.unet_weights(
            instances, classes=labels, w0=W0, sigma=SIGMA, class_weights=store.class_weights, device="cpu"))


def test_resume_refuses_another_w0_and_completes_with_the_same(instance_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    compute(instance_dir, out, samples_per_shard=2, **ARGS)
    with pytest.raises(ResumeMismatchError, match="w0"):
        compute(instance_dir, out, resume=True, **{**ARGS, "w0": 3.0})
    assert compute(instance_dir, out, resume=True, **ARGS).n_computed == 0


def test_bad_map_options_are_refused_before_any_store(instance_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    for kwargs, words in (
        ({"kind": "bressan", "w0": 5.0}, "apply to map kind 'unet'"),
        ({"kind": "other"}, "map kind"),
        ({"tolerance": 1.5}, "tolerance"),
        ({"w0": -1.0}, "w0"),
        ({"instances": "all"}, "instances"),
        ({"num_classes": 3}, "instance ids"),
    ):
        with pytest.raises(wm.WeightmapsError, match=words):
            compute(instance_dir, out, **{**ARGS, **kwargs})
        assert not out.exists()


def test_float16_refuses_weights_that_overflow_with_w0(instance_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(wm.WeightmapsError, match=r"\+ w0"):
        compute(instance_dir, tmp_path / "w.zarr", dtype="float16", class_weights={0: 60000.0, 1: 1.0},
                **{**ARGS, "w0": 10000.0})


# --- command line ----------------------------------------------------------------------------


def test_cli_compute_info_and_preview(instance_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    code, stdout, stderr = run("compute", instance_dir, "--out", out, "--map", "unet", "--w0", "10", "--sigma",
                               "5", "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 0, stderr
    assert "wrote 6 weight maps" in stdout
    code, stdout, _ = run("info", out)
    assert code == 0 and "kind: unet" in stdout and "w0: 10.0" in stdout and "instances: as-is" in stdout
    code, stdout, _ = run("info", out, "--json")
    params = json.loads(stdout)["params"]
    assert (params["kind"], params["w0"], params["tolerance"]) == ("unet", 10.0, 1e-4)
    figure = tmp_path / "cells.png"
    code, stdout, stderr = run("preview", instance_dir / "cells_1.tif", "--map", "unet", "--sigma", "5",
                               "--out", figure)
    assert code == 0, stderr
    with Image.open(figure) as drawn:
        assert drawn.size[0] > 1000  # three panels


def test_a_papers_store_says_nothing_of_the_unet_fields(semantic_dir: Path, tmp_path: Path) -> None:
    compute(semantic_dir, tmp_path / "w.zarr", sigma=2.0, device="cpu", workers=1)
    code, stdout, _ = run("info", tmp_path / "w.zarr")
    assert code == 0 and "kind: bressan" in stdout and "w0" not in stdout and "tolerance" not in stdout
    assert "w0" not in open_store(tmp_path / "w.zarr").params.to_json()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--map", "unet", "--w0", "-1"), "--w0"),
        (("--map", "unet", "--tolerance", "0"), "--tolerance"),
        (("--w0", "5"), "apply to map kind 'unet'"),
        (("--map", "unet", "--num-classes", "3"), "instance ids"),
        (("--map", "unet", "--instances", "some"), "--instances"),
    ],
)
def test_cli_bad_map_options_exit_2(instance_dir: Path, tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    code, _, stderr = run("compute", instance_dir, "--out", tmp_path / "w.zarr", "--sigma", "5", "--device", "cpu",
                          "--no-progress", *args)
    assert code == 2 and words in stderr, stderr
    assert not (tmp_path / "w.zarr").exists()


def test_cli_float_instance_mask_is_a_named_bad_input(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    tifffile.imwrite(tmp_path / "m" / "good.tif", cells((30, 30), count=5).astype(np.uint16))
    tifffile.imwrite(tmp_path / "m" / "float.tif", np.full((30, 30), 1.5, dtype=np.float32))
    code, _, stderr = run("compute", tmp_path / "m", "--out", tmp_path / "w.zarr", "--map", "unet", "--sigma", "5",
                          "--device", "cpu", "--no-progress")
    assert code == 2 and "float.tif" in stderr, stderr
    assert not (tmp_path / "w.zarr").exists()


# --- training time ---------------------------------------------------------------------------


def test_dataset_serves_the_unet_map_and_pixel_weights_make_the_same(instance_dir: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from weightmaps.torch import PixelWeights, WeightMapDataset

    out = tmp_path / "w.zarr"
    compute(instance_dir, out, **ARGS)
    images = tmp_path / "images"
    images.mkdir()
    for path in instance_dir.glob("*.tif"):
        np.save(images / f"{path.stem}.npy", np.random.default_rng(0).random(tifffile.imread(path).shape))
    dataset = WeightMapDataset(str(images), str(instance_dir), str(out))
    store = open_store(out)
    sample = next(s for s in (dataset[i] for i in range(len(dataset))) if s["mask"].shape == (40, 64))
    np.testing.assert_array_equal(sample["weight"].numpy(), store[sample["id"]])
    pixel_weights = PixelWeights.from_store(out)
    assert "unet" in repr(pixel_weights.params)
    batch = torch.stack([sample["mask"], sample["mask"]])
    np.testing.assert_array_equal(pixel_weights(batch).numpy()[1], store[sample["id"]])
