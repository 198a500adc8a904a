"""open_source, open_image_source: what an input is, who lists it, and the source made of it.

An input is a ``zarr.Array``, a URL (:mod:`~weightmaps.sources.remote`), a local path
(:mod:`~weightmaps.sources.local`) or a list of paths (:mod:`~weightmaps.sources.file_lists`);
what was found becomes a :class:`~weightmaps.sources.base.MaskSource` or
:class:`~weightmaps.sources.base.ImageSource`, or one BadInputError listing every input
discovery had to leave out. The one module that sees every way of finding inputs, so it sits on
top of them: no other module of the package imports it (its ``__init__`` re-exports it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import zarr

from weightmaps import remote_files
from weightmaps.errors import BadInputError, WeightmapsError
from weightmaps.location import is_url
from weightmaps.readers import normalize_label_map
from weightmaps.sources.base import ImageSource, MaskSource
from weightmaps.sources.file_lists import checked_files, common_parent
from weightmaps.sources.found import (
    IMAGES,
    MASKS,
    Found,
    SampleKind,
    files_found,
    zarr_array_found,
)
from weightmaps.sources.local import find_path
from weightmaps.sources.remote import find_url

__all__ = ["open_image_source", "open_source"]


def open_source(
    inputs: str | os.PathLike[str] | zarr.Array | Sequence[str | os.PathLike[str]],
    *,
    label_map: Mapping[int, int] | None = None,
    float_labels: bool = False,
    on_problems: Literal["raise", "collect"] = "raise",
    storage_options: Mapping[str, Any] | None = None,
) -> MaskSource:
    """Collect the masks named by ``inputs``.

    Parameters
    ----------
    inputs
        One of:

        - a directory, walked recursively for files with a suffix in
          :data:`~weightmaps.readers.MASK_SUFFIXES` (hidden files and directories, whose name
          starts with ".", are skipped); the root is the directory;
        - a glob string such as ``"data/**/*.png"`` (``**`` recurses); the root is the pattern's
          non-magic prefix directory (``data``);
        - either way, linked directories are followed and every real directory is read once, by
          the first path that reaches it (shallowest, then in name order): loops are cut, with
          one warning;
        - a text file (``.txt`` / ``.lst``) listing paths, one per line, relative to the list
          file's folder; blank lines and lines starting with ``#`` are ignored; the root is the
          common parent of the listed files;
        - a zarr array on disk (v3 or v2) or a ``zarr.Array``, shaped (N, H, W) or (N, D, H, W);
          ids are ``"000000"``, ``"000001"``, ... (at least 6 digits);
        - a single mask file (root: its folder);
        - a list of paths (root: their common parent);
        - any of these as an fsspec URL (``s3://``, ``gs://``, ``az://``, ``https://``; a list
          file's lines and a list's items may be URLs too): ``s3://bucket/masks`` (or with a
          trailing slash) is every mask file under that prefix, recursively; a glob such as
          ``s3://bucket/data/**/*.png``; a remote zarr array. Sample ids are those of the same
          files on local disk (an empty or missing prefix has no masks, as an empty directory).
          A list file's relative lines resolve against its folder (a line starting with "/"
          against the bucket's root, as in a URL). Sample paths are the URLs.
    label_map
        ``{source label: destination label}`` applied on every read, e.g. ``{255: 1}`` for 0/255
        binary PNGs. Unmapped labels are kept. Destination labels must be non-negative.
    float_labels
        Accept float masks whose values are all whole numbers (see
        :func:`weightmaps.readers.read_mask`).
    on_problems : {"raise", "collect"}
        Inputs discovery must leave out (a dangling link, a list file's missing lines, files
        sharing a sample id) raise one :class:`~weightmaps.errors.BadInputError` listing all of
        them, or are kept in ``source.problems`` for the scan to report with its own bad inputs
        (and ``skip_bad`` to skip).
    storage_options
        fsspec options of the URLs' filesystem (JSON values), e.g. ``{"anon": True}`` or
        ``{"endpoint_url": ..., "key": ..., "secret": ...}`` for s3fs; by default credentials
        come from the environment and config files. Ignored for local inputs.

    Returns
    -------
    MaskSource
        Samples sorted by id.

    Raises
    ------
    WeightmapsError
        The input does not exist or holds no masks; a bucket that does not exist, refused
        access or an unknown protocol (the message names the URL and the cause); BadInputError
        for left-out inputs (above).

    Examples
    --------
    >>> import tempfile
    >>> from weightmaps.sample_data import write_dataset
    >>> root = write_dataset(tempfile.mkdtemp(), n=2, shape=(32, 32), with_images=False)
    >>> src = open_source(root / "masks")
    >>> src.ids
    ['sample_00000', 'sample_00001']
    >>> src.read(0).dtype
    dtype('uint8')
    """
    normalize_label_map(label_map)  # validate early, with a clear message
    # With float_labels a zarr array of floats is accepted too; each sample is checked on read.
    kind = dataclasses.replace(MASKS, integer=False) if float_labels else MASKS
    options = storage_options or None
    found = _checked(_discover(inputs, kind, options), on_problems)
    return MaskSource(
        found.samples,
        description=found.description,
        label_map=label_map,
        float_labels=float_labels,
        zarr_array=found.zarr_array,
        problems=found.problems,
        storage_options=options,
        remote_roots=found.remote_roots,
    )


def open_image_source(
    inputs: str | os.PathLike[str] | zarr.Array | Sequence[str | os.PathLike[str]],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> ImageSource:
    """Collect the images named by ``inputs``, with the sample ids :func:`open_source` gives masks.

    Parameters
    ----------
    inputs
        The input kinds of :func:`open_source`, with the same roots and sample-id rules, so
        ``images/a/001.jpg`` has the id of ``masks/a/001.png``. Files are those with a suffix in
        :data:`~weightmaps.readers.IMAGE_SUFFIXES` (JPEG and BMP too); a zarr array may hold any
        dtype and have a channel axis: (N, H, W), (N, H, W, C), (N, C, H, W), (N, D, H, W) or 5-D.
        URLs as in :func:`open_source`.
    storage_options
        fsspec options of the URLs' filesystem, as in :func:`open_source`.

    Returns
    -------
    ImageSource
        Samples sorted by id.

    Raises
    ------
    WeightmapsError
        The input does not exist, holds no images, or two files share an id (both are named).

    Examples
    --------
    >>> import tempfile
    >>> from weightmaps.sample_data import write_dataset
    >>> root = write_dataset(tempfile.mkdtemp(), n=2, shape=(32, 32))
    >>> open_image_source(root / "images").ids == open_source(root / "masks").ids
    True
    """
    options = storage_options or None
    found = _checked(_discover(inputs, IMAGES, options), "raise")
    return ImageSource(
        found.samples, description=found.description, zarr_array=found.zarr_array, storage_options=options,
        remote_roots=found.remote_roots,
    )


def _checked(found: Found, on_problems: str) -> Found:
    if found.problems and (on_problems == "raise" or not found.samples):
        raise BadInputError(found.problems, len(found.samples) + len(found.problems))
    return found


def _discover(
    inputs: str | os.PathLike[str] | zarr.Array | Sequence[str | os.PathLike[str]], kind: SampleKind,
    options: Mapping[str, Any] | None = None,
) -> Found:
    if isinstance(inputs, zarr.Array):
        return zarr_array_found(inputs, kind)
    if isinstance(inputs, (str, os.PathLike)):
        spec = os.fspath(inputs)
        if is_url(spec):
            return find_url(spec, kind, options)
        return find_path(spec.removeprefix("file://"), kind, options)
    if isinstance(inputs, Iterable):
        paths = [remote_files.normalize_url(p) if is_url(p) else p for p in (os.fspath(p) for p in inputs)]
        if not paths:
            raise WeightmapsError(f"no {kind.noun} files: the input list is empty")
        good, problems = checked_files(paths, kind, options)
        return files_found(good, common_parent(paths), f"list of {len(paths)} paths", problems)
    raise WeightmapsError(
        f"inputs: expected a directory, glob, list file, zarr array or list of paths; "
        f"got {type(inputs).__name__}"
    )
