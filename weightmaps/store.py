"""The zarr v3 store: layout, shard plan, one writer per shard, markers, resume checks, reading.

Layout of a store directory (a zarr v3 group)::

    out.zarr/
      zarr.json                      root attributes["weightmaps"]: params, ids, groups, ...
      maps/<k>/zarr.json             shape group k: array (n_k, *shape), chunks (1, *shape),
      maps/<k>/c/<shard>/0/0         ... shards of `samples_per_shard` samples, fill value NaN
      maps/<k>/_markers/<shard>.json one marker per finished shard: its sample ids and digests

A shard is the unit of work and of writing. zarr-python writes a shard as one file by reading,
merging and rewriting it, so two processes writing samples of the same shard lose data; here
exactly one `StoreWriter.write_shard` call owns a shard and writes all of it in one assignment.
Workers never touch the root attributes either (two read-modify-writes of one ``zarr.json`` lose
an update): each finished shard gets its own small marker file instead, written atomically after
the shard data is on disk. A marker is the proof that its shard is complete (a killed run resumes
from the shards without one) and the only thing a worker writes besides its shard. `finalize`,
run once by the driver, gathers the markers into the root attributes in one atomic rewrite of the
root ``zarr.json`` (metadata is consolidated when the store is created: the arrays never change).

Markers live inside each array's directory rather than in a top-level ``_markers/`` folder because
zarr lists every entry of a group directory when consolidating and warns about anything that is not
a zarr node; it never lists an array's directory.

Memory: one `write_shard` call holds the shard (``samples_per_shard`` maps, about 16 MiB with the
automatic choice, or one map if a single map is larger) plus zarr's encoded copy of it, so a writer
peaks near two to three times the shard size.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from weightmaps._version import __version__
from weightmaps.errors import ResumeMismatchError, SampleNotFoundError, StoreExistsError, WeightmapsError
from weightmaps.params import MapParams

__all__ = [
    "ShapeGroup",
    "ShardTask",
    "StoreWriter",
    "WeightStore",
    "create_store",
    "marker_path",
    "open_store",
    "resume_store",
    "shard_plan",
]

FORMAT_VERSION = 1
# Uncompressed bytes per shard for the automatic choice. Small enough that a modest dataset still
# splits into many shards (shards are the unit of parallel work: 512 maps of 256² make 8 shards,
# 64 of 1024² make 16) and that a shard in flight costs little memory; large enough that a store
# of 100,000 maps of 256² is ~1,600 files, not 100,000.
SHARD_TARGET_BYTES = 16 * 2**20
MAX_SAMPLES_PER_SHARD = 1024
DTYPES = ("float32", "float16")
_KEY = "weightmaps"  # root attribute holding everything we record
# An old store being deleted by overwrite is renamed to this (in the same folder) first.
_DELETING_PREFIX = ".{name}.weightmaps-deleting-"


@dataclass(frozen=True)
class ShardTask:
    """What one worker needs to compute and write one shard (picklable, a few ints).

    ``sample_indices`` are global sample positions (indices into the store's ``ids``), in row order.
    """

    group: int
    shard: int
    sample_indices: tuple[int, ...]
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.sample_indices)


@dataclass(frozen=True)
class ShapeGroup:
    """The samples of one map shape: one array ``maps/<k>`` of the store, cut into shards."""

    shape: tuple[int, ...]
    positions: tuple[int, ...]
    samples_per_shard: int

    def task(self, group: int, shard: int) -> ShardTask:
        start = shard * self.samples_per_shard
        rows = self.positions[start : start + self.samples_per_shard]
        return ShardTask(group, shard, tuple(rows), self.shape)

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self.positions) / self.samples_per_shard)


def _json_roundtrip(value: Any, what: str) -> Any:
    # Normalises tuples to lists etc., so that resume compares what was stored with like values.
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise WeightmapsError(f"{what} must be JSON-serialisable: {exc}") from None


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The ``weightmaps`` root attributes, or None if ``path`` is not a weightmaps store."""
    try:  # plain JSON: cheap, and safe to call on arbitrary user directories
        with open(path / "zarr.json", encoding="utf-8") as f:
            root = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(root, dict) or root.get("node_type") != "group":
        return None
    meta = root.get("attributes", {}).get(_KEY)
    return meta if isinstance(meta, dict) else None


@functools.lru_cache(maxsize=16)
def _writer_meta(path: Path, uid: str) -> dict[str, Any]:
    # A pickled writer carries its path and the store's uid only, so a process rereads the root
    # attributes (all ids: megabytes for a large dataset) once per store, not once per task. The
    # plan cached here never changes for a given uid: finalize only adds digests and the report.
    meta = _read_meta(path)
    if meta is None or meta.get("uid") != uid:
        raise WeightmapsError(f"{path} was deleted or replaced while it was being written")
    return meta


def _unpickle_writer(path: Path, uid: str) -> StoreWriter:
    return StoreWriter(path, _writer_meta(path, uid))


def shard_plan(
    shapes: Sequence[Sequence[int]], dtype: str, samples_per_shard: int | None = None
) -> list[ShapeGroup]:
    """Group samples by shape in order of first appearance and choose each group's shard size.

    What :func:`create_store` lays out; a dry run reports it without writing.
    """
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, given in enumerate(shapes):
        shape = tuple(int(n) for n in given)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise WeightmapsError(f"sample {i}: map shape {shape} is not a 2-D or 3-D map shape")
        by_shape.setdefault(shape, []).append(i)
    groups = []
    for shape, positions in by_shape.items():
        if samples_per_shard is None:
            sample_bytes = math.prod(shape) * np.dtype(dtype).itemsize
            s = SHARD_TARGET_BYTES // sample_bytes
        else:
            s = int(samples_per_shard)
        groups.append(
            ShapeGroup(shape, tuple(positions), max(1, min(s, len(positions), MAX_SAMPLES_PER_SHARD)))
        )
    return groups


def _check_dtype(dtype: str) -> str:
    try:
        name = str(np.dtype(dtype))
    except TypeError:
        name = None
    if name not in DTYPES:
        raise WeightmapsError(f"dtype: {dtype!r} is not supported, use one of {DTYPES}")
    return name


def _remove_old_store(path: Path) -> None:
    # Never destroy user data: delete only what is recognisably ours, or nothing at all.
    if path.is_symlink() or not path.is_dir():
        raise WeightmapsError(f"{path} exists and is not a directory; refusing to overwrite it")
    if any(path.iterdir()) and _read_meta(path) is None:
        raise WeightmapsError(
            f"{path} exists and is not a weightmaps store; refusing to delete it with overwrite. "
            "Choose another output path or remove it yourself."
        )
    # Renamed aside first (atomic), then deleted: a run killed while deleting a large store
    # leaves a recognisable hidden folder (removed by the next run), not half a store.
    aside = path.parent / f"{_DELETING_PREFIX.format(name=path.name)}{uuid.uuid4().hex}"
    os.rename(path, aside)
    shutil.rmtree(aside)


def _remove_leftovers(path: Path) -> None:
    """Folders of earlier overwrites of ``path`` that were killed while deleting."""
    for leftover in path.parent.glob(f"{_DELETING_PREFIX.format(name=path.name)}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def create_store(
    path: str | os.PathLike[str],
    *,
    ids: Sequence[str],
    shapes: Sequence[Sequence[int]],
    params: MapParams,
    class_counts: Mapping[int, int],
    fingerprint: str,
    overwrite: bool = False,
    samples_per_shard: int | None = None,
    compression: str | None = "zstd",
) -> StoreWriter:
    """Create an empty store for ``ids`` and return the writer that fills it shard by shard.

    Parameters
    ----------
    path : str or PathLike
        Output directory. If it exists, ``overwrite=True`` deletes it, but only if it is a
        weightmaps store or an empty directory.
    ids, shapes : sequence
        Sample ids in sample order and each sample's map shape (2-D or 3-D). Samples are grouped
        by shape (in order of first appearance) into one array ``maps/<k>`` per shape.
    params : MapParams
        What the maps are made with (their dtype, the class weights, ...); recorded, and
        compared on resume.
    class_counts, fingerprint
        Recorded in the root attributes (the fingerprint: the inputs' ids, sizes and mtimes).
    samples_per_shard : int, optional
        Samples per shard (the unit of writing). Default: about 16 MiB uncompressed per shard,
        between 1 and 1024 and at most the group size.
    compression : {"zstd", None}
        zstd level 1 (fast; weight maps are smooth and shrink several-fold) or no compression.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from weightmaps.params import MapParams
    >>> out = os.path.join(tempfile.mkdtemp(), "w.zarr")
    >>> params = MapParams(sigma=3.0, class_weights={0: 0.8, 1: 1.33})
    >>> w = create_store(out, ids=["a", "b"], shapes=[(4, 4), (4, 4)], params=params,
    ...                  class_counts={0: 20, 1: 12}, fingerprint="f")
    >>> [task] = w.pending()
    >>> w.write_shard(task, np.ones((2, 4, 4), np.float32), ["d0", "d1"])
    >>> w.finalize({"seconds": 0.1})
    >>> float(open_store(out)["b"].sum())
    16.0
    """
    path = Path(path)
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
    groups = shard_plan(shapes, dtype, samples_per_shard)
    _remove_leftovers(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise StoreExistsError(
                str(path), f"{path} already exists; pass overwrite=True to replace it or resume it with resume_store"
            )
        _remove_old_store(path)

    meta = {
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "params": _json_roundtrip(params.to_json(), "params"),
        "class_counts": {str(int(k)): int(v) for k, v in class_counts.items()},
        "class_weights": {str(k): v for k, v in params.class_weights.items()},
        "dtype": dtype,
        "ids": ids,
        "groups": [
            {
                "shape": list(g.shape),
                "positions": list(g.positions),
                "samples_per_shard": g.samples_per_shard,
            }
            for g in groups
        ],
        "fingerprint": str(fingerprint),
        "uid": uuid.uuid4().hex,  # tells this store from a later one created at the same path
        "complete": False,
        "report": None,
    }
    # Root attributes first: a run killed during creation leaves a directory that is recognisably
    # ours, so overwrite may delete it.
    root = zarr.open_group(path, mode="w", attributes={_KEY: meta})
    for k, g in enumerate(groups):
        root.create_array(
            f"maps/{k}",
            shape=(len(g.positions), *g.shape),
            chunks=(1, *g.shape),  # one map per chunk: a reader decodes exactly the map it wants
            shards=(g.samples_per_shard, *g.shape),
            dtype=dtype,
            fill_value=np.nan,  # an unwritten sample reads as NaN, never as a plausible weight
            compressors=ZstdCodec(level=1) if compression else None,
            attributes={"positions": list(g.positions)},
        )
    # The arrays' metadata never changes after this: consolidate it now, so that finishing the
    # store later is one atomic rewrite of the root zarr.json (see _write_meta).
    with warnings.catch_warnings():  # we write consolidated metadata on purpose
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part")
        zarr.consolidate_metadata(path)
    return StoreWriter(path, meta)


def _differences(meta: dict[str, Any], *, ids: list[str], shapes: list[tuple[int, ...]], params: MapParams) -> list[str]:
    diffs = MapParams.from_json(meta.get("params", {})).differences(params)
    old_ids = meta.get("ids", [])
    if old_ids != ids:
        if len(old_ids) != len(ids):
            diffs.append(f"ids: store has {len(old_ids)} samples, this run {len(ids)}")
        else:
            i = next(i for i, (a, b) in enumerate(zip(old_ids, ids, strict=True)) if a != b)
            diffs.append(f"ids: sample {i} is {old_ids[i]!r} in the store, {ids[i]!r} in this run")
    old_shapes: dict[int, tuple[int, ...]] = {
        p: tuple(g["shape"]) for g in meta.get("groups", []) for p in g["positions"]
    }
    if len(old_ids) == len(ids):
        bad = next((i for i, s in enumerate(shapes) if old_shapes.get(i) != s), None)
        if bad is not None:
            diffs.append(
                f"shapes: sample {ids[bad]!r} is {old_shapes.get(bad)} in the store, "
                f"{shapes[bad]} in this run"
            )
    return diffs


def resume_store(
    path: str | os.PathLike[str],
    *,
    ids: Sequence[str],
    shapes: Sequence[Sequence[int]],
    params: MapParams,
) -> StoreWriter:
    """Reopen a partly written store to finish it; refuses if this run differs from the store's.

    The ids, shapes and parameters must match; whether the masks behind the written shards are
    still the same is the caller's to check, against :meth:`StoreWriter.recorded_digests` (the
    pipeline's resume compares them with the scan's).

    The class counts and weights are the store's (``writer.class_counts`` / ``.class_weights``),
    so a resumed run need not recount. `StoreWriter.pending` lists the shards without a marker.

    Examples
    --------
    >>> w = resume_store(out, ids=ids, shapes=shapes, params=params)     # doctest: +SKIP
    >>> for task in w.pending(): ...                                      # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise WeightmapsError(f"{path} does not exist: there is nothing to resume")
    meta = _read_meta(path)
    if meta is None:
        raise WeightmapsError(f"{path} is not a weightmaps store; there is nothing to resume")
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightmapsError(
            f"{path} has store format {meta.get('format_version')}, "
            f"this weightmaps writes format {FORMAT_VERSION}"
        )
    _check_dtype(params.dtype)
    diffs = _differences(
        meta,
        ids=[str(i) for i in ids],
        shapes=[tuple(int(n) for n in s) for s in shapes],
        params=params,
    )
    if diffs:
        raise ResumeMismatchError(str(path), diffs)
    for k in range(len(meta["groups"])):
        if not (path / "maps" / str(k) / "zarr.json").is_file():
            raise WeightmapsError(
                f"{path} was not fully created (maps/{k} is missing); use overwrite"
            )
    return StoreWriter(path, meta)


class _StoreInfo:
    """What both the writer and the reader tell about a store, from its root attributes."""

    path: Path
    _meta: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        """Sample ids in sample order."""
        return list(self._meta["ids"])

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


class StoreWriter(_StoreInfo):
    """Writes a store shard by shard. Picklable (its path); zarr is opened lazily per process.

    Attributes: ``path``, ``ids``, ``dtype``, ``params``, ``fingerprint``, ``class_counts`` and
    ``class_weights`` (``dict[int, ...]``, the store's on resume).
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self._meta = meta
        self._groups = [
            ShapeGroup(tuple(g["shape"]), tuple(g["positions"]), int(g["samples_per_shard"]))
            for g in meta["groups"]
        ]
        self._arrays: dict[int, zarr.Array[Any]] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # The path only: the plan is reread (once per process), open zarr handles stay behind.
        return _unpickle_writer, (self.path, self._meta["uid"])

    def __repr__(self) -> str:
        n_ids, n_shards = len(self._meta["ids"]), len(self.tasks())
        return f"StoreWriter({str(self.path)!r}, {n_ids} samples, {n_shards} shards)"

    def tasks(self) -> list[ShardTask]:
        """All shards, group by group."""
        return [g.task(k, j) for k, g in enumerate(self._groups) for j in range(g.n_shards)]

    def pending(self) -> list[ShardTask]:
        """Shards without a marker: not yet written, or interrupted while being written."""
        return [t for t in self.tasks() if not marker_path(self.path, t.group, t.shard).is_file()]

    def write_shard(self, task: ShardTask, maps: np.ndarray, digests: Sequence[str]) -> None:
        """Write one whole shard, then its marker. Call at most once at a time per shard.

        ``maps`` has shape ``(len(task), *task.shape)`` and the store's dtype; ``digests`` holds
        each sample's mask digest, recorded in the marker.

        Examples
        --------
        >>> for task in writer.pending():                               # doctest: +SKIP
        ...     writer.write_shard(task, compute(task), digests(task))
        """
        if not (0 <= task.group < len(self._groups)) or task != self._groups[task.group].task(
            task.group, task.shard
        ):
            raise WeightmapsError(f"{task} is not a shard of the store {self.path}")
        if not isinstance(maps, np.ndarray) or maps.shape != (len(task), *task.shape):
            raise WeightmapsError(
                f"shard {task.group}/{task.shard}: maps have shape "
                f"{getattr(maps, 'shape', type(maps))}, expected {(len(task), *task.shape)}"
            )
        if maps.dtype != self.dtype:
            raise WeightmapsError(
                f"shard {task.group}/{task.shard}: maps are {maps.dtype}, "
                f"the store holds {self.dtype}"
            )
        if len(digests) != len(task):
            raise WeightmapsError(
                f"shard {task.group}/{task.shard}: {len(digests)} digests for {len(task)} samples"
            )
        # NaN is the store's mark of a map never written, and inf no weight: neither is ever
        # written (one pass over the shard, on the writer's thread or process).
        finite = np.isfinite(maps.reshape(len(task), -1)).all(axis=1)
        if not finite.all():
            bad = [self._meta["ids"][task.sample_indices[i]] for i in np.flatnonzero(~finite)]
            raise WeightmapsError(
                f"shard {task.group}/{task.shard}: the maps of {bad[:5]} hold NaN or inf; not written"
            )
        array = self._arrays.get(task.group)
        if array is None:
            array = self._arrays[task.group] = zarr.open_array(
                self.path, path=f"maps/{task.group}", mode="r+"
            )
        start = task.shard * self._groups[task.group].samples_per_shard
        array[start : start + len(task)] = maps  # aligned to the shard: one shard file, one writer
        # The marker must never outlive its data (power loss): flush the shard file first.
        shard_key = array.metadata.encode_chunk_key((task.shard,) + (0,) * len(task.shape))
        _fsync(self.path / "maps" / str(task.group) / shard_key)
        ids = self._meta["ids"]
        marker = {
            "group": task.group,
            "shard": task.shard,
            "ids": [ids[i] for i in task.sample_indices],
            "digests": [str(d) for d in digests],
        }
        _atomic_write_json(marker_path(self.path, task.group, task.shard), marker)

    def finalize(self, report: Mapping[str, Any]) -> None:
        """Record digests and ``report``, mark the store complete and consolidate its metadata.

        Run once, by the driver, after every shard is written (it is the only attribute write).
        """
        missing = [f"{t.group}/{t.shard}" for t in self.pending()]
        if missing:
            shown = ", ".join(missing[:10]) + (
                f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            )
            raise WeightmapsError(f"cannot finalize {self.path}: shards {shown} are not written")
        digests: dict[str, str] = {}
        for t in self.tasks():
            with open(marker_path(self.path, t.group, t.shard), encoding="utf-8") as f:
                marker = json.load(f)
            digests.update(zip(marker["ids"], marker["digests"], strict=True))
        meta = {
            **self._meta,
            "digests": digests,
            "report": _json_roundtrip(dict(report), "report"),
            "complete": True,
        }
        _write_meta(self.path, meta)  # all or nothing: a full disk here leaves the store incomplete
        self._meta = meta

    def recorded_digests(self) -> dict[str, str]:
        """The mask digest recorded for every sample whose shard is written (from the markers)."""
        digests: dict[str, str] = {}
        for t in self.tasks():
            try:
                with open(marker_path(self.path, t.group, t.shard), encoding="utf-8") as f:
                    marker = json.load(f)
            except FileNotFoundError:
                continue
            digests.update(zip(marker["ids"], marker["digests"], strict=True))
        return digests

    def reopen(self, tasks: Sequence[ShardTask]) -> None:
        """Mark shards to be computed again: the store is incomplete first, then their markers go."""
        if self._meta.get("complete"):
            meta = {**self._meta, "complete": False, "report": None}
            meta.pop("digests", None)
            _write_meta(self.path, meta)
            self._meta = meta
        for t in tasks:
            marker_path(self.path, t.group, t.shard).unlink(missing_ok=True)


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Replace the store's root attributes in one atomic step (the root zarr.json, rewritten aside).

    zarr rewrites a zarr.json in place; a full disk or a kill in the middle would leave it half
    written, and the store unreadable. Here the old file stays whole until the new one is.
    """
    root_file = path / "zarr.json"
    with open(root_file, encoding="utf-8") as f:
        root = json.load(f)
    root.setdefault("attributes", {})[_KEY] = meta
    _atomic_write_json(root_file, root)


def marker_path(store: Path, group: int, shard: int) -> Path:
    """Where the marker of shard ``shard`` of shape group ``group`` lives: its proof of completion."""
    return Path(store) / "maps" / str(group) / "_markers" / f"{shard}.json"


def _fsync(path: Path) -> None:
    if path.is_file():  # zarr writes no file for a shard that is all fill value (NaN)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_json(path: Path, value: Any) -> None:
    # Same directory, so os.replace is a rename within one filesystem: a reader sees no marker or
    # a whole one, never half of one.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_store(path: str | os.PathLike[str]) -> WeightStore:
    """Open a store read-only.

    Examples
    --------
    >>> ws = open_store("weights.zarr")          # doctest: +SKIP
    >>> ws["train/img_001"].shape, ws.complete   # doctest: +SKIP
    ((512, 512), True)
    """
    return WeightStore(path)


class WeightStore(_StoreInfo):
    """Read-only view of a store: a sequence of maps addressable by position or sample id.

    Picklable (path only; zarr is reopened lazily), so a data loader's workers can share it.
    A store from a killed run opens too: ``complete`` is False and unwritten maps are all NaN.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise WeightmapsError(f"{self.path} does not exist")
        meta = _read_meta(self.path)
        if meta is None:
            raise WeightmapsError(
                f"{self.path} is not a weightmaps store (no zarr group with weightmaps attributes)"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise WeightmapsError(
                f"{self.path} has store format {meta.get('format_version')}, "
                f"this weightmaps reads format {FORMAT_VERSION}"
            )
        self._meta = meta
        self._where = {
            p: (k, row)
            for k, g in enumerate(meta["groups"])
            for row, p in enumerate(g["positions"])
        }
        self._index = {sid: i for i, sid in enumerate(meta["ids"])}
        self._arrays: dict[int, zarr.Array[Any]] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        return WeightStore, (self.path,)  # reopened lazily in the receiving process

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"WeightStore({str(self.path)!r}, {len(self)} maps, {self.dtype}, {state})"

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

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

    def __getitem__(self, key: int | str) -> np.ndarray:
        group, row = self._where[self._position(key)]
        array = self._arrays.get(group)
        if array is None:
            array = self._arrays[group] = zarr.open_array(self.path, path=f"maps/{group}", mode="r")
        return np.asarray(array[row])

    def shape(self, key: int | str) -> tuple[int, ...]:
        """The map shape of sample ``key`` (id or position)."""
        return tuple(self._meta["groups"][self._where[self._position(key)][0]]["shape"])

    def digest(self, key: int | str) -> str | None:
        """The mask digest recorded for sample ``key``, or None while its shard is unwritten."""
        pos = self._position(key)
        if "digests" in self._meta:
            digest = self._meta["digests"].get(self._meta["ids"][pos])
            return None if digest is None else str(digest)
        group, row = self._where[pos]
        s = self._meta["groups"][group]["samples_per_shard"]
        try:
            with open(marker_path(self.path, group, row // s), encoding="utf-8") as f:
                return str(json.load(f)["digests"][row % s])
        except FileNotFoundError:
            return None

    def nbytes_on_disk(self) -> int:
        """Total size of the store's files in bytes."""
        return sum(
            os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(self.path) for f in files
        )
