"""Distances to edges on a backend: the edge mask, one array's transform, a batch's, a stacked cube's.

The engine's map functions (weightmaps.engine, unet, sdf) take labels and validate them; these
take what they computed (an edge mask, the transform's units from weightmaps.precision) and only
decide how the backend's transform runs: one call per array, a batch of 2-D samples stacked into
one 3-D call where cuCIM's padded cube is full enough (weightmaps.cuda_plan), the CPU's transform
for an array cuCIM cannot take, scipy's float64 one where d² must be exact on a grid that is not
short. The benchmarks time these same calls (benchmarks/gpu_transforms.py, precision.py).
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import numpy as np

from weightmaps import cuda_plan
from weightmaps.arrays import HOST_BLOCK, LabelArray, array_module, to_numpy
from weightmaps.backend import DISTANCE_DTYPE, Backend, get_backend
from weightmaps.errors import WeightmapsError
from weightmaps.precision import square_grid

__all__ = ["edge_distance", "find_edges", "nearest_distance", "scaled_root", "stacked_distance"]

log = logging.getLogger("weightmaps")



def _neighbour_offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    # Half of the neighbourhood (first non-zero step positive): each neighbour pair once.
    offsets = []
    for step in itertools.product((-1, 0, 1), repeat=ndim):
        nonzero = [s for s in step if s]
        if nonzero and nonzero[0] > 0 and len(nonzero) <= connectivity:
            offsets.append(step)
    return offsets


def find_edges(labels: LabelArray, connectivity: int, batch: bool) -> Any:
    """The edge mask of checked labels (see :func:`weightmaps.edge_mask`, which checks them)."""
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


def edge_distance(
    backend: Backend, edges: Any, spacing: tuple[float, ...], batch: bool, squared: bool = False, exact: bool = False
) -> Any:
    """Distance (or its square) to the nearest edge of one array or of each sample of a batch.

    +inf for a sample without edges. ``exact``: see :func:`nearest_distance` (then float64 out).
    On a GPU a batch of 2-D samples goes as few stacked 3-D transforms as cuda_plan allows
    (unless ``backend.stack_batches`` is off); elsewhere one call per sample.
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
    if backend.stack_batches and edges.ndim == 3 and backend.on_gpu:
        groups = cuda_plan.stack_groups(len(edges), edges.shape[1:], backend.device_free_memory())
    for start, stop, stacked in groups:
        if stacked and has_edge[start:stop].any():
            distance[start:stop] = stacked_distance(backend, edges[start:stop], spacing, squared, has_edge[start:stop])
            continue
        for i in range(start, stop):
            distance[i] = nearest_distance(backend, edges[i], spacing, squared, exact) if has_edge[i] else np.inf
    return distance


def nearest_distance(
    backend: Backend, edges: Any, spacing: tuple[float, ...], squared: bool, exact: bool = False
) -> Any:
    """Distance (or its square) of every pixel to the nearest True pixel of ``edges``, one array.

    The backend's transform, or the CPU's where cuCIM cannot take the array (cuda_plan).
    ``exact``: on a grid that is not short (weightmaps.precision.square_grid), use the backend's
    ``exact_transform`` where it has one (the CPU: scipy's float64 transform).
    """
    if not backend.on_gpu:
        if _takes_exact(backend, spacing, exact):
            return backend.exact_transform(edges, spacing, squared)  # type: ignore[misc]
        return backend.distance_transform(edges, spacing, squared)
    reason = cuda_plan.transform_limit(edges.shape, backend.device_free_memory())
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
    return (exact and not backend.on_gpu and backend.exact_transform is not None
            and square_grid(spacing) == 0.0)


# Shapes whose CPU fallback was logged already (one line per shape, not per sample).
_FALLBACK_LOGGED: set[tuple[int, ...]] = set()


def stacked_distance(
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


def scaled_root(squared: Any, scale: float) -> Any:
    """``scale · √squared`` in float64, rounded once to float32 (into ``squared`` when it is float32).

    For the distances of :func:`weightmaps.precision.transform_units`: d² on the transform's
    grid is exact (or float64, from an ``exact_transform``), so d is correctly rounded (up to
    float64's 2⁻⁵³). inf stays inf; a product beyond float32 is inf, as the true distance would be.
    """
    xp = array_module(squared)
    out = squared if squared.dtype == DISTANCE_DTYPE else xp.empty(squared.shape, dtype=DISTANCE_DTYPE)
    flat, target = squared.reshape(-1), out.reshape(-1)
    block = flat.size if xp is not np else HOST_BLOCK  # numpy: float64 temporaries that stay in cache
    root = xp.empty(min(block, flat.size), dtype=np.float64)
    for start in range(0, flat.size, block):
        stop = min(start + block, flat.size)
        part = root[: stop - start]
        xp.sqrt(flat[start:stop], out=part, dtype=np.float64)
        part *= scale
        with np.errstate(over="ignore"):  # float32 overflow is the answer here
            target[start:stop] = part
    return out
