"""What discovery finds, and the sample ids it gives: the shared vocabulary of finding inputs.

The two kinds a source lists (masks, images: their suffixes, the zarr shapes they accept), what
marks a list file or a glob, :class:`Found` (what every way of finding inputs returns), and the
two rules that make sample ids: a file's path relative to the input's root without its suffix
(:func:`files_found`, which also leaves out files sharing an id), a zarr sample's position
(:func:`zarr_array_found`). Cut here so that local discovery, remote discovery and list files
name samples by one rule without importing each other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from weightmaps import remote_files
from weightmaps.errors import BadSample, WeightmapsError
from weightmaps.location import is_url
from weightmaps.readers import IMAGE_SUFFIXES, MASK_SUFFIXES, file_suffix
from weightmaps.sources.base import SampleRef
from weightmaps.sources.zarr_array import open_zarr_array

__all__ = [
    "GLOB_MAGIC",
    "IMAGES",
    "LIST_SUFFIXES",
    "MASKS",
    "Found",
    "SampleKind",
    "files_found",
    "strip_suffix",
    "zarr_array_found",
]

LIST_SUFFIXES = (".txt", ".lst")
"""Suffixes of text files that list mask (or image) paths, one per line."""

GLOB_MAGIC = frozenset("*?[")
"""Characters that make a path (or a path segment of a URL) a glob pattern."""


@dataclass(frozen=True)
class SampleKind:
    """What a source lists, for discovery and its messages: masks or images."""

    noun: str  # "mask" / "image"
    a_noun: str  # "a mask" / "an image"
    suffixes: tuple[str, ...]
    zarr_ndims: tuple[int, ...]  # ranks accepted for a zarr array, sample axis included
    zarr_shapes: str  # those ranks, for the message
    integer: bool  # a zarr array must hold integers (or bool)


MASKS = SampleKind("mask", "a mask", MASK_SUFFIXES, (3, 4), "(N, H, W) or (N, D, H, W)", True)
IMAGES = SampleKind(
    "image", "an image", IMAGE_SUFFIXES, (3, 4, 5),
    "(N, H, W) or (N, D, H, W), with or without a channel axis", False,
)


class Found(NamedTuple):
    """What discovery found: the samples, a description, the zarr array if any, and the inputs it
    had to leave out (a dangling link, a list file's missing line, two files of one id)."""

    samples: list[SampleRef]
    description: str
    zarr_array: zarr.Array | str | None = None
    problems: tuple[BadSample, ...] = ()
    remote_roots: tuple[str, ...] = ()  # the source's remote_roots (see SampleSource)


def files_found(
    files: Sequence[str], root: str, description: str, problems: Sequence[BadSample] = (),
    remote_roots: tuple[str, ...] = (),
) -> Found:
    """The samples of ``files`` (ids relative to ``root``); files sharing an id are all left out,
    as bad inputs that name each other (which one is meant cannot be guessed). URLs (and a URL
    root) are kept as they are, ids relative to the root as on disk."""
    root = root if is_url(root) else os.path.abspath(root)
    by_id: dict[str, list[str]] = {}
    for f in files:
        if is_url(f):
            full, rel = f, remote_files.url_relative(f, root)
        else:
            full = os.path.abspath(f)
            rel = Path(os.path.relpath(full, root)).as_posix()
        by_id.setdefault(strip_suffix(rel), []).append(full)
    refs, left_out = [], list(problems)
    for sample_id, paths in sorted(by_id.items()):
        if len(paths) == 1:
            refs.append(SampleRef(id=sample_id, path=paths[0]))
            continue
        for path in sorted(set(paths)):
            others = sorted(set(paths) - {path})
            times = {2: "twice"}.get(paths.count(path), f"{paths.count(path)} times")
            reason = (f"listed {times} (sample id {sample_id!r})" if not others
                      else f"duplicate sample id {sample_id!r}: also {', '.join(others)}")
            left_out.append(BadSample(sample_id, path, reason))
    return Found(refs, description, problems=tuple(left_out), remote_roots=remote_roots)


def zarr_array_found(
    array: zarr.Array | str, kind: SampleKind, options: Mapping[str, Any] | None = None
) -> Found:
    """The samples of a zarr array (a ``zarr.Array``, a folder or a URL), its shape and dtype
    checked for ``kind``; ids are positions, zero-padded to at least 6 digits."""
    arr = array if isinstance(array, zarr.Array) else open_zarr_array(array, options)
    name = str(arr.store_path) if isinstance(array, zarr.Array) else array
    dtype = np.dtype(arr.dtype)
    if arr.ndim not in kind.zarr_ndims:
        raise WeightmapsError(
            f"{name}: zarr array of shape {arr.shape}; expected {kind.zarr_shapes}"
        )
    if kind.integer and not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise WeightmapsError(f"{name}: non-integer {kind.noun}s (dtype {dtype})")
    if 0 in arr.shape[1:]:
        raise WeightmapsError(f"{name}: empty {kind.noun}s (shape {arr.shape})")
    n = arr.shape[0]
    if n == 0:
        raise WeightmapsError(f"{name}: no {kind.noun}s (shape {arr.shape})")
    width = max(6, len(str(n - 1)))
    refs = [SampleRef(id=f"{i:0{width}d}", path=None, index=i) for i in range(n)]
    return Found(refs, name, array)


def strip_suffix(rel: str) -> str:
    """``rel`` without its file suffix (``.nii.gz`` counts as one): a sample id from a path."""
    n = len(file_suffix(rel))
    return rel[:-n] if n else rel
