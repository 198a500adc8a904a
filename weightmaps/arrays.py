"""numpy or CuPy: which module an array belongs to, and the names the package's signatures use.

The bottom of the package with weightmaps.errors: the checks (weightmaps.validation) and the
backends both ask an array where it lives, and neither imports the other for it. CuPy is
recognised by its module's name, so that numpy-only machines never import it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, TypeAlias

import numpy as np

__all__ = ["HOST_BLOCK", "Array", "LabelArray", "array_module", "is_cupy_array", "to_numpy"]

# An integer label array, numpy or CuPy: one 2-D (H, W) or 3-D (D, H, W) sample, or with
# ``batch=True`` a stack of them (axis 0 the samples); public functions also take what
# ``numpy.asarray`` turns into one. CuPy ships no type information, so to the checker this is Any;
# the name tells the reader which arrays a function expects.
LabelArray: TypeAlias = Any
# Any other numpy or CuPy array the maths passes along: edge masks, distances, maps.
Array: TypeAlias = Any

# Pixels per block of the float64 passes over numpy arrays (64 KiB of float64): the CPU weight pass,
# scaled_root, weight_from_distance. Temporaries that stay in cache instead of streaming whole maps
# through memory several times (measured faster than map-sized temporaries on small VMs).
HOST_BLOCK = 1 << 13


def is_cupy_array(array: Any) -> bool:
    """Whether ``array`` is a CuPy array (without importing CuPy)."""
    return type(array).__module__.split(".")[0] == "cupy"


def array_module(array: Any) -> ModuleType:
    """``cupy`` for a CuPy array, else ``numpy``."""
    if is_cupy_array(array):
        import cupy

        return cupy
    return np


def to_numpy(array: Any) -> np.ndarray:
    """``array`` on the host (a copy from the device for CuPy, no copy for numpy)."""
    return array.get() if is_cupy_array(array) else np.asarray(array)
