"""weightmaps: pixel-wise loss weights for semantic segmentation (Bressan et al., 2021).

    w(x) = φ_c(x) · δ(x),   δ(x) = 1 − exp(−d(x)² / (2σ²))

φ balances the classes over the training set, δ discounts pixels near label edges, where labels
are uncertain. See README.md and ARCHITECTURE.md.
"""

from weightmaps._version import __version__
from weightmaps.backend import DEVICES, Backend, get_backend
from weightmaps.classweights import SCHEMES, class_counts, class_weights, count_labels
from weightmaps.engine import distance_to_edges, edge_mask, uncertainty, weight_map
from weightmaps.errors import (
    BadInputError,
    IncompleteRunError,
    ResumeMismatchError,
    StoreExistsError,
    WeightmapsError,
)
from weightmaps.pipeline import ComputeResult, compute
from weightmaps.store import WeightStore, open_store

__all__ = [
    "DEVICES",
    "SCHEMES",
    "Backend",
    "BadInputError",
    "ComputeResult",
    "IncompleteRunError",
    "ResumeMismatchError",
    "StoreExistsError",
    "WeightStore",
    "WeightmapsError",
    "__version__",
    "class_counts",
    "class_weights",
    "compute",
    "count_labels",
    "distance_to_edges",
    "edge_mask",
    "get_backend",
    "open_store",
    "uncertainty",
    "weight_map",
]
