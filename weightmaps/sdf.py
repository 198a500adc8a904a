"""Signed distance maps per class, for boundary losses (Kervadec et al. 2019).

For a class k present in a mask, outside k the distance to the nearest pixel of k, inside k
−(the distance to the nearest pixel outside k − 1); 0 everywhere for a class that is absent (or
that covers every pixel: there is no boundary to learn). This is Kervadec et al.'s
``one_hot2dist`` with ``resolution`` = ``spacing``, their −1 included (so the pixels of k on its
boundary read 0 and the ones just outside read one pixel's spacing). That −1 is one unit of
``spacing``, not one pixel: with a spacing below 1 the boundary pixels of k read 1 − spacing > 0
(the published definition, kept so that losses tuned on it transfer). Ignore-label pixels are 0 in
every channel and count as "not k" for the distances of the other pixels.

Computed from the whole mask, once: a crop's signed map is wrong near the crop's border.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightmaps.arrays import LabelArray, is_cupy_array, to_numpy
from weightmaps.backend import Backend, backend_for
from weightmaps.engine import OUTPUT_DTYPES
from weightmaps.errors import WeightmapsError
from weightmaps.precision import transform_units
from weightmaps.transforms import edge_distance
from weightmaps.validation import (
    MAX_SDF_CLASSES,
    check_distances_representable,
    check_labels,
    check_spacing,
    sample_ndim,
)

__all__ = ["signed_distance"]


def signed_distance(
    labels: LabelArray,
    *,
    num_classes: int,
    spacing: Any = None,
    ignore_index: int | None = None,
    dtype: str = "float32",
    device: str | Backend = "auto",
    batch: bool = False,
) -> Any:
    """One signed distance map per class: shape ``(num_classes, *labels.shape)``.

    Parameters
    ----------
    labels : array
        Integer labels in ``[0, num_classes)`` (the ignore label excepted), 2-D or 3-D, or a batch
        of them with ``batch=True`` (the result is then ``(N, num_classes, ...)``).
    num_classes : int
        Channels of the result.
    spacing : float or sequence of float, optional
        Pixel size per axis; distances are in its units.
    ignore_index : int, optional
        Pixels with this label are 0 in every channel.
    dtype : {"float32", "float16"}
    device : {"auto", "cuda", "cpu", "scipy"} or Backend

    Examples
    --------
    >>> import numpy as np
    >>> signed_distance(np.array([[0, 0, 1, 1, 1]]), num_classes=2, device="cpu")[1].tolist()
    [[2.0, 1.0, 0.0, -1.0, -2.0]]
    """
    if (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
            or not 1 <= num_classes <= MAX_SDF_CLASSES):
        raise WeightmapsError(
            f"num_classes must be an integer from 1 to {MAX_SDF_CLASSES} (one channel per class), got {num_classes!r}"
        )
    if str(np.dtype(dtype)) not in OUTPUT_DTYPES:
        raise WeightmapsError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    labels = labels if is_cupy_array(labels) else np.asarray(labels)
    check_labels(labels, batch=batch)
    backend = backend_for(labels, device)
    xp = backend.xp
    data = backend.asarray(labels)
    spacing = check_spacing(spacing, sample_ndim(data, batch))
    check_distances_representable(spacing, str(np.dtype(dtype)))  # below the dtype's normal range: refused
    samples = data if batch else data[None]
    present = [[int(v) for v in to_numpy(xp.unique(sample))] for sample in samples]
    outside = sorted({v for labels_here in present for v in labels_here if v >= num_classes and v != ignore_index})
    if outside:
        raise WeightmapsError(
            f"label(s) {outside} >= num_classes={num_classes}"
            + (f" (ignore_index is {ignore_index})" if ignore_index is not None else "")
        )
    out = xp.zeros((len(samples), num_classes, *samples.shape[1:]), dtype=dtype)
    # Every (sample, class) pair with a boundary: its mask and its complement, transformed as one
    # stack (on a GPU a few stacked calls instead of 2·C per sample).
    pairs: list[tuple[int, int, Any]] = []
    masks: list[Any] = []
    for i in range(len(samples)):
        for k in present[i]:
            if k == ignore_index:
                continue
            inside = samples[i] == k
            if bool(inside.all()):
                continue  # no pixel outside k: no boundary, 0 everywhere
            pairs.append((i, k, inside))
            masks.extend((inside, ~inside))
    largest = 0.0
    if masks:
        # d² on a grid where the float32 transform is exact (weightmaps.precision); d, the −1 and
        # the sign in float64, rounded once: 1 − d in float32 cancelled, 3.5 ulp at spacing 0.8.
        units, scale = transform_units(spacing)
        squared = edge_distance(backend, xp.stack(masks), units, batch=True, squared=True, exact=True)
        kept = (samples != ignore_index) if ignore_index is not None else None
        for j, (i, k, inside) in enumerate(pairs):
            to_k, to_outside = (xp.sqrt(squared[2 * j + o].astype(np.float64)) * scale for o in (0, 1))
            signed = xp.where(inside, 1.0 - to_outside, to_k)
            if kept is not None:
                signed *= kept[i]
            if dtype == "float16":  # (a read of the device: only where it can refuse)
                largest = max(largest, float(xp.abs(signed).max()))
            with np.errstate(over="ignore"):  # refused below, naming the value
                out[i, k] = signed
    if dtype == "float16" and largest > float(np.finfo(np.float16).max):
        raise WeightmapsError(f"signed distances up to {largest:g} do not fit float16; store float32")
    result = out if batch else out[0]
    return result if is_cupy_array(labels) else to_numpy(result)
