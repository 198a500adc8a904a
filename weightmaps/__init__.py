"""weightmaps: pixel-wise loss weights for semantic segmentation (Bressan et al., 2021).

    w(x) = φ_c(x) · δ(x),   δ(x) = 1 − exp(−d(x)² / (2σ²))

φ balances the classes over the training set, δ discounts pixels near label edges, where labels
are uncertain. See README.md and ARCHITECTURE.md.

The names below are imported on first use (PEP 562): ``import weightmaps`` costs nothing until
then, so the command line starts fast and a Ctrl-C while it starts is a clean exit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from weightmaps.version import __version__

if TYPE_CHECKING:
    from weightmaps.backend import DEVICES, Backend, get_backend
    from weightmaps.classweights import SCHEMES, class_counts, class_weights, count_labels
    from weightmaps.engine import distance_to_edges, edge_mask, uncertainty, weight_from_distance, weight_map
    from weightmaps.errors import (
        BadInputError,
        IncompleteRunError,
        ResumeMismatchError,
        StoreExistsError,
        StoreLockedError,
        WeightmapsError,
    )
    from weightmaps.params import MapParams
    from weightmaps.pipeline import ComputeResult, compute
    from weightmaps.store import WeightStore, open_store
    from weightmaps.sdf import signed_distance
    from weightmaps.unet import instances_from_labels, unet_weights

# Public name -> the module that defines it.
_HOMES = {
    "DEVICES": "backend", "Backend": "backend", "get_backend": "backend",
    "SCHEMES": "classweights", "class_counts": "classweights", "class_weights": "classweights",
    "count_labels": "classweights",
    "distance_to_edges": "engine", "edge_mask": "engine", "uncertainty": "engine", "weight_map": "engine",
    "weight_from_distance": "engine",
    "BadInputError": "errors", "IncompleteRunError": "errors", "ResumeMismatchError": "errors",
    "StoreExistsError": "errors", "StoreLockedError": "errors", "WeightmapsError": "errors",
    "MapParams": "params",
    "ComputeResult": "pipeline", "compute": "pipeline",
    "WeightStore": "store", "open_store": "store",
    "instances_from_labels": "unet", "unet_weights": "unet",
    "signed_distance": "sdf",
}

__all__ = sorted([*_HOMES, "__version__"], key=lambda name: (not name.isupper(), name.lower()))


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'weightmaps' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"weightmaps.{home}"), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
