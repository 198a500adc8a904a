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

The package, bottom up (each module imports only those above it in this list):

- :mod:`~weightmaps.sources.zarr_array`: telling a zarr array from a folder of files, opening it;
- :mod:`~weightmaps.sources.base`: :class:`SampleRef` and the sources, what a worker reads with;
- :mod:`~weightmaps.sources.found`: what discovery finds, the kinds (masks, images), sample ids;
- :mod:`~weightmaps.sources.file_lists`: files named one by one (local or URLs), list files;
- :mod:`~weightmaps.sources.local`, :mod:`~weightmaps.sources.remote`: inputs on disk, behind URLs;
- :mod:`~weightmaps.sources.discover`: :func:`open_source`, :func:`open_image_source`.
"""

from __future__ import annotations

from weightmaps.sources.base import ImageSource, MaskSource, SampleRef, SampleSource
from weightmaps.sources.discover import open_image_source, open_source
from weightmaps.sources.found import LIST_SUFFIXES

__all__ = [
    "LIST_SUFFIXES",
    "ImageSource",
    "MaskSource",
    "SampleRef",
    "SampleSource",
    "open_image_source",
    "open_source",
]
