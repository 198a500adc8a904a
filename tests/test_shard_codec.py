"""The shard encoder writes the bytes zarr writes, for every array the store makes, and only those."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, ZstdCodec

from weightmaps.shard_codec import ShardEncoder

CHUNK = 16
SHARD = 8 * CHUNK


def _array(path: Path, dtype: str, compression: int | None, n_shards: int = 3) -> zarr.Array:
    # As create_store makes the maps array, on a small scale (the real one: 64 Ki, 16 MiB).
    return zarr.create_array(
        str(path), shape=(n_shards * SHARD - CHUNK,), chunks=(CHUNK,), shards=(SHARD,), dtype=dtype,
        fill_value=np.nan, compressors=ZstdCodec(level=compression) if compression is not None else None,
    )


def _encoder(path: Path) -> ShardEncoder:
    encoder = ShardEncoder.from_metadata(json.loads((path / "zarr.json").read_text()))
    assert encoder is not None
    return encoder


@st.composite
def shard_contents(draw: st.DrawFn) -> np.ndarray:
    """A shard's elements as the store lays them out: maps end to end, NaN after the last one."""
    filled = draw(st.integers(0, SHARD))
    values = draw(st.lists(st.floats(-1e4, 1e4, width=16), min_size=filled, max_size=filled))
    elements = np.full(SHARD, np.nan)
    elements[:filled] = values
    # Smooth runs too (what compresses), and a whole chunk of NaN between maps (a padded gap).
    if draw(st.booleans()) and filled:
        elements[: filled // 2] = 0.5
    if draw(st.booleans()) and filled > 2 * CHUNK:
        elements[CHUNK: 2 * CHUNK] = np.nan
    return elements


@settings(max_examples=40, deadline=None)
@given(contents=shard_contents(), dtype=st.sampled_from(["float32", "float16"]),
       compression=st.sampled_from([1, 3, None]), shard=st.integers(0, 2))
def test_the_bytes_are_zarrs(tmp_path_factory: pytest.TempPathFactory, contents: np.ndarray, dtype: str,
                             compression: int | None, shard: int) -> None:
    path = tmp_path_factory.mktemp("a") / "maps"
    array = _array(path, dtype, compression)
    encoder = _encoder(path)
    elements = contents.astype(dtype)
    start = shard * SHARD
    # No map lies past the array's end (its length is the end of the last map, rounded up to a chunk).
    elements[array.shape[0] - start:] = np.nan
    array[start: min(start + SHARD, array.shape[0])] = elements[: array.shape[0] - start]
    written = path / "c" / str(shard)
    ours = encoder.encode(elements)
    if not written.exists():
        assert ours is None and np.isnan(elements[: array.shape[0] - start]).all()
        return
    assert ours == written.read_bytes()
    # Only the part of the shard that lies inside the array, and what ends early, encode the same.
    last = int(np.flatnonzero(~np.isnan(elements)).max()) + 1
    assert encoder.encode(elements[:last]) == ours


def test_zarr_reads_what_it_encodes(tmp_path: Path) -> None:
    path = tmp_path / "maps"
    array = _array(path, "float32", 1)
    encoder = _encoder(path)
    rng = np.random.default_rng(0)
    values = rng.random(2 * SHARD + 40).astype(np.float32)
    for shard in range(3):
        data = encoder.encode(values[shard * SHARD:(shard + 1) * SHARD])
        assert data is not None
        (path / encoder.key(shard)).parent.mkdir(exist_ok=True)
        (path / encoder.key(shard)).write_bytes(data)
    read = zarr.open_array(str(path), mode="r")[:]
    np.testing.assert_array_equal(read[: values.size], values)
    assert np.isnan(read[values.size:]).all()
    assert array.shape == read.shape


def test_every_shard_of_a_real_store_is_zarrs(tmp_path: Path) -> None:
    """A store written by the pipeline (the encoder) equals the one zarr writes from the same maps."""
    from weightmaps.pipeline import compute
    from weightmaps.sample_data import write_dataset
    from weightmaps.store import open_store

    root = write_dataset(tmp_path / "data", n=9, shape=(40, 56), with_images=False)
    compute(root / "masks", tmp_path / "w.zarr", sigma=2.0, device="cpu", workers=1, samples_per_shard=4)
    store = open_store(tmp_path / "w.zarr")
    maps_dir = tmp_path / "w.zarr" / "maps"
    meta = json.loads((maps_dir / "zarr.json").read_text())
    flat = zarr.open_array(str(maps_dir), mode="r")[:]
    again = zarr.create_array(str(tmp_path / "again"), shape=tuple(meta["shape"]),
                              chunks=(meta["codecs"][0]["configuration"]["chunk_shape"][0],),
                              shards=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]), dtype="float32",
                              fill_value=np.nan, compressors=ZstdCodec(level=1))
    again[:] = flat
    shards = sorted(p.name for p in (maps_dir / "c").iterdir())
    assert shards == sorted(p.name for p in (tmp_path / "again" / "c").iterdir()) and len(shards) == 3
    for name in shards:
        assert (maps_dir / "c" / name).read_bytes() == (tmp_path / "again" / "c" / name).read_bytes()
    assert len(store) == 9


@pytest.mark.parametrize("change", ["blosc", "index at start", "2-D", "fill 0", "int"])
def test_other_arrays_are_left_to_zarr(tmp_path: Path, change: str) -> None:
    path = tmp_path / "a"
    if change == "blosc":
        zarr.create_array(str(path), shape=(SHARD,), chunks=(CHUNK,), shards=(SHARD,), dtype="float32",
                          fill_value=np.nan, compressors=BloscCodec())
    elif change == "index at start":
        from zarr.codecs import ShardingCodec

        zarr.create_array(str(path), shape=(SHARD,), chunks=(SHARD,), dtype="float32", fill_value=np.nan,
                          serializer=ShardingCodec(chunk_shape=(CHUNK,), index_location="start"), compressors=None)
    elif change == "2-D":
        zarr.create_array(str(path), shape=(SHARD, 2), chunks=(CHUNK, 2), shards=(SHARD, 2), dtype="float32",
                          fill_value=np.nan)
    elif change == "fill 0":
        zarr.create_array(str(path), shape=(SHARD,), chunks=(CHUNK,), shards=(SHARD,), dtype="float32", fill_value=0)
    else:
        zarr.create_array(str(path), shape=(SHARD,), chunks=(CHUNK,), shards=(SHARD,), dtype="int32", fill_value=0)
    assert ShardEncoder.from_metadata(json.loads((path / "zarr.json").read_text())) is None
    assert ShardEncoder.from_metadata(None) is None and ShardEncoder.from_metadata({"codecs": 3}) is None


def test_a_store_zarr_must_write_is_still_written_right(tmp_path: Path) -> None:
    """A maps array of a chain the encoder does not know (blosc here) is written by zarr."""
    from weightmaps.params import MapParams
    from weightmaps.store import create_store, open_store

    params = MapParams(sigma=3.0, class_weights={0: 1.0, 1: 2.0})
    writer = create_store(tmp_path / "w.zarr", ids=["a", "b"], shapes=[(4, 4), (3, 5)], params=params,
                          class_counts={0: 10, 1: 21}, fingerprint="f")
    # Replace the maps array by one compressed with blosc, same shape, chunks and shards.
    meta = json.loads((tmp_path / "w.zarr" / "maps" / "zarr.json").read_text())
    zarr.create_array(str(tmp_path / "w.zarr" / "maps"), shape=tuple(meta["shape"]),
                      chunks=(meta["codecs"][0]["configuration"]["chunk_shape"][0],),
                      shards=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
                      dtype="float32", fill_value=np.nan, compressors=BloscCodec(), overwrite=True)
    [task] = writer.pending()
    maps = [np.full((4, 4), 1.5, np.float32), np.arange(15, dtype=np.float32).reshape(3, 5)]
    writer.write_shard(task, maps, ["d0", "d1"])
    writer.finalize({})
    store = open_store(tmp_path / "w.zarr")
    np.testing.assert_array_equal(store["a"], maps[0])
    np.testing.assert_array_equal(store["b"], maps[1])
