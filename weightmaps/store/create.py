"""Making a store: :func:`create_store` (a new one, or over an old one) and :func:`resume_store`.

Both return the :class:`~weightmaps.store.writer.StoreWriter` that fills the store. Creating writes
the root attributes first, then the index and the empty ``maps`` array, and consolidates the
arrays' metadata once, so that finishing the store later is one atomic rewrite of the root
``zarr.json``. Resuming refuses a run whose ids, shapes or parameters differ from the store's.

``overwrite`` never destroys user data: it deletes only what is recognisably a weightmaps store
(or an empty folder). A local store is renamed aside first, then deleted. A store in object
storage (any fsspec URL, see :mod:`weightmaps.location`) cannot be renamed, so its old root is
first marked incomplete, then everything else is deleted, then the root: a kill in between leaves
a store that says incomplete and that the next overwrite recognises as ours.

Cut apart from the writer: this is what the driver does once, before any worker writes.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from weightmaps.version import __version__
from weightmaps.errors import ResumeMismatchError, StoreExistsError, WeightmapsError
from weightmaps.layout import CHUNK_ELEMENTS, plan_layout
from weightmaps.location import Location
from weightmaps.params import MapParams
from weightmaps.store.format import (
    FORMAT_VERSION,
    INDEX_CHUNK,
    META_KEY,
    StoreLocation,
    check_dtype,
    check_format,
    json_roundtrip,
    read_meta,
    row_to_shape,
    shapes_to_rows,
    write_meta,
)
from weightmaps.store.writer import StoreWriter

# An old store being deleted by overwrite is renamed to this (in the same folder) first.
_DELETING_PREFIX = ".{name}.weightmaps-deleting-"


def create_store(
    path: StoreLocation,
    *,
    ids: Sequence[str],
    shapes: Sequence[Sequence[int]],
    params: MapParams,
    class_counts: Mapping[int, int],
    fingerprint: str,
    overwrite: bool = False,
    samples_per_shard: int | None = None,
    compression: str | None = "zstd",
    storage_options: Mapping[str, Any] | None = None,
) -> StoreWriter:
    """Create an empty store for ``ids`` and return the writer that fills it shard by shard.

    Parameters
    ----------
    path : str, PathLike or URL
        Output directory, or an fsspec URL such as ``s3://bucket/w.zarr``. If it exists,
        ``overwrite=True`` deletes it, but only if it is a weightmaps store or an empty directory.
    ids, shapes : sequence
        Sample ids in sample order and each sample's map shape: 2-D or 3-D, or either with a
        channel axis in front. Any mix of shapes (see :mod:`weightmaps.layout`).
    params : MapParams
        What the maps are made with (their dtype, the class weights, ...); recorded, and
        compared on resume.
    class_counts, fingerprint
        Recorded in the root attributes (the fingerprint: the inputs' ids, sizes and mtimes).
    samples_per_shard : int, optional
        Maps per shard at most (default: as many as fit about 16 MiB, at most 1024).
    compression : {"zstd", None}
        zstd level 1 (fast; weight maps are smooth and shrink several-fold) or no compression.
    storage_options : dict, optional
        For a URL: the fsspec filesystem's options (credentials, ``endpoint_url``, ...).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from weightmaps.params import MapParams
    >>> from weightmaps.store import open_store
    >>> out = os.path.join(tempfile.mkdtemp(), "w.zarr")
    >>> params = MapParams(sigma=3.0, class_weights={0: 0.8, 1: 1.33})
    >>> w = create_store(out, ids=["a", "b"], shapes=[(4, 4), (2, 5)], params=params,
    ...                  class_counts={0: 20, 1: 6}, fingerprint="f")
    >>> [task] = w.pending()
    >>> w.write_shard(task, [np.ones((4, 4), np.float32), np.zeros((2, 5), np.float32)], ["d0", "d1"])
    >>> w.finalize({"seconds": 0.1})
    >>> float(open_store(out)["a"].sum()), open_store(out).shape("b")
    (16.0, (2, 5))
    """
    # The real store (links resolved): its lock (weightmaps.lock) is named after it, and an
    # overwrite renames the real folder aside beside that lock, not a link to it.
    location = Location.of(path, storage_options).canonical()
    if not location.writable:
        raise WeightmapsError(f"{location.url}: this filesystem is read-only; write the store elsewhere")
    dtype = check_dtype(params.dtype)
    ids = [str(i) for i in ids]
    if len(ids) != len(shapes):
        raise WeightmapsError(f"got {len(ids)} ids but {len(shapes)} shapes")
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise WeightmapsError(f"sample id {dup!r} occurs more than once")
    if samples_per_shard is not None and int(samples_per_shard) < 1:
        raise WeightmapsError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    if compression == "none":
        compression = None
    if compression not in ("zstd", None):
        raise WeightmapsError(f"compression: {compression!r} is not supported, use 'zstd' or None")
    layout = plan_layout(shapes, dtype, samples_per_shard)
    _remove_leftovers(location)
    if location.exists():
        if not overwrite:
            raise StoreExistsError(
                str(location.display),
                f"{location.display} already exists; pass overwrite=True to replace it or resume it with resume_store",
            )
        _remove_old_store(location)

    meta = {
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "params": json_roundtrip(params.to_json(), "params"),
        "class_counts": {str(int(k)): int(v) for k, v in class_counts.items()},
        "class_weights": {str(k): v for k, v in params.class_weights.items()},
        "dtype": dtype,
        "n_samples": len(ids),
        "shard_elements": layout.shard_elements,
        "length": layout.length,
        "fingerprint": str(fingerprint),
        "uid": uuid.uuid4().hex,  # tells this store from a later one created at the same path
        "complete": False,
        "report": None,
    }
    # Root attributes first: a run killed during creation leaves a directory that is recognisably
    # ours, so overwrite may delete it.
    store = location.zarr_store(read_only=False)
    root = zarr.open_group(store, mode="w", attributes={META_KEY: meta})
    _index_array(root, "ids", np.array(ids, dtype=object), str)
    _index_array(root, "shape", shapes_to_rows(shapes), np.int64)
    _index_array(root, "offset", layout.offsets, np.int64)
    _index_array(root, "digest", np.zeros(len(ids), dtype=np.uint64), np.uint64)
    root.create_array(
        "maps",
        shape=(max(layout.length, CHUNK_ELEMENTS),),
        chunks=(CHUNK_ELEMENTS,),  # what one read decodes: a map read touches only its own chunks
        shards=(layout.shard_elements,),
        dtype=dtype,
        fill_value=np.nan,  # an unwritten sample reads as NaN, never as a plausible weight
        compressors=ZstdCodec(level=1) if compression else None,
    )
    # Nothing in the arrays' metadata changes after this: consolidate it now, so that finishing
    # the store later is one atomic rewrite of the root zarr.json (see write_meta).
    with warnings.catch_warnings():  # we write consolidated metadata on purpose
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part")
        zarr.consolidate_metadata(store)
    return StoreWriter(location, meta)


def _index_array(root: zarr.Group, name: str, values: np.ndarray, dtype: Any) -> None:
    chunk = (min(INDEX_CHUNK, max(1, len(values))), *values.shape[1:])
    array = root.create_array(f"index/{name}", shape=values.shape, chunks=chunk, dtype=dtype,
                              compressors=ZstdCodec(level=3))
    if len(values):
        array[...] = values


def resume_store(
    path: StoreLocation,
    *,
    ids: Sequence[str],
    shapes: Sequence[Sequence[int]],
    params: MapParams,
    storage_options: Mapping[str, Any] | None = None,
) -> StoreWriter:
    """Reopen a partly written store to finish it; refuses if this run differs from the store's.

    The ids, shapes and parameters must match; whether the masks behind the written shards are
    still the same is the caller's to check, against :meth:`StoreWriter.recorded_digests` (the
    pipeline's resume compares them with the scan's).

    Examples
    --------
    >>> w = resume_store(out, ids=ids, shapes=shapes, params=params)     # doctest: +SKIP
    >>> for task in w.pending(): ...                                      # doctest: +SKIP
    """
    location = Location.of(path, storage_options).canonical()  # the store the lock is named after
    path = location.display
    if not location.exists():
        raise WeightmapsError(f"{path} does not exist: there is nothing to resume")
    meta = read_meta(location)
    if meta is None:
        raise WeightmapsError(f"{path} is not a weightmaps store; there is nothing to resume")
    check_format(path, meta)
    check_dtype(params.dtype)
    if not location.exists("maps/zarr.json") or not location.exists("index/digest/zarr.json"):
        raise WeightmapsError(f"{path} was not fully created (an array is missing); use overwrite")
    writer = StoreWriter(location, meta)
    diffs = _differences(
        writer, ids=[str(i) for i in ids], shapes=[tuple(int(n) for n in s) for s in shapes], params=params
    )
    if diffs:
        raise ResumeMismatchError(str(path), diffs)
    return writer


def _differences(
    store: StoreWriter, *, ids: list[str], shapes: list[tuple[int, ...]], params: MapParams
) -> list[str]:
    diffs = store.params.differences(params)
    old_ids = store.ids
    if old_ids != ids:
        if len(old_ids) != len(ids):
            diffs.append(f"ids: store has {len(old_ids)} samples, this run {len(ids)}")
        else:
            i = next(i for i, (a, b) in enumerate(zip(old_ids, ids, strict=True)) if a != b)
            diffs.append(f"ids: sample {i} is {old_ids[i]!r} in the store, {ids[i]!r} in this run")
    elif not np.array_equal(store.shape_rows(), shapes_to_rows(shapes)):
        old = store.shape_rows()
        i = next(i for i, s in enumerate(shapes) if row_to_shape(old[i]) != s)
        diffs.append(f"shapes: sample {ids[i]!r} is {row_to_shape(old[i])} in the store, {shapes[i]} in this run")
    return diffs


def _remove_old_store(location: Location) -> None:
    # Never destroy user data: delete only what is recognisably ours, or nothing at all.
    if not location.is_local:
        _remove_old_remote_store(location)
        return
    path = location.path
    if path.is_symlink() or not path.is_dir():
        raise WeightmapsError(f"{path} exists and is not a directory; refusing to overwrite it")
    if any(path.iterdir()) and read_meta(location) is None:
        raise WeightmapsError(
            f"{path} exists and is not a weightmaps store; refusing to delete it with overwrite. "
            "Choose another output path or remove it yourself."
        )
    # Renamed aside first (atomic), then deleted: a run killed while deleting a large store
    # leaves a recognisable hidden folder (removed by the next run), not half a store.
    aside = path.parent / f"{_DELETING_PREFIX.format(name=path.name)}{uuid.uuid4().hex}"
    os.rename(path, aside)
    shutil.rmtree(aside)


def _remove_old_remote_store(location: Location) -> None:
    meta = read_meta(location)
    if meta is None:
        raise WeightmapsError(
            f"{location.url} exists and is not a weightmaps store; refusing to delete it with overwrite. "
            "Choose another output URL or remove it yourself."
        )
    # No rename in a bucket: say "incomplete" first, then delete all but the root, the root last.
    # Killed half-way, what is left is a store that says incomplete, which overwrite deletes again.
    write_meta(location, {**meta, "complete": False, "report": None})
    location.delete_all(keep=("zarr.json",))
    location.delete("zarr.json")


def _remove_leftovers(location: Location) -> None:
    """Folders of earlier overwrites of a local store that were killed while deleting."""
    if not location.is_local:
        return
    path = location.path
    for leftover in path.parent.glob(f"{_DELETING_PREFIX.format(name=path.name)}*"):
        shutil.rmtree(leftover, ignore_errors=True)
