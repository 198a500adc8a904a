"""A zarr array as an input: telling one from a folder of files, and opening it.

A folder is a zarr array or group by its metadata file (v3 ``zarr.json``, v2 ``.zarray`` /
``.zgroup``), read here on disk or behind a URL; :func:`open_zarr_array` opens one read-only,
in the process that calls it. Cut from the rest of :mod:`weightmaps.sources` because both the
discovery (:mod:`~weightmaps.sources.local`, :mod:`~weightmaps.sources.remote`) and the source
that reads the array later, in each worker (:mod:`~weightmaps.sources.base`), need it, and it
needs none of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import zarr

from weightmaps import remote_files
from weightmaps.errors import WeightmapsError
from weightmaps.location import Location, is_url, remote_errors

__all__ = ["open_zarr_array", "remote_zarr_node_kind", "zarr_node_kind"]


def open_zarr_array(path: str, options: Mapping[str, Any] | None = None) -> zarr.Array:
    """The zarr array at ``path`` (a folder or a URL), opened read-only in this process."""
    try:
        if is_url(path):
            # A FsspecStore made in this process (Location caches one per process).
            store = Location.of(path, options).zarr_store(read_only=True)
            return zarr.open_array(store, mode="r")
        return zarr.open_array(os.path.expanduser(path), mode="r")
    except MemoryError:
        raise
    except Exception as e:
        raise WeightmapsError(f"{path}: cannot open as a zarr array: {e}") from e


def zarr_node_kind(path: str) -> str | None:
    """"array", "group" or None for a directory, from its zarr v3 / v2 metadata file."""
    meta = os.path.join(path, "zarr.json")
    if os.path.isfile(meta):
        try:
            with open(meta, encoding="utf-8") as f:
                return str(json.load(f).get("node_type"))
        except (OSError, ValueError) as e:
            raise WeightmapsError(f"{meta}: unreadable zarr metadata: {e}") from e
    if os.path.isfile(os.path.join(path, ".zarray")):
        return "array"
    if os.path.isfile(os.path.join(path, ".zgroup")):
        return "group"
    return None


def remote_zarr_node_kind(fs: Any, key: str, url: str) -> str | None:
    """"array", "group" or None for a remote folder, from its zarr v3 / v2 metadata file (one
    round of concurrent GETs); a missing bucket, refused access, ... raise, naming ``url``."""
    names = {n: f"{key}/{n}" for n in ("zarr.json", ".zarray", ".zgroup")}
    with remote_errors(url):
        fetched = fs.cat(list(names.values()), on_error="return")
        found = {}
        for path, data in fetched.items():
            if not isinstance(data, BaseException):
                found[path] = data
            elif not isinstance(data, FileNotFoundError) or remote_files.names_container(data):
                raise data
    if names["zarr.json"] in found:
        try:
            return str(json.loads(found[names["zarr.json"]]).get("node_type"))
        except (ValueError, AttributeError) as e:
            raise WeightmapsError(f"{url}/zarr.json: unreadable zarr metadata: {e}") from e
    if names[".zarray"] in found:
        return "array"
    if names[".zgroup"] in found:
        return "group"
    return None
