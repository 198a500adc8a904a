"""Where the weight is computed: edges → distance to edges → uncertainty δ → weight φ·δ.

Every function takes one 2-D (H, W) or 3-D (D, H, W) label array, or with ``batch=True`` a
stack of same-shaped samples whose axis 0 is the sample axis (a 3-D array is a volume unless the
call says it is a batch). numpy in → numpy out; CuPy in → CuPy out, on its device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from weightmaps.arrays import HOST_BLOCK, LabelArray, array_module, is_cupy_array, to_numpy
from weightmaps.backend import Backend, backend_for
from weightmaps.errors import WeightmapsError
from weightmaps.precision import SNAP_BELOW, exponent_factor, square_grid, transform_units
from weightmaps.transforms import edge_distance, find_edges, scaled_root
from weightmaps.validation import (
    check_connectivity,
    check_labels,
    check_sigma,
    check_spacing,
    label_range,
    sample_ndim,
)

__all__ = [
    "StageTimer",
    "WeightTable",
    "class_weight_table",
    "distance_to_edges",
    "edge_mask",
    "pixel_class_weights",
    "uncertainty",
    "weight_from_distance",
    "weight_map",
]

OUTPUT_DTYPES = ("float32", "float16")
# timer(stage) -> a context manager around one step of weight_map (see its `timer`).
StageTimer = Callable[[str], contextlib.AbstractContextManager[None]]


def edge_mask(labels: LabelArray, *, connectivity: int = 1, batch: bool = False) -> Any:
    """Pixels with at least one neighbour inside the array whose label differs.

    Both sides of a boundary are edge pixels; the array border is not an edge. The neighbours
    are those of :func:`scipy.ndimage.generate_binary_structure` with this ``connectivity``:
    1 = face neighbours (4 in 2-D, 6 in 3-D), ``ndim`` = all (8 / 26). Runs on the input's
    device (numpy or CuPy).

    Examples
    --------
    >>> import numpy as np
    >>> edge_mask(np.array([[0, 0, 1, 1]])).astype(int)
    array([[0, 1, 1, 0]])
    """
    labels = _as_array(labels)
    check_labels(labels, batch=batch)
    ndim = sample_ndim(labels, batch)
    return find_edges(labels, check_connectivity(connectivity, ndim), batch)


def distance_to_edges(
    labels: LabelArray,
    *,
    spacing: Any = None,
    connectivity: int = 1,
    device: str | Backend = "auto",
    batch: bool = False,
) -> Any:
    """Euclidean distance from every pixel to the nearest edge-pixel centre, in ``spacing`` units.

    0 on edge pixels; ``+inf`` everywhere when a sample has no edge pixel (one label only).
    Returns float32: on the CPU the exact distance rounded once, for any spacing (see
    weightmaps.precision; on a GPU too where the spacing has a short grid).

    Parameters
    ----------
    labels : array
        Integer labels, 2-D or 3-D (or a batch of them with ``batch=True``).
    spacing : float or sequence of float, optional
        Pixel size per array axis (of one sample), default 1.
    connectivity : int
        Which neighbours make an edge, see :func:`edge_mask`.
    device : {"auto", "cuda", "cpu", "scipy"} or Backend
        See :func:`weightmaps.get_backend`.
    batch : bool
        Axis 0 indexes independent samples.

    Examples
    --------
    >>> import numpy as np
    >>> distance_to_edges(np.array([[0, 0, 0, 1]]), device="scipy")
    array([[2., 1., 0., 0.]], dtype=float32)
    """
    backend, data, ndim, restore = _prepare(labels, device, batch)
    units, scale = transform_units(check_spacing(spacing, ndim))
    edges = find_edges(data, check_connectivity(connectivity, ndim), batch)
    if scale == 1.0 and all(u == 1.0 for u in units):
        # The transforms' own float32 square root of an exact integer d² is correctly rounded.
        return restore(edge_distance(backend, edges, units, batch))
    return restore(scaled_root(edge_distance(backend, edges, units, batch, squared=True, exact=True), scale))


def uncertainty(
    labels: LabelArray,
    *,
    sigma: float,
    spacing: Any = None,
    connectivity: int = 1,
    device: str | Backend = "auto",
    batch: bool = False,
) -> Any:
    """Edge (labelling) uncertainty δ(x) = 1 − exp(−d(x)² / (2σ²)) of Bressan et al. (2021).

    0 on edges, rising to 1 a few σ away; exactly 1 where a sample has no edge. ``sigma`` is in
    the units of ``spacing``. Returns float32.

    Examples
    --------
    >>> import numpy as np
    >>> uncertainty(np.array([[0, 0, 0, 1]]), sigma=1.0, device="scipy").round(3)
    array([[0.865, 0.393, 0.   , 0.   ]], dtype=float32)
    """
    sigma = check_sigma(sigma)
    backend, data, ndim, restore = _prepare(labels, device, batch)
    units, scale = transform_units(check_spacing(spacing, ndim))
    edges = find_edges(data, check_connectivity(connectivity, ndim), batch)
    distance = edge_distance(backend, edges, units, batch, squared=backend.weights_from_squared, exact=True)
    # The weight pass with φ = 1 for every pixel: the same maths, rounded once.
    everywhere_one = backend.xp.zeros(data.shape, dtype=np.uint8)
    ones = backend.asarray(np.ones(1, dtype=np.float64))
    return restore(backend.apply_weights(everywhere_one, distance, ones, exponent_factor(scale, sigma), -1,
                                         np.dtype(np.float32), square_grid(units)))


def weight_map(
    labels: LabelArray,
    *,
    sigma: float,
    class_weights: Mapping[int, float],
    spacing: Any = None,
    ignore_index: int | None = None,
    connectivity: int = 1,
    dtype: str = "float32",
    device: str | Backend = "auto",
    batch: bool = False,
    validate: bool = True,
    timer: StageTimer | None = None,
) -> Any:
    """The loss weight w(x) = φ_label(x) · δ(x) of Bressan et al. (2021).

    Parameters
    ----------
    labels : array
        Integer labels, 2-D or 3-D (or a batch of them with ``batch=True``).
    sigma : float
        Width of the uncertainty band, in ``spacing`` units (> 0).
    class_weights : mapping
        ``{label: φ}`` for every label in ``labels`` but the ignore label (see
        :func:`weightmaps.class_weights`). A label without a weight is an error.
    spacing, connectivity, device, batch
        As for :func:`distance_to_edges`.
    ignore_index : int, optional
        Pixels with this label get weight 0 (they still form edges, like any label).
    dtype : {"float32", "float16"}
        Output dtype.
    validate : bool
        Check the label values (none negative, each with a weight) and raise naming the
        offenders. On a GPU this reads the device once per call; ``False`` skips it there for
        labels the caller vouches for, and an invalid label then gets weight NaN (the fused
        kernel's guard) instead of an error. On the CPU the check costs nothing and always runs.
    timer : callable, optional
        For profiling: ``timer(stage)`` returns a context manager entered around each step,
        ``"edges"``, ``"distance"`` and ``"weights"`` (``benchmarks/`` times the pipeline's own
        calls with it, synchronising the device).

    Examples
    --------
    >>> import numpy as np
    >>> weight_map(np.array([[0, 0, 0, 1]]), sigma=1.0, class_weights={0: 1.0, 1: 3.0},
    ...            device="scipy").round(3)
    array([[0.865, 0.393, 0.   , 0.   ]], dtype=float32)
    """
    sigma = check_sigma(sigma)
    out_dtype = _output_dtype(dtype)
    table = class_weight_table(class_weights, ignore_index)
    backend, data, ndim, restore = _prepare(labels, device, batch, check_values=False)
    # The transform runs on a grid where its float32 d² is exact; the rest is float64 (precision).
    units, scale = transform_units(check_spacing(spacing, ndim))
    factor = exponent_factor(scale, sigma)
    connectivity = check_connectivity(connectivity, ndim)
    validate = validate or not backend.marks_unknown_labels  # else nothing would say so
    if validate:
        low, high = label_range(data)  # one read of the device for both checks
        if low < 0:
            raise WeightmapsError(f"labels must be >= 0, found label {low}")
        if table.keys is None and high >= table.values.size:
            _raise_missing_labels(data, table, class_weights)
    lookup = table.indices(data)
    if validate and table.keys is not None and bool((lookup == len(table.keys)).any()):
        _raise_missing_labels(data, table, class_weights)
    timed = timer or untimed
    with timed("edges"):
        edges = find_edges(data, connectivity, batch)
    with timed("distance"):
        distance = edge_distance(backend, edges, units, batch, squared=backend.weights_from_squared, exact=True)
    with timed("weights"):
        weights = backend.apply_weights(
            lookup, distance, backend.asarray(table.values), factor, table.ignore, out_dtype, square_grid(units)
        )
    # Labels without a weight read NaN from the table (δ itself is never NaN); a table without
    # holes cannot produce one once the maximum label is known to be inside it.
    if validate and np.isnan(table.values).any() and bool(backend.xp.isnan(weights).any()):
        _raise_missing_labels(data, table, class_weights)
    return restore(weights)


# --- helpers ---------------------------------------------------------------------------------


def untimed(stage: str) -> contextlib.nullcontext[None]:
    """The timer that times nothing (the default of every ``timer`` argument)."""
    return contextlib.nullcontext()


def _as_array(labels: LabelArray) -> Any:
    return labels if is_cupy_array(labels) else np.asarray(labels)


def _prepare(
    labels: LabelArray, device: str | Backend, batch: bool, check_values: bool = True
) -> tuple[Backend, Any, int, Any]:
    """Validate, move to the backend's device, and return how to move results back."""
    labels = _as_array(labels)
    check_labels(labels, batch=batch, values=check_values)
    backend = backend_for(labels, device)
    from_cupy = is_cupy_array(labels)

    def restore(result: Any) -> Any:
        if from_cupy:
            return array_module(labels).asarray(result)
        return to_numpy(result)

    return backend, backend.asarray(labels), sample_ndim(labels, batch), restore


def _output_dtype(dtype: Any) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in OUTPUT_DTYPES:
        raise WeightmapsError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    return resolved


# Labels up to this go through a dense table indexed by the label itself; beyond, a compact one
# (a label of 2e9 in a 32² mask once asked for a 9.8 GB table).
_DENSE_TABLE_LABELS = 1 << 16
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class WeightTable:
    """φ by label for the weight pass (the fused kernel and the numpy path index it), float64.

    float64 so that the weight is φ·δ rounded once: a float32 table adds up to 2⁻²⁴ relative, up
    to 1 ulp of the weight, before the product is rounded (the weights must fit float32 all the
    same: class_weight_table checks).

    Dense: ``values[label]``. Compact, for sparse labels (a few of them, up to 2**63): ``keys``
    holds the sorted labels, ``values`` their weights, and :meth:`indices` turns labels into
    positions. NaN marks a label without a weight, 0 the ignore label (``ignore`` is its
    position, -1 without one).
    """

    values: np.ndarray
    ignore: int
    keys: np.ndarray | None = None

    def indices(self, labels: LabelArray) -> Any:
        """What to index ``values`` with: the labels, or their positions (len(keys) if unknown)."""
        if self.keys is None:
            return labels
        xp = array_module(labels)
        keys = xp.asarray(self.keys)
        where = xp.minimum(xp.searchsorted(keys, labels), len(keys) - 1)
        return xp.where(keys[where] == labels, where, len(keys))

    def missing(self, labels: LabelArray) -> list[int]:
        """The labels of ``labels`` that have no weight, sorted."""
        present = to_numpy(array_module(labels).unique(labels))
        if self.keys is None:
            return [int(v) for v in present if v >= self.values.size or np.isnan(self.values[v])]
        known = {int(k) for k, v in zip(self.keys, self.values, strict=True) if not np.isnan(v)}
        return [int(v) for v in present if int(v) not in known]


def class_weight_table(class_weights: Any, ignore_index: int | None) -> WeightTable:
    """The :class:`WeightTable` of ``class_weights``; checks every label and weight.

    Examples
    --------
    >>> class_weight_table({0: 0.5, 2: 3.0}, ignore_index=1).values
    array([0.5, 0. , 3. ])
    >>> class_weight_table({0: 0.5, 2_000_000_000: 3.0}, ignore_index=None).keys
    array([         0, 2000000000])
    """
    if not isinstance(class_weights, Mapping) or not class_weights:
        raise WeightmapsError(
            "class_weights must be a non-empty {label: weight} mapping; "
            "compute one with weightmaps.class_weights(counts, scheme)"
        )
    weights = {}
    for label, weight in class_weights.items():
        label_int, weight_num = int(label), float(weight)
        if label_int < 0:
            raise WeightmapsError(f"class_weights: labels must be >= 0, got {label_int}")
        if not math.isfinite(weight_num) or abs(weight_num) > _FLOAT32_MAX:
            raise WeightmapsError(
                f"class_weights: weight of label {label_int} must be finite in float32 (|w| <= {_FLOAT32_MAX:g}), "
                f"got {weight}"
            )
        weights[label_int] = weight_num
    ignore_label = -1 if ignore_index is None or ignore_index < 0 else int(ignore_index)
    if ignore_label >= 0:
        weights[ignore_label] = 0.0
    size = max(weights) + 1
    if size <= _DENSE_TABLE_LABELS:
        values = np.full(size, np.nan, dtype=np.float64)
        values[list(weights)] = list(weights.values())
        return WeightTable(values, ignore_label)
    keys = np.array(sorted(weights), dtype=np.uint64 if size > np.iinfo(np.int64).max else np.int64)
    values = np.array([weights[int(k)] for k in keys], dtype=np.float64)
    return WeightTable(values, int(np.searchsorted(keys, ignore_label)) if ignore_label >= 0 else -1, keys)


def _raise_missing_labels(labels: LabelArray, table: WeightTable, class_weights: Mapping[int, float]) -> None:
    known = sorted(int(k) for k in class_weights)
    raise WeightmapsError(
        f"label(s) {table.missing(labels)} occur in the mask but have no class weight (weights given for {known})"
    )


def pixel_class_weights(pixel_class: LabelArray, class_weights: Mapping[int, float], ignore_index: int | None) -> Any:
    """The weight of every pixel's class (float64; the ignore label 0); a class without one is named."""
    xp = array_module(pixel_class)
    if pixel_class.dtype == bool:  # background / instance: classes 0 and 1
        pixel_class = pixel_class.view(np.uint8)
    table = class_weight_table(class_weights, ignore_index)
    values = xp.asarray(table.values)
    if table.keys is None:
        if int(pixel_class.max()) >= table.values.size:
            raise WeightmapsError(f"class(es) {table.missing(pixel_class)} occur but have no class weight "
                                  f"(weights given for {sorted(class_weights)})")
        base = values[pixel_class.astype(np.intp, copy=False)]
    else:
        positions = table.indices(pixel_class)
        if bool((positions == len(table.keys)).any()):
            raise WeightmapsError(f"class(es) {table.missing(pixel_class)} occur but have no class weight "
                                  f"(weights given for {sorted(class_weights)})")
        base = values[positions]
    if bool(xp.isnan(base).any()):  # a class inside the table's range without a weight
        raise WeightmapsError(f"class(es) {table.missing(pixel_class)} occur but have no class weight "
                              f"(weights given for {sorted(class_weights)})")
    return base


def weight_from_distance(
    distance: Any, labels: LabelArray, *, sigma: float, class_weights: Mapping[int, float],
    ignore_index: int | None = None, dtype: str = "float32", spacing: Any = None,
) -> np.ndarray:
    """The paper's weight φ_label · (1 − exp(−d²/(2σ²))) from a stored distance map d (numpy).

    ``distance`` as :func:`distance_to_edges` returns it (+inf: no edge, δ = 1), e.g. read from a
    ``--map distance`` store, so σ and φ can change without recomputing the dataset; ``spacing``
    the spacing it was computed with (default 1, as everywhere). Computed in float64 and rounded
    once.

    How exact: a float32 d is the distance rounded once, d = RN(s·√(n·g)) with n·g the
    transform's exact d² on its grid (weightmaps.precision). Below 2²¹ grid steps (d/s)² lies
    within n·g·2⁻²² of n·g, so where it does, d² is taken as exactly n·g: the weight is then the
    one :func:`weight_map` computes, bit for bit. Elsewhere (a spacing without a short grid, far
    pixels, float16 stores, distances from elsewhere) d is used as it is: its rounding moves δ by
    at most 2·κ ulp (κ = x/(eˣ − 1) ≤ 1, x = d²/2σ²), within 2.5 ulp of the exact weight. The
    snap moves d² by at most 2⁻²² of itself, so distances that are not such roundings lose
    nothing by it.

    Examples
    --------
    >>> labels = np.array([[0, 0, 0, 1]])
    >>> d = distance_to_edges(labels, device="cpu")
    >>> weight_from_distance(d, labels, sigma=1.0, class_weights={0: 1.0, 1: 3.0}).round(3)
    array([[0.865, 0.393, 0.   , 0.   ]], dtype=float32)
    """
    sigma = check_sigma(sigma)
    out_dtype = _output_dtype(dtype)
    labels = np.asarray(labels)
    stored = np.asarray(distance)
    if stored.shape != labels.shape:
        raise WeightmapsError(f"distance shape {stored.shape} differs from labels shape {labels.shape}")
    units, scale = transform_units(check_spacing(spacing, labels.ndim))
    grid = square_grid(units) if stored.dtype == np.float32 else 0.0
    phi = pixel_class_weights(labels, class_weights, ignore_index).reshape(-1)
    out = np.empty(stored.shape, dtype=out_dtype)
    source, target = stored.reshape(-1), out.reshape(-1)
    # x = f·(d/s)² on the grid, or ½(d/σ)² without one: not d²/(2σ²), whose 2σ² underflows to 0
    # for σ < 1e-154 (0/0 on the edges).
    factor = grid * exponent_factor(scale, sigma) if grid else 0.5
    divisor = scale if grid else sigma
    # Blocks of float64 temporaries that stay in cache (as in the CPU weight pass, backend.py).
    for start in range(0, source.size, HOST_BLOCK):
        stop = min(start + HOST_BLOCK, source.size)
        x = source[start:stop].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # d beyond float64 here: x = inf, δ = 1
            x /= divisor
            np.square(x, out=x)
            if grid:
                x *= 1.0 / grid  # a power of two: exact. Now d² in grid steps.
                whole = np.rint(x)
                off = np.abs(x - whole)
                on_grid = (off <= x * 2.0**-22) & (x < SNAP_BELOW)
                np.copyto(x, whole, where=on_grid)
            x *= -factor
            np.expm1(x, out=x)
        x *= phi[start:stop]
        np.negative(x, out=x)
        target[start:stop] = x  # the one rounding
    return out
