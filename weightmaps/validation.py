"""Argument checks shared by the engine: each failure is a WeightmapsError naming the problem."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from weightmaps.backend import array_module
from weightmaps.errors import WeightmapsError

__all__ = ["check_labels", "check_sigma", "check_spacing", "check_connectivity", "label_range", "sample_ndim"]


def sample_ndim(labels: Any, batch: bool) -> int:
    """Dimensionality of one sample: 2 or 3, after the batch axis when ``batch``."""
    ndim = labels.ndim - 1 if batch else labels.ndim
    if ndim not in (2, 3):
        what = f"a batch of {ndim}-D samples (shape {tuple(labels.shape)})" if batch else f"a {labels.ndim}-D array"
        hint = "" if batch else "; a stack of 2-D masks is a batch: pass batch=True"
        raise WeightmapsError(f"labels must be 2-D or 3-D per sample, got {what}{hint}")
    return ndim


def check_labels(
    labels: Any, *, ndims: tuple[int, ...] | None = (2, 3), batch: bool = False, values: bool = True
) -> None:
    """Labels are a non-empty integer (or bool) array with no negative value.

    Float arrays are refused even when their values are integral: a float mask usually means
    an interpolated or normalised image was passed by mistake, and NaN has no label.
    ``values=False`` checks the dtype and shape only: the values are then the caller's to check
    (on a GPU each reading of a value waits for the device; see :func:`label_range`).
    """
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iub":
        raise WeightmapsError(
            f"labels must be an integer array, got dtype {dtype}"
            + (" (NaN or fractional values are not labels; convert with .astype(int) if they are integral)"
               if dtype.kind == "f" else "")
        )
    if ndims is not None:
        sample_ndim(labels, batch)
    if labels.size == 0:
        raise WeightmapsError(f"labels are empty (shape {tuple(labels.shape)})")
    if values and dtype.kind == "i":
        low = int(labels.min())
        if low < 0:
            raise WeightmapsError(f"labels must be >= 0, found label {low}")


def label_range(labels: Any) -> tuple[int, int]:
    """The smallest and the largest label, read from the device in one transfer."""
    if np.dtype(labels.dtype).kind != "i":  # unsigned or bool: the minimum cannot be negative
        return 0, int(labels.max())
    if isinstance(labels, np.ndarray):
        return int(labels.min()), int(labels.max())
    low, high = array_module(labels).stack((labels.min(), labels.max())).tolist()
    return int(low), int(high)


def check_sigma(sigma: Any) -> float:
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise WeightmapsError(f"sigma must be a number > 0, got {sigma!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise WeightmapsError(f"sigma must be a finite number > 0, got {sigma!r}")
    return value


def check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Per-axis pixel spacing in array-axis order; a scalar applies to every axis."""
    if spacing is None:
        return (1.0,) * ndim
    values: tuple[Any, ...] = (spacing,) * ndim if np.isscalar(spacing) else tuple(spacing)  # type: ignore[arg-type]
    if len(values) != ndim:
        raise WeightmapsError(f"spacing must have one value per axis ({ndim}), got {len(values)}: {values}")
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise WeightmapsError(f"spacing must be numbers, got {values!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in floats):
        raise WeightmapsError(f"spacing values must be finite and > 0, got {floats}")
    return floats


def check_connectivity(connectivity: Any, ndim: int) -> int:
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)) or not 1 <= connectivity <= ndim:
        raise WeightmapsError(
            f"connectivity must be an integer from 1 (face neighbours) to {ndim} (all neighbours), got {connectivity!r}"
        )
    return int(connectivity)
