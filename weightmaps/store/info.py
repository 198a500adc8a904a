"""What both the writer and the reader of a store tell about it: its root attributes and its index.

:class:`StoreInfo` is the base of :class:`~weightmaps.store.writer.StoreWriter` and
:class:`~weightmaps.store.reader.WeightStore`: the sample ids, shapes and offsets (read from the
index on first use), the parameters, class counts and report of the root attributes, the tasks,
and the markers of the written shards. Cut apart from both so that neither imports the other.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from weightmaps.layout import ShardTask, tasks_of
from weightmaps.location import Location
from weightmaps.params import MapParams
from weightmaps.store.format import MARKERS, row_to_shape


class StoreInfo:
    """What both the writer and the reader tell about a store: root attributes and the index.

    ``_meta`` is the root attributes as last read (or, by the writer, written).
    """

    def __init__(self, location: Location, meta: dict[str, Any]) -> None:
        self.location = location
        self._meta = meta

    @property
    def path(self) -> Path | str:
        """The store's folder (a Path), or its URL."""
        return self.location.display

    def read_index(self, name: str) -> np.ndarray:
        """The whole index array ``index/<name>`` (``ids``, ``shape``, ``offset`` or ``digest``)."""
        store = self.location.zarr_store(read_only=True)
        return np.asarray(zarr.open_array(store, path=f"index/{name}", mode="r")[...])

    @functools.cached_property
    def ids(self) -> list[str]:
        """Sample ids in sample order (read from the index on first use)."""
        return [str(i) for i in self.read_index("ids")]

    def shape_rows(self) -> np.ndarray:
        """Every sample's map shape as the index holds it: an (N, 4) array, each row 0-padded."""
        return self.read_index("shape")

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """Where each sample's map starts in ``maps`` (read from the index on first use)."""
        return self.read_index("offset")

    def tasks(self) -> list[ShardTask]:
        """Every shard's task, in shard order."""
        shapes = [row_to_shape(row) for row in self.shape_rows()]
        return tasks_of(self.offsets, shapes, int(self._meta["shard_elements"]))

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

    def marker_names(self) -> set[str]:
        """The file names of the markers present: one per written shard (one listing)."""
        return {n for n in self.location.list_names(MARKERS) if n.endswith(".json") and not n.startswith(".")}

    def markers(self, names: set[str] | None = None) -> Iterator[dict[str, Any]]:
        """The markers named (default: all present), each as written; one round of reads."""
        # One listing (or the caller's) and one round of reads (concurrent GETs in an object store).
        names = self.marker_names() if names is None else names
        for marker in self.location.read_many_json(MARKERS, sorted(names)):
            if marker is not None:
                yield marker

    def recorded_digests(self) -> dict[str, str]:
        """The mask digest recorded for every sample whose shard is written (from the markers)."""
        ids = self.ids
        return {ids[p]: d for m in self.markers() for p, d in zip(m["positions"], m["digests"], strict=True)}
