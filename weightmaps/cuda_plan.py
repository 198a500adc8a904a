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
