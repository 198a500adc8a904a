"""--map distance and --map sdf through the pipeline, store, CLI and Dataset; weights derived at load time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import weightmaps as wm
from tests.reference import exact_weight, max_ulp, one_hot2dist
from tests.test_cli import _restore_logging, run  # noqa: F401  (the CLI tests' autouse logging fixture)
from weightmaps.pipeline import compute
from weightmaps.readers import read_mask
from weightmaps.sample_data import write_dataset
from weightmaps.store import open_store

SIGMA = 3.0
CPU = {"device": "cpu", "workers": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/masks: 10 PNG masks (3 classes) with images; one mask is a single class (no edge)."""
    root = write_dataset(tmp_path_factory.mktemp("dist"), n=10, shape=(64, 72), seed=5)
    Image.fromarray(np.full((64, 72), 1, np.uint8)).save(root / "masks" / "sample_00003.png")
    return root


def masks_of(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_mask(str(p)) for p in sorted((root / "masks").glob("*.png"))}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("spacing", [(0.8, 0.8), (2.0, 0.7)])
def test_distance_store_derives_the_bressan_store(data: Path, tmp_path: Path, dtype: str, spacing) -> None:
    """float32, a spacing with a short grid (any isotropic one): the very map of --map bressan (issue 20).

    (2.0, 0.7) has none: the stored d's rounding is left, within 2.5 ulp of the exact weight.
    """
    compute(data / "masks", tmp_path / "b.zarr", sigma=SIGMA, spacing=spacing, **CPU)
    compute(data / "masks", tmp_path / "d.zarr", kind="distance", spacing=spacing, dtype=dtype, **CPU)
    bressan, distance = open_store(tmp_path / "b.zarr"), open_store(tmp_path / "d.zarr")
    assert distance.params.kind == "distance" and distance.params.sigma is None
    assert distance.class_weights == bressan.class_weights  # recorded for deriving
    phi = bressan.class_weights
    for sid, mask in masks_of(data).items():
        d = distance[sid]
        assert d.dtype == np.dtype(dtype)
        np.testing.assert_allclose(d, wm.distance_to_edges(mask, spacing=spacing, device="cpu"),
                                   rtol=1e-6 if dtype == "float32" else 1e-3)
        derived = wm.weight_from_distance(d, mask, sigma=SIGMA, class_weights=phi, spacing=spacing)
        if dtype == "float32" and spacing == (0.8, 0.8):
            np.testing.assert_array_equal(derived, bressan[sid])
        elif dtype == "float32":
            assert max_ulp(derived, exact_weight(mask, SIGMA, phi, spacing)) <= 2.5 + 2.0**-20
            assert max_ulp(bressan[sid], exact_weight(mask, SIGMA, phi, spacing)) <= 0.5 + 2.0**-20
        else:
            # d rounded to float16 (relative 2^-11) moves w = φ(1 − e^{−x}) by at most φ · 2^-10 / e
            bound = max(phi.values()) * 2.0**-10 / math.e + 1e-6
            assert np.abs(derived.astype(np.float64) - bressan[sid]).max() <= bound
    assert np.isinf(distance["sample_00003"]).all()  # no edge: +inf kept, δ = 1
    np.testing.assert_array_equal(
        wm.weight_from_distance(distance["sample_00003"], masks_of(data)["sample_00003"], sigma=SIGMA,
                                class_weights=phi), np.float32(phi[1]))


def test_sdf_store_holds_one_map_per_class(data: Path, tmp_path: Path) -> None:
    spacing = (2.0, 1.5)
    compute(data / "masks", tmp_path / "s.zarr", kind="sdf", num_classes=4, spacing=spacing, **CPU)
    store = open_store(tmp_path / "s.zarr")
    assert store.params.kind == "sdf" and store.params.num_classes == 4
    for sid, mask in masks_of(data).items():
        assert store.shape(sid) == (4, *mask.shape)
        if sid == "sample_00003":  # one class everywhere: no boundary (one_hot2dist reads garbage there)
            assert (store[sid] == 0).all()
            continue
        np.testing.assert_allclose(store[sid], one_hot2dist(mask, 4, spacing), rtol=1e-5, atol=1e-5)


def test_sdf_resume_completes_what_a_run_left(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    compute(data / "masks", out, kind="sdf", num_classes=3, samples_per_shard=2, **CPU)
    with pytest.raises(wm.WeightmapsError, match="num_classes"):
        compute(data / "masks", out, kind="sdf", num_classes=4, samples_per_shard=2, resume=True, **CPU)
    assert compute(data / "masks", out, kind="sdf", num_classes=3, samples_per_shard=2, resume=True,
                   **CPU).n_computed == 0


@pytest.mark.parametrize(("args", "words"), [
    (("--map", "sdf"), "needs --num-classes"),
    (("--map", "sdf", "--num-classes", "2"), ">= num_classes=2"),
    (("--map", "sdf", "--num-classes", "3", "--sigma", "2"), "sigma does not apply"),
    (("--map", "distance", "--sigma", "2"), "sigma does not apply"),
    ((), "needs --sigma"),
])
def test_cli_bad_options_exit_2(data: Path, tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    code, _, stderr = run("compute", data / "masks", "--out", tmp_path / "w.zarr", "--device", "cpu",
                          "--no-progress", *args)
    assert code == 2 and words in stderr, stderr
    assert not (tmp_path / "w.zarr").exists()


def test_cli_sdf_info_and_preview(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    code, stdout, stderr = run("compute", data / "masks", "--out", out, "--map", "sdf", "--num-classes", "3",
                               "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 0, stderr
    code, stdout, _ = run("info", out, "--json")
    info = json.loads(stdout)
    assert info["params"]["kind"] == "sdf" and info["params"]["sigma"] is None
    for kind in ("sdf", "distance"):
        figure = tmp_path / f"{kind}.png"
        code, _, stderr = run("preview", data / "masks" / "sample_00000.png", "--map", kind, "--out", figure)
        assert code == 0, stderr
        with Image.open(figure) as drawn:
            assert drawn.size[0] > 400


# --- training time ---------------------------------------------------------------------------


def test_dataset_serves_distance_and_derived_weights(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from weightmaps.torch import WeightMapDataset

    compute(data / "masks", tmp_path / "d.zarr", kind="distance", **CPU)
    compute(data / "masks", tmp_path / "b.zarr", sigma=SIGMA, **CPU)
    compute(data / "masks", tmp_path / "b5.zarr", sigma=5.0, class_weights={0: 1.0, 1: 2.0, 2: 4.0}, **CPU)
    plain = WeightMapDataset(data / "images", data / "masks", tmp_path / "d.zarr")
    sample = plain[0]
    assert "distance" in sample and "weight" not in sample
    derived = WeightMapDataset(data / "images", data / "masks", tmp_path / "d.zarr", sigma=SIGMA)
    bressan = open_store(tmp_path / "b.zarr")
    for i in range(len(derived)):  # float32, unit spacing: the --map bressan map bit for bit
        s = derived[i]
        np.testing.assert_array_equal(s["weight"].numpy(), bressan[s["id"]])
    # Another σ and explicit class weights: the store computed with them, without recomputing.
    other = WeightMapDataset(data / "images", data / "masks", tmp_path / "d.zarr", sigma=5.0,
                             class_weights={0: 1.0, 1: 2.0, 2: 4.0})
    b5 = open_store(tmp_path / "b5.zarr")
    s = other[1]
    np.testing.assert_array_equal(s["weight"].numpy(), b5[s["id"]])
    # A scheme over the store's counts, and another store's weights.
    by_scheme = WeightMapDataset(data / "images", data / "masks", tmp_path / "d.zarr", sigma=SIGMA,
                                 class_weights="none")[2]
    assert float(by_scheme["weight"].max()) <= 1.0
    from_store = WeightMapDataset(data / "images", data / "masks", tmp_path / "d.zarr", sigma=5.0,
                                  class_weights=tmp_path / "b5.zarr")[1]
    np.testing.assert_array_equal(from_store["weight"].numpy(), s["weight"].numpy())
    with pytest.raises(wm.WeightmapsError, match="distance store"):
        WeightMapDataset(data / "images", data / "masks", tmp_path / "b.zarr", sigma=2.0)


def test_dataset_derives_the_bressan_map_of_a_store_with_spacing(data: Path, tmp_path: Path) -> None:
    """The dataset hands the store's spacing to weight_from_distance: --map bressan bit for bit at 0.8."""
    pytest.importorskip("torch")
    from weightmaps.torch import WeightMapDataset

    compute(data / "masks", tmp_path / "d.zarr", kind="distance", spacing=(0.8, 0.8), **CPU)
    compute(data / "masks", tmp_path / "b.zarr", sigma=20 * 0.8, spacing=(0.8, 0.8), **CPU)
    derived = WeightMapDataset(data / "images", data / "masks", tmp_path / "d.zarr", sigma=20 * 0.8)
    bressan = open_store(tmp_path / "b.zarr")
    for i in range(len(derived)):
        s = derived[i]
        np.testing.assert_array_equal(s["weight"].numpy(), bressan[s["id"]])


def test_dataset_serves_sdf_and_transforms_move_it(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from weightmaps.torch import WeightMapDataset

    compute(data / "masks", tmp_path / "s.zarr", kind="sdf", num_classes=3, **CPU)

    def flip(sample):  # a joint transform: flips are exact for distances
        return {**sample, **{k: sample[k].flip(-1) for k in ("image", "mask", "sdf")}}

    dataset = WeightMapDataset(data / "images", data / "masks", tmp_path / "s.zarr", transform=flip)
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batch = next(iter(loader))
    assert batch["sdf"].shape == (2, 3, 64, 72) and batch["sdf"].dtype.is_floating_point
    store = open_store(tmp_path / "s.zarr")
    np.testing.assert_array_equal(batch["sdf"][0].numpy(), store[batch["id"][0]][..., ::-1])
    # The sdf follows the mask: its sign is the mask's membership after the flip too.
    mask = batch["mask"][0].numpy()
    for k in range(3):
        if (mask == k).any() and not (mask == k).all():
            assert (batch["sdf"][0, k].numpy()[mask == k] <= 0).all()


def test_boundary_loss_is_the_mean_of_probability_times_signed_distance() -> None:
    torch = pytest.importorskip("torch")
    from weightmaps.torch import boundary_loss, boundary_weight

    rng = np.random.default_rng(0)
    labels = np.stack([np.pad(np.ones((6, 6), np.uint8), 5), np.zeros((16, 16), np.uint8)])
    labels[1, :, 8:] = 2
    labels[1, 0, 0] = 9
    sdf = torch.from_numpy(wm.signed_distance(labels, num_classes=3, ignore_index=9, batch=True, device="cpu"))
    logits = torch.tensor(rng.normal(size=(2, 3, 16, 16)), dtype=torch.float32, requires_grad=True)
    probs = logits.softmax(1)
    got = boundary_loss(probs, sdf, classes=[1, 2])
    expected = (probs[:, 1:] * sdf[:, 1:]).sum() / (2 * 2 * 16 * 16)
    torch.testing.assert_close(got, expected)
    target = torch.from_numpy(labels.astype(np.int64))
    masked = boundary_loss(probs, sdf, classes=[1, 2], target=target, ignore_index=9)
    torch.testing.assert_close(masked, (probs[:, 1:] * sdf[:, 1:]).sum() / (2 * (2 * 16 * 16 - 1)))
    masked.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # The perfect prediction scores lower than a wrong one.
    perfect = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    assert boundary_loss(perfect, sdf, classes=[1, 2]) < boundary_loss(perfect.flip(1), sdf, classes=[1, 2])
    with pytest.raises(wm.WeightmapsError, match="channels"):
        boundary_loss(probs, sdf, classes=[3])
    assert [boundary_weight(e) for e in (0, 1, 98, 200)] == [0.01, 0.02, 0.99, 0.99]


def test_pixel_weights_make_sdf_maps_and_refuse_a_distance_store(data: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from weightmaps.torch import PixelWeights

    compute(data / "masks", tmp_path / "s.zarr", kind="sdf", num_classes=3, **CPU)
    compute(data / "masks", tmp_path / "d.zarr", kind="distance", **CPU)
    store = open_store(tmp_path / "s.zarr")
    mask = masks_of(data)["sample_00001"]
    maps = PixelWeights.from_store(tmp_path / "s.zarr")(torch.from_numpy(mask[None].astype(np.int64)))
    np.testing.assert_array_equal(maps[0].numpy(), store["sample_00001"])
    with pytest.raises(wm.WeightmapsError, match="holds no sigma"):
        PixelWeights.from_store(tmp_path / "d.zarr")
    code, stdout, _ = run("info", tmp_path / "d.zarr")
    assert code == 0 and "kind: distance" in stdout and "sigma" not in stdout
