"""Argument checks shared by the engine: each failure is a WeightmapsError naming the problem."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weightmaps.backend import array_module
from weightmaps.errors import WeightmapsError

__all__ = [
    "check_connectivity",
    "check_label_options",
    "check_labels",
    "check_sigma",
    "check_spacing",
    "check_weights_fit",
    "check_weights_representable",
    "label_range",
    "sample_ndim",
]


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


# No real pixel is a million times longer than it is wide; beyond that the transforms' float32
# arithmetic (edt's included) overflows and returns NaN.
MAX_SPACING_RATIO = 2.0**20


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
    if max(floats) / min(floats) > MAX_SPACING_RATIO:
        raise WeightmapsError(
            f"spacing values differ by more than a factor {MAX_SPACING_RATIO:g}: {floats}; "
            "the distance transforms' float32 arithmetic cannot honour that (were the units mixed?)"
        )
    return floats


def check_connectivity(connectivity: Any, ndim: int) -> int:
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)) or not 1 <= connectivity <= ndim:
        raise WeightmapsError(
            f"connectivity must be an integer from 1 (face neighbours) to {ndim} (all neighbours), got {connectivity!r}"
        )
    return int(connectivity)


def check_weights_fit(class_weights: Mapping[int, float], dtype: str, headroom: float = 0.0) -> None:
    """Every class weight plus ``headroom`` (the largest value of a map) fits the output dtype.

    δ ≤ 1, so a paper's map is at most its largest weight; a U-Net map adds up to w0 (the
    ``headroom``). float16 holds up to 65504: a rare class's balanced weight of 1e5 would be
    written as inf.
    """
    # The kernel's lookup table is float32 whatever the output: a weight must fit both.
    limit = min(float(np.finfo(dtype).max), float(np.finfo(np.float32).max))
    for label, weight in class_weights.items():
        if weight + headroom > limit:
            plus = f" + w0 {headroom:g}" if headroom else ""
            raise WeightmapsError(
                f"class {label}'s weight {weight:g}{plus} does not fit {dtype} (largest {limit:g}): its pixels "
                f"would be inf; {'store float32 or ' if dtype == 'float16' else ''}cap the weights with "
                "max_weight (--max-weight)"
            )


def check_weights_representable(
    class_weights: Mapping[int, float], sigma: float, spacing: Sequence[float] | None,
    shapes: Sequence[Sequence[int]], dtype: str,
) -> None:
    """Refuse a σ so large that every weight of every map would round to 0 in ``dtype``.

    The farthest a pixel can be from an edge is its map's diagonal; δ there bounds every δ.
    """
    largest_phi = max(class_weights.values())
    diagonal = max(
        math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing or (1.0,) * len(shape), strict=True)))
        for shape in shapes
    )
    delta = -math.expm1(-((diagonal / sigma) ** 2) / 2.0)
    if float(np.asarray(largest_phi * delta, dtype=dtype)) == 0.0:
        raise WeightmapsError(
            f"sigma {sigma:g} is so large that every weight rounds to 0 in {dtype}: no pixel is more than "
            f"{diagonal:g} from an edge, so δ ≤ {delta:.3g} and φ·δ ≤ {largest_phi * delta:.3g}; "
            "sigma is in spacing units (pixels by default)"
        )


def check_label_options(
    ignore_index: int | None, label_map: Mapping[int, int] | None, num_classes: int | None
) -> None:
    """The label-related options, checked together before anything is read or written."""
    for name, value in (("ignore_index", ignore_index), ("num_classes", num_classes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise WeightmapsError(f"{name} must be an integer, got {value!r}")
    if ignore_index is not None and ignore_index < 0:
        raise WeightmapsError(f"ignore_index must be >= 0 (labels are), got {ignore_index}")
    if num_classes is not None and num_classes < 1:
        raise WeightmapsError(f"num_classes must be >= 1, got {num_classes}")
    if label_map and ignore_index is not None and ignore_index in label_map:
        target = label_map[ignore_index]
        raise WeightmapsError(
            f"label_map maps the ignore label {ignore_index} to {target}, so no pixel would be ignored; "
            f"ignore {target} instead, or leave {ignore_index} out of the label map"
        )


def check_unet_parameters(w0: Any, tolerance: Any) -> tuple[float, float]:
    """The U-Net map's w0 (a finite number >= 0) and tolerance (in (0, 1)), as floats."""
    try:
        w0, tolerance = float(w0), float(tolerance)
    except (TypeError, ValueError):
        raise WeightmapsError(f"w0 and tolerance must be numbers, got {w0!r} and {tolerance!r}") from None
    if not (math.isfinite(w0) and w0 >= 0):
        raise WeightmapsError(f"w0 must be a finite number >= 0, got {w0!r}")
    if not 0 < tolerance < 1:
        raise WeightmapsError(f"tolerance must lie in (0, 1), got {tolerance!r}")
    return w0, tolerance


def check_distances_fit(shapes: Sequence[Sequence[int]], spacing: Sequence[float] | None, dtype: str) -> None:
    """No distance of a map of these shapes overflows ``dtype`` (a mask's diagonal bounds them all)."""
    diagonal = max(
        math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing or (1.0,) * len(shape), strict=True)))
        for shape in shapes
    )
    limit = float(np.finfo(dtype).max)
    if diagonal > limit:
        raise WeightmapsError(
            f"distances up to {diagonal:g} (a mask's diagonal in spacing units) do not fit {dtype} "
            f"(largest {limit:g}): store float32"
        )
