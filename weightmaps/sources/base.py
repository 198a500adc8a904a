"""The samples and the sources that read them: SampleRef, SampleSource, MaskSource, ImageSource.

A source is an ordered, picklable list of samples. It holds paths and options only; files are
read (and a zarr array is opened) lazily, in whichever process calls :meth:`SampleSource.read`,
so a source pickles cheaply to worker processes and Dask workers. Decoding a file is
:mod:`weightmaps.readers`' job. Cut from the discovery (the rest of :mod:`weightmaps.sources`):
this is what every worker unpickles and reads with, and it needs nothing of how the inputs were
found; :func:`~weightmaps.sources.open_source` and
:func:`~weightmaps.sources.open_image_source` build these.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from weightmaps import remote_files
from weightmaps.errors import BadSample, WeightmapsError
from weightmaps.location import freeze_options, is_url
from weightmaps.readers import (
    LabelMap,
    normalize_label_map,
    read_image,
    read_mask,
    read_spacing,
    validate_mask,
)
from weightmaps.sources.zarr_array import open_zarr_array

__all__ = ["ImageSource", "MaskSource", "SampleRef", "SampleSource"]


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
            self._zarr_cache = open_zarr_array(self._zarr_ref, self._storage_options)
            self._zarr_pid = os.getpid() if is_url(self._zarr_ref) else None
        return self._zarr_cache


class MaskSource(SampleSource):
    """An ordered collection of masks, read lazily, validated and ``label_map`` applied.

    Build one with :func:`~weightmaps.sources.open_source`. Listing, ids, pickling and the
    fingerprint are those of :class:`SampleSource`.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from weightmaps.sources import open_source
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

    Build one with :func:`~weightmaps.sources.open_image_source`. Lists and pickles like a
    :class:`MaskSource`, but :meth:`read` returns the image as stored (any dtype, a channel axis
    allowed), without label validation or label map.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from weightmaps.sources import open_image_source
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

