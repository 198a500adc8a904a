"""compute(): real files on disk in, a store out whose maps equal weight_map on every mask."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from weightmaps import weight_map
from weightmaps.classweights import resolve_class_weights
from weightmaps.errors import BadInputError, ResumeMismatchError, WeightmapsError
from weightmaps.pipeline import ComputeResult, compute
from weightmaps.readers import read_mask
from weightmaps.sample_data import make_masks, write_dataset
from weightmaps.sources import open_source
from weightmaps.stats import scan
from weightmaps.store import open_store

SIGMA = 2.0


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 PNG masks of 64x48, 3 classes."""
    root = write_dataset(tmp_path_factory.mktemp("png"), n=24, shape=(64, 48), num_classes=3, seed=1,
                         with_images=False)
    return root / "masks"


@pytest.fixture(scope="module")
def reference(png_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A straight run over png_dir: several shards, in-process."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    compute(png_dir, out, sigma=SIGMA, device="cpu", workers=1, samples_per_shard=5)
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    store = open_store(path)
    return {sid: store[sid] for sid in store.ids}


def _assert_same_store(a: Path, b: Path) -> None:
    left, right = _arrays(a), _arrays(b)
    assert list(left) == list(right)
    for sid in left:
        assert left[sid].dtype == right[sid].dtype
        assert left[sid].tobytes() == right[sid].tobytes(), sid


def _assert_maps_match_engine(out: Path, *, spacing: object = None, device: str = "cpu", **kwargs: object) -> None:
    """Every map in the store equals weight_map on the source mask, with the store's class weights."""
    store = open_store(out)
    assert store.complete
    source = open_source(kwargs.pop("inputs"))  # type: ignore[arg-type]
    assert store.ids == source.ids
    for i, sid in enumerate(store.ids):
        expected = weight_map(source.read(i), sigma=SIGMA, class_weights=store.class_weights, spacing=spacing,
                              device=device, **kwargs)
        got = store[sid]
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected, err_msg=sid)


# --- the maps equal weight_map ------------------------------------------------------------------


def test_png_dir_matches_engine(png_dir: Path, reference: Path) -> None:
    _assert_maps_match_engine(reference, inputs=png_dir)
    store = open_store(reference)
    assert len(store) == 24
    counts: dict[int, int] = {}
    for i in range(24):
        for label, n in zip(*np.unique(read_mask(png_dir / f"{store.ids[i]}.png"), return_counts=True), strict=True):
            counts[int(label)] = counts.get(int(label), 0) + int(n)
    assert store.class_counts == counts
    assert store.report["bad"] == []
    assert store.params.sigma == SIGMA


def test_mixed_sizes(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for k, shape in enumerate([(40, 32), (24, 56), (40, 32)]):
        for j, mask in enumerate(make_masks(3, shape, seed=k)):
            (root / f"s{k}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / f"s{k}" / f"m{j}.png")
    result = compute(root, tmp_path / "out.zarr", sigma=SIGMA, device="cpu", workers=1, samples_per_shard=2)
    assert result.n_samples == 9
    _assert_maps_match_engine(tmp_path / "out.zarr", inputs=root)
    store = open_store(tmp_path / "out.zarr")
    assert {store.shape(i) for i in range(9)} == {(40, 32), (24, 56)}


@pytest.mark.parametrize("fmt", ["tif", "npy"])
def test_3d_volumes(tmp_path: Path, fmt: str) -> None:
    root = write_dataset(tmp_path / "vol", n=4, shape=(8, 24, 20), fmt=fmt, with_images=False, seed=3)
    out = tmp_path / "out.zarr"
    result = compute(root / "masks", out, sigma=1.5 * SIGMA, spacing=(2.0, 1.0, 1.0), device="cpu", workers=1)
    assert result.spacing == (2.0, 1.0, 1.0)
    store = open_store(out)
    source = open_source(root / "masks")
    for i in range(4):
        assert store[i].shape == (8, 24, 20)
        np.testing.assert_array_equal(
            store[i],
            weight_map(source.read(i), sigma=1.5 * SIGMA, class_weights=store.class_weights, spacing=(2.0, 1.0, 1.0),
                       device="cpu"),
        )


def test_zarr_array_input(tmp_path: Path) -> None:
    masks = make_masks(6, (32, 40), seed=5)
    path = tmp_path / "masks.zarr"
    zarr.create_array(path, shape=masks.shape, chunks=(1, 32, 40), dtype=masks.dtype)[:] = masks
    out = tmp_path / "out.zarr"
    compute(str(path), out, sigma=SIGMA, device="cpu", workers=1)
    store = open_store(out)
    assert store.ids == [f"{i:06d}" for i in range(6)]
    for i in range(6):
        np.testing.assert_array_equal(
            store[i], weight_map(masks[i], sigma=SIGMA, class_weights=store.class_weights, device="cpu")
        )
    # An in-memory zarr.Array works the same.
    compute(zarr.open_array(path, mode="r"), tmp_path / "out2.zarr", sigma=SIGMA, device="cpu", workers=1)
    _assert_same_store(out, tmp_path / "out2.zarr")


def test_nifti_header_spacing(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    masks = make_masks(3, (6, 20, 16), seed=7)
    root = tmp_path / "nii"
    root.mkdir()
    for i, mask in enumerate(masks):
        img = nib.Nifti1Image(mask, affine=np.diag([2.5, 0.7, 0.7, 1.0]))
        nib.save(img, root / f"case{i}.nii.gz")
    out = tmp_path / "out.zarr"
    result = compute(root, out, sigma=SIGMA, device="cpu", workers=1)
    spacing = open_source(root).spacing(0)
    assert spacing == (2.5, 0.7, 0.7)
    assert result.spacing == spacing
    assert open_store(out).params.spacing == (2.5, 0.7, 0.7)
    _assert_maps_match_engine(out, inputs=root, spacing=spacing)
    # An explicit spacing wins over the header.
    result = compute(root, tmp_path / "explicit.zarr", sigma=SIGMA, spacing=(1, 1, 1), device="cpu", workers=1)
    assert result.spacing == (1.0, 1.0, 1.0)
    # Headers that disagree: refused, since one store holds one spacing.
    nib.save(nib.Nifti1Image(masks[0], affine=np.diag([1.0, 1.0, 1.0, 1.0])), root / "other.nii.gz")
    with pytest.raises(WeightmapsError, match="per-sample spacing is not supported"):
        compute(root, tmp_path / "mixed.zarr", sigma=SIGMA, device="cpu", workers=1)
    assert not (tmp_path / "mixed.zarr").exists()


# --- results do not depend on how the work is split -----------------------------------------------


def test_workers_and_batch_size_give_identical_stores(png_dir: Path, reference: Path, tmp_path: Path) -> None:
    compute(png_dir, tmp_path / "w2.zarr", sigma=SIGMA, device="cpu", workers=2, samples_per_shard=5)
    _assert_same_store(reference, tmp_path / "w2.zarr")
    for batch_size in (1, 7):
        out = tmp_path / f"b{batch_size}.zarr"
        compute(png_dir, out, sigma=SIGMA, device="cpu", workers=1, batch_size=batch_size, samples_per_shard=5)
        _assert_same_store(reference, out)
    # Shard size changes the layout, not the maps.
    compute(png_dir, tmp_path / "s24.zarr", sigma=SIGMA, device="cpu", workers=1)
    _assert_same_store(reference, tmp_path / "s24.zarr")


def test_shard_groups_and_the_pool_give_identical_stores(png_dir: Path, reference: Path, tmp_path: Path) -> None:
    """Shards computed together (as a GPU groups them) and on 1 or 3 worker processes: the same store.

    The pool's workers run the scan too (from a few hundred masks on; forced here); progress is
    called in this thread whatever the processes.
    """
    import dataclasses

    import weightmaps.stats
    from weightmaps.backend import get_backend
    from weightmaps.shards import group_tasks

    seen_threads: set[str] = set()

    def progress(stage: str, done: int, total: int) -> None:
        seen_threads.add(threading.current_thread().name)

    for workers in (1, 3):
        out = tmp_path / f"p{workers}.zarr"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(weightmaps.stats, "_SCAN_ON_POOL_FROM", 0)
            compute(png_dir, out, sigma=SIGMA, device="cpu", workers=workers, batch_size=3, samples_per_shard=5,
                    progress=progress)
        _assert_same_store(reference, out)
    assert seen_threads == {threading.current_thread().name}

    # A device-like backend (one with a memory to plan with) computes 3 shards of 8 masks of 64x48
    # as one batch (24 masks fill over a quarter of the 64³ cube that one shard's 8 would not).
    device_like = dataclasses.replace(get_backend("cpu"), free_memory=lambda: 8 << 30)
    out = tmp_path / "grouped.zarr"
    compute(png_dir, out, sigma=SIGMA, device=device_like, workers=1, samples_per_shard=8)
    writer_tasks = open_store(out).tasks()
    assert [len(g) for g in group_tasks(writer_tasks, device_like, processes=1)] == [3]
    assert [len(g) for g in group_tasks(writer_tasks, device_like, processes=3)] == [1, 1, 1]
    assert [len(g) for g in group_tasks(writer_tasks, get_backend("cpu"), processes=1)] == [1, 1, 1]
    _assert_same_store(reference, out)


def test_scipy_device_matches_cpu(png_dir: Path, reference: Path, tmp_path: Path) -> None:
    compute(png_dir, tmp_path / "scipy.zarr", sigma=SIGMA, device="scipy", workers=1, samples_per_shard=5)
    left, right = _arrays(reference), _arrays(tmp_path / "scipy.zarr")
    for sid in left:
        np.testing.assert_allclose(right[sid], left[sid], rtol=1e-6, atol=0)


def test_float16_and_ignore_index(png_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "f16.zarr"
    compute(png_dir, out, sigma=SIGMA, device="cpu", workers=1, dtype="float16", ignore_index=2)
    store = open_store(out)
    assert 2 not in store.class_counts
    assert store[0].dtype == np.float16
    _assert_maps_match_engine(out, inputs=png_dir, ignore_index=2, dtype="float16")


def test_progress_stages(png_dir: Path, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    compute(png_dir, tmp_path / "p.zarr", sigma=SIGMA, device="cpu", workers=1, samples_per_shard=10,
            progress=lambda *a: calls.append(a))
    scans = [c for c in calls if c[0] == "scan"]
    computes = [c for c in calls if c[0] == "compute"]
    assert scans[0] == ("scan", 0, 24) and scans[-1] == ("scan", 24, 24)
    assert [c[1] for c in computes] == [0, 10, 20, 24]
    assert {c[0] for c in calls} == {"scan", "compute"}


# --- class weights --------------------------------------------------------------------------------


def test_class_weights_file_dict_and_from_store(png_dir: Path, reference: Path, tmp_path: Path) -> None:
    weights = {0: 0.5, 1: 2.0, 2: 4.0}
    r_dict = compute(png_dir, tmp_path / "dict.zarr", sigma=SIGMA, class_weights=weights, device="cpu", workers=1)
    assert r_dict.class_weights == weights
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({str(k): v for k, v in weights.items()}))
    compute(png_dir, tmp_path / "file.zarr", sigma=SIGMA, class_weights=str(path), device="cpu", workers=1)
    _assert_same_store(tmp_path / "dict.zarr", tmp_path / "file.zarr")
    assert open_store(tmp_path / "file.zarr").params.class_weights_origin["source"] == "file"
    _assert_maps_match_engine(tmp_path / "dict.zarr", inputs=png_dir)

    # A validation set reuses the training set's weights.
    val = write_dataset(tmp_path / "val", n=3, shape=(64, 48), seed=9, with_images=False) / "masks"
    result = compute(val, tmp_path / "val.zarr", sigma=SIGMA, class_weights_from=reference, device="cpu", workers=1)
    assert result.class_weights == open_store(reference).class_weights
    assert open_store(tmp_path / "val.zarr").class_weights == open_store(reference).class_weights

    r_median = compute(png_dir, tmp_path / "median.zarr", sigma=SIGMA, class_weights="median", device="cpu", workers=1)
    assert r_median.class_weights != open_store(reference).class_weights


def test_class_weights_errors(png_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightmapsError, match=r"no weight for label\(s\) \[2\]"):
        compute(png_dir, tmp_path / "a.zarr", sigma=SIGMA, class_weights={0: 1, 1: 2}, device="cpu", workers=1)
    with pytest.raises(WeightmapsError, match="neither a scheme"):
        compute(png_dir, tmp_path / "b.zarr", sigma=SIGMA, class_weights="balance", device="cpu", workers=1)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(WeightmapsError, match="bad.json"):
        compute(png_dir, tmp_path / "c.zarr", sigma=SIGMA, class_weights=str(bad_json), device="cpu", workers=1)
    assert not any(tmp_path.glob("*.zarr"))
    weights, record = resolve_class_weights("log", {0: 90, 1: 10}, scheme_params={"c": 1.5})
    assert record == {"source": "scheme", "scheme": "log", "scheme_params": {"c": 1.5}}


# --- bad inputs -----------------------------------------------------------------------------------


def _bad_dataset(root: Path) -> dict[str, str]:
    """Good masks plus one of each kind of bad input; returns {file name: expected reason fragment}."""
    for i, mask in enumerate(make_masks(4, (32, 32), seed=2)):
        Image.fromarray(mask).save(root / f"good{i}.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    tifffile.imwrite(root / "float.tif", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    np.save(root / "volume.npy", np.zeros((4, 32, 32), np.uint8))
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "label7.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "rgb.png")
    return {"corrupt.png": "", "float.tif": "non-integer", "volume.npy": "3-D", "label7.png": ">= num_classes",
            "rgb.png": ""}


def test_bad_inputs_all_listed(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    expected = _bad_dataset(root)
    with pytest.raises(BadInputError) as info:
        compute(root, tmp_path / "out.zarr", sigma=SIGMA, num_classes=3, device="cpu", workers=1)
    assert not (tmp_path / "out.zarr").exists()
    bad = {Path(b.path).name: b.reason for b in info.value.bad}
    assert set(bad) == set(expected)
    for name, fragment in expected.items():
        assert fragment in bad[name]
        assert name in str(info.value)


def test_skip_bad_records_them(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    expected = _bad_dataset(root)
    out = tmp_path / "out.zarr"
    result = compute(root, out, sigma=SIGMA, num_classes=3, skip_bad=True, device="cpu", workers=2, samples_per_shard=1)
    assert result.n_bad == len(expected) and result.n_samples == 4
    store = open_store(out)
    assert store.ids == [f"good{i}" for i in range(4)]
    assert {Path(b["path"]).name for b in store.report["bad"]} == set(expected)
    assert all(b["reason"] for b in store.report["bad"])
    _assert_maps_match_engine(out, inputs=sorted(root.glob("good*.png")))


def test_median_scheme_uses_the_pixels_of_the_images_holding_each_class(tmp_path: Path) -> None:
    from weightmaps.classweights import class_counts, class_image_pixels, class_weights

    root = tmp_path / "masks"
    root.mkdir()
    masks = list(make_masks(8, (32, 40), num_classes=3, seed=4))
    for mask in masks[::2]:
        mask[mask == 2] = 1  # the rare class only in every other mask
    for i, mask in enumerate(masks):
        Image.fromarray(mask).save(root / f"m{i}.png")
    expected = class_weights(class_counts(masks), "median", image_pixels=class_image_pixels(masks))
    assert expected != pytest.approx(class_weights(class_counts(masks), "median"))
    result = compute(root, tmp_path / "median.zarr", sigma=SIGMA, class_weights="median", device="cpu", workers=1)
    assert result.class_weights == pytest.approx(expected, rel=1e-12)
    assert open_store(tmp_path / "median.zarr").class_weights == pytest.approx(expected, rel=1e-12)


def test_scan_on_processes_equals_scan_on_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large datasets are scanned by worker processes: same counts, shapes, ids and bad inputs."""
    import weightmaps.stats

    root = tmp_path / "bad"
    root.mkdir()
    _bad_dataset(root)
    on_threads = scan(root, num_classes=3, skip_bad=True)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_PROCESSES_FROM", 0)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_CHUNK", 3)  # several chunks, some mixing good and bad
    seen: list[int] = []
    on_processes = scan(root, num_classes=3, skip_bad=True, processes=2, progress=lambda _, done, n: seen.append(done))
    for field in ("indices", "ids", "shapes", "spacings", "counts", "image_pixels", "bad"):
        assert getattr(on_processes, field) == getattr(on_threads, field), field
    assert seen == list(range(len(seen))) and seen[-1] == 9
    with pytest.raises(BadInputError) as info:
        scan(root, num_classes=3, processes=2)
    assert len(info.value.bad) == 5


def test_scan_counts_and_groups(png_dir: Path) -> None:
    result = scan(png_dir, ignore_index=0)
    assert 0 not in result.counts
    assert result.groups() == {(64, 48): 24}
    assert len(result.ids) == 24 and not result.bad


# --- dry run, existing stores, resume -------------------------------------------------------------


def test_dry_run_writes_nothing(png_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dry.zarr"
    result = compute(png_dir, out, sigma=SIGMA, dry_run=True, samples_per_shard=5)
    assert isinstance(result, ComputeResult)
    assert not out.exists()
    assert result.plan is not None
    assert result.plan["n_samples"] == 24
    assert result.plan["n_shards"] == 5
    assert result.plan["shapes"]["most_common"][0]["shape"] == [64, 48]
    assert result.plan["estimated_bytes"] == 24 * 64 * 48 * 4
    assert result.n_computed == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"connectivity": 3}, "connectivity"), ({"spacing": (1.0, 2.0, 3.0)}, "one value per axis"),
     ({"sigma": 0}, "sigma"), ({"dtype": "float64"}, "dtype")],
)
def test_bad_parameters_are_refused_before_any_store_exists(png_dir: Path, tmp_path: Path, kwargs, message) -> None:
    out = tmp_path / "never.zarr"
    with pytest.raises(WeightmapsError, match=message):
        compute(png_dir, out, **{"sigma": SIGMA, "device": "cpu", **kwargs})
    assert not out.exists()


def test_existing_store_needs_resume_or_overwrite(png_dir: Path, reference: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightmapsError, match="ref.zarr"):
        compute(png_dir, reference, sigma=SIGMA, device="cpu", workers=1)
    with pytest.raises(WeightmapsError, match="exclude each other"):
        compute(png_dir, tmp_path / "x.zarr", sigma=SIGMA, resume=True, overwrite=True)
    # Resuming a complete store computes nothing and writes nothing.
    before = (reference / "zarr.json").read_bytes()
    result = compute(png_dir, reference, sigma=SIGMA, device="cpu", workers=1, resume=True)
    assert result.n_computed == 0 and result.n_samples == 24
    assert (reference / "zarr.json").read_bytes() == before


class _Killed(Exception):
    pass


def _partial_run(inputs: Path, out: Path, shards_done: int, **kwargs: object) -> None:
    """A run that dies after ``shards_done`` shards (progress is called after each shard)."""
    count = 0

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal count
        if stage == "compute" and done > 0:
            count += 1
            if count >= shards_done:
                raise _Killed

    with pytest.raises(_Killed):
        compute(inputs, out, sigma=SIGMA, device="cpu", progress=progress, **kwargs)  # type: ignore[arg-type]


def test_resume_after_partial_run_equals_straight_run(png_dir: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial.zarr"
    _partial_run(png_dir, out, 2, workers=1, samples_per_shard=5)
    store = open_store(out)
    assert not store.complete
    assert np.isnan(store[store.ids[-1]]).all()  # unwritten maps are NaN, never plausible weights
    result = compute(png_dir, out, sigma=SIGMA, device="cpu", workers=2, resume=True)
    assert result.n_computed == 24 - 10
    _assert_same_store(reference, out)
    final, ref = open_store(out), open_store(reference)
    assert final.complete and final.params == ref.params and final.class_weights == ref.class_weights
    assert {**final.report, "last_run": None} == {**ref.report, "last_run": None}
    assert final.report["last_run"]["n_computed"] == 14 and ref.report["last_run"]["n_computed"] == 24


def test_resume_refuses_changed_params_or_inputs(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", n=6, shape=(32, 32), seed=4, with_images=False) / "masks"
    out = tmp_path / "partial.zarr"
    _partial_run(root, out, 1, workers=1, samples_per_shard=2)
    with pytest.raises(WeightmapsError, match="sigma"):
        compute(root, out, sigma=SIGMA + 1, device="cpu", workers=1, resume=True)
    with pytest.raises(WeightmapsError, match="class_weights"):
        compute(root, out, sigma=SIGMA, class_weights="none", device="cpu", workers=1, resume=True)
    # Device, workers and batch size are not parameters: resuming with others is fine.
    compute(root, out, sigma=SIGMA, device="scipy", workers=2, batch_size=1, resume=True, class_weights="balanced")
    assert open_store(out).complete


# --- what a run refuses before any store exists -----------------------------------------------


def _rare_class_dataset(tmp_path: Path) -> Path:
    """Two 64 x 64 masks with one pixel of class 2: its balanced weight is about 2700."""
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[:, :, 32:] = 1
    masks[0, 5, 5] = 2
    folder = tmp_path / "masks"
    folder.mkdir()
    for i, m in enumerate(masks):
        np.save(folder / f"m{i}.npy", m)
    return folder


def test_a_weight_beyond_float16_is_refused_before_the_store_exists(tmp_path: Path) -> None:
    folder = _rare_class_dataset(tmp_path)
    masks = np.zeros((1, 512, 512), np.uint8)
    masks[0, :, 256:] = 1
    masks[0, 0, 0] = 2  # 1 pixel of 262144: balanced weight ≈ 87381 > 65504
    np.save(folder / "m0.npy", masks[0])
    with pytest.raises(WeightmapsError, match=r"class 2's weight 8[\d.]+ does not fit float16 \(largest 65504\).*max-weight"):
        compute(folder, tmp_path / "w.zarr", sigma=2.0, dtype="float16", device="cpu", workers=1)
    assert not (tmp_path / "w.zarr").exists()
    result = compute(folder, tmp_path / "w.zarr", sigma=2.0, dtype="float16", device="cpu", workers=1, max_weight=1000.0)
    store = open_store(result.store)
    assert store.params.max_weight == 1000.0 and max(store.class_weights.values()) == 1000.0
    assert all(np.isfinite(store[i]).all() for i in range(len(store)))


def test_a_json_weight_beyond_float32_is_refused(tmp_path: Path) -> None:
    folder = _rare_class_dataset(tmp_path)
    weights = tmp_path / "w.json"
    weights.write_text('{"0": 1, "1": 1e39, "2": 1}')
    with pytest.raises(WeightmapsError, match=r"class 1's weight 1e\+39 does not fit float32"):
        compute(folder, tmp_path / "w.zarr", sigma=2.0, class_weights=weights, device="cpu", workers=1)
    assert not (tmp_path / "w.zarr").exists()


def test_a_sigma_that_rounds_every_weight_to_zero_is_refused(tmp_path: Path) -> None:
    folder = _rare_class_dataset(tmp_path)
    with pytest.raises(WeightmapsError, match=r"sigma 1e\+30 is so large that every weight rounds to 0 in float32"):
        compute(folder, tmp_path / "w.zarr", sigma=1e30, device="cpu", workers=1)
    assert not (tmp_path / "w.zarr").exists()
    # Large but not absurd: tiny weights, written as such.
    compute(folder, tmp_path / "ok.zarr", sigma=1e9, device="cpu", workers=1)
    assert np.nanmax(open_store(tmp_path / "ok.zarr")[0]) > 0


def test_bad_class_weight_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    folder = _rare_class_dataset(tmp_path)
    cases = {
        '{"0": 1, "1": 2, "-2": 1}': "labels must be >= 0",
        '{"0": 1, "1": 2, "2": 1, "1": 3}': "label '1' is given twice",
        '{"0": 1, "1": 2, "01": 1, "2": 1}': "'1' and '01' are the same label 1",
        '{"0": 1, "1": true, "2": 1}': "integer labels to numbers",
        '{"0": 0, "1": 0, "2": 0}': "every class weight is 0",
    }
    for text, message in cases.items():
        weights = tmp_path / "w.json"
        weights.write_text(text)
        with pytest.raises(WeightmapsError, match=message) as info:
            compute(folder, tmp_path / "w.zarr", sigma=2.0, class_weights=weights, device="cpu", workers=1)
        assert str(weights) in str(info.value)
        assert not (tmp_path / "w.zarr").exists()


def test_spacing_and_connectivity_are_checked_before_the_scan(tmp_path: Path) -> None:
    folder = _rare_class_dataset(tmp_path)
    calls = []
    with pytest.raises(WeightmapsError, match="spacing must have one value per axis"):
        compute(folder, tmp_path / "w.zarr", sigma=2.0, spacing=(1.0, 1.0, 1.0), device="cpu", workers=1,
                progress=lambda *a: calls.append(a))
    with pytest.raises(WeightmapsError, match="connectivity"):
        compute(folder, tmp_path / "w.zarr", sigma=2.0, connectivity=3, device="cpu", workers=1,
                progress=lambda *a: calls.append(a))
    assert calls == []  # the scan never started
    assert not (tmp_path / "w.zarr").exists()


def test_label_options_that_cannot_work_are_refused_or_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    folder = _rare_class_dataset(tmp_path)
    out = tmp_path / "w.zarr"
    with pytest.raises(WeightmapsError, match="ignore_index must be >= 0"):
        compute(folder, out, sigma=2.0, ignore_index=-1, device="cpu", workers=1)
    with pytest.raises(WeightmapsError, match="maps the ignore label 255 to 1, so no pixel would be ignored"):
        compute(folder, out, sigma=2.0, ignore_index=255, label_map={255: 1}, device="cpu", workers=1)
    assert not out.exists()
    with caplog.at_level(logging.WARNING, logger="weightmaps"):
        compute(folder, out, sigma=2.0, ignore_index=7, device="cpu", workers=1)
    assert "ignore_index 7 occurs in no mask" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="weightmaps"):
        compute(folder, tmp_path / "w2.zarr", sigma=2.0, ignore_index=2, device="cpu", workers=1)
    assert "occurs in no mask" not in caplog.text


def test_a_huge_label_costs_a_compact_table_not_gigabytes(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((32, 32), np.int64)
    mask[8:20, 8:20] = 2_000_000_000
    np.save(masks / "a.npy", mask)
    result = compute(masks, tmp_path / "w.zarr", sigma=2.0, device="cpu", workers=1)
    assert set(result.class_weights) == {0, 2_000_000_000}
    assert np.isfinite(open_store(result.store)["a"]).all()


def _swap_labels_keeping_size_and_mtime(path: Path) -> None:
    """Relabel a written mask as `cp -p` or rsync would leave it: same size, same mtime."""
    mask = np.load(path)
    stat = path.stat()
    np.save(path, np.where(mask == 1, 0, np.where(mask == 0, 1, mask)).astype(mask.dtype))
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _npy_masks(tmp_path: Path, n: int = 6) -> Path:
    folder = tmp_path / "npy"
    folder.mkdir()
    for i, mask in enumerate(make_masks(n, (24, 32), num_classes=3, seed=8)):
        np.save(folder / f"m{i}.npy", mask)
    return folder


def test_resume_refuses_a_written_mask_that_changed_keeping_size_and_mtime(tmp_path: Path) -> None:
    masks = _npy_masks(tmp_path)
    out = tmp_path / "w.zarr"
    _partial_run(masks, out, 1, workers=1, samples_per_shard=2, class_weights="none")
    _swap_labels_keeping_size_and_mtime(masks / "m1.npy")  # in the written shard
    with pytest.raises(ResumeMismatchError, match=r"masks of 1 sample\(s\) changed since their maps were written: \S*m1\.npy"):
        compute(masks, out, sigma=SIGMA, device="cpu", workers=1, resume=True, class_weights="none")
    # Recomputing exactly the stale shard gives what a fresh run gives.
    result = compute(masks, out, sigma=SIGMA, device="cpu", workers=1, resume=True, class_weights="none",
                     recompute_changed=True)
    assert result.n_computed == 6
    fresh = compute(masks, tmp_path / "fresh.zarr", sigma=SIGMA, device="cpu", workers=1, class_weights="none",
                    samples_per_shard=2)
    _assert_same_store(Path(fresh.store), out)


def test_a_complete_store_whose_mask_changed_is_refused_then_recomputed(tmp_path: Path) -> None:
    masks = _npy_masks(tmp_path)
    out = tmp_path / "w.zarr"
    compute(masks, out, sigma=SIGMA, device="cpu", workers=1, samples_per_shard=2, class_weights="none")
    _swap_labels_keeping_size_and_mtime(masks / "m4.npy")
    with pytest.raises(ResumeMismatchError, match="m4.npy"):
        compute(masks, out, sigma=SIGMA, device="cpu", workers=1, resume=True, class_weights="none")
    assert open_store(out).complete  # refused: nothing touched
    result = compute(masks, out, sigma=SIGMA, device="cpu", workers=1, resume=True, class_weights="none",
                     recompute_changed=True)
    assert result.n_computed == 2 and open_store(out).complete
    fresh = compute(masks, tmp_path / "fresh.zarr", sigma=SIGMA, device="cpu", workers=1, class_weights="none",
                    samples_per_shard=2)
    _assert_same_store(Path(fresh.store), out)



def test_skip_bad_covers_what_discovery_leaves_out_and_all_of_it_is_listed(tmp_path: Path) -> None:
    """A dangling link, two files of one id, a list file's missing lines: bad inputs like any other."""
    folder = tmp_path / "masks"
    folder.mkdir()
    for i, mask in enumerate(make_masks(3, (24, 32), num_classes=3, seed=5)):
        np.save(folder / f"good{i}.npy", mask)
    np.save(folder / "twin.npy", np.zeros((24, 32), np.uint8))
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(folder / "twin.png")
    (folder / "gone.npy").symlink_to(tmp_path / "nowhere.npy")
    with pytest.raises(BadInputError) as info:
        compute(folder, tmp_path / "w.zarr", sigma=2.0, device="cpu", workers=1)
    reasons = {Path(b.path).name: b.reason for b in info.value.bad}
    assert set(reasons) == {"gone.npy", "twin.npy", "twin.png"}
    assert "which does not exist" in reasons["gone.npy"] and "duplicate sample id 'twin'" in reasons["twin.png"]
    assert not (tmp_path / "w.zarr").exists()
    result = compute(folder, tmp_path / "w.zarr", sigma=2.0, device="cpu", workers=1, skip_bad=True)
    store = open_store(result.store)
    assert store.ids == ["good0", "good1", "good2"] and result.n_bad == 3 and store.complete
    assert {Path(b["path"]).name for b in store.report["bad"]} == {"gone.npy", "twin.npy", "twin.png"}
    # Every missing line of a list file, not the first one only.
    listing = tmp_path / "train.txt"
    listing.write_text("masks/good0.npy\nmasks/missing1.npy\nmasks/good1.npy\nmasks/missing2.npy\n")
    with pytest.raises(BadInputError) as info:
        compute(listing, tmp_path / "l.zarr", sigma=2.0, device="cpu", workers=1)
    assert [b.id for b in info.value.bad] == [f"{listing}:2", f"{listing}:4"]
    assert compute(listing, tmp_path / "l.zarr", sigma=2.0, device="cpu", workers=1, skip_bad=True).n_samples == 2


def test_float_labels_accepts_whole_numbers_and_names_the_first_other_value(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    folder = tmp_path / "nifti"
    folder.mkdir()
    labels = make_masks(2, (12, 16, 10), num_classes=3, seed=1)
    for i, volume in enumerate(labels):
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([2.0, 1.0, 1.0, 1.0])), folder / f"v{i}.nii.gz")
    with pytest.raises(BadInputError, match="non-integer mask .*--float-labels"):
        compute(folder, tmp_path / "w.zarr", sigma=2.0, device="cpu", workers=1)
    result = compute(folder, tmp_path / "w.zarr", sigma=2.0, device="cpu", workers=1, float_labels=True)
    store = open_store(result.store)
    assert store.params.float_labels and store.params.spacing == (2.0, 1.0, 1.0)
    expected = weight_map(labels[0], sigma=2.0, class_weights=store.class_weights, spacing=(2.0, 1.0, 1.0), device="cpu")
    np.testing.assert_allclose(store["v0"], expected, rtol=1e-6)
    broken = labels[1].astype(np.float32)
    broken[3, 4, 5] = 1.5
    nib.save(nib.Nifti1Image(broken, np.diag([2.0, 1.0, 1.0, 1.0])), folder / "v1.nii.gz")
    with pytest.raises(BadInputError, match=r"v1\.nii\.gz: label 1\.5 at \(3, 4, 5\) is not a whole number"):
        compute(folder, tmp_path / "x.zarr", sigma=2.0, device="cpu", workers=1, float_labels=True)
