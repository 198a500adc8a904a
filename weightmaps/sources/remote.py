"""Inputs behind fsspec URLs: a prefix ("directory"), a glob, a list file or one file, a zarr array.

:func:`find_url` gives a URL the samples, ids and messages the same input would get on local
disk, so a dataset copied to a bucket keeps its ids: a prefix is listed recursively (hidden
names skipped, as on disk), a glob's ids are relative to its non-magic prefix, and a missing
bucket is said to be missing, not an empty input. The recursive listing's root is kept as the
source's ``remote_roots``, so that its fingerprint lists it again in one request. Cut from
:mod:`~weightmaps.sources.local` because a bucket is listed where a disk is walked; the file
transfers themselves are :mod:`weightmaps.remote_files`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import zarr

from weightmaps import remote_files
from weightmaps.errors import WeightmapsError
from weightmaps.location import Location, remote_errors
from weightmaps.readers import IMAGE_SUFFIXES, file_suffix
from weightmaps.sources.file_lists import check_url, common_parent, read_list_file
from weightmaps.sources.found import (
    GLOB_MAGIC,
    LIST_SUFFIXES,
    Found,
    SampleKind,
    files_found,
    zarr_array_found,
)
from weightmaps.sources.zarr_array import remote_zarr_node_kind

__all__ = ["find_url"]

# In an http(s) URL "?" starts the query: only "*" makes one a glob.
_HTTP_GLOB_MAGIC = frozenset("*")


def find_url(spec: str, kind: SampleKind, options: Mapping[str, Any] | None) -> Found:
    """:func:`~weightmaps.sources.local.find_path` of a URL: a glob, a file (list file or one
    mask), a zarr array, or a prefix listed recursively; the same ids and messages as the same
    input on disk."""
    magic = _HTTP_GLOB_MAGIC if spec.lower().startswith(("http://", "https://")) else GLOB_MAGIC
    if magic & set(spec.partition("://")[2]):
        return _find_glob(spec, kind, options)
    url = remote_files.normalize_url(spec)
    fs, key = remote_files.filesystem(url, options)
    if file_suffix(url) in (*LIST_SUFFIXES, *IMAGE_SUFFIXES):
        # Named like a file: one HEAD says what it is (a folder so named is listed below).
        with remote_errors(url):
            fs.invalidate_cache(key)
            try:
                info = fs.info(key)
            except FileNotFoundError as e:
                if remote_files.names_container(e):
                    raise
                raise WeightmapsError(f"{spec}: no such file or directory") from e
        if info.get("type") != "directory":
            return _find_file(spec, url, kind, options)
    node = remote_zarr_node_kind(fs, key, url)
    if node == "array":
        return zarr_array_found(url, kind, options)
    if node == "group":
        store = Location.of(url, options).zarr_store(read_only=True)
        arrays = sorted(name for name, _ in zarr.open_group(store, mode="r").arrays())
        hint = ", ".join(f"{url}/{a}" for a in arrays) or "none"
        raise WeightmapsError(f"{spec}: is a zarr group, not an array; its arrays: {hint}")
    with remote_errors(url):
        fs.invalidate_cache(key)
        found = fs.find(key, detail=True)
    if set(found) == {key}:  # the URL names a file
        return _find_file(spec, url, kind, options)
    files = []
    for name, info in sorted(found.items()):
        rel = remote_files.under(name, key)
        if rel is None or info.get("type", "file") != "file" or file_suffix(rel) not in kind.suffixes:
            continue
        if not any(part.startswith(".") for part in rel.split("/")):  # hidden, as on disk
            files.append(f"{url}/{rel}")
    if not files:
        raise WeightmapsError(f"{spec}: no {kind.noun} files found (suffixes {', '.join(kind.suffixes)})")
    return files_found(files, url, spec, remote_roots=(url,))


def _find_file(spec: str, url: str, kind: SampleKind, options: Mapping[str, Any] | None) -> Found:
    """A URL naming one file: a list file, or a single mask (root: its folder)."""
    if file_suffix(url) in LIST_SUFFIXES:
        files, problems = read_list_file(url, kind, options)
        return files_found(files, common_parent(files) if files else remote_files.url_parent(url), spec, problems)
    check_url(url, kind, {"type": "file"})
    return files_found([url], remote_files.url_parent(url), spec)


def _find_glob(spec: str, kind: SampleKind, options: Mapping[str, Any] | None) -> Found:
    """A glob URL: its matches, ids relative to its non-magic prefix, hidden names skipped unless
    the pattern names them (as glob.glob does on disk)."""
    scheme, _, rest = spec.partition("://")
    parts = rest.split("/")
    prefix = []
    for part in parts:
        if GLOB_MAGIC & set(part):
            break
        prefix.append(part)
    root = remote_files.normalize_url(f"{scheme}://{'/'.join(prefix)}")
    pattern_parts = parts[len(prefix):]
    fs, pattern = remote_files.filesystem(spec, options)
    _, root_key = remote_files.filesystem(root, options)
    with remote_errors(spec):
        fs.invalidate_cache(root_key)
        found = fs.glob(pattern, detail=True)
    hidden_ok = any(p.startswith(".") for p in pattern_parts)
    files = []
    for name, info in sorted(found.items()):
        rel = remote_files.under(name, root_key)
        if rel is None or info.get("type", "file") != "file" or file_suffix(rel) not in kind.suffixes:
            continue
        if hidden_ok or not any(part.startswith(".") for part in rel.split("/")):
            files.append(f"{root}/{rel}")
    if not files:
        # A glob skips the folders it cannot list: say so when the bucket is missing.
        with remote_errors(spec):
            try:
                fs.ls(root_key)
            except FileNotFoundError as e:
                if remote_files.names_container(e):
                    raise
        raise WeightmapsError(f"{spec}: the glob matched no {kind.noun} files")
    return files_found(files, root, spec, remote_roots=(root,))
