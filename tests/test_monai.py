"""weightmaps.monai in a real MONAI chain on NIfTI files with spacing, cached, in DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

monai = pytest.importorskip("monai")
nib = pytest.importorskip("nibabel")

import torch  # noqa: E402
from monai.data import CacheDataset, DataLoader, list_data_collate  # noqa: E402
from monai.transforms import (  # noqa: E402
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    RandCropByPosNegLabeld,
    Spacingd,
)

import weightmaps as wm  # noqa: E402
from tests.test_engine import blobs  # noqa: E402
from weightmaps.errors import WeightmapsError  # noqa: E402
from weightmaps.monai import ComputeWeightMapd, LoadWeightMapd  # noqa: E402

PIXDIM = (0.8, 0.8, 2.5)
TARGET = (1.2, 1.2, 2.0)
WEIGHTS = {0: 1.0, 1: 3.0, 2: 5.0}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    root = tmp_path_factory.mktemp("nifti")
    (root / "labels").mkdir()
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        labels = blobs((40, 36, 14), seed=10 + i)
        affine = np.diag([*PIXDIM, 1.0])
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), root / "labels" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(rng.random(labels.shape).astype(np.float32), affine), root / "images" / f"case{i}.nii.gz")
        items.append({"image": str(root / "images" / f"case{i}.nii.gz"), "label": str(root / "labels" / f"case{i}.nii.gz"),
                      "id": f"case{i}"})
    return items


class AddIndexd(MapTransform):
    """The linear index of every voxel, so a test can tell where a random crop came from."""

    def __call__(self, data):
        d = dict(data)
        label = d["label"]
        d["where"] = torch.arange(label.numel(), dtype=torch.float64).reshape(label.shape)
        return d


def deterministic_part() -> list:
    return [LoadImaged(["image", "label"], reader="NibabelReader"), EnsureChannelFirstd(["image", "label"]),
            Spacingd(["image", "label"], pixdim=TARGET, mode=("bilinear", "nearest"))]


@pytest.mark.parametrize("kind", ["bressan", "sdf"])
def test_chain_crops_equal_the_map_of_the_resampled_label(files, kind) -> None:
    extra = {"sigma": 2.0, "class_weights": WEIGHTS} if kind == "bressan" else {"num_classes": 3}
    key = "weight" if kind == "bressan" else "sdf"
    chain = Compose([
        *deterministic_part(),
        ComputeWeightMapd("label", map=kind, **extra),
        AddIndexd(["label"]),
        RandCropByPosNegLabeld(["image", "label", key, "where"], label_key="label", spatial_size=(16, 16, 8),
                               pos=1, neg=1, num_samples=2),
    ])
    chain.set_random_state(seed=3)
    dataset = CacheDataset(files, transform=chain, cache_rate=1.0, num_workers=0)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list_data_collate)
    reference = Compose(deterministic_part())
    full = {}
    for item in files:
        label = reference(item)["label"]
        assert tuple(float(p) for p in label.pixdim) == pytest.approx(TARGET)
        labels = label[0].numpy().astype(np.int64)
        full[item["id"]] = (wm.weight_map(labels, sigma=2.0, class_weights=WEIGHTS, spacing=TARGET, device="cpu")
                            if kind == "bressan" else wm.signed_distance(labels, num_classes=3, spacing=TARGET, device="cpu"))
    seen = 0
    for batch in loader:
        for j in range(len(batch["id"])):
            patch, where = batch[key][j], batch["where"][j, 0].numpy().astype(np.int64)
            expected = full[batch["id"][j]]
            if kind == "bressan":
                np.testing.assert_allclose(patch[0].numpy(), expected.reshape(-1)[where], rtol=1e-6)
            else:
                flat = expected.reshape(3, -1)
                np.testing.assert_allclose(patch.numpy(), flat[:, where], rtol=1e-6, atol=1e-6)
            seen += 1
    assert seen == 2 * len(files)


def test_compute_transform_equals_the_engine_on_the_same_array() -> None:
    labels = blobs((30, 28, 12), seed=1)
    meta = monai.data.MetaTensor(torch.from_numpy(labels[None].astype(np.float32)), affine=torch.diag(
        torch.tensor([*PIXDIM, 1.0], dtype=torch.float64)))
    out = ComputeWeightMapd("label", map="unet", sigma=3.0, instances="connected")({"label": meta})["weight"]
    instances = wm.instances_from_labels(labels)
    expected = wm.unet_weights(instances, classes=labels, w0=10.0, sigma=3.0, spacing=PIXDIM, device="cpu")
    assert isinstance(out, monai.data.MetaTensor) and out.shape == (1, *labels.shape)
    np.testing.assert_array_equal(out[0].numpy(), expected)
    distance = ComputeWeightMapd("label", map="distance")({"label": meta})["distance"]
    np.testing.assert_array_equal(distance[0].numpy(), wm.distance_to_edges(labels, spacing=PIXDIM, device="cpu"))


def test_load_transform_reads_the_store_and_checks_the_label(files, tmp_path: Path) -> None:
    folder = Path(files[0]["label"]).parent
    store = tmp_path / "w.zarr"
    wm.compute(folder, store, sigma=2.0, class_weights=WEIGHTS, device="cpu", workers=1)
    chain = Compose([LoadImaged(["label"], reader="NibabelReader", dtype=None), EnsureChannelFirstd(["label"]),
                     LoadWeightMapd(store, id_key="id")])
    opened = wm.open_store(store)
    for item in files:
        out = chain(item)
        assert out["weight"].shape == out["label"].shape
        np.testing.assert_array_equal(out["weight"][0].numpy(), opened[item["id"]])
    # A label cast on loading is not the one the map was computed from: named, not used.
    cast = Compose([LoadImaged(["label"], reader="NibabelReader"), EnsureChannelFirstd(["label"]),
                    LoadWeightMapd(store, id_key="id")])
    with pytest.raises(RuntimeError) as raised:  # MONAI's Compose wraps what a transform raised
        cast(files[0])
    assert isinstance(raised.value.__cause__, WeightmapsError) and "digest" in str(raised.value.__cause__)


def test_bad_options_are_named() -> None:
    with pytest.raises(WeightmapsError, match="class_weights"):
        ComputeWeightMapd("label", map="bressan", sigma=2.0)
    with pytest.raises(WeightmapsError, match="map must be"):
        ComputeWeightMapd("label", map="other")
    with pytest.raises(WeightmapsError, match="num_classes"):
        ComputeWeightMapd("label", map="sdf")
    with pytest.raises(WeightmapsError, match="expected a channel-first label"):
        ComputeWeightMapd("label", map="distance")({"label": torch.zeros(4, 4)})
