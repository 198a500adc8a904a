"""CUDA kernel sources: read from ``kernels/`` on first use, compiled by CuPy on first call.

Nothing here runs at import time. The source file is the kernel's preamble, so editing it
changes CuPy's cache key and recompiles.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["kernel_dir", "kernel_source", "square_kernel", "weight_kernel"]


@functools.cache
def kernel_dir() -> Path:
    """Where the ``.cuh`` files are: inside the installed wheel, or ``kernels/`` of a checkout."""
    packaged = Path(str(resources.files("weightmaps"))) / "kernels"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "kernels"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"weightmaps kernel sources not found in {packaged} or {checkout}")


@functools.cache
def kernel_source(name: str) -> str:
    return (kernel_dir() / name).read_text(encoding="utf-8")


@functools.cache
def weight_kernel() -> Any:
    """The fused ElementwiseKernel: uncertainty, class-weight lookup, ignore label and cast.

    One pass over labels and distances, one write of the weights. CuPy compiles it for each
    device on the first call and caches the binary on disk.
    """
    import cupy

    return cupy.ElementwiseKernel(
        in_params=(
            "L label, float32 distance, raw float64 class_weight, int64 num_labels, "
            "float64 factor, float64 grid, int64 ignore_label"
        ),
        out_params="W weight",
        operation=(
            "weight = (W)wm_weight((long long)label, distance, &class_weight[0], num_labels, "
            "factor, grid, ignore_label);"
        ),
        name="weightmaps_weight_map",
        preamble=kernel_source("weightmap.cuh"),
    )


@functools.cache
def square_kernel() -> Any:
    """d → d² as float32, recovered exactly on a short grid (``wm_square``); may run in place."""
    import cupy

    return cupy.ElementwiseKernel(
        in_params="float32 distance, float64 grid",
        out_params="float32 square",
        operation="square = (float)wm_square(distance, grid);",
        name="weightmaps_square",
        preamble=kernel_source("weightmap.cuh"),
    )
