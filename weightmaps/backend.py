"""The compute backends: one object, chosen once by :func:`get_backend` and passed down.

============  ==================  ===========================================================
name          arrays              distance transform
============  ==================  ===========================================================
``"scipy"``   numpy               ``scipy.ndimage.distance_transform_edt`` (the reference)
``"cpu"``     numpy               the ``edt`` package (seung-lab): same distances, faster
``"cuda"``    CuPy                cuCIM's ``distance_transform_edt``; weights by a fused kernel
============  ==================  ===========================================================

Every backend returns distances as :data:`DISTANCE_DTYPE` (float32): cuCIM computes float32,
scipy float64 and CuPy's own EDT float64 by default, so the dtype is pinned here, once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from weightmaps.arrays import HOST_BLOCK, LabelArray, array_module, is_cupy_array, to_numpy
from weightmaps.errors import WeightmapsError
from weightmaps.precision import square_grid

__all__ = [
    "DEVICES",
    "DISTANCE_DTYPE",
    "Backend",
    "array_module",
    "cuda_device_count",
    "cuda_unavailable_reason",
    "get_backend",
    "is_cupy_array",
    "to_numpy",
]

log = logging.getLogger("weightmaps")

DEVICES = ("auto", "cuda", "cpu", "scipy")
DISTANCE_DTYPE = np.float32

# (edge mask, spacing, squared) -> float32 distance (or its square) to the nearest True pixel of
# one 2-D/3-D sample. The weights need only d²: the edt package computes it without the square
# root, so asking for it saves a pass there and is more accurate everywhere.
DistanceTransform = Callable[[Any, tuple[float, ...], bool], Any]
# (labels, distance or its square (see Backend.weights_from_squared), class-weight table (float64),
#  factor f with d²/(2σ²) = f·(the transform's d²), ignore label or -1, dtype, square grid) -> weights.
# The square grid (weightmaps.precision.square_grid) is what the transform's d² are exact multiples
# of, 0 for none: the CUDA kernel recovers d² from cuCIM's rounded d with it.
WeightFunction = Callable[[Any, Any, Any, float, int, Any, float], Any]



@dataclass(frozen=True)
class Backend:
    """What one device needs: its array module and its two hot functions.

    Picklable by name, so a process pool or a Dask worker rebuilds it on its side.
    """

    name: str
    xp: ModuleType
    distance_transform: DistanceTransform
    apply_weights: WeightFunction
    # Whether apply_weights takes d² (CPU: edt gives it without a square root) or d (CUDA:
    # cuCIM gives d and the fused kernel squares it in the same pass).
    weights_from_squared: bool
    # The transform for callers that need d² exact (the paper's map, distances, signed distances)
    # on a grid that is not short (weightmaps.precision: e.g. spacing (0.7, 0.3), (1.2, 1.2, 2)):
    # edt's float32 parabola envelope loses up to 35 ulp of d there, and the CPU takes scipy's
    # transform instead, returning its float64 (about twice edt's time, for such spacings only;
    # the scipy backend keeps its float64 rather than rounding d² to float32).
    # None: the backend's own transform is what there is (CUDA: cuCIM, float32).
    exact_transform: DistanceTransform | None = None
    # Device memory free for a transform now (CUDA), or None where no limit applies (CPU).
    # The engine asks weightmaps.cuda_plan with it whether a sample fits cuCIM.
    free_memory: Callable[[], int] | None = None
    # Whether a batch of 2-D samples goes through one 3-D distance transform (the batch axis
    # spaced too far to cross, see transforms.stacked_distance) instead of one call per sample,
    # where cuda_plan.stack_groups says cuCIM's padded cube is full enough. Applies on a GPU
    # (on_gpu), where it is 4-27x faster than one call per sample (measured,
    # see cuda_plan.MIN_STACK_FILL); dataclasses.replace(..., stack_batches=False) turns it off.
    stack_batches: bool = True
    # A sample cuCIM cannot take (cuda_plan.transform_limit: too large a padded cube, or not
    # enough free memory) goes to the CPU's edt transform, exact all the same, with one log line
    # per shape. False: raise a WeightmapsError instead.
    cpu_fallback: bool = True
    # CUDA: the device's memory in bytes (read without creating a context), and a cap on what this
    # process's memory pool may hold (its share of a device that several worker processes use;
    # free_memory then counts within it). None on the CPU.
    total_memory: Callable[[], int] | None = None
    limit_memory: Callable[[int], None] | None = None
    # Whether apply_weights gives NaN to a label outside the class-weight table (the CUDA kernel's
    # guard), so that a caller vouching for its labels may skip the check (weight_map's validate).
    # numpy's lookup clips instead: on the CPU the engine always checks.
    marks_unknown_labels: bool = False

    @property
    def on_gpu(self) -> bool:
        """Whether this backend computes on a device with a memory budget: the one question the
        engine, the shards and the benchmarks ask of it (cuda_plan's limits and stacked batches,
        device memory shares between processes, batch sizes, synchronising timers).

        True for ``"cuda"``. A CPU backend given a ``free_memory`` (``dataclasses.replace``)
        stands in for a device: the tests and benchmarks rehearse the GPU's planning with it.
        """
        return self.free_memory is not None

    def device_free_memory(self) -> int:
        """Device bytes free for a transform now (on a GPU only; cuda_plan sizes batches by it)."""
        if self.free_memory is None:
            raise WeightmapsError(f"backend {self.name!r} has no device memory")
        return self.free_memory()

    def synchronize(self) -> None:
        """Wait until the device has done what was queued on it (nothing to wait for on the CPU)."""
        if _is_cupy_module(self.xp):
            self.xp.cuda.Device().synchronize()

    def host_buffer(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An empty host array that device results are copied into: page-locked with CuPy (a
        faster, asynchronous copy), plain numpy on the CPU."""
        if not _is_cupy_module(self.xp):
            return np.empty(shape, dtype=dtype)
        import cupyx

        return cupyx.empty_pinned(shape, dtype=dtype)

    def asarray(self, array: Any) -> Any:
        """``array`` on this backend's device (no copy when it is there already)."""
        if _is_cupy_module(self.xp):
            return self.xp.asarray(array)
        return to_numpy(array)

    def __reduce__(self) -> tuple[Callable[..., Backend], tuple[Any, ...]]:
        # By name and the options that differ from the defaults: the functions are rebuilt there.
        options = {f: getattr(self, f) for f in _OPTIONS if getattr(self, f) != _OPTIONS[f]}
        return _rebuild, (self.name, options)


# The Backend fields a caller may change with dataclasses.replace, and their defaults.
_OPTIONS = {"stack_batches": True, "cpu_fallback": True}


def _rebuild(name: str, options: dict[str, Any]) -> Backend:
    backend = get_backend(name)
    return dataclasses.replace(backend, **options) if options else backend


def _is_cupy_module(xp: ModuleType) -> bool:
    return xp.__name__ == "cupy"


# --- CPU -------------------------------------------------------------------------------------


def _scipy_distance(edges: np.ndarray, spacing: tuple[float, ...], squared: bool) -> np.ndarray:
    # Squared in float64 before the cast, so d² is as exact as the edt package's.
    return _scipy_distance64(edges, spacing, squared).astype(DISTANCE_DTYPE, copy=False)


def _scipy_distance64(edges: np.ndarray, spacing: tuple[float, ...], squared: bool) -> np.ndarray:
    """scipy's transform in its own float64: the CPU's ``exact_transform``."""
    from scipy import ndimage

    # scipy measures the distance to the nearest zero, so edges are the zeros.
    distance = ndimage.distance_transform_edt(~edges, sampling=spacing)
    return np.square(distance, out=distance) if squared else distance


# Below this many pixels scipy's transform is the faster one: edt's set-up costs about 60 µs a
# call (2-CPU VM, 2026-11-26: 96² 0.70× edt's time, 128² 1.0×, 160² 1.8×; 16³ 0.69×, 24³ 1.0×).
# Small masks and the U-Net map's per-instance windows (hundreds per mask) are that small.
_EDT_FROM_PIXELS = 12_000


def _edt_distance(edges: np.ndarray, spacing: tuple[float, ...], squared: bool) -> np.ndarray:
    import edt

    if edges.size < _EDT_FROM_PIXELS:
        return _scipy_distance(edges, spacing, squared)
    # edt's anisotropy is in array-axis order, like scipy's sampling; black_border=False keeps the
    # array border from counting as an edge. One thread: the pipeline parallelises over samples.
    inside = np.logical_not(edges).view(np.uint8)
    transform = edt.edtsq if squared else edt.edt
    return transform(inside, anisotropy=spacing, black_border=False, parallel=1)


def _numpy_weights(
    labels: np.ndarray,
    squared_distance: np.ndarray,
    class_weight: np.ndarray,
    factor: float,
    ignore_label: int,
    dtype: Any,
    grid: float = 0.0,
) -> np.ndarray:
    """Same maths as kernels/weightmap.cuh: w = φ[label] · −expm1(−f·d²), in float64, rounded once.

    ``squared_distance`` is the transform's float32 d², exact where it matters (see
    weightmaps.precision; ``grid`` is not needed here: the CPU transforms return d² itself). The
    argument, expm1 and the product with φ are float64 and the result is rounded once to
    ``dtype``: in float32, f·d² rounded twice and expm1f's own error made the weights up to 5 ulp
    off at σ 20 (issue 20). On this CPU numpy's expm1 costs the same in float64 as in float32.

    Works block by block (float64 temporaries of 64 KiB stay in cache; fresh map-sized
    temporaries cost more than the maths on small VMs) and, for float32, in place in
    ``squared_distance`` (the engine's own temporary). The ignore label gets weight 0 through
    the table (see engine.class_weight_table), and the engine has checked every label indexes it.
    """
    out = squared_distance if np.dtype(dtype) == squared_distance.dtype else np.empty(squared_distance.shape, dtype)
    class_weight = np.asarray(class_weight, dtype=np.float64)  # the engine's table is float64 already
    source, target, labels_flat = squared_distance.reshape(-1), out.reshape(-1), labels.reshape(-1)
    block_size = min(HOST_BLOCK, source.size)
    exponent = np.empty(block_size, dtype=np.float64)
    phi = np.empty(block_size, dtype=np.float64)
    scale = -float(factor)
    for start in range(0, source.size, HOST_BLOCK):
        stop = min(start + HOST_BLOCK, source.size)
        x, phi_block = exponent[: stop - start], phi[: stop - start]
        # dtype: a Python float is a weak scalar (NEP 50): without it this product is float32.
        np.multiply(source[start:stop], scale, out=x, dtype=np.float64)
        np.expm1(x, out=x)
        np.take(class_weight, labels_flat[start:stop], out=phi_block, mode="clip")
        x *= phi_block
        np.negative(x, out=x)
        target[start:stop] = x  # the one rounding
    return out


# --- CUDA ------------------------------------------------------------------------------------


def cuda_device_count() -> int:
    """CUDA devices visible to this process (CUDA_VISIBLE_DEVICES applies); 0 without CuPy or a driver."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # ImportError, or CUDARuntimeError without a driver or a device node
        return 0


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """Why the CUDA backend cannot run here, or None when CuPy, cuCIM and a GPU are all there."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); install weightmaps[cuda13] or weightmaps[cuda12]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver, or no device node
        return f"no usable CUDA device ({exc})"
    if count < 1:
        return "no CUDA device found"
    try:
        import cucim.core.operations.morphology  # noqa: F401
    except ImportError as exc:
        return f"cuCIM is not installed ({exc}); install weightmaps[cuda13] or weightmaps[cuda12]"
    return None


def _cucim_distance(edges: Any, spacing: tuple[float, ...], squared: bool) -> Any:
    import cupy
    from cucim.core.operations.morphology import distance_transform_edt

    # Isotropic spacing goes as sampling=None and is applied here: given a sampling, cuCIM runs
    # cupy.unique on it and reads the result back (two host syncs per call) to find out the same.
    isotropic = len(set(spacing)) == 1
    distance = distance_transform_edt(~edges, sampling=None if isotropic else spacing, float64_distances=False)
    distance = distance.astype(DISTANCE_DTYPE, copy=False)
    if isotropic and spacing[0] != 1.0:
        distance *= DISTANCE_DTYPE(spacing[0])
    if not squared:
        return distance
    # cuCIM computes d = RN(√d²) from an exact d² on a short grid: d² is recovered exactly from d
    # (kernels/weightmap.cuh, wm_square) instead of squaring the rounded d in float32.
    from weightmaps.kernel_sources import square_kernel

    return square_kernel()(distance, square_grid(spacing))


def _cuda_free_memory() -> int:
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    pool = cupy.get_default_memory_pool()
    # Blocks CuPy's pool holds but does not use are free for the transform too; under a limit
    # (limit_memory), only what the limit leaves.
    available = int(free) + int(pool.free_bytes())
    limit = int(pool.get_limit())
    return min(available, max(0, limit - int(pool.used_bytes()))) if limit else available


def _cuda_total_memory() -> int:
    import cupy

    # The device's properties need no context (memGetInfo would create one in this process).
    return int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["totalGlobalMem"])


def _cuda_limit_memory(limit: int) -> None:
    import cupy

    pool = cupy.get_default_memory_pool()
    if pool.get_limit() != limit:
        pool.set_limit(size=limit)


def _cuda_weights(
    labels: LabelArray,
    distance: Any,
    class_weight: Any,
    factor: float,
    ignore_label: int,
    dtype: Any,
    grid: float = 0.0,
) -> Any:
    import cupy

    from weightmaps.kernel_sources import weight_kernel

    out = cupy.empty(labels.shape, dtype=dtype)
    weight_kernel()(
        labels, distance, cupy.asarray(class_weight, dtype=cupy.float64), class_weight.size, float(factor),
        float(grid), ignore_label, out,
    )
    return out


# --- choosing --------------------------------------------------------------------------------


@functools.cache
def _build(name: str) -> Backend:
    if name == "scipy":
        return Backend("scipy", np, _scipy_distance, _numpy_weights, weights_from_squared=True,
                       exact_transform=_scipy_distance64)
    if name == "cpu":
        return Backend("cpu", np, _edt_distance, _numpy_weights, weights_from_squared=True,
                       exact_transform=_scipy_distance64)
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise WeightmapsError(f"device 'cuda' is not available: {reason}")
    import cupy

    return Backend("cuda", cupy, _cucim_distance, _cuda_weights, weights_from_squared=False,
                   marks_unknown_labels=True, free_memory=_cuda_free_memory, total_memory=_cuda_total_memory, limit_memory=_cuda_limit_memory)


@functools.cache
def _auto_name() -> str:
    reason = cuda_unavailable_reason()
    if reason is None:
        log.info("device auto: using CUDA (CuPy, cuCIM and a GPU are available)")
        return "cuda"
    log.info("device auto: using the CPU because %s", reason)
    return "cpu"


def get_backend(device: str | Backend = "auto") -> Backend:
    """The backend for ``device``: ``"auto"``, ``"cuda"``, ``"cpu"`` or ``"scipy"``.

    ``"auto"`` takes CUDA when CuPy, cuCIM and a GPU are all there, else the CPU, and logs
    which and why once per process. ``"cuda"`` raises a :class:`WeightmapsError` naming what is
    missing. A :class:`Backend` is returned as it is.

    Examples
    --------
    >>> get_backend("cpu").name
    'cpu'
    """
    if isinstance(device, Backend):
        return device
    if device not in DEVICES:
        raise WeightmapsError(f"unknown device {device!r}; choose one of {list(DEVICES)}")
    return _build(_auto_name() if device == "auto" else device)


def backend_for(array: Any, device: str | Backend) -> Backend:
    """The backend for an input array: a CuPy array asks for CUDA unless told otherwise."""
    if is_cupy_array(array) and device == "auto":
        return get_backend("cuda")
    return get_backend(device)
