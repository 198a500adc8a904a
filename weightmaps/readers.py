"""Decoding one file: PNG/TIFF/NPY/NIfTI/JPEG/BMP readers, mask validation, label maps, digests.

:func:`read_mask` turns one mask file into a validated integer label array (``label_map``
applied); :func:`read_image` reads an image as stored. Every problem raises
:class:`~weightmaps.errors.WeightmapsError` whose message starts with the file it is about.

A file is a local path or an fsspec URL (``s3://``, ``gs://``, ``az://``, ``https://``, ...): a
remote file is fetched whole with one ``cat_file`` (a NIfTI header for :func:`read_spacing`: its
first bytes only) and decoded from memory, with the local file's checks and messages, the URL in
place of the path. The filesystem is opened once per process (see :mod:`weightmaps.location`).

This module knows nothing about how inputs are listed: :mod:`weightmaps.sources` lists the inputs
and calls these readers, never the other way round.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from weightmaps.errors import WeightmapsError
from weightmaps import remote_files
from weightmaps.location import is_url, remote_errors

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "LabelMap",
    "file_suffix",
    "mask_digest",
    "normalize_label_map",
    "read_image",
    "read_mask",
    "read_spacing",
    "validate_mask",
]

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".nii", ".nii.gz")
"""File suffixes (case-insensitive) recognised as masks."""

IMAGE_SUFFIXES = (*MASK_SUFFIXES, ".jpg", ".jpeg", ".bmp")
"""File suffixes :func:`read_image` reads."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
# A label below this bound is remapped through a lookup table; above it, by binary search.
_LUT_MAX_LABEL = 1 << 16
# Pillow modes that hold one integer label per pixel, and the dtype they are returned as.
_PIL_LABEL_MODES = {
    "L": np.uint8,
    "P": np.uint8,  # palette *indices*, not colours
    "1": np.uint8,  # bool -> 0/1
    "I": np.int32,
    "I;16": np.uint16,
    "I;16L": np.uint16,
    "I;16B": np.uint16,
    "I;16N": np.uint16,
}

LabelMap = tuple[tuple[int, int], ...]
"""A label map in canonical form: ``(source, destination)`` pairs sorted by source label."""


def file_suffix(path: str) -> str:
    """The lower-cased suffix that decides how ``path`` is read; ``.nii.gz`` counts as one.

    Examples
    --------
    >>> file_suffix("scans/Case_01.NII.GZ"), file_suffix("masks/a.png"), file_suffix("README")
    ('.nii.gz', '.png', '')
    """
    name = os.path.basename(path).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(name)[1]


# --------------------------------------------------------------------------------------------------
# Reading one file
# --------------------------------------------------------------------------------------------------


def read_mask(
    path: str | os.PathLike[str], *, label_map: Mapping[int, int] | LabelMap | None = None,
    float_labels: bool = False, storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Read one mask file as a validated integer label array.

    Formats, by suffix (case-insensitive):

    - PNG (Pillow): modes ``L`` and ``P`` (palette *indices*, not colours) as uint8, ``1`` as
      uint8 0/1, ``I;16*`` as uint16, ``I`` as int32. Colour or float modes (RGB, RGBA, LA, F, ...)
      are refused: convert them to a label image first.
    - TIFF (tifffile): one page is 2-D; several pages, or a 3-D series, a (D, H, W) volume.
      Float TIFFs are refused even when every value is integral: masks must be stored as integers.
      Multi-sample (RGB) TIFFs are refused.
    - NPY (numpy, ``allow_pickle=False``).
    - NIfTI ``.nii`` / ``.nii.gz`` (nibabel, the ``weightmaps[nifti]`` extra): returned in the
      file's array order, i.e. (x, y, z); :func:`read_spacing` gives the matching zooms.

    Parameters
    ----------
    path
        The mask file: a local path or an fsspec URL such as ``s3://bucket/masks/a.png``.
    label_map
        ``{source label: destination label}`` applied after reading; unmapped labels are kept.
    float_labels
        Accept a float mask (NIfTI from imaging tools often stores labels as floats) whose
        values are all whole numbers, as integers; any other value is refused, named.
    storage_options
        fsspec options of a URL's filesystem (e.g. ``{"anon": True}`` or ``{"endpoint_url":
        ...}`` for s3fs); JSON values. Ignored for a local path.

    Returns
    -------
    numpy.ndarray
        C-contiguous, 2-D or 3-D, in the file's integer dtype (bool becomes uint8), widened if a
        destination label of ``label_map`` needs it.

    Raises
    ------
    WeightmapsError
        ``f"{path}: <problem>"`` for a missing, unreadable, corrupt or truncated file, an
        unsupported format or mode, a non-integer dtype, negative labels, an empty array, or an
        array that is not 2-D or 3-D.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> p = tempfile.mkdtemp() + "/m.npy"
    >>> np.save(p, np.array([[0, 255], [255, 0]], dtype=np.uint8))
    >>> read_mask(p, label_map={255: 1})
    array([[0, 1],
           [1, 0]], dtype=uint8)
    """
    path = os.fspath(path)
    lm = normalize_label_map(label_map)
    arr = _load(path, mask=True, storage_options=storage_options)
    return validate_mask(arr, path, lm, float_labels=float_labels)


def read_image(path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Read an image file as a numpy array, any dtype, without label validation.

    PNG / JPEG / BMP come back (H, W) or (H, W, C) (palette images are expanded to RGB or RGBA);
    TIFF, NPY and NIfTI arrays as stored. ``path`` and ``storage_options`` as in :func:`read_mask`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> p = tempfile.mkdtemp() + "/img.png"
    >>> Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(p)
    >>> read_image(p).shape
    (4, 5, 3)
    """
    path = os.fspath(path)
    if file_suffix(path) not in IMAGE_SUFFIXES:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise WeightmapsError(f"{path}: unsupported image format (expected one of {suffixes})")
    return np.ascontiguousarray(_load(path, mask=False, storage_options=storage_options))


def read_spacing(path: str, *, storage_options: Mapping[str, Any] | None = None) -> tuple[float, ...] | None:
    """Physical pixel spacing per array axis from a NIfTI header (its zooms); None for other files.

    ``path`` and ``storage_options`` as in :func:`read_mask`; of a remote file only the header is
    fetched (a range request), not the volume.

    Raises
    ------
    WeightmapsError
        The NIfTI header cannot be read, or nibabel is not installed.

    Examples
    --------
    >>> read_spacing("masks/a.png") is None  # only NIfTI files carry a spacing
    True
    """
    if file_suffix(path) not in _NIFTI_SUFFIXES:
        return None
    nib = _nibabel(path)
    if is_url(path):
        return _remote_spacing(nib, path, storage_options)
    try:
        img = nib.load(path)
        zooms = img.header.get_zooms()[: len(img.shape)]
    except MemoryError:
        raise
    except Exception as e:
        raise WeightmapsError(f"{path}: cannot read the NIfTI header: {e}") from e
    # Zooms are float32 in the header; their shortest repr keeps 0.7 as 0.7 rather than 0.69999...
    return tuple(float(str(np.float32(z))) for z in zooms)


def _load(path: str, *, mask: bool, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Decode one file, local or remote (fetched whole, once); messages name ``path``."""
    suffix = file_suffix(path)
    source: str | io.BytesIO = path
    if is_url(path):
        if suffix not in IMAGE_SUFFIXES:
            # Nothing to decode: say what a local file would say without downloading it.
            fs, key = remote_files.filesystem(path, storage_options)
            with remote_errors(path):
                if not fs.isfile(key):
                    raise WeightmapsError(f"{path}: no such file")
            raise WeightmapsError(f"{path}: not a mask file (expected one of {', '.join(MASK_SUFFIXES)})")
        source = io.BytesIO(remote_files.fetch(path, storage_options))
    elif not os.path.isfile(path):
        raise WeightmapsError(f"{path}: no such file")
    nib = _nibabel(path) if suffix in _NIFTI_SUFFIXES else None
    try:
        if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            return _read_pil(source, path, mask=mask)
        if suffix in (".tif", ".tiff"):
            return _read_tiff(source, path, mask=mask)
        if suffix == ".npy":
            return np.load(source, allow_pickle=False)
        if nib is not None:
            if isinstance(source, str):
                return np.asanyarray(nib.load(path).dataobj)
            data = gzip.decompress(source.getvalue()) if suffix == ".nii.gz" else source.getvalue()
            return np.asanyarray(_nifti_class(nib, data).from_bytes(data).dataobj)
    except WeightmapsError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # each library has its own exceptions for corrupt files
        # A library that names its file names the buffer of a remote one: name the URL instead.
        raise WeightmapsError(f"{path}: cannot read: {str(e).replace(repr(source), repr(path))}") from e
    raise WeightmapsError(f"{path}: not a mask file (expected one of {', '.join(MASK_SUFFIXES)})")


def _read_pil(source: str | io.BytesIO, path: str, *, mask: bool) -> np.ndarray:
    """Decode ``source`` (the file ``path``, or its bytes); messages name ``path``."""
    from PIL import Image

    with Image.open(source) as img:
        img.load()
        if mask:
            return _pil_labels(img, path)
        decoded: Image.Image = img
        if img.mode == "P":
            decoded = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            decoded = img.convert("L" if img.mode == "1" else "RGB")
        arr = np.asarray(decoded)
        return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _pil_labels(img: Any, path: str) -> np.ndarray:
    """Integer labels from a loaded Pillow image, refusing colour and float modes."""
    dtype = _PIL_LABEL_MODES.get(img.mode)
    if dtype is None:
        raise WeightmapsError(
            f"{path}: PNG mode {img.mode} is not a label image; convert it to a single-channel "
            f"label image (mode L, P, I;16 or I), e.g. with a colour -> class lookup"
        )
    return np.asarray(img).astype(dtype, copy=False)


def _read_tiff(source: str | io.BytesIO, path: str, *, mask: bool) -> np.ndarray:
    """Decode ``source`` (the file ``path``, or its bytes); messages name ``path``."""
    import tifffile

    with tifffile.TiffFile(source) as tif:
        if len(tif.series) == 1:
            series = tif.series[0]
            if mask and "S" in series.axes:
                n = series.shape[series.axes.index("S")]
                raise WeightmapsError(
                    f"{path}: TIFF with {n} samples per pixel (RGB?) is not a label image; "
                    f"convert it to a single-channel integer label image"
                )
            return series.asarray()
        # Several series: pages written one by one form the slices of a volume.
        # tif.pages yields TiffPage objects (frames only when asked for), which know their samples.
        if mask and any(p.samplesperpixel > 1 for p in tif.pages):  # type: ignore[union-attr]
            raise WeightmapsError(
                f"{path}: TIFF pages with several samples per pixel are not a label image"
            )
        return tif.asarray(key=slice(None))


def _nibabel(path: str) -> Any:
    try:
        import nibabel
    except ImportError as e:
        raise WeightmapsError(
            f"{path}: reading NIfTI needs nibabel: pip install 'weightmaps[nifti]'"
        ) from e
    return nibabel


# --------------------------------------------------------------------------------------------------
# Remote files (fsspec URLs)
# --------------------------------------------------------------------------------------------------

# Bytes fetched for a NIfTI header: a NIfTI-2 header is 540 bytes; of a .nii.gz, enough compressed
# bytes to inflate that much (a header compresses poorly, so a few hundred bytes do).
_NIFTI_HEADER_BYTES = 540
_NIFTI_GZ_PREFIX = 16 * 1024


def _nifti_class(nib: Any, header: bytes) -> Any:
    """NIfTI-1 or NIfTI-2, from the header size the file starts with (either byte order)."""
    for size in (int.from_bytes(header[:4], "little"), int.from_bytes(header[:4], "big")):
        if size == nib.Nifti2Header.template_dtype.itemsize:
            return nib.Nifti2Image
        if size == nib.Nifti1Header.template_dtype.itemsize:
            return nib.Nifti1Image
    return nib.Nifti1Image  # not NIfTI: nibabel says what is wrong


def _remote_spacing(nib: Any, url: str, storage_options: Mapping[str, Any] | None) -> tuple[float, ...]:
    """:func:`read_spacing` of a URL, from the header bytes only (one range request)."""
    gz = file_suffix(url) == ".nii.gz"
    raw = remote_files.fetch(url, storage_options, start=0, end=_NIFTI_GZ_PREFIX if gz else _NIFTI_HEADER_BYTES)
    try:
        head = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(raw, _NIFTI_HEADER_BYTES) if gz else raw
        header_class = _nifti_class(nib, head).header_class
        header = header_class.from_fileobj(io.BytesIO(head[: header_class.template_dtype.itemsize]))
        zooms = header.get_zooms()[: len(header.get_data_shape())]
    except MemoryError:
        raise
    except Exception as e:
        raise WeightmapsError(f"{url}: cannot read the NIfTI header: {e}") from e
    return tuple(float(str(np.float32(z))) for z in zooms)



# --------------------------------------------------------------------------------------------------
# Validation and label maps
# --------------------------------------------------------------------------------------------------


def validate_mask(
    arr: np.ndarray, name: str, label_map: LabelMap | None = None, *, float_labels: bool = False
) -> np.ndarray:
    """Check a decoded mask and return it C-contiguous, native byte order, ``label_map`` applied.

    The checks of :func:`read_mask`, for an array that did not come from a file (a zarr sample).

    Parameters
    ----------
    arr
        The decoded labels.
    name
        What the array is, for messages: its file, or ``store[i] (id ...)``.
    label_map
        From :func:`normalize_label_map`, or None.
    float_labels
        Accept a float array whose values are all whole numbers (see :func:`read_mask`).

    Raises
    ------
    WeightmapsError
        ``f"{name}: <problem>"`` for a non-integer dtype, negative labels, an empty array, or an
        array that is not 2-D or 3-D.

    Examples
    --------
    >>> import numpy as np
    >>> validate_mask(np.array([[True, False]]), "m").dtype
    dtype('uint8')
    >>> validate_mask(np.zeros((0, 2), np.uint8), "store[3] (id 000003)")
    Traceback (most recent call last):
    ...
    weightmaps.errors.WeightmapsError: store[3] (id 000003): empty mask (shape (0, 2))
    """
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if float_labels and np.issubdtype(arr.dtype, np.floating) and arr.ndim in (2, 3) and arr.size:
        arr = _whole_numbers(arr, name)
    if not np.issubdtype(arr.dtype, np.integer):
        raise WeightmapsError(
            f"{name}: non-integer mask (dtype {arr.dtype}); store labels as integers"
            + ("" if float_labels else ", or accept whole-number floats with float_labels (--float-labels)")
        )
    if arr.ndim not in (2, 3):
        raise WeightmapsError(
            f"{name}: mask of shape {arr.shape} has {arr.ndim} dimensions; "
            f"expected 2-D (H, W) or 3-D (D, H, W)"
        )
    if arr.size == 0:
        raise WeightmapsError(f"{name}: empty mask (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    if label_map:
        arr = _apply_label_map(arr, label_map)
    if arr.dtype.kind == "i":
        low = int(arr.min())
        if low < 0:
            raise WeightmapsError(
                f"{name}: negative label {low}; labels must be >= 0 (remap it with label_map)"
            )
    return arr


def _whole_numbers(arr: np.ndarray, name: str) -> np.ndarray:
    """A float mask as integers, in the smallest integer dtype that holds its labels; the first
    value that is no whole number (or not finite) is refused by name and position."""
    whole = np.isfinite(arr) & (arr == np.round(arr))
    if not whole.all():
        where = tuple(int(i) for i in np.unravel_index(int(np.argmin(whole)), arr.shape))
        raise WeightmapsError(f"{name}: label {arr[where].item()!r} at {where} is not a whole number (float labels)")
    low, high = float(arr.min()), float(arr.max())
    if high > 2.0**53:
        raise WeightmapsError(f"{name}: label {high:g} is beyond the whole numbers a float holds exactly")
    dtype = np.result_type(np.min_scalar_type(int(low)), np.min_scalar_type(int(high)))
    return arr.astype(dtype)


def normalize_label_map(label_map: Mapping[int, int] | LabelMap | None) -> LabelMap | None:
    """Check a ``{source label: destination label}`` map and put it in canonical form.

    The canonical form is hashable and picklable, and its sorted source labels are what the
    binary-search remapping needs.

    Raises
    ------
    WeightmapsError
        A label is not an integer or not an int64, or a destination label is negative.

    Examples
    --------
    >>> normalize_label_map({255: 1, 7: 0})
    ((7, 0), (255, 1))
    >>> normalize_label_map({1: -1})
    Traceback (most recent call last):
    ...
    weightmaps.errors.WeightmapsError: label_map: 1 -> -1: destination labels must be >= 0
    """
    if label_map is None:
        return None
    items = label_map.items() if isinstance(label_map, Mapping) else label_map
    out = []
    for src, dst in items:
        if not _is_int(src) or not _is_int(dst):
            raise WeightmapsError(f"label_map: {src!r} -> {dst!r}: labels must be integers")
        if dst < 0:
            raise WeightmapsError(f"label_map: {src} -> {dst}: destination labels must be >= 0")
        # The remapping runs in int64 (source labels as search keys, destinations in the mask's
        # dtype widened, at most int64): a label beyond it once leaked an OverflowError.
        if not (_INT64_MIN <= src <= _INT64_MAX and dst <= _INT64_MAX):
            raise WeightmapsError(
                f"label_map: {src} -> {dst}: labels must lie in [{_INT64_MIN}, {_INT64_MAX}] (int64), "
                f"destination labels in [0, {_INT64_MAX}]"
            )
        out.append((int(src), int(dst)))
    return tuple(sorted(out))


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _map_dtype(dtype: np.dtype, label_map: LabelMap) -> np.dtype:
    """The input dtype, widened so the largest destination label fits."""
    top = max(dst for _, dst in label_map)
    out = np.promote_types(dtype, np.min_scalar_type(top))
    return out if out.kind in "iu" else np.dtype(np.int64)


def _apply_label_map(arr: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """Remap labels: a lookup table for small non-negative labels, else binary search."""
    if arr.dtype.itemsize <= 2 and arr.dtype.kind == "u":
        return _map_labels_lut(arr, label_map, 1 << (8 * arr.dtype.itemsize))
    low, high = int(arr.min()), int(arr.max())
    if low >= 0 and high < _LUT_MAX_LABEL:
        return _map_labels_lut(arr, label_map, high + 1)
    return _map_labels_search(arr, label_map)


def _map_labels_lut(arr: np.ndarray, label_map: LabelMap, size: int) -> np.ndarray:
    """Fast path: ``lut[arr]``; requires ``0 <= arr < size``."""
    lut = np.arange(size, dtype=_map_dtype(arr.dtype, label_map))
    for src, dst in label_map:
        if 0 <= src < size:
            lut[src] = dst
    return lut[arr]


def _map_labels_search(arr: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """General path: binary search of every label among the (sorted) source labels."""
    out = arr.astype(_map_dtype(arr.dtype, label_map))
    keys = np.array([s for s, _ in label_map], dtype=np.int64)
    values = np.array([d for _, d in label_map], dtype=out.dtype)
    if arr.dtype == np.uint64:  # int64 keys cannot hold every uint64 label
        keep = (keys >= 0)
        keys, values = keys[keep].astype(np.uint64), values[keep]
    if keys.size == 0:
        return out
    idx = np.searchsorted(keys, arr).clip(max=keys.size - 1)
    hit = keys[idx] == arr
    out[hit] = values[idx[hit]]
    return out


# --------------------------------------------------------------------------------------------------
# Digest
# --------------------------------------------------------------------------------------------------


def mask_digest(labels: np.ndarray) -> str:
    """A 16-hex-character content digest of a label array: blake2b over shape, dtype and bytes.

    Examples
    --------
    >>> import numpy as np
    >>> mask_digest(np.zeros((2, 2), np.uint8)) == mask_digest(np.zeros((2, 2), np.uint16))
    False
    >>> len(mask_digest(np.zeros((2, 2), np.uint8)))
    16
    """
    a = np.ascontiguousarray(labels)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{tuple(a.shape)}|{a.dtype.str}|".encode())
    if a.size:
        h.update(a.data.cast("B"))
    return h.hexdigest()
