"""Reading a store: :func:`open_store` and :class:`WeightStore`, a sequence of maps by id or position.

Opening reads the root attributes only; a map read decodes the index chunk it needs and the map's
own chunks. Cut apart from the writer: a training job reads stores and never writes one.
"""

from __future__ import annotations

import collections
import functools
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import zarr

from weightmaps.errors import SampleNotFoundError, WeightmapsError
from weightmaps.location import Location
from weightmaps.store.format import (
    INDEX_CHUNK,
    StoreLocation,
    check_format,
    read_meta,
    row_to_shape,
)
from weightmaps.store.info import StoreInfo


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


class WeightStore(StoreInfo):
    """Read-only view of a store: a sequence of maps addressable by position or sample id.

    Opening reads the root attributes only (a few KB); ids are read on the first lookup by id,
    and a map read decodes the index chunk it needs and the map's own chunks. Picklable (its
    location only; zarr is reopened lazily), so a data loader's workers can share it; after a fork
    a worker reopens it too (a remote filesystem made in the parent is not fork-safe). A store from
    a killed run opens too: ``complete`` is False and unwritten maps are all NaN.
    """

    def __init__(self, path: StoreLocation, storage_options: Mapping[str, Any] | None = None) -> None:
        location = Location.of(path, storage_options)
        meta = read_meta(location)
        if meta is None:
            if not location.exists():
                raise WeightmapsError(f"{location.display} does not exist")
            raise WeightmapsError(
                f"{location.display} is not a weightmaps store (no zarr group with weightmaps attributes)"
            )
        check_format(location.display, meta)
        super().__init__(location, meta)
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
        chunk = i // INDEX_CHUNK
        rows = self._index_chunks.get(chunk)
        if rows is None:
            window = slice(chunk * INDEX_CHUNK, (chunk + 1) * INDEX_CHUNK)
            rows = (np.asarray(self._array("index/offset")[window]), np.asarray(self._array("index/shape")[window]))
            self._index_chunks[chunk] = rows
            if len(self._index_chunks) > 8:
                self._index_chunks.popitem(last=False)
        offsets, shapes = rows
        return int(offsets[i % INDEX_CHUNK]), row_to_shape(shapes[i % INDEX_CHUNK])

    def __getitem__(self, key: int | str) -> np.ndarray:
        offset, shape = self._where(self._position(key))
        return np.asarray(self._array("maps")[offset: offset + math.prod(shape)]).reshape(shape)

    def shape(self, key: int | str) -> tuple[int, ...]:
        """The map shape of sample ``key`` (id or position)."""
        return self._where(self._position(key))[1]

    def shapes(self) -> list[tuple[int, ...]]:
        """Every sample's map shape, in sample order."""
        return [row_to_shape(row) for row in self.shape_rows()]

    def digest(self, key: int | str) -> str | None:
        """The mask digest recorded for sample ``key``, or None while its shard is unwritten."""
        position = self._position(key)
        if self.complete:
            return f"{int(self._digests[position]):016x}"
        return self._pending_digests.get(position)

    @functools.cached_property
    def _digests(self) -> np.ndarray:
        return self.read_index("digest")

    @functools.cached_property
    def _pending_digests(self) -> dict[int, str]:
        return {p: d for m in self.markers() for p, d in zip(m["positions"], m["digests"], strict=True)}

    def nbytes_on_disk(self) -> int:
        """Total size of the store's files (objects) in bytes."""
        return self.location.size()
