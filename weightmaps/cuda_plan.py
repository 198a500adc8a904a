"""What cuCIM's distance transform can take, decided before the call.

Pure arithmetic on shapes and byte counts, so the rules are tested on machines without a GPU.
The facts come from cuCIM 26.10's exact EDT (the parallel banding algorithm, ``_pba_2d.py`` and
``_pba_3d.py``):

- a 2-D image is padded to a **square** of side round32(max(H, W)) and held as packed int16
  coordinate pairs (int32 pairs above side 32768): two such buffers beside the padded input;
- a 3-D volume is padded to a **cube** of side max(round32(D), round32(H), round32(W)), one
  packed int32 coordinate per voxel up to side 1024 and int64 above, again two buffers beside the
  padded input; above a cube side of about 1290 its linear voxel index (an ``int``) overflows.

So a (4, 1024, 1024) stack of 2-D masks costs a 1024³ cube (256 times the work), and a long thin
2-D strip costs the square of its length. :func:`transform_limit` says when one sample cannot go
to cuCIM (the engine then takes the CPU transform for it), :func:`stack_groups` when a batch of
2-D samples may go as one 3-D transform (only where the cube is nearly full).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "MAX_CUBE_SIDE",
    "MIN_STACK_FILL",
    "padded_side",
    "stack_groups",
    "transform_bytes",
    "transform_limit",
]

# cuCIM pads every axis to a multiple of its band size, 32.
_ROUND = 32
# The largest cube side whose voxel count fits cuCIM's int index (1280³ < 2³¹ < 1312³).
MAX_CUBE_SIDE = 1280
# Above this side cuCIM's 3-D coordinates switch from int32 to int64.
_INT32_CUBE_SIDE = 1024
# Above this side its 2-D coordinate pairs switch from int16 to int32; its hard limit is 2**24.
_INT16_SQUARE_SIDE = 32768
_MAX_SQUARE_SIDE = 1 << 24
# A stack goes as one cube only when the samples fill at least this share of it. Measured on an
# H200 (cuCIM 26.10, benchmarks/results/h200-2026-11-26-transforms-1.json): against one call per
# sample, a full cube of S masks of S² ran 14-27x faster for S = 64..512, a quarter-full one 4-7x.
MIN_STACK_FILL = 0.25
# Of the device memory free at the time, what one transform may plan to use: the engine holds
# labels, edges and outputs of the batch beside it, and CuPy's pool rounds allocations up.
_MEMORY_SHARE = 0.5


def _round_up(n: int) -> int:
    return _ROUND * math.ceil(n / _ROUND)


def padded_side(shape: Sequence[int]) -> int:
    """Side of the square (2-D) or cube (3-D) cuCIM pads ``shape`` to."""
    if len(shape) not in (2, 3):
        raise ValueError(f"cuCIM transforms 2-D or 3-D arrays, got shape {tuple(shape)}")
    return max(_round_up(int(n)) for n in shape)


def transform_bytes(shape: Sequence[int]) -> int:
    """Device bytes cuCIM allocates to transform one array of ``shape`` (float32 distances out).

    The padded copy of the input (1 byte a pixel), two packed-coordinate buffers, and the output.
    """
    side = padded_side(shape)
    if len(shape) == 2:
        pair = 4 if side <= _INT16_SQUARE_SIDE else 8
        padded = side * side * (1 + 2 * pair)
    else:
        coordinate = 4 if side <= _INT32_CUBE_SIDE else 8
        padded = side**3 * (1 + 2 * coordinate)
    return padded + 4 * math.prod(int(n) for n in shape)


def transform_limit(shape: Sequence[int], free_bytes: int) -> str | None:
    """Why cuCIM cannot transform an array of ``shape`` now, or None when it can.

    Examples
    --------
    >>> transform_limit((512, 512, 512), free_bytes=80 * 2**30) is None
    True
    >>> transform_limit((64, 64, 1400), free_bytes=80 * 2**30)
    'cuCIM pads (64, 64, 1400) to a cube of side 1408, above its limit of 1280 (int index)'
    """
    side = padded_side(shape)
    shape = tuple(int(n) for n in shape)
    if len(shape) == 3 and side > MAX_CUBE_SIDE:
        return f"cuCIM pads {shape} to a cube of side {side}, above its limit of {MAX_CUBE_SIDE} (int index)"
    if len(shape) == 2 and side > _MAX_SQUARE_SIDE:
        return f"cuCIM pads {shape} to a square of side {side}, above its limit of {_MAX_SQUARE_SIDE}"
    need = transform_bytes(shape)
    if need > _MEMORY_SHARE * free_bytes:
        kind = "square" if len(shape) == 2 else "cube"
        return (f"cuCIM pads {shape} to a {kind} of side {side} and needs {need / 2**30:.1f} GiB of device "
                f"memory; {free_bytes / 2**30:.1f} GiB are free")
    return None


def stack_groups(n: int, shape: Sequence[int], free_bytes: int) -> list[tuple[int, int, bool]]:
    """How to transform a batch of ``n`` 2-D samples of ``shape``: ``(start, stop, stacked)`` runs.

    A stacked run goes as one 3-D transform of shape ``(stop - start, H, W)``; the others one
    sample at a time. Groups hold round32(max(H, W)) samples, so that the cube is full along the
    batch axis; a group is stacked only when the samples fill at least :data:`MIN_STACK_FILL` of
    the cube, its side is at most 1024 (int32 coordinates) and it fits the free memory.

    Examples
    --------
    >>> stack_groups(300, (128, 128), free_bytes=8 * 2**30)
    [(0, 128, True), (128, 256, True), (256, 300, True)]
    >>> stack_groups(280, (128, 128), free_bytes=8 * 2**30)
    [(0, 128, True), (128, 256, True), (256, 280, False)]
    >>> stack_groups(4, (1024, 1024), free_bytes=80 * 2**30)
    [(0, 4, False)]
    """
    if n <= 0:
        return []
    if len(shape) != 2:
        return [(0, n, False)]
    height, width = (int(s) for s in shape)
    side = padded_side(shape)
    groups: list[tuple[int, int, bool]] = []
    loose_from = None
    for start in range(0, n, side):
        stop = min(start + side, n)
        count = stop - start
        fill = count * height * width / side**3
        stacked = (
            count > 1
            and side <= _INT32_CUBE_SIDE
            and fill >= MIN_STACK_FILL
            and transform_bytes((count, height, width)) <= _MEMORY_SHARE * free_bytes
        )
        if stacked:
            if loose_from is not None:
                groups.append((loose_from, start, False))
                loose_from = None
            groups.append((start, stop, True))
        elif loose_from is None:
            loose_from = start
    if loose_from is not None:
        groups.append((loose_from, n, False))
    return groups


# --- several processes on one device ----------------------------------------------------------

# Shards whose masks one process computes together, at most: enough for one full cube of 256²
# masks (4 shards of 64), while a group of 16 MiB shards stays a small share of host memory.
MAX_SHARDS_PER_BATCH = 4
# Device memory a CUDA context of a worker process takes before any array (CUDA 13 with lazy
# module loading: a few hundred MiB), and the least a worker should have for its arrays.
CONTEXT_BYTES = 512 * 2**20
MIN_WORKER_BYTES = 1 << 30
# Of the device's memory, what the workers share out: the rest is left to the driver's pool
# rounding and to whatever else runs on the card.
_USABLE_SHARE = 0.9
# Device bytes per pixel of a batch beside its transform: labels (up to 2), edges (1), distances
# (4), maps (4), and CuPy's rounding.
_BATCH_BYTES_PER_PIXEL = 12


def shards_per_batch(masks_per_shard: int, shape: Sequence[int], n_shards: int, processes: int) -> int:
    """How many shards of 2-D masks of ``shape`` one process should compute as one batch.

    One shard of small masks fills too little of cuCIM's cube to stack (64 masks of 256² fill a
    quarter of its 256³): a few together fill it, up to :data:`MAX_SHARDS_PER_BATCH`, but never
    so many that some of the ``processes`` would get no shard at all.

    Examples
    --------
    >>> shards_per_batch(64, (256, 256), n_shards=400, processes=16)
    4
    >>> shards_per_batch(64, (256, 256), n_shards=32, processes=16)
    2
    >>> shards_per_batch(4, (1024, 1024), n_shards=400, processes=16)   # would never fill the cube
    1
    """
    if len(shape) != 2 or masks_per_shard < 1:
        return 1
    side = padded_side(shape)
    wanted = min(MAX_SHARDS_PER_BATCH, -(-side // masks_per_shard), max(1, n_shards // max(1, processes)))
    height, width = (int(s) for s in shape)
    fill = min(wanted * masks_per_shard, side) * height * width / side**3
    if wanted <= 1 or side > _INT32_CUBE_SIDE or fill < MIN_STACK_FILL:
        return 1
    return wanted


def worker_bytes(shape: Sequence[int], batch_pixels: int) -> int:
    """Device memory one worker process needs for batches of ``batch_pixels`` of samples of
    ``shape`` (its largest): twice its largest transform (a transform plans with half of the
    memory free, see :func:`transform_limit`), the batch's own arrays, and at least
    :data:`MIN_WORKER_BYTES`."""
    largest = transform_bytes(shape)
    if len(shape) == 2:
        count = min(max(1, batch_pixels // math.prod(int(n) for n in shape)), padded_side(shape))
        largest = max(largest, transform_bytes((count, *shape)))
    return max(MIN_WORKER_BYTES, int(largest / _MEMORY_SHARE) + _BATCH_BYTES_PER_PIXEL * max(batch_pixels, math.prod(shape)))


def device_workers(processes: int, total_bytes: int, need_bytes: int) -> tuple[int, int]:
    """How many of ``processes`` may use one device of ``total_bytes`` at once when each needs
    ``need_bytes`` (:func:`worker_bytes`), and the device memory each may hold.

    Every worker owns a CUDA context (:data:`CONTEXT_BYTES`) and caches what it allocated; the
    share given to each is the limit its memory pool keeps to, so that the workers together never
    ask the device for more than it has.

    Examples
    --------
    >>> n, share = device_workers(16, total_bytes=80 * 2**30, need_bytes=2**30)
    >>> n, round(share / 2**30, 1)
    (16, 4.0)
    >>> device_workers(16, total_bytes=8 * 2**30, need_bytes=2**30)[0]
    4
    >>> device_workers(16, total_bytes=80 * 2**30, need_bytes=30 * 2**30)[0]   # a 1024³ volume
    2
    """
    usable = int(_USABLE_SHARE * total_bytes)
    workers = max(1, min(processes, usable // (CONTEXT_BYTES + need_bytes)))
    return workers, max(0, usable - workers * CONTEXT_BYTES) // workers
