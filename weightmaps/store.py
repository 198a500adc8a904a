"""The zarr v3 store: one flat array of maps, an index, one writer per shard, markers, resume, reading.

Layout of a store directory (a zarr v3 group, format 2)::

    out.zarr/
      zarr.json                  root attributes["weightmaps"]: params, class counts, sizes (a few KB)
      index/ids                  (N,) sample ids (strings)
      index/shape                (N, 4) each map's shape, 0-padded (2-D, 3-D, channels first)
      index/offset               (N,) where each map starts in maps
      index/digest               (N,) each mask's digest (uint64; 0 until the store is complete)
      maps/                      (L,) every map end to end, chunks of 64 Ki elements, shards of
        c/<shard>                ~16 MiB; fill value NaN: a map never written reads as NaN
        _markers/<shard>.json    one per finished shard: its samples' positions and digests

:mod:`weightmaps.layout` decides where each map goes: same shapes together, no map crossing into a
shard another task writes; so any mix of shapes costs what one shape costs, the root metadata stays
small whatever the number of samples, and one map read is one contiguous read.

A shard is the unit of work and of writing. zarr-python writes a shard as one file by reading,
merging and rewriting it, so two processes writing the same shard lose data; here exactly one
:meth:`StoreWriter.write_shard` call owns a shard and writes all of it in one assignment. Workers
never touch the root attributes either: each finished shard gets its own small marker file,
written atomically after the shard data is on disk. A marker is the proof that its shard is
complete (a killed run resumes from the shards without one). :meth:`StoreWriter.finalize`, run once
by the driver, gathers the markers' digests into ``index/digest`` and marks the store complete in
one atomic rewrite of the root ``zarr.json``. Markers live inside the ``maps`` array's directory:
zarr never lists it, while an unknown entry at group level makes consolidation warn.

Stores of format 1 (weightmaps 0.1, one array per map shape) are refused with the command that
rewrites them.

A store may live in object storage (any fsspec URL, see :mod:`weightmaps.location`) with the same
promises: a shard is one object PUT by its one writer, its marker a second PUT after it, ``complete``
the root ``zarr.json`` PUT last. Only two things differ: nothing is fsynced (an acknowledged PUT is
durable), and ``overwrite`` cannot rename the old store aside, so it first marks the old root
incomplete, deletes everything else, then the root: a kill in between leaves a store that says
incomplete and that the next overwrite recognises as ours.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from weightmaps._version import __version__
from weightmaps.errors import ResumeMismatchError, SampleNotFoundError, StoreExistsError, WeightmapsError
from weightmaps.layout import CHUNK_ELEMENTS, MAX_MAP_NDIM, ShardTask, plan_layout, tasks_of
from weightmaps.location import Location
from weightmaps.params import MapParams
from weightmaps.shard_codec import ShardEncoder

__all__ = [
    "FORMAT_VERSION",
    "ShardTask",
    "StoreWriter",
    "WeightStore",
    "create_store",
    "marker_key",
    "open_store",
    "resume_store",
]

FORMAT_VERSION = 2
DTYPES = ("float32", "float16")
_KEY = "weightmaps"  # root attribute holding everything we record
# An old store being deleted by overwrite is renamed to this (in the same folder) first.
_DELETING_PREFIX = ".{name}.weightmaps-deleting-"
# Samples per chunk of the index arrays: a reader of one map decodes one chunk of each.
_INDEX_CHUNK = 1 << 16
_MARKERS = "maps/_markers"
StoreLocation = str | os.PathLike[str] | Location


def _json_roundtrip(value: Any, what: str) -> Any:
    # Normalises tuples to lists etc., so that what is stored compares with like values.
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise WeightmapsError(f"{what} must be JSON-serialisable: {exc}") from None


def _read_meta(location: Location) -> dict[str, Any] | None:
    """The ``weightmaps`` root attributes, or None if ``location`` is not a weightmaps store."""
    root = location.read_json("zarr.json")  # plain JSON: cheap, and safe on arbitrary user folders
    if not isinstance(root, dict) or root.get("node_type") != "group":
        return None
    meta = root.get("attributes", {}).get(_KEY)
    return meta if isinstance(meta, dict) else None


def _check_format(path: Path | str, meta: dict[str, Any]) -> None:
    version = meta.get("format_version")
    if version == FORMAT_VERSION:
        return
    if version == 1:
        raise WeightmapsError(
            f"{path} is a store of format 1 (weightmaps 0.1: one array per map shape); this weightmaps "
            f"reads format {FORMAT_VERSION}. Rewrite it with the same parameters: "
            f"weightmaps compute MASKS --out {path} --overwrite ..."
        )
    raise WeightmapsError(f"{path} has store format {version!r}; this weightmaps reads format {FORMAT_VERSION}")


def _check_dtype(dtype: str) -> str:
    try:
        name = str(np.dtype(dtype))
    except TypeError:
        name = None
    if name not in DTYPES:
        raise WeightmapsError(f"dtype: {dtype!r} is not supported, use one of {DTYPES}")
    return name


def _remove_old_store(location: Location) -> None:
    # Never destroy user data: delete only what is recognisably ours, or nothing at all.
    if not location.is_local:
        _remove_old_remote_store(location)
        return
    path = location.path
    if path.is_symlink() or not path.is_dir():
        raise WeightmapsError(f"{path} exists and is not a directory; refusing to overwrite it")
    if any(path.iterdir()) and _read_meta(location) is None:
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
    meta = _read_meta(location)
    if meta is None:
        raise WeightmapsError(
            f"{location.url} exists and is not a weightmaps store; refusing to delete it with overwrite. "
            "Choose another output URL or remove it yourself."
        )
    # No rename in a bucket: say "incomplete" first, then delete all but the root, the root last.
    # Killed half-way, what is left is a store that says incomplete, which overwrite deletes again.
    _write_meta(location, {**meta, "complete": False, "report": None})
    location.delete_all(keep=("zarr.json",))
    location.delete("zarr.json")


def _remove_leftovers(location: Location) -> None:
    """Folders of earlier overwrites of a local store that were killed while deleting."""
    if not location.is_local:
        return
    path = location.path
    for leftover in path.parent.glob(f"{_DELETING_PREFIX.format(name=path.name)}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _shape_rows(shapes: Sequence[Sequence[int]]) -> np.ndarray:
    rows = np.zeros((len(shapes), MAX_MAP_NDIM), dtype=np.int64)
    for i, shape in enumerate(shapes):
        rows[i, : len(shape)] = shape
    return rows


def _shape_of(row: np.ndarray) -> tuple[int, ...]:
    return tuple(int(n) for n in row if n)


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
    dtype = _check_dtype(params.dtype)
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
        "params": _json_roundtrip(params.to_json(), "params"),
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
    root = zarr.open_group(store, mode="w", attributes={_KEY: meta})
    _index_array(root, "ids", np.array(ids, dtype=object), str)
    _index_array(root, "shape", _shape_rows(shapes), np.int64)
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
    # the store later is one atomic rewrite of the root zarr.json (see _write_meta).
    with warnings.catch_warnings():  # we write consolidated metadata on purpose
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part")
        zarr.consolidate_metadata(store)
    return StoreWriter(location, meta)


def _index_array(root: zarr.Group, name: str, values: np.ndarray, dtype: Any) -> None:
    chunk = (min(_INDEX_CHUNK, max(1, len(values))), *values.shape[1:])
    array = root.create_array(f"index/{name}", shape=values.shape, chunks=chunk, dtype=dtype,
                              compressors=ZstdCodec(level=3))
    if len(values):
        array[...] = values


def _differences(
    store: _StoreInfo, *, ids: list[str], shapes: list[tuple[int, ...]], params: MapParams
) -> list[str]:
    diffs = store.params.differences(params)
    old_ids = store.ids
    if old_ids != ids:
        if len(old_ids) != len(ids):
            diffs.append(f"ids: store has {len(old_ids)} samples, this run {len(ids)}")
        else:
            i = next(i for i, (a, b) in enumerate(zip(old_ids, ids, strict=True)) if a != b)
            diffs.append(f"ids: sample {i} is {old_ids[i]!r} in the store, {ids[i]!r} in this run")
    elif not np.array_equal(store._shape_rows(), _shape_rows(shapes)):
        old = store._shape_rows()
        i = next(i for i, s in enumerate(shapes) if _shape_of(old[i]) != s)
        diffs.append(f"shapes: sample {ids[i]!r} is {_shape_of(old[i])} in the store, {shapes[i]} in this run")
    return diffs


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
    meta = _read_meta(location)
    if meta is None:
        raise WeightmapsError(f"{path} is not a weightmaps store; there is nothing to resume")
    _check_format(path, meta)
    _check_dtype(params.dtype)
    if not location.exists("maps/zarr.json") or not location.exists("index/digest/zarr.json"):
        raise WeightmapsError(f"{path} was not fully created (an array is missing); use overwrite")
    writer = StoreWriter(location, meta)
    diffs = _differences(
        writer, ids=[str(i) for i in ids], shapes=[tuple(int(n) for n in s) for s in shapes], params=params
    )
    if diffs:
        raise ResumeMismatchError(str(path), diffs)
    return writer


class _StoreInfo:
    """What both the writer and the reader tell about a store: root attributes and the index."""

    location: Location
    _meta: dict[str, Any]

    @property
    def path(self) -> Path | str:
        """The store's folder (a Path), or its URL."""
        return self.location.display

    def _read_index(self, name: str) -> np.ndarray:
        store = self.location.zarr_store(read_only=True)
        return np.asarray(zarr.open_array(store, path=f"index/{name}", mode="r")[...])

    @functools.cached_property
    def ids(self) -> list[str]:
        """Sample ids in sample order (read from the index on first use)."""
        return [str(i) for i in self._read_index("ids")]

    def _shape_rows(self) -> np.ndarray:
        return self._read_index("shape")

    @functools.cached_property
    def _offsets(self) -> np.ndarray:
        return self._read_index("offset")

    def tasks(self) -> list[ShardTask]:
        """Every shard's task, in shard order."""
        shapes = [_shape_of(row) for row in self._shape_rows()]
        return tasks_of(self._offsets, shapes, int(self._meta["shard_elements"]))

    def __len__(self) -> int:
        return int(self._meta["n_samples"])

    @property
    def dtype(self) -> np.dtype[Any]:
        """The maps' dtype (float32 or float16)."""
        dtype: np.dtype[Any] = np.dtype(self._meta["dtype"])
        return dtype

    @property
    def params(self) -> MapParams:
        """What the maps were made with (σ, class weights, spacing, ...)."""
        return MapParams.from_json(self._meta["params"])

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the input masks the store was computed from."""
        return str(self._meta["fingerprint"])

    @property
    def class_counts(self) -> dict[int, int]:
        """Pixel count per class label."""
        return {int(k): int(v) for k, v in self._meta["class_counts"].items()}

    @property
    def class_weights(self) -> dict[int, float]:
        """Class-balance weight per class label."""
        return {int(k): float(v) for k, v in self._meta["class_weights"].items()}

    @property
    def complete(self) -> bool:
        """True once `StoreWriter.finalize` ran; False for a store being written or killed."""
        return bool(self._meta["complete"])

    @property
    def report(self) -> dict[str, Any] | None:
        """The run report given to `StoreWriter.finalize`, None before."""
        report = self._meta["report"]
        return None if report is None else dict(report)

    @property
    def skipped_ids(self) -> list[str]:
        """Ids of the inputs the run skipped as bad (``skip_bad``): they have no map here."""
        bad = (self.report or {}).get("bad") or []
        return [str(b["id"]) for b in bad if isinstance(b, Mapping) and "id" in b]

    def _marker_names(self) -> set[str]:
        return {n for n in self.location.list_names(_MARKERS) if n.endswith(".json") and not n.startswith(".")}

    def _markers(self, names: set[str] | None = None) -> Iterator[dict[str, Any]]:
        # One listing (or the caller's) and one round of reads (concurrent GETs in an object store).
        names = self._marker_names() if names is None else names
        for marker in self.location.read_many_json(_MARKERS, sorted(names)):
            if marker is not None:
                yield marker

    def recorded_digests(self) -> dict[str, str]:
        """The mask digest recorded for every sample whose shard is written (from the markers)."""
        ids = self.ids
        return {ids[p]: d for m in self._markers() for p, d in zip(m["positions"], m["digests"], strict=True)}


class StoreWriter(_StoreInfo):
    """Writes a store shard by shard. Picklable (its path); zarr is opened lazily per process.

    Attributes: ``path``, ``ids``, ``dtype``, ``params``, ``fingerprint``, ``class_counts`` and
    ``class_weights`` (``dict[int, ...]``, the store's on resume).
    """

    def __init__(self, location: Location | str | os.PathLike[str], meta: dict[str, Any]) -> None:
        self.location = Location.of(location)
        self._meta = meta
        self._encoder: tuple[int, ShardEncoder | None] | None = None  # (pid, encoder): per process

    def __reduce__(self) -> tuple[Any, ...]:
        # The location only: the root attributes are reread (once per process), zarr is reopened.
        return _unpickle_writer, (self.location, self._meta["uid"])

    def __repr__(self) -> str:
        return f"StoreWriter({str(self.path)!r}, {len(self)} samples)"

    def pending(self) -> list[ShardTask]:
        """Tasks without a marker: not yet written, or interrupted while being written."""
        return self._pending(self._marker_names())  # one listing, not one request per shard

    def _pending(self, written: set[str]) -> list[ShardTask]:
        return [t for t in self.tasks() if marker_key(t.shard).rpartition("/")[2] not in written]

    def write_shard(self, task: ShardTask, maps: Sequence[np.ndarray], digests: Sequence[str]) -> None:
        """Write one task's maps (in its order and shapes), then its marker. One call per task.

        ``digests`` holds each sample's mask digest, recorded in the marker.

        Examples
        --------
        >>> for task in writer.pending():                               # doctest: +SKIP
        ...     writer.write_shard(task, compute(task), digests(task))
        """
        where = f"shard {task.shard}"
        offsets = self._offsets
        if not task.sample_indices or any(
            not 0 <= i < len(offsets) or offsets[i] != o for i, o in zip(task.sample_indices, task.offsets, strict=True)
        ) or task.shard != task.start // int(self._meta["shard_elements"]):
            raise WeightmapsError(f"{task} is not a task of the store {self.path}")
        if len(maps) != len(task) or len(digests) != len(task):
            raise WeightmapsError(f"{where}: {len(maps)} maps and {len(digests)} digests for {len(task)} samples")
        for m, shape, sample in zip(maps, task.shapes, task.sample_indices, strict=True):
            if not isinstance(m, np.ndarray) or m.shape != shape:
                raise WeightmapsError(f"{where}: the map of sample {sample} has shape "
                                      f"{getattr(m, 'shape', type(m))}, expected {shape}")
            if m.dtype != self.dtype:
                raise WeightmapsError(f"{where}: maps are {m.dtype}, the store holds {self.dtype}")
        # NaN is the store's mark of a map never written, and inf no weight: neither is ever
        # written (one pass over the shard, on the writer's thread or process). A distance map
        # holds +inf where a mask has no edge at all.
        usable = _finite_or_far if self.params.allows_inf else _finite
        bad = [sample for m, sample in zip(maps, task.sample_indices, strict=True) if not usable(m)]
        if bad:
            ids = self.ids
            raise WeightmapsError(f"{where}: the maps of {[ids[i] for i in bad[:5]]} hold NaN or inf; not written")
        shard_elements = int(self._meta["shard_elements"])
        flat = np.full(task.stop - task.start, np.nan, dtype=self.dtype)
        for m, offset in zip(maps, task.offsets, strict=True):
            flat[offset - task.start: offset - task.start + m.size] = m.ravel()
        encoder = self._shard_encoder()
        if encoder is None:  # an array this module does not encode itself: zarr writes it
            self._write_with_zarr(task, flat)
        else:
            # Whole shards, each one file put in place at once and flushed (or one PUT): the
            # marker below must never outlive its data.
            for k in range(task.n_shards):
                data = encoder.encode(flat[k * shard_elements:(k + 1) * shard_elements])
                key = f"maps/{encoder.key(task.shard + k)}"
                if data is None:
                    self.location.delete(key)
                else:
                    self.location.publish_bytes(key, data)
        marker = {"shard": task.shard, "positions": list(task.sample_indices), "digests": [str(d) for d in digests]}
        self.location.publish_json(marker_key(task.shard), marker)

    def _shard_encoder(self) -> ShardEncoder | None:
        """The ``maps`` array's shard encoder (read once per process), None when zarr must write."""
        if self._encoder is None or self._encoder[0] != os.getpid():
            meta = self.location.read_json("maps/zarr.json")
            self._encoder = (os.getpid(), ShardEncoder.from_metadata(meta))
        return self._encoder[1]

    def _write_with_zarr(self, task: ShardTask, flat: np.ndarray) -> None:
        store = self.location.zarr_store(read_only=False)
        array = zarr.open_array(store, path="maps", mode="r+")
        array[task.start: task.stop] = flat  # within the task's shards: one writer each
        if self.location.is_local:
            # The marker must never outlive its data (power loss): flush the shard files first.
            # (An object store's PUT is durable once it returns.)
            for shard in range(task.shard, task.shard + task.n_shards):
                _fsync(self.location.path / "maps" / array.metadata.encode_chunk_key((shard,)))

    def finalize(self, report: Mapping[str, Any]) -> None:
        """Record the digests and ``report``, and mark the store complete (one atomic step).

        Run once, by the driver, after every shard is written (it is the only attribute write).
        """
        written = self._marker_names()
        missing = [t.shard for t in self._pending(written)]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise WeightmapsError(f"cannot finalize {self.path}: shards {shown} are not written")
        digests = np.zeros(len(self), dtype=np.uint64)
        for marker in self._markers(written):
            for position, digest in zip(marker["positions"], marker["digests"], strict=True):
                digests[position] = int(digest, 16)
        store = self.location.zarr_store(read_only=False)
        zarr.open_array(store, path="index/digest", mode="r+")[...] = digests
        meta = {**self._meta, "report": _json_roundtrip(dict(report), "report"), "complete": True}
        _write_meta(self.location, meta)  # all or nothing: a full disk here leaves the store incomplete
        self._meta = meta

    def reopen(self, tasks: Sequence[ShardTask]) -> None:
        """Mark tasks to be computed again: the store is incomplete first, then their markers go."""
        if self._meta.get("complete"):
            meta = {**self._meta, "complete": False, "report": None}
            _write_meta(self.location, meta)
            self._meta = meta
        for t in tasks:
            self.location.delete(marker_key(t.shard))


@functools.lru_cache(maxsize=16)
def _writer_meta(location: Location, uid: str) -> dict[str, Any]:
    # A pickled writer carries its location and the store's uid only, so a process rereads the
    # root attributes once per store, not once per task.
    meta = _read_meta(location)
    if meta is None or meta.get("uid") != uid:
        raise WeightmapsError(f"{location.display} was deleted or replaced while it was being written")
    return meta


def _unpickle_writer(location: Location | Path, uid: str) -> StoreWriter:
    location = Location.of(location)
    return StoreWriter(location, _writer_meta(location, uid))


def _write_meta(location: Location, meta: dict[str, Any]) -> None:
    """Replace the store's root attributes in one atomic step (the root zarr.json, rewritten aside).

    zarr rewrites a zarr.json in place; a full disk or a kill in the middle would leave it half
    written, and the store unreadable. Here the old file stays whole until the new one is.
    """
    root = location.read_json("zarr.json")
    if not isinstance(root, dict):
        raise WeightmapsError(f"{location.display}: the root zarr.json is missing or unreadable")
    root.setdefault("attributes", {})[_KEY] = meta
    location.publish_json("zarr.json", root)


def _finite(m: np.ndarray) -> bool:
    return bool(np.isfinite(m).all())


def _finite_or_far(m: np.ndarray) -> bool:
    """No NaN, no −inf: a distance may be +inf (no edge to be near)."""
    return not bool(np.isnan(m).any() or np.isneginf(m).any())


def marker_key(shard: int) -> str:
    """Where, inside a store, the marker of the task starting at shard ``shard`` lives: its proof
    of completion."""
    return f"{_MARKERS}/{shard}.json"


def _fsync(path: Path) -> None:
    if path.is_file():  # zarr writes no file for a shard that is all fill value (NaN)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_store(path: StoreLocation, storage_options: Mapping[str, Any] | None = None) -> WeightStore:
    """Open a store read-only: a local folder or an fsspec URL (``storage_options`` for its
    filesystem: credentials, ``endpoint_url``, ...).

    Examples
    --------
    >>> ws = open_store("weights.zarr")          # doctest: +SKIP
    >>> ws["train/img_001"].shape, ws.complete   # doctest: +SKIP
    ((512, 512), True)
    >>> ws = open_store("s3://bucket/weights.zarr", storage_options={"anon": True})  # doctest: +SKIP
    """
    return WeightStore(path, storage_options)


class WeightStore(_StoreInfo):
    """Read-only view of a store: a sequence of maps addressable by position or sample id.

    Opening reads the root attributes only (a few KB); ids are read on the first lookup by id,
    and a map read decodes the index chunk it needs and the map's own chunks. Picklable (its
    location only; zarr is reopened lazily), so a data loader's workers can share it; after a fork
    a worker reopens it too (a remote filesystem made in the parent is not fork-safe). A store from
    a killed run opens too: ``complete`` is False and unwritten maps are all NaN.
    """

    def __init__(self, path: StoreLocation, storage_options: Mapping[str, Any] | None = None) -> None:
        self.location = Location.of(path, storage_options)
        meta = _read_meta(self.location)
        if meta is None:
            if not self.location.exists():
                raise WeightmapsError(f"{self.path} does not exist")
            raise WeightmapsError(
                f"{self.path} is not a weightmaps store (no zarr group with weightmaps attributes)"
            )
        _check_format(self.path, meta)
        self._meta = meta
        self._pid = os.getpid()
        self._arrays: dict[str, zarr.Array[Any]] = {}
        self._index_chunks: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()

    def __reduce__(self) -> tuple[Any, ...]:
        return WeightStore, (self.location,)  # reopened lazily in the receiving process

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"WeightStore({str(self.path)!r}, {len(self)} maps, {self.dtype}, {state})"

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.ids)}

    def __contains__(self, key: object) -> bool:
        """A sample id or a position: ``key in store`` exactly when ``store[key]`` is a map."""
        try:
            self._position(key)
        except (KeyError, IndexError, TypeError):
            return False
        return True

    def _position(self, key: object) -> int:
        if isinstance(key, str):
            if key not in self._index:
                raise SampleNotFoundError(f"sample id {key!r} is not in the store {self.path}")
            return self._index[key]
        # An integer position (numpy integers too); not a float that int() would truncate, not a bool.
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"a store is indexed by sample id (str) or position (int), not {type(key).__name__} {key!r}")
        i = int(key)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for a store of {len(self)} maps")
        return i % len(self)

    def _array(self, name: str) -> zarr.Array[Any]:
        if self._pid != os.getpid():  # forked: the parent's arrays (and remote filesystem) are not ours
            self._pid, self._arrays = os.getpid(), {}
        array = self._arrays.get(name)
        if array is None:
            store = self.location.zarr_store(read_only=True)
            array = self._arrays[name] = zarr.open_array(store, path=name, mode="r")
        return array

    def _where(self, i: int) -> tuple[int, tuple[int, ...]]:
        """Offset and shape of sample ``i``, from its chunk of the index (a few recent ones kept)."""
        chunk = i // _INDEX_CHUNK
        rows = self._index_chunks.get(chunk)
        if rows is None:
            window = slice(chunk * _INDEX_CHUNK, (chunk + 1) * _INDEX_CHUNK)
            rows = (np.asarray(self._array("index/offset")[window]), np.asarray(self._array("index/shape")[window]))
            self._index_chunks[chunk] = rows
            if len(self._index_chunks) > 8:
                self._index_chunks.popitem(last=False)
        offsets, shapes = rows
        return int(offsets[i % _INDEX_CHUNK]), _shape_of(shapes[i % _INDEX_CHUNK])

    def __getitem__(self, key: int | str) -> np.ndarray:
        offset, shape = self._where(self._position(key))
        return np.asarray(self._array("maps")[offset: offset + math.prod(shape)]).reshape(shape)

    def shape(self, key: int | str) -> tuple[int, ...]:
        """The map shape of sample ``key`` (id or position)."""
        return self._where(self._position(key))[1]

    def shapes(self) -> list[tuple[int, ...]]:
        """Every sample's map shape, in sample order."""
        return [_shape_of(row) for row in self._shape_rows()]

    def digest(self, key: int | str) -> str | None:
        """The mask digest recorded for sample ``key``, or None while its shard is unwritten."""
        position = self._position(key)
        if self.complete:
            return f"{int(self._digests[position]):016x}"
        return self._pending_digests.get(position)

    @functools.cached_property
    def _digests(self) -> np.ndarray:
        return self._read_index("digest")

    @functools.cached_property
    def _pending_digests(self) -> dict[int, str]:
        return {p: d for m in self._markers() for p, d in zip(m["positions"], m["digests"], strict=True)}

    def nbytes_on_disk(self) -> int:
        """Total size of the store's files (objects) in bytes."""
        return self.location.size()
