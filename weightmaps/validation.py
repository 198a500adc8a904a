"""Argument checks shared by the engine: each failure is a WeightmapsError naming the problem."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from weightmaps.arrays import LabelArray, array_module
from weightmaps.errors import WeightmapsError

__all__ = [
    "check_class_weights_normal",
    "check_connectivity",
    "check_distances_fit",
    "check_distances_representable",
    "check_label_options",
    "check_labels",
    "check_sigma",
    "check_spacing",
    "check_weights_fit",
    "check_weights_representable",
    "label_range",
    "sample_ndim",
]


def sample_ndim(labels: LabelArray, batch: bool) -> int:
    """Dimensionality of one sample: 2 or 3, after the batch axis when ``batch``."""
    ndim = labels.ndim - 1 if batch else labels.ndim
    if ndim not in (2, 3):
        what = f"a batch of {ndim}-D samples (shape {tuple(labels.shape)})" if batch else f"a {labels.ndim}-D array"
        hint = "" if batch else "; a stack of 2-D masks is a batch: pass batch=True"
        raise WeightmapsError(f"labels must be 2-D or 3-D per sample, got {what}{hint}")
    return ndim


def check_labels(
    labels: LabelArray, *, ndims: tuple[int, ...] | None = (2, 3), batch: bool = False, values: bool = True
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


def label_range(labels: LabelArray) -> tuple[int, int]:
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


# The largest label any mask can hold (uint64), and so the largest ignore label.
MAX_LABEL = int(np.iinfo(np.uint64).max)
# The smallest U-Net tolerance (see check_unet_parameters).
MIN_TOLERANCE = 1e-300
# An sdf map holds a channel per class: at most this many (a map is num_classes × its mask, so
# 65536 channels of a 256² mask are already 16 GiB; a larger count is a typo, not a dataset).
MAX_SDF_CLASSES = 1 << 16

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
    # The table and the maths are float64, but no map is wider than float32 (the one rounding goes
    # to the map's dtype): a weight must fit that dtype and float32.
    limit = min(float(np.finfo(dtype).max), float(np.finfo(np.float32).max))
    for label, weight in class_weights.items():
        if weight + headroom > limit:
            plus = f" + w0 {headroom:g}" if headroom else ""
            raise WeightmapsError(
                f"class {label}'s weight {weight:g}{plus} does not fit {dtype} (largest {limit:g}): its pixels "
                f"would be inf; {'store float32 or ' if dtype == 'float16' else ''}cap the weights with "
                "max_weight (--max-weight)"
            )


def _diagonal(shapes: Sequence[Sequence[int]], spacing: Sequence[float] | None) -> float:
    """The longest diagonal of these shapes in spacing units: no distance of their maps is longer.

    ``math.hypot`` neither overflows nor underflows on the way (a spacing of 1e300 or 1e-300 once
    raised OverflowError, or read 0, in ``sqrt(sum(x ** 2))``); inf where the diagonal itself is.
    """
    return max(
        math.hypot(*(n * s for n, s in zip(shape, spacing or (1.0,) * len(shape), strict=True))) for shape in shapes
    )


def _delta(distance: float, sigma: float) -> float:
    """δ = 1 − exp(−d²/2σ²) in float64 without overflow: a huge d/σ gives 1, a tiny one 0 (or more)."""
    ratio = distance / sigma  # inf when d ≫ σ: floats overflow to inf, only ** raises
    return -math.expm1(-(ratio * ratio) / 2.0)


def _tiny(dtype: str) -> float:
    """The smallest positive normal number of ``dtype``: below it a float keeps fewer significant bits."""
    return float(np.finfo(dtype).tiny)


def check_weights_representable(
    class_weights: Mapping[int, float], sigma: float, spacing: Sequence[float] | None,
    shapes: Sequence[Sequence[int]], dtype: str, labels: Collection[int] | None = None,
) -> None:
    """Refuse a σ so large that a map's weights leave what ``dtype`` holds to its precision.

    The farthest a pixel can be from an edge is its map's diagonal: δ there bounds every δ, and if
    even φ·δ there rounds to 0, every weight does. The nearest a pixel off the edges can be is
    the smallest spacing: the smallest nonzero weight is at least φ_min·δ(min spacing), and that
    must be a normal number of ``dtype`` (float16: ≥ 2⁻¹⁴ ≈ 6.1e-5, float32: ≥ 1.2e-38): a
    subnormal keeps fewer significant bits (a float16 weight of 1e-6 may be 3 % off, one below
    3e-8 reads 0, which is the ignore label's weight). ``labels`` (the classes in the masks)
    limits φ_min to the classes a map can hold; None: every class of ``class_weights``.
    """
    nonzero = {c: abs(w) for c, w in class_weights.items() if w != 0 and (labels is None or c in labels)}
    check_class_weights_normal(nonzero, dtype)  # first: a tiny weight (or max_weight) is no σ's fault
    largest_phi = max(class_weights.values())
    diagonal = _diagonal(shapes, spacing)
    delta = _delta(diagonal, sigma)
    if float(np.asarray(largest_phi * delta, dtype=dtype)) == 0.0:
        raise WeightmapsError(
            f"sigma {sigma:g} is so large that every weight rounds to 0 in {dtype}: no pixel is more than "
            f"{diagonal:g} from an edge, so δ ≤ {delta:.3g} and φ·δ ≤ {largest_phi * delta:.3g}; "
            "sigma is in spacing units (pixels by default)"
        )
    if not nonzero:
        return
    label, phi = min(nonzero.items(), key=lambda item: item[1])
    tiny = _tiny(dtype)
    nearest = min(spacing) if spacing else 1.0
    smallest = phi * _delta(nearest, sigma)
    if smallest >= tiny:
        return
    # δ(s) ≥ tiny/φ  ⟺  s²/2σ² ≥ −ln(1 − tiny/φ): the largest σ for which every weight is normal.
    largest_sigma = nearest / math.sqrt(2.0 * -math.log1p(-tiny / phi))
    raise WeightmapsError(
        f"sigma {sigma:g} is too large for {dtype} maps: the weights next to the edges, class {label}'s "
        f"φ {phi:.3g} × δ at the smallest spacing {nearest:g} = {smallest:.3g}, fall below {dtype}'s smallest "
        f"normal number {tiny:.3g}, where it keeps fewer significant bits (or rounds them to 0, the ignore "
        f"label's weight); sigma at most {largest_sigma:.6g} keeps every weight to {dtype}'s precision"
        + (", or store float32 (--dtype float32)" if dtype == "float16" else "")
    )


def check_class_weights_normal(class_weights: Mapping[int, float], dtype: str) -> None:
    """Every nonzero class weight is at least ``dtype``'s smallest normal number (see above)."""
    tiny = _tiny(dtype)
    for label, weight in class_weights.items():
        if weight != 0 and abs(weight) < tiny:
            raise WeightmapsError(
                f"class {label}'s weight {weight:.3g} is below {dtype}'s smallest normal number {tiny:.3g}: "
                f"its pixels' weights would lose their precision or read 0 (the ignore label's weight); "
                "give it a larger weight (or a larger max_weight (--max-weight))"
                + (", or store float32 (--dtype float32)" if dtype == "float16" else "")
            )


def check_label_options(
    ignore_index: int | None, label_map: Mapping[int, int] | None, num_classes: int | None
) -> None:
    """The label-related options, checked together before anything is read or written."""
    for name, value in (("ignore_index", ignore_index), ("num_classes", num_classes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise WeightmapsError(f"{name} must be an integer, got {value!r}")
    # Labels are integers of at most 64 bits, unsigned at most: a larger ignore label once leaked
    # "OverflowError: Python int too large to convert to C long" from the scan.
    if ignore_index is not None and not 0 <= ignore_index <= MAX_LABEL:
        raise WeightmapsError(
            f"ignore_index must be >= 0 and <= {MAX_LABEL} (labels are integers >= 0 of at most 64 bits), "
            f"got {ignore_index}"
        )
    if num_classes is not None and not 1 <= num_classes <= MAX_LABEL + 1:
        raise WeightmapsError(
            f"num_classes (--num-classes) must be >= 1 and <= 2**64 (labels are < num_classes), got {num_classes}"
        )
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
    if not MIN_TOLERANCE <= tolerance < 1:
        # Below the smallest normal double 1/tolerance overflows: the windows' reach was inf and a
        # shard raised OverflowError after the store existed. 1e-300 is far from that and far
        # below any accuracy a float32 map holds (its weights round to 6e-8 of themselves).
        raise WeightmapsError(f"tolerance must lie in [{MIN_TOLERANCE:g}, 1), got {tolerance!r}")
    return w0, tolerance


def check_distances_representable(spacing: Sequence[float] | None, dtype: str) -> None:
    """Every nonzero distance of a map in these units is a normal number of ``dtype``.

    A distance that is not 0 (an edge) is at least the smallest spacing (the nearest pixel
    centre); below ``dtype``'s smallest normal number (float16: 2⁻¹⁴ ≈ 6.1e-5, float32:
    1.2e-38) it loses significant bits: at a spacing of 1e-7 (metres) float16 distances were off
    by 19 %, at 1e-8 a quarter of them read 0, and the weights derived from them by up to 6.8. At
    or above it, a float16 distance is within 2⁻¹¹ of d and a weight derived from it within
    φ · 2⁻¹⁰ / e of the exact one (README, "What a float16 store holds"). The signed distances of ``sdf``
    maps are distances too.
    """
    if not spacing:
        return
    nearest, tiny = min(spacing), _tiny(dtype)
    if nearest < tiny:
        raise WeightmapsError(
            f"spacing {min(spacing):g} is too small for {dtype} distances: every distance off the edges is at "
            f"least the smallest spacing, and below {tiny:.3g} ({dtype}'s smallest normal number) {dtype} keeps "
            f"fewer significant bits, down to 0; the smallest spacing {dtype} holds to its precision is {tiny:.3g}: "
            "give spacing (--spacing) in a smaller unit, so that its numbers are larger (µm rather than m)"
            + (", or store float32 (--dtype float32)" if dtype == "float16" else "")
        )


def check_distances_fit(shapes: Sequence[Sequence[int]], spacing: Sequence[float] | None, dtype: str) -> None:
    """No distance of a map of these shapes overflows ``dtype`` (a mask's diagonal bounds them all)."""
    diagonal = _diagonal(shapes, spacing)
    limit = float(np.finfo(dtype).max)
    if diagonal > limit:
        raise WeightmapsError(
            f"distances up to {diagonal:g} (a mask's diagonal in spacing units) do not fit {dtype} "
            f"(largest {limit:g}): " + ("store float32 (--dtype float32), or " if dtype == "float16" else "")
            + "give spacing (--spacing) in a larger unit, so that its numbers are smaller"
        )
