"""Obviously-correct, slow references for the engine: loops and brute force, float64.

Only for tiny arrays: the distance is O(pixels × edge pixels).
"""

from __future__ import annotations

import itertools

import numpy as np


def brute_edge_mask(labels: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Visit every pixel and every neighbour inside the array; mark the pixel if one differs."""
    edges = np.zeros(labels.shape, dtype=bool)
    steps = [s for s in itertools.product((-1, 0, 1), repeat=labels.ndim)
             if any(s) and sum(map(abs, s)) <= connectivity]
    for index in np.ndindex(labels.shape):
        for step in steps:
            other = tuple(i + s for i, s in zip(index, step))
            if all(0 <= o < n for o, n in zip(other, labels.shape)) and labels[other] != labels[index]:
                edges[index] = True
                break
    return edges


def brute_distance(labels: np.ndarray, spacing=None, connectivity: int = 1) -> np.ndarray:
    """Distance from each pixel centre to every edge-pixel centre, minimum taken; inf without edges."""
    spacing = np.ones(labels.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    edges = np.argwhere(brute_edge_mask(labels, connectivity)) * spacing
    points = np.argwhere(np.ones(labels.shape, dtype=bool)) * spacing
    if len(edges) == 0:
        return np.full(labels.shape, np.inf)
    diff = points[:, None, :] - edges[None, :, :]
    return np.sqrt((diff**2).sum(-1)).min(axis=1).reshape(labels.shape)


def reference_uncertainty(distance: np.ndarray, sigma: float) -> np.ndarray:
    # 1 - exp(-x) in float64; as -expm1(-x) because for x < 1e-8 even float64 loses digits
    # to the cancellation (relative error 1e-16 / x).
    return -np.expm1(-(distance.astype(np.float64) ** 2) / (2.0 * sigma**2))


def reference_weight(labels, distance, sigma, class_weights, ignore_index=None) -> np.ndarray:
    phi = np.vectorize(lambda v: 0.0 if v == ignore_index else class_weights[int(v)], otypes=[float])(labels)
    return phi * reference_uncertainty(distance, sigma)


def scipy_edge_mask(labels: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """An edge pixel sees a larger or a smaller label in its neighbourhood (grey dilation/erosion)."""
    from scipy import ndimage

    footprint = ndimage.generate_binary_structure(labels.ndim, connectivity)
    grown = ndimage.grey_dilation(labels, footprint=footprint, mode="nearest")
    shrunk = ndimage.grey_erosion(labels, footprint=footprint, mode="nearest")
    return (grown != labels) | (shrunk != labels)


def scipy_distance(labels: np.ndarray, spacing=None, connectivity: int = 1) -> np.ndarray:
    """The plain scipy recipe a user would write, in float64, with the no-edge case handled."""
    from scipy import ndimage

    edges = scipy_edge_mask(labels, connectivity)
    if not edges.any():
        return np.full(labels.shape, np.inf)
    return ndimage.distance_transform_edt(~edges, sampling=spacing)
