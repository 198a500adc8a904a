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
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import zarr

from weightmaps.errors import BadInputError, BadSample, WeightmapsError
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
        Absolute file path, or None for a zarr-array sample.
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
    """

    def __init__(
        self,
        samples: Sequence[SampleRef],
        *,
        description: str,
        zarr_array: zarr.Array | str | None = None,
        problems: Sequence[BadSample] = (),
    ) -> None:
        self.samples: list[SampleRef] = list(samples)
        self.description = description
        # Inputs discovery left out, each a bad input for the scan to report (or skip_bad to skip).
        self.problems: tuple[BadSample, ...] = tuple(problems)
        # A path (opened lazily, per process) or a zarr.Array handed to open_source.
        self._zarr_ref: zarr.Array | str | None = zarr_array
        self._zarr_cache: zarr.Array | None = (
            zarr_array if isinstance(zarr_array, zarr.Array) else None
        )

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

    def spacing(self, i: int) -> tuple[float, ...] | None:
        """Physical pixel spacing of sample ``i`` per array axis (NIfTI zooms), else None."""
        path = self.samples[i].path
        return None if path is None else read_spacing(path)

    def fingerprint(self) -> str:
        """A cheap change detector for the inputs (sha256 hex), not a content hash.

        Files: ids, sizes and modification times (ns). Zarr: path, shape, dtype and the array's
        metadata JSON. Rewriting a file changes the fingerprint; touching it does too; editing a
        zarr chunk in place does not.
        """
        h = hashlib.sha256()
        if self._zarr_ref is None:
            for ref in self.samples:
                assert ref.path is not None
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
        if self._zarr_cache is None:
            assert isinstance(self._zarr_ref, str)
            self._zarr_cache = _open_zarr_array(self._zarr_ref)
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
    ) -> None:
        super().__init__(samples, description=description, zarr_array=zarr_array, problems=problems)
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
            return read_mask(ref.path, label_map=self._label_map, float_labels=self.float_labels)
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
            return read_image(ref.path)
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
        - a list of paths (root: their common parent).
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

    Returns
    -------
    MaskSource
        Samples sorted by id.

    Raises
    ------
    WeightmapsError
        The input does not exist or holds no masks; BadInputError for left-out inputs (above).

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
    found = _checked(_discover(inputs, kind), on_problems)
    return MaskSource(
        found.samples,
        description=found.description,
        label_map=label_map,
        float_labels=float_labels,
        zarr_array=found.zarr_array,
        problems=found.problems,
    )


def open_image_source(
    inputs: str | os.PathLike[str] | zarr.Array | Sequence[str | os.PathLike[str]],
) -> ImageSource:
    """Collect the images named by ``inputs``, with the sample ids :func:`open_source` gives masks.

    Parameters
    ----------
    inputs
        The input kinds of :func:`open_source`, with the same roots and sample-id rules, so
        ``images/a/001.jpg`` has the id of ``masks/a/001.png``. Files are those with a suffix in
        :data:`~weightmaps.readers.IMAGE_SUFFIXES` (JPEG and BMP too); a zarr array may hold any
        dtype and have a channel axis: (N, H, W), (N, H, W, C), (N, C, H, W), (N, D, H, W) or 5-D.

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
    found = _checked(_discover(inputs, _IMAGES), "raise")
    return ImageSource(found.samples, description=found.description, zarr_array=found.zarr_array)


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


def _discover(
    inputs: str | os.PathLike[str] | zarr.Array | Sequence[str | os.PathLike[str]], kind: _Kind
) -> _Found:
    if isinstance(inputs, zarr.Array):
        return _zarr_source(inputs, kind)
    if isinstance(inputs, (str, os.PathLike)):
        return _path_source(os.fspath(inputs), kind)
    if isinstance(inputs, Iterable):
        paths = [os.fspath(p) for p in inputs]
        if not paths:
            raise WeightmapsError(f"no {kind.noun} files: the input list is empty")
        good, problems = _checked_files(paths, kind)
        return _file_source(good, _common_parent(paths), f"list of {len(paths)} paths", problems)
    raise WeightmapsError(
        f"inputs: expected a directory, glob, list file, zarr array or list of paths; "
        f"got {type(inputs).__name__}"
    )


def _path_source(spec: str, kind: _Kind) -> _Found:
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
            files, problems = _read_list_file(path, kind)
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


def _file_source(files: Sequence[str], root: str, description: str, problems: Sequence[BadSample] = ()) -> _Found:
    """The samples of ``files`` (ids relative to ``root``); files sharing an id are all left out,
    as bad inputs that name each other (which one is meant cannot be guessed)."""
    root = os.path.abspath(root)
    by_id: dict[str, list[str]] = {}
    for f in files:
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
    return _Found(refs, description, problems=tuple(left_out))


def _checked_files(files: Sequence[str], kind: _Kind) -> tuple[list[str], list[BadSample]]:
    """The files that exist and have a suffix of ``kind``, and a bad input for each other one."""
    good, problems = [], []
    for f in files:
        try:
            _check_file(f, kind)
        except WeightmapsError as exc:
            problems.append(BadSample(_strip_suffix(os.path.basename(f)), os.path.abspath(f), _reason(exc, f)))
        else:
            good.append(f)
    return good, problems


def _reason(exc: WeightmapsError, path: str) -> str:
    message = str(exc)
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def _zarr_source(array: zarr.Array | str, kind: _Kind) -> _Found:
    arr = array if isinstance(array, zarr.Array) else _open_zarr_array(array)
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


def _open_zarr_array(path: str) -> zarr.Array:
    try:
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


def _read_list_file(list_path: str, kind: _Kind) -> tuple[list[str], list[BadSample]]:
    """The files a list file names, and a bad input for each line naming none (all of them)."""
    base = os.path.dirname(os.path.abspath(list_path))
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WeightmapsError(f"{list_path}: cannot read the list file: {e}") from e
    files, problems = [], []
    for lineno, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = os.path.join(base, os.path.expanduser(entry))
        try:
            _check_file(p, kind)
        except WeightmapsError as e:
            problems.append(BadSample(f"{list_path}:{lineno}", None, str(e)))  # "<list>:<line>: <file>: why"
            continue
        files.append(p)
    if not files and not problems:
        raise WeightmapsError(f"{list_path}: the list file names no {kind.noun} files")
    return files, problems


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
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


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
