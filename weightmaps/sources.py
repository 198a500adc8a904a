"""Where masks come from: directories, globs, list files, zarr arrays, lists of paths; sample ids.

A :class:`MaskSource` is an ordered, picklable list of samples. It holds paths and options only;
files are read (and a zarr array is opened) lazily, in whichever process calls
:meth:`MaskSource.read`. :func:`open_image_source` lists the matching images the same way (same
input kinds, same sample ids) as an :class:`ImageSource`, for the torch dataset. Both share
:class:`SampleSource` (listing, ids, descriptions, fingerprint); decoding a file is
:mod:`weightmaps.readers`' job.
Every problem with an input raises :class:`~weightmaps.errors.WeightmapsError` whose message starts
with the file (or ``store[i] (id ...)``) it is about.

Sample ids are the file's path relative to the input root, without its extension, "/"-separated
(``.nii.gz`` counts as one extension); zarr samples are numbered ``"000000"``, ``"000001"``, ...

Inputs may also be fsspec URLs (``s3://``, ``gs://``, ``az://``, ``https://`` read-only): a prefix
("directory"), a glob, a list file (local or remote, whose lines may be URLs), a zarr array, a
list of URLs. A remote sample's path is its URL and its id is what the same file would get on
local disk, so a dataset copied to a bucket keeps its ids. A source holds URL strings and
storage options only (never a filesystem: fsspec's async filesystems are not fork-safe); each
process opens its own on first use (:mod:`weightmaps.location`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import logging
import hashlib
import json
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import zarr

from weightmaps.errors import BadInputError, BadSample, WeightmapsError
from weightmaps import remote_files
from weightmaps.location import Location, freeze_options, is_url, remote_errors
from weightmaps.readers import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    LabelMap,
    file_suffix,
    normalize_label_map,
    read_image,
    read_mask,
    read_spacing,
    validate_mask,
)

__all__ = [
    "LIST_SUFFIXES",
    "ImageSource",
    "MaskSource",
    "SampleRef",
    "SampleSource",
    "open_image_source",
    "open_source",
]

log = logging.getLogger("weightmaps")

LIST_SUFFIXES = (".txt", ".lst")
"""Suffixes of text files that list mask (or image) paths, one per line."""

_GLOB_MAGIC = frozenset("*?[")
# In an http(s) URL "?" starts the query: only "*" makes one a glob.
_HTTP_GLOB_MAGIC = frozenset("*")


@dataclass(frozen=True)
class _Kind:
    """What a source lists, for discovery and its messages: masks or images."""

    noun: str  # "mask" / "image"
    a_noun: str  # "a mask" / "an image"
    suffixes: tuple[str, ...]
    zarr_ndims: tuple[int, ...]  # ranks accepted for a zarr array, sample axis included
    zarr_shapes: str  # those ranks, for the message
    integer: bool  # a zarr array must hold integers (or bool)


_MASKS = _Kind("mask", "a mask", MASK_SUFFIXES, (3, 4), "(N, H, W) or (N, D, H, W)", True)
_IMAGES = _Kind(
    "image", "an image", IMAGE_SUFFIXES, (3, 4, 5),
    "(N, H, W) or (N, D, H, W), with or without a channel axis", False,
)


# --------------------------------------------------------------------------------------------------
# Samples and sources
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRef:
    """One input sample.

    Attributes
    ----------
    id : str
        Path relative to the input root without its extension, "/"-separated; for a zarr array
        the zero-padded position (``"000042"``).
    path : str or None
        Absolute file path or URL (``s3://bucket/masks/a.png``), or None for a zarr-array sample.
    index : int or None
        Position in a zarr-array source, or None for a file.
    """

    id: str
    path: str | None
    index: int | None = None


class SampleSource(ABC):
    """What every source shares: the sorted samples, their ids and names, and the fingerprint.

    A source holds paths and options only, so it pickles cheaply and can be sent to worker
    processes and Dask workers; a zarr array is (re)opened in each process on first read.
    Subclasses add :meth:`read` (and whatever reading needs).

    Attributes
    ----------
    samples : list of SampleRef
        Sorted by id; ids are unique.
    description : str
        What the source was opened from, for messages and reports.
    problems : tuple of BadSample
        Inputs left out by discovery (a dangling link, a list file's missing line, two files of
        one sample id): bad inputs, reported by the scan with its own.
    storage_options : dict
        fsspec options of the remote inputs' filesystem (empty for local inputs).
    """

    def __init__(
        self,
        samples: Sequence[SampleRef],
        *,
        description: str,
        zarr_array: zarr.Array | str | None = None,
        problems: Sequence[BadSample] = (),
        storage_options: Mapping[str, Any] | None = None,
        remote_roots: Sequence[str] = (),
    ) -> None:
        self.samples: list[SampleRef] = list(samples)
        self.description = description
        # Inputs discovery left out, each a bad input for the scan to report (or skip_bad to skip).
        self.problems: tuple[BadSample, ...] = tuple(problems)
        # A path or URL (opened lazily, per process) or a zarr.Array handed to open_source.
        self._zarr_ref: zarr.Array | str | None = zarr_array
        self._zarr_cache: zarr.Array | None = (
            zarr_array if isinstance(zarr_array, zarr.Array) else None
        )
        # The process that opened _zarr_cache from a URL: a forked child reopens it (its parent's
        # store runs on the parent's event loop, which the child does not have).
        self._zarr_pid: int | None = None
        freeze_options(storage_options or {})  # JSON values only, checked here with a clear message
        self._storage_options: dict[str, Any] | None = dict(storage_options) if storage_options else None
        # Folder URLs whose recursive listing covers every remote sample (a directory's or a
        # glob's root, from discovery), listed again by fingerprint(); other remote samples:
        # their folders.
        self._remote_roots: tuple[str, ...] = tuple(remote_roots)

    # -- pickling: paths and options only ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self._zarr_ref, str):
            state["_zarr_cache"] = None  # re-opened lazily in the receiving process
        return state

    # -- collection --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, {len(self)} samples)"

    @property
    def ids(self) -> list[str]:
        """Sample ids, in source order."""
        return [s.id for s in self.samples]

    @property
    def storage_options(self) -> dict[str, Any]:
        """The fsspec storage options remote samples are read with (empty: none)."""
        return dict(self._storage_options or {})

    def describe(self, i: int) -> str:
        """Name sample ``i`` for messages: its file path, or ``store[i] (id ...)``."""
        ref = self.samples[i]
        if ref.path is not None:
            return ref.path
        return f"{self._store_name()}[{ref.index}] (id {ref.id})"

    # -- reading -----------------------------------------------------------------------------------

    @abstractmethod
    def read(self, i: int) -> np.ndarray:
        """Read sample ``i``; the message of any error starts with :meth:`describe`."""

    @functools.cached_property
    def remote(self) -> bool:
        """True when any sample is a remote file (a URL)."""
        return any(ref.path is not None and is_url(ref.path) for ref in self.samples)

    @contextlib.contextmanager
    def prefetched(self, indices: Iterable[int]) -> Iterator[None]:
        """Samples ``indices`` fetched together ahead of their :meth:`read` in the ``with`` block
        (remote files: one round of concurrent GETs instead of one round trip per sample; local
        files and zarr arrays: nothing to do)."""
        urls = [p for p in (self.samples[i].path for i in indices) if p is not None and is_url(p)]
        if len(urls) < 2:
            yield
            return
        with remote_files.prefetched(urls, self._storage_options):
            yield

    def spacing(self, i: int) -> tuple[float, ...] | None:
        """Physical pixel spacing of sample ``i`` per array axis (NIfTI zooms), else None."""
        path = self.samples[i].path
        return None if path is None else read_spacing(path, storage_options=self._storage_options)

    def fingerprint(self) -> str:
        """A cheap change detector for the inputs (sha256 hex), not a content hash.

        Files: ids, sizes and modification times (ns). Remote files: ids, sizes and ETags (or
        modification times where the filesystem has no ETag), from one listing of the input's
        root (or of each listed file's folder), not a request per file. Zarr: path, shape, dtype
        and the array's metadata JSON. Rewriting a file changes the fingerprint; touching it does
        too (a local one); editing a zarr chunk in place does not.
        """
        h = hashlib.sha256()
        if self._zarr_ref is None:
            remote = [ref.path for ref in self.samples if ref.path is not None and is_url(ref.path)]
            infos = remote_files.infos(remote, self._remote_roots, self._storage_options) if remote else {}
            for ref in self.samples:
                assert ref.path is not None
                if is_url(ref.path):
                    info = infos.get(ref.path)
                    if info is None:
                        raise WeightmapsError(f"{ref.path}: cannot stat: no such file")
                    h.update(f"{ref.id}\0{info.get('size')}\0{remote_files.version(info)}\n".encode())
                    continue
                try:
                    st = os.stat(ref.path)
                except OSError as e:
                    raise WeightmapsError(f"{ref.path}: cannot stat: {e.strerror or e}") from e
                h.update(f"{ref.id}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            arr = self._zarr()
            meta = json.dumps(arr.metadata.to_dict(), sort_keys=True, default=str)
            dtype = np.dtype(arr.dtype).str
            h.update(f"{self._store_name()}\0{arr.shape}\0{dtype}\0{meta}".encode())
        return h.hexdigest()

    # -- zarr helpers ------------------------------------------------------------------------------

    def _read_zarr_sample(self, i: int) -> np.ndarray:
        """Sample ``i`` of the zarr array as stored; any failure names the sample."""
        try:
            index = self.samples[i].index
            assert index is not None, "a zarr sample has an index"
            return np.asarray(self._zarr()[index])
        except MemoryError:
            raise
        except Exception as e:
            raise WeightmapsError(f"{self.describe(i)}: cannot read: {e}") from e

    def _store_name(self) -> str:
        if isinstance(self._zarr_ref, zarr.Array):
            return str(self._zarr_ref.store_path)
        return str(self._zarr_ref)

    def _zarr(self) -> zarr.Array:
        if self._zarr_cache is None or (self._zarr_pid is not None and self._zarr_pid != os.getpid()):
            assert isinstance(self._zarr_ref, str)
            self._zarr_cache = _open_zarr_array(self._zarr_ref, self._storage_options)
            self._zarr_pid = os.getpid() if is_url(self._zarr_ref) else None
        return self._zarr_cache


class MaskSource(SampleSource):
    """An ordered collection of masks, read lazily, validated and ``label_map`` applied.

    Build one with :func:`open_source`. Listing, ids, pickling and the fingerprint are those of
    :class:`SampleSource`.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(2, 4, 4), dtype="uint8")
    >>> src = open_source(arr)
    >>> len(src), src.ids
    (2, ['000000', '000001'])
    >>> src.read(1).shape
    (4, 4)
    """

    def __init__(
        self,
        samples: Sequence[SampleRef],
        *,
        description: str,
        label_map: Mapping[int, int] | None = None,
        float_labels: bool = False,
        zarr_array: zarr.Array | str | None = None,
        problems: Sequence[BadSample] = (),
        storage_options: Mapping[str, Any] | None = None,
        remote_roots: Sequence[str] = (),
    ) -> None:
        super().__init__(
            samples, description=description, zarr_array=zarr_array, problems=problems,
            storage_options=storage_options, remote_roots=remote_roots,
        )
        self._label_map: LabelMap | None = normalize_label_map(label_map)
        self.float_labels = bool(float_labels)

    @property
    def label_map(self) -> dict[int, int] | None:
        """The ``{source label: destination label}`` map applied on read, or None."""
        return None if self._label_map is None else dict(self._label_map)

    def read(self, i: int) -> np.ndarray:
        """Read sample ``i`` as a validated, C-contiguous integer label array.

        Returns
        -------
        numpy.ndarray
            2-D (H, W) or 3-D (D, H, W), in the file's own integer dtype (bool becomes uint8),
            ``label_map`` applied.

        Raises
        ------
        WeightmapsError
            The file is missing, unreadable or corrupt, or the mask is not a non-empty, non-negative
            2-D/3-D integer array. The message starts with :meth:`describe`.
        """
        ref = self.samples[i]
        if ref.path is not None:
            return read_mask(
                ref.path, label_map=self._label_map, float_labels=self.float_labels,
                storage_options=self._storage_options,
            )
        return validate_mask(self._read_zarr_sample(i), self.describe(i), self._label_map, float_labels=self.float_labels)


class ImageSource(SampleSource):
    """An ordered collection of images, read lazily; the images of a :class:`MaskSource`.

    Build one with :func:`open_image_source`. Lists and pickles like a :class:`MaskSource`, but
    :meth:`read` returns the image as stored (any dtype, a channel axis allowed), without label
    validation or label map.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(2, 4, 4, 3), dtype="float32")
    >>> src = open_image_source(arr)
    >>> src.ids, src.read(1).shape
    (['000000', '000001'], (4, 4, 3))
    """

    @property
    def label_map(self) -> None:
        """Always None: images are never remapped (kept so either source answers the question)."""
        return None

    def read(self, i: int) -> np.ndarray:
        """Read image ``i``: :func:`~weightmaps.readers.read_image` for a file, else the raw sample.

        Raises
        ------
        WeightmapsError
            The file is missing, unreadable or corrupt. The message starts with :meth:`describe`.
        """
        ref = self.samples[i]
        if ref.path is not None:
            return read_image(ref.path, storage_options=self._storage_options)
        return np.ascontiguousarray(self._read_zarr_sample(i))


# --------------------------------------------------------------------------------------------------
# open_source, open_image_source
# --------------------------------------------------------------------------------------------------


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
    kind = dataclasses.replace(_MASKS, integer=False) if float_labels else _MASKS
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
    found = _checked(_discover(inputs, _IMAGES, options), "raise")
    return ImageSource(
        found.samples, description=found.description, zarr_array=found.zarr_array, storage_options=options,
        remote_roots=found.remote_roots,
    )


def _checked(found: _Found, on_problems: str) -> _Found:
    if found.problems and (on_problems == "raise" or not found.samples):
        raise BadInputError(found.problems, len(found.samples) + len(found.problems))
    return found


class _Found(NamedTuple):
    """What discovery found: the samples, a description, the zarr array if any, and the inputs it
    had to leave out (a dangling link, a list file's missing line, two files of one id)."""

    samples: list[SampleRef]
    description: str
    zarr_array: zarr.Array | str | None = None
    problems: tuple[BadSample, ...] = ()
    remote_roots: tuple[str, ...] = ()  # the source's remote_roots (see SampleSource)


def _discover(
    inputs: str | os.PathLike[str] | zarr.Array | Sequence[str | os.PathLike[str]], kind: _Kind,
    options: Mapping[str, Any] | None = None,
) -> _Found:
    if isinstance(inputs, zarr.Array):
        return _zarr_source(inputs, kind)
    if isinstance(inputs, (str, os.PathLike)):
        spec = os.fspath(inputs)
        if is_url(spec):
            return _remote_path_source(spec, kind, options)
        return _path_source(spec[len("file://"):] if spec.startswith("file://") else spec, kind, options)
    if isinstance(inputs, Iterable):
        paths = [remote_files.normalize_url(p) if is_url(p) else p for p in (os.fspath(p) for p in inputs)]
        if not paths:
            raise WeightmapsError(f"no {kind.noun} files: the input list is empty")
        good, problems = _checked_files(paths, kind, options)
        return _file_source(good, _common_parent(paths), f"list of {len(paths)} paths", problems)
    raise WeightmapsError(
        f"inputs: expected a directory, glob, list file, zarr array or list of paths; "
        f"got {type(inputs).__name__}"
    )


def _path_source(spec: str, kind: _Kind, options: Mapping[str, Any] | None = None) -> _Found:
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        node = _zarr_node_kind(path)
        if node == "array":
            return _zarr_source(path, kind)
        if node == "group":
            arrays = sorted(name for name, _ in zarr.open_group(path, mode="r").arrays())
            hint = ", ".join(os.path.join(spec, a) for a in arrays) or "none"
            raise WeightmapsError(f"{spec}: is a zarr group, not an array; its arrays: {hint}")
        files = list(_walk(path, kind.suffixes))
        if not files:
            suffixes = ", ".join(kind.suffixes)
            raise WeightmapsError(f"{spec}: no {kind.noun} files found (suffixes {suffixes})")
        good, problems = _checked_files(files, kind)
        return _file_source(good, path, spec, problems)
    if os.path.isfile(path):
        if file_suffix(path) in LIST_SUFFIXES:
            files, problems = _read_list_file(path, kind, options)
            return _file_source(files, _common_parent(files or [path]), spec, problems)
        _check_file(path, kind)
        return _file_source([path], os.path.dirname(os.path.abspath(path)), spec)
    if _GLOB_MAGIC & set(spec):
        matches = [m for m in glob.glob(path, recursive=True) if file_suffix(m) in kind.suffixes]
        # A dangling link matches too (it names a file that is gone): a bad input, not nothing.
        files = _each_directory_once(m for m in matches if os.path.isfile(m) or os.path.islink(m))
        if not files:
            raise WeightmapsError(f"{spec}: the glob matched no {kind.noun} files")
        good, problems = _checked_files(files, kind)
        return _file_source(good, _glob_root(path), spec, problems)
    raise WeightmapsError(f"{spec}: no such file or directory")


def _file_source(
    files: Sequence[str], root: str, description: str, problems: Sequence[BadSample] = (),
    remote_roots: tuple[str, ...] = (),
) -> _Found:
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
        by_id.setdefault(_strip_suffix(rel), []).append(full)
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
    return _Found(refs, description, problems=tuple(left_out), remote_roots=remote_roots)


def _checked_files(
    files: Sequence[str], kind: _Kind, options: Mapping[str, Any] | None = None
) -> tuple[list[str], list[BadSample]]:
    """The files that exist and have a suffix of ``kind``, and a bad input for each other one."""
    check = _file_checker(files, kind, options)
    good, problems = [], []
    for f in files:
        try:
            check(f)
        except WeightmapsError as exc:
            if is_url(f):
                problems.append(BadSample(_strip_suffix(posixpath.basename(f)), f, _reason(exc, f)))
            else:
                problems.append(BadSample(_strip_suffix(os.path.basename(f)), os.path.abspath(f), _reason(exc, f)))
        else:
            good.append(f)
    return good, problems


def _reason(exc: WeightmapsError, path: str) -> str:
    message = str(exc)
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def _zarr_source(array: zarr.Array | str, kind: _Kind, options: Mapping[str, Any] | None = None) -> _Found:
    arr = array if isinstance(array, zarr.Array) else _open_zarr_array(array, options)
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
    return _Found(refs, name, array)


def _zarr_node_kind(path: str) -> str | None:
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


def _open_zarr_array(path: str, options: Mapping[str, Any] | None = None) -> zarr.Array:
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


# Directory links, one rule for a directory input and a glob alike: followed, each real directory
# read once, by the first path that reaches it (shallowest, then in name order); loops are cut.


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


def _read_list_file(
    list_path: str, kind: _Kind, options: Mapping[str, Any] | None = None
) -> tuple[list[str], list[BadSample]]:
    """The files a list file names, and a bad input for each line naming none (all of them).

    A local or remote (URL) list file; its lines may be URLs, checked together (one listing of
    each folder they name) after the local ones."""
    remote_list = is_url(list_path)
    base = remote_files.url_parent(list_path) if remote_list else os.path.dirname(os.path.abspath(list_path))
    try:
        if remote_list:
            lines = remote_files.fetch(list_path, options).decode("utf-8").splitlines()
        else:
            with open(list_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WeightmapsError(f"{list_path}: cannot read the list file: {e}") from e
    named: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_url(entry):
            p = remote_files.normalize_url(entry)
        elif remote_list:
            p = remote_files.url_join(base, entry)
        else:
            p = os.path.join(base, os.path.expanduser(entry))
        named.append((lineno, p))
    check = _file_checker([p for _, p in named], kind, options)
    files, problems = [], []
    for lineno, p in named:
        try:
            check(p)
        except WeightmapsError as e:
            problems.append(BadSample(f"{list_path}:{lineno}", None, str(e)))  # "<list>:<line>: <file>: why"
            continue
        files.append(p)
    if not files and not problems:
        raise WeightmapsError(f"{list_path}: the list file names no {kind.noun} files")
    return files, problems


def _file_checker(files: Sequence[str], kind: _Kind, options: Mapping[str, Any] | None) -> Callable[[str], None]:
    """``check(f)`` for each of ``files``: :func:`_check_file`, or :func:`_check_url` from one
    round of listings of the URLs among them (not a request per file)."""
    urls = [f for f in files if is_url(f)]
    infos = remote_files.infos(urls, (), options) if urls else {}

    def check(f: str) -> None:
        if is_url(f):
            _check_url(f, kind, infos.get(f))
        else:
            _check_file(f, kind)

    return check


def _check_file(path: str, kind: _Kind) -> None:
    if os.path.islink(path) and not os.path.exists(path):
        raise WeightmapsError(f"{path}: a link to {os.readlink(path)}, which does not exist")
    if not os.path.exists(path):
        raise WeightmapsError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise WeightmapsError(f"{path}: not a file")
    if file_suffix(path) not in kind.suffixes:
        raise WeightmapsError(
            f"{path}: not {kind.a_noun} file (expected one of {', '.join(kind.suffixes)})"
        )


def _common_parent(paths: Sequence[str]) -> str:
    urls = [p for p in paths if is_url(p)]
    if not urls:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    if len(urls) < len(paths):
        raise WeightmapsError(
            f"{urls[0]} and {next(p for p in paths if not is_url(p))}: the inputs mix URLs and local "
            "paths; sample ids are relative to one root, so give them in one place"
        )
    schemes = {u.partition("://")[0] for u in urls}
    if len(schemes) > 1:
        raise WeightmapsError(f"the inputs mix protocols ({', '.join(sorted(schemes))}); give them in one place")
    scheme = schemes.pop()
    hosts = {u.partition("://")[2].split("/", 1)[0] for u in urls}
    if len(hosts) > 1:
        return f"{scheme}://"  # several buckets: ids start with the bucket
    folders = ["/" + remote_files.url_parent(u).partition("://")[2].partition("/")[2] for u in urls]
    common = posixpath.commonpath(folders).rstrip("/")
    return f"{scheme}://{hosts.pop()}{common}"


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    prefix: list[str] = []
    for part in parts:
        if _GLOB_MAGIC & set(part):
            break
        prefix.append(part)
    return str(Path(*prefix)) if prefix else "."


def _strip_suffix(rel: str) -> str:
    n = len(file_suffix(rel))
    return rel[:-n] if n else rel


# --------------------------------------------------------------------------------------------------
# Remote inputs (fsspec URLs)
# --------------------------------------------------------------------------------------------------


def _remote_path_source(spec: str, kind: _Kind, options: Mapping[str, Any] | None) -> _Found:
    """:func:`_path_source` of a URL: a glob, a file (list file or one mask), a zarr array, or a
    prefix listed recursively; the same ids and messages as the same input on disk."""
    magic = _HTTP_GLOB_MAGIC if spec.lower().startswith(("http://", "https://")) else _GLOB_MAGIC
    if magic & set(spec.partition("://")[2]):
        return _remote_glob_source(spec, kind, options)
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
            return _remote_file_source(spec, url, kind, options)
    node = _remote_zarr_node_kind(fs, key, url)
    if node == "array":
        return _zarr_source(url, kind, options)
    if node == "group":
        store = Location.of(url, options).zarr_store(read_only=True)
        arrays = sorted(name for name, _ in zarr.open_group(store, mode="r").arrays())
        hint = ", ".join(f"{url}/{a}" for a in arrays) or "none"
        raise WeightmapsError(f"{spec}: is a zarr group, not an array; its arrays: {hint}")
    with remote_errors(url):
        fs.invalidate_cache(key)
        found = fs.find(key, detail=True)
    if set(found) == {key}:  # the URL names a file
        return _remote_file_source(spec, url, kind, options)
    files = []
    for name, info in sorted(found.items()):
        rel = remote_files.under(name, key)
        if rel is None or info.get("type", "file") != "file" or file_suffix(rel) not in kind.suffixes:
            continue
        if not any(part.startswith(".") for part in rel.split("/")):  # hidden, as on disk
            files.append(f"{url}/{rel}")
    if not files:
        raise WeightmapsError(f"{spec}: no {kind.noun} files found (suffixes {', '.join(kind.suffixes)})")
    return _file_source(files, url, spec, remote_roots=(url,))


def _remote_file_source(spec: str, url: str, kind: _Kind, options: Mapping[str, Any] | None) -> _Found:
    """A URL naming one file: a list file, or a single mask (root: its folder)."""
    if file_suffix(url) in LIST_SUFFIXES:
        files, problems = _read_list_file(url, kind, options)
        return _file_source(files, _common_parent(files) if files else remote_files.url_parent(url), spec, problems)
    _check_url(url, kind, {"type": "file"})
    return _file_source([url], remote_files.url_parent(url), spec)


def _remote_glob_source(spec: str, kind: _Kind, options: Mapping[str, Any] | None) -> _Found:
    """A glob URL: its matches, ids relative to its non-magic prefix, hidden names skipped unless
    the pattern names them (as glob.glob does on disk)."""
    scheme, _, rest = spec.partition("://")
    parts = rest.split("/")
    prefix = []
    for part in parts:
        if _GLOB_MAGIC & set(part):
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
    return _file_source(files, root, spec, remote_roots=(root,))


def _remote_zarr_node_kind(fs: Any, key: str, url: str) -> str | None:
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


def _check_url(url: str, kind: _Kind, info: Mapping[str, Any] | None) -> None:
    """:func:`_check_file` of a URL, from its listing info (None: not listed)."""
    if info is None:
        raise WeightmapsError(f"{url}: no such file")
    if info.get("type", "file") != "file":
        raise WeightmapsError(f"{url}: not a file")
    if file_suffix(url) not in kind.suffixes:
        raise WeightmapsError(f"{url}: not {kind.a_noun} file (expected one of {', '.join(kind.suffixes)})")
