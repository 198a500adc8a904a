"""weightmaps.torch: dataset over real stores and DataLoader workers, joint transforms, loss, PixelWeights."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import weightmaps  # noqa: E402
from weightmaps import WeightmapsError  # noqa: E402
from weightmaps.torch import (  # noqa: E402
    PixelWeights,
    WeightMapDataset,
    albumentations_transform,
    torchvision_transform,
    weighted_cross_entropy,
)

SIGMA = 2.0


# --- data on disk ------------------------------------------------------------------------------


def _masks(n: int, shape=(24, 32), seed=0) -> list[np.ndarray]:
    """Rectangles of classes 1 and 2 on background 0, different per sample."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = np.zeros(shape, np.uint8)
        for label in (1, 2):
            y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 6)
            h, w = rng.integers(3, 8, size=2)
            m[y:y + h, x:x + w] = label
        out.append(m)
    return out


def _write_pngs(root: Path, arrays, names) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for a, name in zip(arrays, names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / f"{name}.png")
    return root


def _images_for(masks, seed=1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(m[..., None] * 60 + rng.integers(0, 40, (*m.shape, 3))).astype(np.uint8) for m in masks]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> dict[str, Path]:
    """images/ (RGB PNG), masks/ (PNG, nested ids) and a complete store computed by the pipeline."""
    from weightmaps.pipeline import compute

    root = tmp_path_factory.mktemp("ds")
    masks = _masks(6)
    names = [f"a/{i:02d}" if i % 2 else f"b/{i:02d}" for i in range(len(masks))]
    _write_pngs(root / "masks", masks, names)
    _write_pngs(root / "images", _images_for(masks), names)
    compute(str(root / "masks"), str(root / "weights.zarr"), sigma=SIGMA)
    return {"root": root, "images": root / "images", "masks": root / "masks",
            "store": root / "weights.zarr", "names": names, "arrays": masks}


def _dataset(d, **kw) -> WeightMapDataset:
    return WeightMapDataset(str(d["images"]), str(d["masks"]), str(d["store"]), **kw)


# --- import isolation ----------------------------------------------------------------------------


def test_import_weightmaps_does_not_import_torch():
    code = "import sys, weightmaps; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --- dataset -------------------------------------------------------------------------------------


def test_dataset_returns_image_mask_weight_matched_by_id(dataset_dir):
    from weightmaps.store import open_store

    ds = _dataset(dataset_dir)
    store = open_store(dataset_dir["store"])
    assert len(ds) == len(dataset_dir["names"])
    assert sorted(ds.ids) == sorted(dataset_dir["names"])
    for i in range(len(ds)):
        s = ds[i]
        k = dataset_dir["names"].index(s["id"])
        mask = dataset_dir["arrays"][k]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, *mask.shape)
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        expected_img = _images_for(dataset_dir["arrays"])[k]
        np.testing.assert_allclose(s["image"].numpy(), np.moveaxis(expected_img, -1, 0) / 255, rtol=1e-6)
        assert s["mask"].dtype == torch.int64
        np.testing.assert_array_equal(s["mask"].numpy(), mask)
        assert s["weight"].dtype == torch.float32
        np.testing.assert_array_equal(s["weight"].numpy(), store[s["id"]])
        expected_w = weightmaps.weight_map(mask, sigma=SIGMA, class_weights=store.class_weights, device="cpu")
        np.testing.assert_allclose(s["weight"].numpy(), expected_w, rtol=1e-6)


def test_dataset_grayscale_image_gets_one_channel(dataset_dir, tmp_path):
    gray = [m * 50 for m in dataset_dir["arrays"]]
    _write_pngs(tmp_path / "gray", gray, dataset_dir["names"])
    ds = WeightMapDataset(str(tmp_path / "gray"), str(dataset_dir["masks"]), str(dataset_dir["store"]))
    s = ds[0]
    k = dataset_dir["names"].index(s["id"])
    assert s["image"].shape == (1, *dataset_dir["arrays"][k].shape)
    np.testing.assert_allclose(s["image"][0].numpy(), gray[k] / 255, rtol=1e-6)


def test_dataset_pickles_with_only_paths(dataset_dir):
    ds = _dataset(dataset_dir)
    ds[0]  # opens the store in this process
    blob = pickle.dumps(ds)
    assert b"zarr.core" not in blob and len(blob) < 20_000
    clone = pickle.loads(blob)
    for i in (0, len(ds) - 1):
        a, b = ds[i], clone[i]
        assert a["id"] == b["id"]
        for key in ("image", "mask", "weight"):
            assert torch.equal(a[key], b[key])


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_read_what_the_main_process_reads(dataset_dir, context):
    from torch.utils.data import DataLoader

    ds = _dataset(dataset_dir)
    ds[0]  # an opened handle in the parent must not leak into (forked) workers
    ref = list(DataLoader(ds, batch_size=2, num_workers=0))
    got = list(DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=context))
    assert len(ref) == len(got) == 3
    for a, b in zip(ref, got):
        assert a["id"] == b["id"]
        for key in ("image", "mask", "weight"):
            assert torch.equal(a[key], b[key]), key


def test_dataset_refuses_incomplete_store(dataset_dir, tmp_path):
    from weightmaps.params import MapParams
    from weightmaps.sources import open_source
    from weightmaps.store import create_store

    ids = open_source(str(dataset_dir["masks"])).ids
    create_store(tmp_path / "partial.zarr", ids=ids, shapes=[(24, 32)] * len(ids),
                 params=MapParams(sigma=SIGMA, class_weights={0: 1.0}), class_counts={0: 1}, fingerprint="f")
    with pytest.raises(WeightmapsError, match="incomplete"):
        WeightMapDataset(str(dataset_dir["images"]), str(dataset_dir["masks"]), str(tmp_path / "partial.zarr"))


def test_dataset_refuses_weights_from_other_masks(dataset_dir, tmp_path):
    changed = [m.copy() for m in dataset_dir["arrays"]]
    changed[3][0, 0] = 2  # one pixel of one sample relabelled after the weights were computed
    _write_pngs(tmp_path / "masks", changed, dataset_dir["names"])
    ds = WeightMapDataset(str(dataset_dir["images"]), str(tmp_path / "masks"), str(dataset_dir["store"]))
    bad = dataset_dir["names"][3]
    ds[ds.ids.index(dataset_dir["names"][0])]  # untouched samples read fine
    with pytest.raises(WeightmapsError, match=f"{bad}.*digest"):
        ds[ds.ids.index(bad)]
    # check=False skips the digest (the shapes still agree, so it reads)
    unchecked = WeightMapDataset(str(dataset_dir["images"]), str(tmp_path / "masks"),
                                 str(dataset_dir["store"]), check=False)
    assert unchecked[unchecked.ids.index(bad)]["mask"][0, 0] == 2


def test_dataset_refuses_weight_shape_different_from_mask(dataset_dir, tmp_path):
    from weightmaps.pipeline import compute

    masks = [np.pad(m, ((0, 1), (0, 0))) for m in dataset_dir["arrays"]]
    _write_pngs(tmp_path / "tall", masks, dataset_dir["names"])
    compute(str(tmp_path / "tall"), str(tmp_path / "tall.zarr"), sigma=SIGMA)
    ds = WeightMapDataset(str(dataset_dir["images"]), str(dataset_dir["masks"]), str(tmp_path / "tall.zarr"),
                          check=False)
    with pytest.raises(WeightmapsError, match=f"{ds.ids[0]}.*shape"):
        ds[0]


def test_dataset_refuses_mismatched_ids(dataset_dir, tmp_path):
    names = dataset_dir["names"]
    images = _images_for(dataset_dir["arrays"])
    _write_pngs(tmp_path / "fewer", images[:-1], names[:-1])
    with pytest.raises(WeightmapsError, match=names[-1]):
        WeightMapDataset(str(tmp_path / "fewer"), str(dataset_dir["masks"]), str(dataset_dir["store"]))
    _write_pngs(tmp_path / "extra", images + images[:1], [*names, "c/99"])
    with pytest.raises(WeightmapsError, match="c/99"):
        WeightMapDataset(str(tmp_path / "extra"), str(dataset_dir["masks"]), str(dataset_dir["store"]))


def test_dataset_volumes(tmp_path):
    from weightmaps.pipeline import compute

    rng = np.random.default_rng(3)
    (tmp_path / "m").mkdir()
    (tmp_path / "i").mkdir()
    vols = []
    for k in range(2):
        v = np.zeros((6, 10, 12), np.uint8)
        v[1:4, 2:6, 3:9] = 1
        v[3:5, 5:9, 1 + k:4 + k] = 2
        vols.append(v)
        np.save(tmp_path / "m" / f"v{k}.npy", v)
        np.save(tmp_path / "i" / f"v{k}.npy", rng.random(v.shape, dtype=np.float32))
    compute(str(tmp_path / "m"), str(tmp_path / "w.zarr"), sigma=SIGMA)
    ds = WeightMapDataset(str(tmp_path / "i"), str(tmp_path / "m"), str(tmp_path / "w.zarr"))
    s = ds[1]
    assert s["image"].shape == (1, 6, 10, 12) and s["mask"].shape == s["weight"].shape == (6, 10, 12)
    np.testing.assert_array_equal(s["mask"].numpy(), vols[1])
    np.testing.assert_allclose(s["image"][0].numpy(), np.load(tmp_path / "i" / "v1.npy"))


def test_dataset_from_zarr_arrays_and_path_lists(tmp_path):
    import zarr

    from weightmaps.pipeline import compute

    masks = np.stack(_masks(4, seed=5))
    images = np.stack(_images_for(list(masks), seed=6))
    zm = zarr.create_array(str(tmp_path / "masks.zarr"), shape=masks.shape, chunks=(1, *masks.shape[1:]),
                           dtype=masks.dtype)
    zm[:] = masks
    zi = zarr.create_array(str(tmp_path / "images.zarr"), shape=images.shape,
                           chunks=(1, *images.shape[1:]), dtype=images.dtype)
    zi[:] = images
    compute(str(tmp_path / "masks.zarr"), str(tmp_path / "w.zarr"), sigma=SIGMA)
    from torch.utils.data import DataLoader

    ds = WeightMapDataset(str(tmp_path / "images.zarr"), str(tmp_path / "masks.zarr"), str(tmp_path / "w.zarr"))
    assert ds.ids == ["000000", "000001", "000002", "000003"]
    got = list(DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="spawn"))
    np.testing.assert_array_equal(torch.cat([b["mask"] for b in got]).numpy(), masks)
    np.testing.assert_allclose(torch.cat([b["image"] for b in got]).numpy(),
                               np.moveaxis(images, -1, 1) / 255, rtol=1e-6)
    # the same samples as lists of files (JPEG images are listed too), matched by id
    from PIL import Image

    names = [f"{i:06d}" for i in range(4)]
    _write_pngs(tmp_path / "m", masks, names)
    (tmp_path / "i").mkdir()
    for a, n in zip(images, names):
        Image.fromarray(a).save(tmp_path / "i" / f"{n}.jpg", quality=95)
    ds2 = WeightMapDataset(sorted(str(p) for p in (tmp_path / "i").iterdir()),
                           sorted(str(p) for p in (tmp_path / "m").iterdir()), str(tmp_path / "w.zarr"))
    assert ds2.ids == ds.ids
    assert torch.equal(ds2[2]["weight"], ds[2]["weight"]) and torch.equal(ds2[2]["mask"], ds[2]["mask"])
    assert ds2[2]["image"].shape == (3, *masks.shape[1:])


def test_dataset_applies_the_stores_label_map(tmp_path):
    from weightmaps.pipeline import compute

    masks = [m * 100 for m in _masks(2)]  # labels 0/100/200 on disk
    _write_pngs(tmp_path / "m", masks, ["x", "y"])
    _write_pngs(tmp_path / "i", _images_for(_masks(2)), ["x", "y"])
    compute(str(tmp_path / "m"), str(tmp_path / "w.zarr"), sigma=SIGMA, label_map={100: 1, 200: 2})
    ds = WeightMapDataset(str(tmp_path / "i"), str(tmp_path / "m"), str(tmp_path / "w.zarr"))
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), _masks(2)[0])
    # a different label map than the store's: the digest check refuses it
    other = WeightMapDataset(str(tmp_path / "i"), str(tmp_path / "m"), str(tmp_path / "w.zarr"),
                             label_map={100: 2, 200: 1})
    with pytest.raises(WeightmapsError, match="'x'.*digest"):
        other[0]


# --- joint transforms ------------------------------------------------------------------------------


def _sample(h=20, w=30, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 3, (h, w))
    return {
        "image": torch.from_numpy(rng.random((3, h, w), dtype=np.float32)),
        "mask": torch.from_numpy(mask),
        "weight": torch.from_numpy(rng.random((h, w), dtype=np.float32) + 0.5),  # > 0 everywhere
        "id": "s",
    }


def test_albumentations_flip_moves_image_mask_weight_together():
    A = pytest.importorskip("albumentations")
    s = _sample()
    out = albumentations_transform(A.Compose([A.HorizontalFlip(p=1.0)]))(dict(s))
    assert torch.equal(out["image"], s["image"].flip(-1))
    assert torch.equal(out["mask"], s["mask"].flip(-1)) and out["mask"].dtype == torch.int64
    assert torch.equal(out["weight"], s["weight"].flip(-1)) and out["weight"].dtype == torch.float32
    assert out["id"] == "s"


def test_albumentations_pad_and_crop_give_padding_weight_zero():
    A = pytest.importorskip("albumentations")
    import cv2

    s = _sample()
    aug = A.Compose([
        A.PadIfNeeded(min_height=28, min_width=40, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=0),
        A.RandomCrop(height=24, width=36),
    ], seed=7)
    out = albumentations_transform(aug)(dict(s))
    assert out["image"].shape == (3, 24, 36) and out["mask"].shape == out["weight"].shape == (24, 36)
    # find the crop offset from the image, then check mask and weight were cropped the same way
    padded = {k: F.pad(s[k], (0, 10, 0, 8)) for k in ("image", "mask", "weight")}
    offsets = [(y, x) for y in range(5) for x in range(5)
               if torch.equal(padded["image"][:, y:y + 24, x:x + 36], out["image"])]
    assert len(offsets) == 1
    y, x = offsets[0]
    assert torch.equal(out["mask"], padded["mask"][y:y + 24, x:x + 36])
    assert torch.equal(out["weight"], padded["weight"][y:y + 24, x:x + 36])
    pad_region = torch.zeros(28, 40, dtype=torch.bool)
    pad_region[20:, :] = pad_region[:, 30:] = True
    pad_region = pad_region[y:y + 24, x:x + 36]
    assert pad_region.any()
    assert torch.all(out["weight"][pad_region] == 0) and torch.all(out["weight"][~pad_region] > 0)


def test_albumentations_rotation_keeps_labels_and_zero_fills():
    A = pytest.importorskip("albumentations")
    s = _sample()
    out = albumentations_transform(A.Compose([A.Affine(rotate=(30, 30), fill=0, fill_mask=0, p=1.0)]))(dict(s))
    # nearest interpolation: labels stay labels, weights are original values or 0 (outside)
    assert set(out["mask"].unique().tolist()) <= {0, 1, 2}
    w = out["weight"]
    assert bool((w == 0).any())
    assert bool(torch.isin(w[w > 0], s["weight"].flatten()).all())


def test_albumentations_volume():
    A = pytest.importorskip("albumentations")
    rng = np.random.default_rng(0)
    s = {"image": torch.from_numpy(rng.random((1, 4, 10, 12), dtype=np.float32)),
         "mask": torch.from_numpy(rng.integers(0, 3, (4, 10, 12))),
         "weight": torch.from_numpy(rng.random((4, 10, 12), dtype=np.float32)), "id": "v"}
    out = albumentations_transform(A.Compose([A.HorizontalFlip(p=1.0)]))(dict(s))
    for k in ("image", "mask", "weight"):
        assert torch.equal(out[k], s[k].flip(-1)), k


def test_albumentations_in_dataset_with_workers(dataset_dir):
    A = pytest.importorskip("albumentations")
    import cv2
    from torch.utils.data import DataLoader

    aug = A.Compose([A.HorizontalFlip(p=1.0),
                     A.PadIfNeeded(32, 40, position="top_left", border_mode=cv2.BORDER_CONSTANT)])
    plain = _dataset(dataset_dir)
    ds = _dataset(dataset_dir, transform=albumentations_transform(aug))
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="spawn"))
    got = {i: (b["mask"][k], b["weight"][k]) for b in batches for k, i in enumerate(b["id"])}
    for i in range(len(plain)):
        s = plain[i]
        mask, weight = got[s["id"]]
        assert mask.shape == (32, 40)
        assert torch.equal(mask[:24, :32], s["mask"].flip(-1))
        assert torch.equal(weight[:24, :32], s["weight"].flip(-1))
        assert torch.all(weight[24:] == 0) and torch.all(weight[:, 32:] == 0)


def test_torchvision_v2_recipe():
    pytest.importorskip("torchvision")
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    s = _sample()
    fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: 0}
    aug = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.Pad([0, 0, 10, 8], fill=fill)])
    out = torchvision_transform(aug)(dict(s))
    assert torch.equal(out["image"][:, :20, :30], s["image"].flip(-1))
    assert torch.equal(out["mask"][:20, :30], s["mask"].flip(-1))
    assert torch.equal(out["weight"][:20, :30], s["weight"].flip(-1))
    assert torch.all(out["weight"][20:] == 0) and torch.all(out["weight"][:, 30:] == 0)


def test_transform_must_keep_mask_and_weight_aligned(dataset_dir):
    def bad(sample):
        return {**sample, "weight": sample["weight"][:-1]}

    ds = _dataset(dataset_dir, transform=bad)
    with pytest.raises(WeightmapsError, match=f"{ds.ids[0]}.*shape"):
        ds[0]


# --- loss --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(5, 7), (3, 4, 5)])
def test_loss_with_unit_weights_is_cross_entropy(spatial):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, *spatial, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (2, *spatial), generator=g)
    ones = torch.ones(target.shape, dtype=torch.float64)
    expected = F.cross_entropy(logits, target)
    for normalize in ("pixels", "weight_sum"):
        got = weighted_cross_entropy(logits, target, ones, normalize=normalize)
        torch.testing.assert_close(got, expected)


def test_loss_is_eq3_mean_of_weighted_ce():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)
    w = torch.rand(2, 6, 6, generator=g, dtype=torch.float64) * 3
    ce = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(weighted_cross_entropy(logits, target, w), (w * ce).mean())
    torch.testing.assert_close(weighted_cross_entropy(logits, target, w, normalize="weight_sum"),
                               (w * ce).sum() / w.sum())


def test_loss_ignore_index():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)
    target[0, :3] = 255
    ones = torch.ones(target.shape, dtype=torch.float64)
    # weight_sum with unit weights: exactly F.cross_entropy's ignore_index mean
    torch.testing.assert_close(
        weighted_cross_entropy(logits, target, ones, ignore_index=255, normalize="weight_sum"),
        F.cross_entropy(logits, target, ignore_index=255))
    # pixels: every pixel counts in the denominator, ignored ones contribute 0 (= weight 0)
    w = torch.rand(2, 6, 6, generator=g, dtype=torch.float64)
    w0 = torch.where(target == 255, 0.0, w)
    safe = target.clamp(max=2)
    ce = F.cross_entropy(logits, safe, reduction="none")
    torch.testing.assert_close(weighted_cross_entropy(logits, target, w, ignore_index=255),
                               (w0 * ce).sum() / target.numel())
    torch.testing.assert_close(weighted_cross_entropy(logits, target, w, ignore_index=255, normalize="weight_sum"),
                               (w0 * ce).sum() / w0.sum())


def test_loss_gradients_flow_and_zero_weights_are_finite():
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5))
    w = torch.rand(2, 5, 5)
    weighted_cross_entropy(logits, target, w).backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)
    for normalize in ("pixels", "weight_sum"):
        logits.grad = None
        loss = weighted_cross_entropy(logits, target, torch.zeros(2, 5, 5), normalize=normalize)
        loss.backward()
        assert loss.item() == 0.0
        assert bool(torch.isfinite(logits.grad).all()) and float(logits.grad.abs().sum()) == 0.0
    # all pixels ignored
    logits.grad = None
    loss = weighted_cross_entropy(logits, torch.full((2, 5, 5), 9), w, ignore_index=9, normalize="weight_sum")
    loss.backward()
    assert loss.item() == 0.0 and bool(torch.isfinite(logits.grad).all())


def test_loss_zero_weight_pixels_get_no_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 4, 4))
    w = torch.ones(1, 4, 4)
    w[0, :2] = 0
    weighted_cross_entropy(logits, target, w).backward()
    assert float(logits.grad[0, :, :2].abs().sum()) == 0.0 and float(logits.grad[0, :, 2:].abs().sum()) > 0


def test_loss_rejects_bad_shapes_and_normalize():
    logits, target = torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.int64)
    with pytest.raises(WeightmapsError, match="weight shape"):
        weighted_cross_entropy(logits, target, torch.ones(2, 4, 5))
    with pytest.raises(WeightmapsError, match="target shape"):
        weighted_cross_entropy(logits, target[0], torch.ones(2, 4, 4))
    with pytest.raises(WeightmapsError, match="normalize"):
        weighted_cross_entropy(logits, target, torch.ones(2, 4, 4), normalize="mean")


# --- on-the-fly weights --------------------------------------------------------------------------------


def test_pixel_weights_cpu_match_engine_2d_and_3d():
    cw = {0: 0.5, 1: 2.0, 2: 4.0}
    pw = PixelWeights(SIGMA, cw)
    labels = torch.from_numpy(np.stack(_masks(3)).astype(np.int64))
    out = pw(labels)
    assert out.dtype == torch.float32 and out.device == labels.device and out.shape == labels.shape
    for k in range(3):
        np.testing.assert_allclose(out[k].numpy(), weightmaps.weight_map(
            labels[k].numpy(), sigma=SIGMA, class_weights=cw, device="cpu"), rtol=1e-6)
    vol = torch.zeros(2, 5, 6, 7, dtype=torch.int32)
    vol[:, 1:4, 2:5, 1:5] = 1
    vol[1, 0, 0, 0] = 2
    out3 = PixelWeights(SIGMA, cw, spacing=(2.0, 1.0, 1.0), dtype=torch.float64)(vol)
    assert out3.dtype == torch.float64 and out3.shape == vol.shape
    np.testing.assert_allclose(out3.numpy(), weightmaps.weight_map(
        vol.numpy(), sigma=SIGMA, class_weights=cw, spacing=(2.0, 1.0, 1.0), device="cpu", batch=True),
        rtol=1e-6)


def test_pixel_weights_match_the_store(dataset_dir):
    from weightmaps.store import open_store

    store = open_store(dataset_dir["store"])
    ds = _dataset(dataset_dir)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    pw = PixelWeights(SIGMA, store.class_weights)
    np.testing.assert_array_equal(pw(batch["mask"]).numpy(), batch["weight"].numpy())
    np.testing.assert_array_equal(PixelWeights.from_store(dataset_dir["store"])(batch["mask"]).numpy(),
                                  batch["weight"].numpy())


def test_pixel_weights_rejects_bad_input():
    pw = PixelWeights(SIGMA, {0: 1.0, 1: 1.0})
    with pytest.raises(WeightmapsError, match="batch"):
        pw(torch.zeros(4, 4, dtype=torch.int64))
    with pytest.raises(WeightmapsError, match="integer"):
        pw(torch.zeros(1, 4, 4))


@pytest.mark.gpu
def test_pixel_weights_cuda_matches_cpu_without_host_copy():
    cw = {0: 0.5, 1: 2.0, 2: 4.0}
    pw = PixelWeights(SIGMA, cw)
    labels = torch.from_numpy(np.stack(_masks(4, shape=(64, 48))).astype(np.int64))
    cuda = labels.cuda()
    out = pw(cuda)
    assert out.is_cuda and out.device == cuda.device and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), pw(labels).numpy(), rtol=1e-5, atol=1e-6)
    # zero-copy hand-off: the CuPy view shares the tensor's memory
    import cupy

    assert cupy.from_dlpack(cuda).data.ptr == cuda.data_ptr()


@pytest.mark.gpu
def test_pixel_weights_cuda_memory_comes_from_torch_and_validate_false_gives_nan():
    import cupy

    cw = {0: 0.5, 1: 2.0, 2: 4.0}
    labels = torch.from_numpy(np.stack(_masks(6, shape=(96, 64))).astype(np.int64)).cuda()
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.total_bytes()
    out = PixelWeights(SIGMA, cw)(labels)
    assert pool.total_bytes() == before  # CuPy's own pool untouched: the batch used torch's allocator
    trusted = PixelWeights(SIGMA, cw, validate=False)(labels)
    torch.testing.assert_close(trusted, out)
    bad = labels.clone()
    bad[0, 0, 0] = 7  # no class weight
    with pytest.raises(WeightmapsError, match=r"\[7\]"):
        PixelWeights(SIGMA, cw)(bad)
    unchecked = PixelWeights(SIGMA, cw, validate=False)(bad)
    assert torch.isnan(unchecked[0, 0, 0]) and torch.isfinite(unchecked[1:]).all()


def test_pixel_weights_validate_false_still_checks_on_the_cpu():
    labels = torch.from_numpy(np.stack(_masks(2, shape=(32, 32))).astype(np.int64))
    labels[0, 0, 0] = 7
    with pytest.raises(WeightmapsError, match=r"\[7\]"):
        PixelWeights(SIGMA, {0: 0.5, 1: 2.0, 2: 4.0}, validate=False)(labels)


@pytest.mark.parametrize("volume", [False, True])
def test_albumentations_moves_distance_and_every_sdf_channel_with_the_mask(volume):
    A = pytest.importorskip("albumentations")
    shape = (4, 20, 30) if volume else (20, 30)
    labels = np.zeros(shape, np.int64)
    labels[..., 4:12, 3:9] = 1
    labels[..., 10:18, 15:27] = 2
    rng = np.random.default_rng(0)
    sample = {
        "image": torch.from_numpy(rng.random((3, *shape), dtype=np.float32)),
        "mask": torch.from_numpy(labels),
        "distance": torch.from_numpy(weightmaps.distance_to_edges(labels, device="cpu")),
        "sdf": torch.from_numpy(weightmaps.signed_distance(labels, num_classes=3, device="cpu")),
        "id": "s",
    }
    out = albumentations_transform(A.Compose([A.HorizontalFlip(p=1.0)]))(dict(sample))
    for key in ("mask", "distance", "sdf"):
        assert torch.equal(out[key], sample[key].flip(-1)), key
    assert out["sdf"].shape == (3, *shape) and out["sdf"].dtype == torch.float32
