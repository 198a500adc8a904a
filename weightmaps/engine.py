"""Where the weight is computed: edges → distance to edges → uncertainty δ → weight φ·δ.

Every function takes one 2-D (H, W) or 3-D (D, H, W) label array, or with ``batch=True`` a
stack of same-shaped samples whose axis 0 is the sample axis (a 3-D array is a volume unless the
call says it is a batch). numpy in → numpy out; CuPy in → CuPy out, on its device.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from weightmaps import cuda_plan
from weightmaps.backend import (
    DISTANCE_DTYPE,
    Backend,
    array_module,
    backend_for,
    get_backend,
    is_cupy_array,
    to_numpy,
)
from weightmaps.errors import WeightmapsError
from weightmaps.precision import SNAP_BELOW, exponent_factor, square_grid, transform_units
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

log = logging.getLogger("weightmaps")


def edge_mask(labels: Any, *, connectivity: int = 1, batch: bool = False) -> Any:
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
    return _edges(labels, check_connectivity(connectivity, ndim), batch)


def distance_to_edges(
    labels: Any,
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
    edges = _edges(data, check_connectivity(connectivity, ndim), batch)
    if scale == 1.0 and all(u == 1.0 for u in units):
        # The transforms' own float32 square root of an exact integer d² is correctly rounded.
        return restore(_distance(backend, edges, units, batch))
    return restore(scaled_root(_distance(backend, edges, units, batch, squared=True, exact=True), scale))


def uncertainty(
    labels: Any,
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
    edges = _edges(data, check_connectivity(connectivity, ndim), batch)
    distance = _distance(backend, edges, units, batch, squared=backend.weights_from_squared, exact=True)
    # The weight pass with φ = 1 for every pixel: the same maths, rounded once.
    everywhere_one = backend.xp.zeros(data.shape, dtype=np.uint8)
    ones = backend.asarray(np.ones(1, dtype=np.float64))
    return restore(backend.apply_weights(everywhere_one, distance, ones, exponent_factor(scale, sigma), -1,
                                         np.dtype(np.float32), square_grid(units)))


def weight_map(
    labels: Any,
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
    validate = validate or backend.xp is np  # the numpy lookup clips: it has no NaN guard
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
        edges = _edges(data, connectivity, batch)
    with timed("distance"):
        distance = _distance(backend, edges, units, batch, squared=backend.weights_from_squared, exact=True)
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


def _as_array(labels: Any) -> Any:
    return labels if is_cupy_array(labels) else np.asarray(labels)


def _prepare(
    labels: Any, device: str | Backend, batch: bool, check_values: bool = True
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


def _neighbour_offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    # Half of the neighbourhood (first non-zero step positive): each neighbour pair once.
    offsets = []
    for step in itertools.product((-1, 0, 1), repeat=ndim):
        nonzero = [s for s in step if s]
        if nonzero and nonzero[0] > 0 and len(nonzero) <= connectivity:
            offsets.append(step)
    return offsets


def _edges(labels: Any, connectivity: int, batch: bool) -> Any:
    xp = array_module(labels)
    edges = xp.zeros(labels.shape, dtype=bool)
    lead = (slice(None),) if batch else ()
    for step in _neighbour_offsets(labels.ndim - len(lead), connectivity):
        here = lead + tuple(slice(1, None) if s < 0 else slice(None, -1) if s > 0 else slice(None) for s in step)
        there = lead + tuple(slice(None, -1) if s < 0 else slice(1, None) if s > 0 else slice(None) for s in step)
        differs = labels[here] != labels[there]
        edges[here] |= differs
        edges[there] |= differs
    return edges


def _distance(
    backend: Backend, edges: Any, spacing: tuple[float, ...], batch: bool, squared: bool = False, exact: bool = False
) -> Any:
    """Distance (or its square) to the nearest edge; +inf for a sample without edges.

    ``exact``: see :func:`nearest_distance`.
    """
    xp = backend.xp
    if not batch:
        # scipy would return garbage without any edge pixel; there is no nearest edge: +inf.
        if not bool(edges.any()):
            return xp.full(edges.shape, np.inf, dtype=DISTANCE_DTYPE)
        return nearest_distance(backend, edges, spacing, squared, exact)
    has_edge = to_numpy(edges.reshape(edges.shape[0], -1).any(axis=1))
    distance = xp.empty(edges.shape, dtype=np.float64 if _takes_exact(backend, spacing, exact) else DISTANCE_DTYPE)
    groups = [(0, len(edges), False)]
    if backend.stack_batches and edges.ndim == 3 and backend.free_memory is not None:
        groups = cuda_plan.stack_groups(len(edges), edges.shape[1:], backend.free_memory())
    for start, stop, stacked in groups:
        if stacked and has_edge[start:stop].any():
            distance[start:stop] = _stacked_distance(backend, edges[start:stop], spacing, squared, has_edge[start:stop])
            continue
        for i in range(start, stop):
            distance[i] = nearest_distance(backend, edges[i], spacing, squared, exact) if has_edge[i] else np.inf
    return distance


def stack_nearest_distance(
    backend: Backend, masks: Any, spacing: tuple[float, ...], squared: bool, exact: bool = False
) -> Any:
    """:func:`nearest_distance` of every array of a stack of same-shaped masks; +inf for an empty one.

    On a GPU the stack goes to cuCIM as few 3-D transforms as its padding allows (cuda_plan); on
    the CPU one array at a time. For the engine's map modules (weightmaps.unet, weightmaps.sdf).
    """
    return _distance(backend, masks, spacing, batch=True, squared=squared, exact=exact)


def scaled_root(squared: Any, scale: float) -> Any:
    """``scale · √squared`` in float64, rounded once to float32 (into ``squared`` when it is float32).

    For the distances of :func:`weightmaps.precision.transform_units`: d² on the transform's
    grid is exact (or float64, from an ``exact_transform``), so d is correctly rounded (up to
    float64's 2⁻⁵³). inf stays inf; a product beyond float32 is inf, as the true distance would be.
    """
    xp = array_module(squared)
    out = squared if squared.dtype == DISTANCE_DTYPE else xp.empty(squared.shape, dtype=DISTANCE_DTYPE)
    flat, target = squared.reshape(-1), out.reshape(-1)
    block = flat.size if xp is not np else _ROOT_BLOCK  # numpy: float64 temporaries that stay in cache
    root = xp.empty(min(block, flat.size), dtype=np.float64)
    for start in range(0, flat.size, block):
        stop = min(start + block, flat.size)
        part = root[: stop - start]
        xp.sqrt(flat[start:stop], out=part, dtype=np.float64)
        part *= scale
        with np.errstate(over="ignore"):  # float32 overflow is the answer here
            target[start:stop] = part
    return out


# Pixels per block of scaled_root's float64 pass on the CPU (64 KiB of float64).
_ROOT_BLOCK = 1 << 13


def nearest_distance(
    backend: Backend, edges: Any, spacing: tuple[float, ...], squared: bool, exact: bool = False
) -> Any:
    """Distance (or its square) of every pixel to the nearest True pixel of ``edges``, one array.

    The backend's transform, or the CPU's where cuCIM cannot take the array (cuda_plan). For the
    engine's map modules (weightmaps.unet); the public functions take labels, not masks.
    ``exact``: on a grid that is not short (weightmaps.precision.square_grid), use the backend's
    ``exact_transform`` where it has one (the CPU: scipy's float64 transform).
    """
    if backend.free_memory is None:
        if _takes_exact(backend, spacing, exact):
            return backend.exact_transform(edges, spacing, squared)  # type: ignore[misc]
        return backend.distance_transform(edges, spacing, squared)
    reason = cuda_plan.transform_limit(edges.shape, backend.free_memory())
    if reason is None:
        return backend.distance_transform(edges, spacing, squared)
    if not backend.cpu_fallback:
        raise WeightmapsError(f"{reason}; the CPU fallback is off (cpu_fallback=False)")
    if tuple(edges.shape) not in _FALLBACK_LOGGED:
        _FALLBACK_LOGGED.add(tuple(edges.shape))
        log.warning("%s: using the CPU transform (edt) for this shape, exact all the same", reason)
    # float32 on the device, as cuCIM's: the CUDA kernels take float32 distances.
    on_host = nearest_distance(get_backend("cpu"), to_numpy(edges), spacing, squared, exact)
    return backend.asarray(on_host.astype(DISTANCE_DTYPE, copy=False))


def _takes_exact(backend: Backend, spacing: tuple[float, ...], exact: bool) -> bool:
    """Whether :func:`nearest_distance` takes the backend's float64 ``exact_transform`` (then float64 out)."""
    return (exact and backend.free_memory is None and backend.exact_transform is not None
            and square_grid(spacing) == 0.0)


# Shapes whose CPU fallback was logged already (one line per shape, not per sample).
_FALLBACK_LOGGED: set[tuple[int, ...]] = set()


def _stacked_distance(
    backend: Backend, edges: Any, spacing: tuple[float, ...], squared: bool, has_edge: np.ndarray
) -> Any:
    """A batch of 2-D samples as one 3-D transform whose batch axis is too long to cross.

    The batch axis gets a spacing larger than any distance inside a sample, so a pixel's nearest
    edge is in its own sample whenever that sample has one; samples without edges only see
    other samples' edges, at least that far away, and get +inf. One call instead of one per
    sample: on a GPU, small samples are bound by launch overhead, not by arithmetic.
    """
    reach = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(edges.shape[1:], spacing, strict=True))))
    # A power of two: short (weightmaps.precision), so the samples' own grid stays exact.
    apart = math.ldexp(1.0, math.frexp(2.0 * reach + 1.0)[1])
    distance = nearest_distance(backend, edges, (apart, *spacing), squared)
    distance[backend.xp.asarray(~has_edge)] = np.inf
    return distance


# Farther than this many σ·√2 from every edge a pixel has δ = 1 exactly in float32 (d²/2σ² > 17.5
# already rounds 1 - exp(-x) to 1), so a larger spacing can be clamped to it without changing one
# weight; it keeps the transforms' arithmetic finite for σ down to the smallest double.
_SATURATED = 2.0**20
# The smallest positive normal float32: the factor from d² to d²/(2σ²) never rounds to 0, so that
# an infinite distance (a sample without edges) still gives δ = 1, never 0·inf = NaN.
_TINY32 = float(np.finfo(np.float32).tiny)


def _power_of_two_scale(spacing: tuple[float, ...]) -> tuple[tuple[float, ...], int]:
    """``spacing / 2**k`` with its largest value in [1, 2), and ``k`` (for :func:`sigma_units`).

    The transforms compute in float32: in these units their arithmetic stays far from overflow
    and underflow whatever the user's units (nanometres, or 1e20 with σ 2e20), and scaling by a
    power of two back and forth is exact.
    """
    k = math.frexp(max(spacing))[1] - 1
    return tuple(math.ldexp(s, -k) for s in spacing), k


def sigma_units(spacing: tuple[float, ...], sigma: float) -> tuple[tuple[float, ...], float]:
    """The spacing to run the transform with, and the factor taking its d² to d²/(2σ²), in σ·√2 units.

    For the U-Net map (weightmaps.unet), whose promise is a tolerance of w0, not an ulp count;
    the paper's map, distances and δ run on :func:`weightmaps.precision.transform_units` instead.

    Measured in units of σ·√2 (clamped at :data:`_SATURATED`, which changes no weight) and scaled
    by a power of two into [1, 2): no σ or spacing the checks accept can make the maths produce
    NaN (σ = 3e-20 once gave 0·inf on every edge pixel) or overflow.
    """
    units = tuple(min(s / (sigma * math.sqrt(2.0)), _SATURATED) for s in spacing)
    scaled, k = _power_of_two_scale(units)
    return scaled, max(math.ldexp(1.0, 2 * k), _TINY32)


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

    def indices(self, labels: Any) -> Any:
        """What to index ``values`` with: the labels, or their positions (len(keys) if unknown)."""
        if self.keys is None:
            return labels
        xp = array_module(labels)
        keys = xp.asarray(self.keys)
        where = xp.minimum(xp.searchsorted(keys, labels), len(keys) - 1)
        return xp.where(keys[where] == labels, where, len(keys))

    def missing(self, labels: Any) -> list[int]:
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


def _raise_missing_labels(labels: Any, table: WeightTable, class_weights: Mapping[int, float]) -> None:
    known = sorted(int(k) for k in class_weights)
    raise WeightmapsError(
        f"label(s) {table.missing(labels)} occur in the mask but have no class weight (weights given for {known})"
    )


def pixel_class_weights(pixel_class: Any, class_weights: Mapping[int, float], ignore_index: int | None) -> Any:
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
    distance: Any, labels: Any, *, sigma: float, class_weights: Mapping[int, float],
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
    # Blocks of float64 temporaries that stay in cache (see backend._numpy_weights).
    for start in range(0, source.size, _ROOT_BLOCK):
        stop = min(start + _ROOT_BLOCK, source.size)
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
