"""The store's on-disk format: its layout, its root attributes, and the helpers that read and write them.

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
small whatever the number of samples, and one map read is one contiguous read. Markers live inside
the ``maps`` array's directory: zarr never lists it, while an unknown entry at group level makes
consolidation warn.

Stores of format 1 (weightmaps 0.1, one array per map shape) are refused with the command that
rewrites them.

Cut here because the creator, the writer and the reader of a store all speak this format and
nothing else of each other: each of them imports it, it imports none of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weightmaps.errors import WeightmapsError
from weightmaps.layout import MAX_MAP_NDIM
from weightmaps.location import Location

FORMAT_VERSION = 2
DTYPES = ("float32", "float16")
META_KEY = "weightmaps"  # root attribute holding everything we record
# Samples per chunk of the index arrays: a reader of one map decodes one chunk of each.
INDEX_CHUNK = 1 << 16
MARKERS = "maps/_markers"
StoreLocation = str | os.PathLike[str] | Location


def json_roundtrip(value: Any, what: str) -> Any:
    """``value`` as JSON gives it back, or a WeightmapsError naming ``what`` if it is not JSON."""
    # Normalises tuples to lists etc., so that what is stored compares with like values.
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise WeightmapsError(f"{what} must be JSON-serialisable: {exc}") from None


def read_meta(location: Location) -> dict[str, Any] | None:
    """The ``weightmaps`` root attributes, or None if ``location`` is not a weightmaps store."""
    root = location.read_json("zarr.json")  # plain JSON: cheap, and safe on arbitrary user folders
    if not isinstance(root, dict) or root.get("node_type") != "group":
        return None
    meta = root.get("attributes", {}).get(META_KEY)
    return meta if isinstance(meta, dict) else None


def write_meta(location: Location, meta: dict[str, Any]) -> None:
    """Replace the store's root attributes in one atomic step (the root zarr.json, rewritten aside).

    zarr rewrites a zarr.json in place; a full disk or a kill in the middle would leave it half
    written, and the store unreadable. Here the old file stays whole until the new one is.
    """
    root = location.read_json("zarr.json")
    if not isinstance(root, dict):
        raise WeightmapsError(f"{location.display}: the root zarr.json is missing or unreadable")
    root.setdefault("attributes", {})[META_KEY] = meta
    location.publish_json("zarr.json", root)


def check_format(path: Path | str, meta: dict[str, Any]) -> None:
    """Refuse a store of another format version (format 1 with the command that rewrites it)."""
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


def check_dtype(dtype: str) -> str:
    """The canonical name of ``dtype`` if a store may hold maps of it, else a WeightmapsError."""
    try:
        name = str(np.dtype(dtype))
    except TypeError:
        name = None
    if name not in DTYPES:
        raise WeightmapsError(f"dtype: {dtype!r} is not supported, use one of {DTYPES}")
    return name


def shapes_to_rows(shapes: Sequence[Sequence[int]]) -> np.ndarray:
    """Map shapes as ``index/shape`` holds them: one row each, 0-padded to the longest shape allowed."""
    rows = np.zeros((len(shapes), MAX_MAP_NDIM), dtype=np.int64)
    for i, shape in enumerate(shapes):
        rows[i, : len(shape)] = shape
    return rows


def row_to_shape(row: np.ndarray) -> tuple[int, ...]:
    """The map shape one row of ``index/shape`` stands for (its padding dropped)."""
    return tuple(int(n) for n in row if n)


def marker_key(shard: int) -> str:
    """Where, inside a store, the marker of the task starting at shard ``shard`` lives: its proof
    of completion."""
    return f"{MARKERS}/{shard}.json"
