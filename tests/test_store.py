"""The zarr store: layout, shard writing, markers, resume checks and the read-only view."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from weightmaps.errors import ResumeMismatchError, StoreExistsError, WeightmapsError
from weightmaps.params import MapParams
from weightmaps.layout import CHUNK_ELEMENTS, ShardTask
from weightmaps.store import StoreWriter, create_store, open_store, resume_store

COUNTS = {0: 700, 1: 300}
WEIGHTS = {0: 0.71, 1: 1.67}
PARAMS = MapParams(sigma=2.0, class_weights=WEIGHTS, spacing=(1.0, 0.5))


def _params(dtype: str = "float32", **changes: object) -> MapParams:
    return dataclasses.replace(PARAMS, dtype=dtype, **changes)


def _dataset(
    shapes: list[tuple[int, ...]], dtype: str = "float32"
) -> tuple[list[str], list[np.ndarray]]:
    """Ids and deterministic, distinct maps (a sample's values depend on its position)."""
    ids = [f"case/{i:03d}" for i in range(len(shapes))]
    maps = [
        np.random.default_rng(i).uniform(0.5, 10, s).astype(dtype) for i, s in enumerate(shapes)
    ]
    return ids, maps


def _create(path: Path, ids: list[str], maps: list[np.ndarray], **kw: object) -> StoreWriter:
    kw = {"params": _params(str(maps[0].dtype)), "class_counts": COUNTS, "fingerprint": "fp1", **kw}
    return create_store(path, ids=ids, shapes=[m.shape for m in maps], **kw)


def _resume(path: Path, ids: list[str], maps: list[np.ndarray], **kw: object) -> StoreWriter:
    kw = {"params": _params(str(maps[0].dtype)), **kw}
    return resume_store(path, ids=ids, shapes=[m.shape for m in maps], **kw)


def _digest(i: int) -> str:
    return f"{i + 0xABC:016x}"  # what mask_digest looks like: 16 hex digits


def _write(writer: StoreWriter, task: ShardTask, maps: list[np.ndarray]) -> None:
    writer.write_shard(task, [maps[i] for i in task.sample_indices], [_digest(i) for i in task.sample_indices])


def _write_all(writer: StoreWriter, maps: list[np.ndarray]) -> None:
    for task in writer.pending():
        _write(writer, task, maps)


def _same_store(a: Path, b: Path) -> None:
    """Byte for byte the same files, except the root attributes' uid (unique to each store)."""

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    fa, fb = files(a), files(b)
    root_a, root_b = (json.loads(f.pop("zarr.json")) for f in (fa, fb))
    assert fa == fb
    for root in (root_a, root_b):
        del root["attributes"]["weightmaps"]["uid"]
    assert root_a == root_b


MIXED = [(12, 10), (12, 10), (7, 9), (12, 10), (7, 9), (12, 10), (12, 10)]
CASES = {
    "fixed-2d": [(16, 12)] * 9,
    "mixed-2d": MIXED,
    "3d": [(3, 8, 6)] * 5,
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("samples_per_shard", [None, 2])
def test_roundtrip(tmp_path: Path, case: str, dtype: str, samples_per_shard: int | None) -> None:
    ids, maps = _dataset(CASES[case], dtype)
    writer = _create(tmp_path / "w.zarr", ids, maps, samples_per_shard=samples_per_shard)
    _write_all(writer, maps)
    writer.finalize({"seconds": 1.5})

    store = open_store(tmp_path / "w.zarr")
    assert len(store) == len(ids) and store.ids == ids and list(store) == ids
    assert store.dtype == np.dtype(dtype) and store.complete and store.report == {"seconds": 1.5}
    assert (
        store.class_counts == COUNTS and store.class_weights == WEIGHTS and store.params == _params(dtype)
    )
    for i, (sid, expected) in enumerate(zip(ids, maps, strict=True)):
        for key in (i, sid):
            got = store[key]
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
        assert store.shape(sid) == expected.shape and store.digest(sid) == _digest(i)
    assert np.array_equal(store[-1], maps[-1])


def test_same_shapes_lie_together_and_no_map_crosses_a_shard(tmp_path: Path) -> None:
    ids, maps = _dataset(MIXED)
    _create(tmp_path / "w.zarr", ids, maps, samples_per_shard=2)
    root = zarr.open_group(tmp_path / "w.zarr", mode="r")
    flat, offsets = root["maps"], root["index/offset"][...]
    shard = flat.shards[0]
    assert flat.ndim == 1 and flat.chunks == (CHUNK_ELEMENTS,) and np.isnan(flat.fill_value)
    # (12, 10) maps first (positions 0 1 3 5 6), then (7, 9) (2 4); two per shard.
    layout_order = [int(i) for i in np.argsort(offsets)]
    assert layout_order == [0, 1, 3, 5, 6, 2, 4]
    for i, m in enumerate(maps):
        assert offsets[i] // shard == (offsets[i] + m.size - 1) // shard  # inside one shard
    assert root["index/shape"][2].tolist() == [7, 9, 0, 0] and root["index/ids"][4] == "case/004"


def test_automatic_samples_per_shard(tmp_path: Path) -> None:
    # 1024 x 1024 float32 is 4 MiB a map: 4 per 16 MiB shard; float16: 8. Writes metadata only.
    ids, shapes = [f"s{i}" for i in range(10)], [(1024, 1024)] * 10
    kw = {"class_counts": {}, "fingerprint": ""}
    w32 = create_store(tmp_path / "a.zarr", ids=ids, shapes=shapes, params=_params("float32"), **kw)
    assert [len(t) for t in w32.tasks()] == [4, 4, 2]
    w16 = create_store(tmp_path / "b.zarr", ids=ids, shapes=shapes, params=_params("float16"), **kw)
    assert [len(t) for t in w16.tasks()] == [8, 2]
    # Tiny maps: capped at 1024 samples a shard; a small group is one shard.
    many = [f"s{i}" for i in range(1500)]
    w = create_store(tmp_path / "c.zarr", ids=many, shapes=[(4, 4)] * 1500, params=PARAMS, **kw)
    assert [len(t) for t in w.tasks()] == [1024, 476]
    # A map larger than 16 MiB still gets a shard of its own.
    w = create_store(tmp_path / "d.zarr", ids=["v"], shapes=[(300, 300, 300)], params=PARAMS, **kw)
    assert [len(t) for t in w.tasks()] == [1]


def test_layout_is_sharded(tmp_path: Path) -> None:
    ids, maps = _dataset([(8, 8)] * 20)
    writer = _create(tmp_path / "w.zarr", ids, maps, samples_per_shard=8)
    _write_all(writer, maps)
    shard_files = [p for p in (tmp_path / "w.zarr" / "maps" / "c").rglob("*") if p.is_file()]
    assert len(shard_files) == 3  # ceil(20 / 8) shard files, not 20 chunk files
    markers = tmp_path / "w.zarr" / "maps" / "_markers"
    assert sorted(p.name for p in markers.iterdir()) == ["0.json", "1.json", "2.json"]
    marker = json.loads((markers / "2.json").read_text())
    assert marker["positions"] == list(range(16, 20)) and marker["digests"] == [_digest(i) for i in range(16, 20)]
    # zarr does not see the markers (it would warn, and warnings are errors here)
    members = zarr.open_group(tmp_path / "w.zarr", mode="r").members(max_depth=None)
    assert sorted(name for name, _ in members) == [
        "index", "index/digest", "index/ids", "index/offset", "index/shape", "maps"]


def test_unwritten_samples_read_as_nan_and_store_is_incomplete(tmp_path: Path) -> None:
    ids, maps = _dataset([(6, 5)] * 6)
    writer = _create(tmp_path / "w.zarr", ids, maps, samples_per_shard=2)
    _write(writer, writer.tasks()[1], maps)
    store = open_store(tmp_path / "w.zarr")
    assert not store.complete and store.report is None
    assert np.isnan(store[0]).all() and np.array_equal(store[2], maps[2])
    assert store.digest(0) is None and store.digest(ids[3]) == _digest(3)


def test_pending_shrinks_and_finalize_needs_every_shard(tmp_path: Path) -> None:
    ids, maps = _dataset([(6, 5)] * 5)
    writer = _create(tmp_path / "w.zarr", ids, maps, samples_per_shard=2)
    tasks = writer.tasks()
    assert [t.sample_indices for t in tasks] == [(0, 1), (2, 3), (4,)] and writer.pending() == tasks
    _write(writer, tasks[0], maps)
    _write(writer, tasks[2], maps)
    assert writer.pending() == [tasks[1]]
    with pytest.raises(WeightmapsError, match=r"shards 1 are not written"):
        writer.finalize({})
    assert not open_store(tmp_path / "w.zarr").complete
    _write(writer, tasks[1], maps)
    assert writer.pending() == []
    writer.finalize({"ok": True})
    assert open_store(tmp_path / "w.zarr").complete


def test_write_shard_checks_its_input(tmp_path: Path) -> None:
    ids, maps = _dataset([(6, 5)] * 4)
    writer = _create(tmp_path / "w.zarr", ids, maps, samples_per_shard=2)
    task = writer.tasks()[0]
    two = [np.zeros((6, 5), np.float32)] * 2
    with pytest.raises(WeightmapsError, match=r"sample 1 has shape \(5, 6\), expected \(6, 5\)"):
        writer.write_shard(task, [two[0], np.zeros((5, 6), np.float32)], ["a", "b"])
    with pytest.raises(WeightmapsError, match="float64"):
        writer.write_shard(task, [np.zeros((6, 5))] * 2, ["a", "b"])
    with pytest.raises(WeightmapsError, match="2 maps and 1 digests for 2 samples"):
        writer.write_shard(task, two, ["a"])
    with pytest.raises(WeightmapsError, match="not a task of the store"):
        writer.write_shard(dataclasses.replace(task, offsets=(30, 60)), two, ["a", "b"])
    assert writer.pending() == writer.tasks()


def test_existing_path_needs_overwrite(tmp_path: Path) -> None:
    ids, maps = _dataset([(4, 4)] * 2)
    out = tmp_path / "w.zarr"
    _create(out, ids, maps)
    with pytest.raises(StoreExistsError, match=r"w\.zarr already exists.*overwrite.*resume"):
        _create(out, ids, maps)
    writer = _create(out, ids, maps, overwrite=True, fingerprint="fp2")
    assert writer.fingerprint == "fp2" and open_store(out).fingerprint == "fp2"
    (tmp_path / "empty").mkdir()
    _create(tmp_path / "empty", ids, maps, overwrite=True)  # an empty directory is fine


def test_overwrite_never_deletes_user_data(tmp_path: Path) -> None:
    ids, maps = _dataset([(4, 4)] * 2)
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.png").write_bytes(b"not ours")
    with pytest.raises(
        WeightmapsError, match=r"photos.*not a weightmaps store; refusing to delete"
    ):
        _create(precious, ids, maps, overwrite=True)
    other_zarr = tmp_path / "other.zarr"
    zarr.open_group(other_zarr, mode="w").create_array("x", shape=(2,), dtype="int8")
    with pytest.raises(WeightmapsError, match="refusing to delete"):
        _create(other_zarr, ids, maps, overwrite=True)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(WeightmapsError, match="not a directory"):
        _create(a_file, ids, maps, overwrite=True)
    assert (precious / "holiday.png").read_bytes() == b"not ours" and a_file.read_text() == "x"
    assert "x" in zarr.open_group(other_zarr, mode="r")


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    ids, maps = _dataset([(4, 4)] * 3)
    out = tmp_path / "w.zarr"
    _create(out, ids, maps)
    with pytest.raises(ResumeMismatchError, match=r"sigma: store has 2\.0, this run asks 3\.0"):
        _resume(out, ids, maps, params=_params(sigma=3.0))
    with pytest.raises(
        WeightmapsError, match=r"ids: sample 1 is 'case/001' in the store, 'other' in this run"
    ):
        _resume(out, [ids[0], "other", ids[2]], maps)
    with pytest.raises(ResumeMismatchError, match=r"ids: store has 3 samples, this run 2"):
        _resume(out, ids[:2], maps[:2])
    with pytest.raises(
        WeightmapsError, match=r"shapes: sample 'case/002' is \(4, 4\) in the store, \(5, 4\)"
    ):
        resume_store(out, ids=ids, shapes=[(4, 4), (4, 4), (5, 4)], params=PARAMS)
    with pytest.raises(ResumeMismatchError, match=r"dtype: store has 'float32', this run asks 'float16'"):
        resume_store(out, ids=ids, shapes=[(4, 4)] * 3, params=_params("float16"))
    with pytest.raises(WeightmapsError, match="nothing to resume"):
        _resume(tmp_path / "missing.zarr", ids, maps)
    (tmp_path / "plain").mkdir()
    with pytest.raises(WeightmapsError, match=r"plain is not a weightmaps store"):
        _resume(tmp_path / "plain", ids, maps)


def test_killed_run_resumed_equals_a_straight_run(tmp_path: Path) -> None:
    ids, maps = _dataset(MIXED)
    straight = _create(tmp_path / "straight.zarr", ids, maps, samples_per_shard=2)
    _write_all(straight, maps)
    straight.finalize({"n": 7})

    killed = _create(tmp_path / "resumed.zarr", ids, maps, samples_per_shard=2)
    for task in killed.tasks()[::2]:
        _write(killed, task, maps)
    del killed  # the process dies here; only what is on disk survives
    resumed = _resume(tmp_path / "resumed.zarr", ids, maps)
    assert (
        resumed.class_counts == COUNTS and resumed.class_weights == WEIGHTS
    )  # kept from the store
    assert len(resumed.pending()) == 2
    _write_all(resumed, maps)
    resumed.finalize({"n": 7})
    _same_store(tmp_path / "straight.zarr", tmp_path / "resumed.zarr")


def _write_in_worker(writer: StoreWriter, task: ShardTask, maps: list[np.ndarray]) -> int:
    _write(writer, task, maps)
    return os.getpid()


def test_parallel_writers_through_a_process_pool(tmp_path: Path) -> None:
    ids, maps = _dataset(MIXED)
    serial = _create(tmp_path / "serial.zarr", ids, maps, samples_per_shard=2)
    _write_all(serial, maps)
    writer = _create(tmp_path / "parallel.zarr", ids, maps, samples_per_shard=2)
    # spawn: workers get nothing but the pickled writer, as Dask workers would
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pids = set(
            pool.map(_write_in_worker, [writer] * len(writer.tasks()), writer.tasks(), [maps] * 5)
        )
    assert os.getpid() not in pids
    writer.finalize({})
    serial.finalize({})
    _same_store(tmp_path / "serial.zarr", tmp_path / "parallel.zarr")


def test_writer_and_store_pickle_without_zarr_handles(tmp_path: Path) -> None:
    ids, maps = _dataset([(5, 5)] * 4)
    writer = _create(tmp_path / "w.zarr", ids, maps, samples_per_shard=2)
    _write(writer, writer.tasks()[0], maps)  # opens a zarr array in this process
    assert len(pickle.dumps(writer)) < 500  # a path, not the plan: cheap to send per task
    clone = pickle.loads(pickle.dumps(writer))
    assert clone.pending() == writer.pending() == writer.tasks()[1:]
    _write(clone, writer.tasks()[1], maps)
    clone.finalize({})
    store = open_store(tmp_path / "w.zarr")
    assert np.array_equal(store[1], maps[1])  # opens the array, which must not travel
    copy = pickle.loads(pickle.dumps(store))
    assert copy.ids == ids and copy.complete and np.array_equal(copy[ids[3]], maps[3])
    assert len(pickle.dumps(store)) < 500


def test_pickled_writer_refuses_a_replaced_store(tmp_path: Path) -> None:
    ids, maps = _dataset([(5, 5)] * 2)
    sent = pickle.dumps(_create(tmp_path / "w.zarr", ids, maps))
    _create(tmp_path / "w.zarr", ids, maps, overwrite=True)
    with pytest.raises(WeightmapsError, match="deleted or replaced"):
        pickle.loads(sent)


def test_open_store_errors_and_info(tmp_path: Path) -> None:
    with pytest.raises(WeightmapsError, match=r"nowhere\.zarr does not exist"):
        open_store(tmp_path / "nowhere.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(WeightmapsError, match=r"plain is not a weightmaps store"):
        open_store(tmp_path / "plain")
    ids, maps = _dataset([(6, 6)] * 3)
    writer = _create(tmp_path / "w.zarr", ids, maps)
    _write_all(writer, maps)
    writer.finalize({})
    store = open_store(tmp_path / "w.zarr")
    with pytest.raises(KeyError, match="'nope' is not in the store") as missing:
        store["nope"]
    assert isinstance(missing.value, WeightmapsError)
    with pytest.raises(IndexError):
        store[3]
    for bad in (1.7, True, None):
        with pytest.raises(TypeError, match="sample id .* or position"):
            store[bad]
    # `key in store` agrees with store[key]: ids and positions alike.
    assert "case/000" in store and 0 in store and -3 in store and np.int64(2) in store
    assert "nope" not in store and 3 not in store and 1.7 not in store and True not in store
    assert 0 < store.nbytes_on_disk() < 3 * 6 * 6 * 4 + 20_000
    # consolidated metadata lets readers open the hierarchy without listing directories
    assert zarr.open_group(tmp_path / "w.zarr", mode="r").metadata.consolidated_metadata is not None


def test_create_store_validates_arguments(tmp_path: Path) -> None:
    kw = {"params": PARAMS, "class_counts": {}, "fingerprint": ""}
    with pytest.raises(WeightmapsError, match="'a' occurs more than once"):
        create_store(tmp_path / "a", ids=["a", "a"], shapes=[(2, 2)] * 2, **kw)
    with pytest.raises(WeightmapsError, match="dtype"):
        create_store(tmp_path / "b", ids=["a"], shapes=[(2, 2)], **{**kw, "params": _params("int8")})
    with pytest.raises(WeightmapsError, match="2-D or 3-D"):
        create_store(tmp_path / "c", ids=["a"], shapes=[(2,)], **kw)
    with pytest.raises(WeightmapsError, match="JSON-serialisable"):
        create_store(tmp_path / "d", ids=["a"], shapes=[(2, 2)],
                     **{**kw, "params": _params(class_weights_origin={"f": object()})})
    with pytest.raises(WeightmapsError, match="compression"):
        create_store(tmp_path / "e", ids=["a"], shapes=[(2, 2)], compression="lz4", **kw)
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_uncompressed_store(tmp_path: Path) -> None:
    ids, maps = _dataset([(8, 8)] * 4)
    writer = _create(tmp_path / "w.zarr", ids, maps, compression=None)
    _write_all(writer, maps)
    writer.finalize({})
    assert np.array_equal(open_store(tmp_path / "w.zarr")[ids[2]], maps[2])
    assert zarr.open_array(tmp_path / "w.zarr", path="maps", mode="r").compressors == ()
    _create(tmp_path / "z.zarr", ids, maps)  # the default: zstd level 1
    (codec,) = zarr.open_array(tmp_path / "z.zarr", path="maps", mode="r").compressors
    assert isinstance(codec, ZstdCodec) and codec.level == 1


def test_errors_a_caller_catches_by_kind(tmp_path: Path) -> None:
    """An existing store and a refused resume are errors of their own kind, still WeightmapsErrors."""
    import weightmaps as wm
    from weightmaps.sample_data import write_dataset

    root = write_dataset(tmp_path, n=3, shape=(16, 16), with_images=False)
    out = tmp_path / "w.zarr"
    wm.compute(root / "masks", out, sigma=2.0, device="cpu", workers=1)
    with pytest.raises(StoreExistsError) as exists:
        wm.compute(root / "masks", out, sigma=2.0, device="cpu", workers=1)
    assert exists.value.path == str(out) and isinstance(exists.value, wm.WeightmapsError)
    with pytest.raises(ResumeMismatchError) as mismatch:
        wm.compute(root / "masks", out, sigma=3.0, device="cpu", workers=1, resume=True)
    assert any(d.startswith("sigma") for d in mismatch.value.differences)
    copy = pickle.loads(pickle.dumps(mismatch.value))  # crosses process boundaries whole
    assert copy.differences == mismatch.value.differences and str(copy) == str(mismatch.value)


def test_resume_treats_equivalent_settings_as_equal(tmp_path: Path) -> None:
    """Unit spacing is no spacing; label order in the weights does not matter."""
    ids, maps = _dataset([(4, 4)] * 2)
    out = tmp_path / "w.zarr"
    _create(out, ids, maps, params=_params(spacing=(1.0, 1.0)))
    writer = _resume(out, ids, maps, params=_params(spacing=None, class_weights={1: 1.67, 0: 0.71}))
    assert writer.params.spacing is None and open_store(out).params == _params(spacing=None)



def test_a_full_disk_while_finishing_leaves_the_store_incomplete_and_readable(tmp_path: Path) -> None:
    """The last write either marks the store complete whole, or leaves it as it was (EFBIG is real here)."""
    import subprocess
    import sys

    ids, maps = _dataset([(8, 8)] * 4)
    out = tmp_path / "w.zarr"
    writer = _create(out, ids, maps, samples_per_shard=2)
    _write_all(writer, maps)
    finish = (
        "import resource, signal, sys; from pathlib import Path; from weightmaps.store import open_store, resume_store\n"
        "from tests.test_store import _params\n"
        f"w = resume_store(Path({str(out)!r}), ids={ids!r}, shapes=[(8, 8)] * 4, params=_params())\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of dying\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))\n"
        "w.finalize({'seconds': 1.0})\n"
    )
    proc = subprocess.run([sys.executable, "-c", finish], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 1 and "File too large" in proc.stderr, proc.stderr
    store = open_store(out)  # still readable, not complete, and finishing it later works
    assert not store.complete
    assert not list(out.glob(".zarr.json.*.tmp"))
    _resume(out, ids, maps).finalize({"seconds": 1.0})
    assert open_store(out).complete


def test_a_map_holding_nan_or_inf_is_never_written(tmp_path: Path) -> None:
    ids, maps = _dataset([(4, 4)] * 2)
    writer = _create(tmp_path / "w.zarr", ids, maps)
    [task] = writer.pending()
    for value in (np.nan, np.inf):
        stack = np.stack(maps)
        stack[1, 2, 2] = value
        with pytest.raises(WeightmapsError, match=r"the maps of \['case/001'\] hold NaN or inf; not written"):
            writer.write_shard(task, stack, ["d0", "d1"])
    assert writer.pending() == [task]


def test_maps_of_every_kind_of_shape_in_one_store(tmp_path: Path) -> None:
    """2-D, 3-D, channels first, and a map larger than a shard (it spans whole shards alone)."""
    shapes = [(5, 7), (3, 4, 6), (2, 5, 7), (4, 3, 4, 6), (1100, 1000, 4), (5, 7), (9, 2)]
    ids, maps = _dataset(shapes)
    writer = _create(tmp_path / "w.zarr", ids, maps)
    tasks = writer.tasks()
    big = next(t for t in tasks if 4 in t.sample_indices)
    assert big.sample_indices == (4,) and big.n_shards == 2 and big.start % (4 * 2**20) == 0
    _write_all(writer, maps)
    writer.finalize({})
    store = open_store(tmp_path / "w.zarr")
    for sid, expected in zip(ids, maps, strict=True):
        assert np.array_equal(store[sid], expected) and store.shape(sid) == expected.shape


def test_a_format_1_store_is_refused_with_the_command_that_rewrites_it(tmp_path: Path) -> None:
    old = tmp_path / "old.zarr"
    old.mkdir()
    (old / "zarr.json").write_text(json.dumps({
        "zarr_format": 3, "node_type": "group",
        "attributes": {"weightmaps": {"format_version": 1, "params": {}, "ids": ["a"]}},
    }))
    for call in (lambda: open_store(old), lambda: _resume(old, ["a"], [np.zeros((2, 2), np.float32)])):
        with pytest.raises(WeightmapsError, match=r"store of format 1 .*weightmaps compute MASKS --out .*old\.zarr --overwrite"):
            call()
