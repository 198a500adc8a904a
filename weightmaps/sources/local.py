"""Inputs on local disk: a directory, a glob, a list file, one file, a zarr array in a folder.

:func:`find_path` says which of these a path is and lists its samples. Directory links are
followed, one rule for a directory input and a glob alike: each real directory is read once, by
the first path that reaches it (shallowest, then in name order); loops are cut, with one
warning. Cut from :mod:`~weightmaps.sources.remote` because disk is walked, globbed and statted
where a bucket is listed: the two share their vocabulary (:mod:`~weightmaps.sources.found`) and
their per-file checks (:mod:`~weightmaps.sources.file_lists`), not their code.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import zarr

from weightmaps.errors import WeightmapsError
from weightmaps.readers import file_suffix
from weightmaps.sources.file_lists import (
    check_file,
    checked_files,
    common_parent,
    read_list_file,
)
from weightmaps.sources.found import (
    GLOB_MAGIC,
    LIST_SUFFIXES,
    Found,
    SampleKind,
    files_found,
    zarr_array_found,
)
from weightmaps.sources.zarr_array import zarr_node_kind

__all__ = ["find_path"]

log = logging.getLogger("weightmaps")


def find_path(spec: str, kind: SampleKind, options: Mapping[str, Any] | None = None) -> Found:
    """The samples of a local path ``spec``: a directory (walked recursively) or a zarr array in
    one, a list file, a single file, or a glob; ``options`` are for a list file's URL lines."""
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        node = zarr_node_kind(path)
        if node == "array":
            return zarr_array_found(path, kind)
        if node == "group":
            arrays = sorted(name for name, _ in zarr.open_group(path, mode="r").arrays())
            hint = ", ".join(os.path.join(spec, a) for a in arrays) or "none"
            raise WeightmapsError(f"{spec}: is a zarr group, not an array; its arrays: {hint}")
        files = list(_walk(path, kind.suffixes))
        if not files:
            suffixes = ", ".join(kind.suffixes)
            raise WeightmapsError(f"{spec}: no {kind.noun} files found (suffixes {suffixes})")
        good, problems = checked_files(files, kind)
        return files_found(good, path, spec, problems)
    if os.path.isfile(path):
        if file_suffix(path) in LIST_SUFFIXES:
            files, problems = read_list_file(path, kind, options)
            return files_found(files, common_parent(files or [path]), spec, problems)
        check_file(path, kind)
        return files_found([path], os.path.dirname(os.path.abspath(path)), spec)
    if GLOB_MAGIC & set(spec):
        matches = [m for m in glob.glob(path, recursive=True) if file_suffix(m) in kind.suffixes]
        # A dangling link matches too (it names a file that is gone): a bad input, not nothing.
        files = _each_directory_once(m for m in matches if os.path.isfile(m) or os.path.islink(m))
        if not files:
            raise WeightmapsError(f"{spec}: the glob matched no {kind.noun} files")
        good, problems = checked_files(files, kind)
        return files_found(good, _glob_root(path), spec, problems)
    raise WeightmapsError(f"{spec}: no such file or directory")


def _walk(root: str, suffixes: tuple[str, ...]) -> Iterable[str]:
    seen = {os.path.realpath(root)}
    cut: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen:
                cut.append(os.path.join(dirpath, d))
            else:
                seen.add(real)
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not name.startswith(".") and file_suffix(name) in suffixes:
                yield os.path.join(dirpath, name)
    _say_cut(cut)


def _each_directory_once(files: Iterable[str]) -> list[str]:
    """A glob's matches with every real directory's files taken once (globs follow links, loops too)."""
    chosen: dict[tuple[str, str], str] = {}
    cut = []
    for f in sorted(files, key=lambda f: (len(Path(f).parts), f)):
        key = (os.path.realpath(os.path.dirname(f) or "."), os.path.basename(f))
        if key in chosen:
            cut.append(os.path.dirname(f))
        else:
            chosen[key] = f
    _say_cut(sorted(set(cut)))
    return sorted(chosen.values())


def _say_cut(paths: Sequence[str]) -> None:
    if paths:
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        log.warning("%d path(s) reach a directory already read through a link (loops cut): %s", len(paths), shown)


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    prefix: list[str] = []
    for part in parts:
        if GLOB_MAGIC & set(part):
            break
        prefix.append(part)
    return str(Path(*prefix)) if prefix else "."
