"""Writing a store shard by shard: :class:`StoreWriter`, its markers, ``finalize`` and ``reopen``.

A shard is the unit of work and of writing. zarr-python writes a shard as one file by reading,
merging and rewriting it, so two processes writing the same shard lose data; here exactly one
:meth:`StoreWriter.write_shard` call owns a shard and writes all of it in one assignment. Workers
never touch the root attributes either: each finished shard gets its own small marker file,
written atomically after the shard data is on disk. A marker is the proof that its shard is
complete (a killed run resumes from the shards without one). :meth:`StoreWriter.finalize`, run once
by the driver, gathers the markers' digests into ``index/digest`` and marks the store complete in
one atomic rewrite of the root ``zarr.json``.

In object storage the same promises hold: a shard is one object PUT by its one writer, its marker
a second PUT after it, ``complete`` the root ``zarr.json`` PUT last; nothing is fsynced (an
acknowledged PUT is durable).

Cut apart from the creation of a store (:mod:`weightmaps.store.create`, which returns a writer)
and from reading one (:mod:`weightmaps.store.reader`): a writer travels to worker processes and
Dask workers, and is all they need of a store.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from weightmaps.errors import WeightmapsError
from weightmaps.layout import ShardTask
from weightmaps.location import Location
from weightmaps.shard_codec import ShardEncoder
from weightmaps.store.format import json_roundtrip, marker_key, read_meta, write_meta
from weightmaps.store.info import StoreInfo


class StoreWriter(StoreInfo):
    """Writes a store shard by shard. Picklable (its path); zarr is opened lazily per process.

    Attributes: ``path``, ``ids``, ``dtype``, ``params``, ``fingerprint``, ``class_counts`` and
    ``class_weights`` (``dict[int, ...]``, the store's on resume).
    """

    def __init__(self, location: Location | str | os.PathLike[str], meta: dict[str, Any]) -> None:
        super().__init__(Location.of(location), meta)
        self._encoder: tuple[int, ShardEncoder | None] | None = None  # (pid, encoder): per process

    def __reduce__(self) -> tuple[Any, ...]:
        # The location only: the root attributes are reread (once per process), zarr is reopened.
        return _unpickle_writer, (self.location, self._meta["uid"])

    def __repr__(self) -> str:
        return f"StoreWriter({str(self.path)!r}, {len(self)} samples)"

    def pending(self) -> list[ShardTask]:
        """Tasks without a marker: not yet written, or interrupted while being written."""
        return self._pending(self.marker_names())  # one listing, not one request per shard

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
        offsets = self.offsets
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
        written = self.marker_names()
        missing = [t.shard for t in self._pending(written)]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise WeightmapsError(f"cannot finalize {self.path}: shards {shown} are not written")
        digests = np.zeros(len(self), dtype=np.uint64)
        for marker in self.markers(written):
            for position, digest in zip(marker["positions"], marker["digests"], strict=True):
                digests[position] = int(digest, 16)
        store = self.location.zarr_store(read_only=False)
        zarr.open_array(store, path="index/digest", mode="r+")[...] = digests
        meta = {**self._meta, "report": json_roundtrip(dict(report), "report"), "complete": True}
        write_meta(self.location, meta)  # all or nothing: a full disk here leaves the store incomplete
        self._meta = meta

    def reopen(self, tasks: Sequence[ShardTask]) -> None:
        """Mark tasks to be computed again: the store is incomplete first, then their markers go."""
        if self._meta.get("complete"):
            meta = {**self._meta, "complete": False, "report": None}
            write_meta(self.location, meta)
            self._meta = meta
        for t in tasks:
            self.location.delete(marker_key(t.shard))


@functools.lru_cache(maxsize=16)
def _writer_meta(location: Location, uid: str) -> dict[str, Any]:
    # A pickled writer carries its location and the store's uid only, so a process rereads the
    # root attributes once per store, not once per task.
    meta = read_meta(location)
    if meta is None or meta.get("uid") != uid:
        raise WeightmapsError(f"{location.display} was deleted or replaced while it was being written")
    return meta


def _unpickle_writer(location: Location | Path, uid: str) -> StoreWriter:
    location = Location.of(location)
    return StoreWriter(location, _writer_meta(location, uid))


def _finite(m: np.ndarray) -> bool:
    return bool(np.isfinite(m).all())


def _finite_or_far(m: np.ndarray) -> bool:
    """No NaN, no −inf: a distance may be +inf (no edge to be near)."""
    return not bool(np.isnan(m).any() or np.isneginf(m).any())


def _fsync(path: Path) -> None:
    if path.is_file():  # zarr writes no file for a shard that is all fill value (NaN)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
