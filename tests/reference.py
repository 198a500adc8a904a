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


def reference_two_nearest(instances: np.ndarray, spacing=None, ignore_index=None) -> tuple[np.ndarray, np.ndarray]:
    """d1, d2 by the full per-instance loop users write: one whole-array scipy EDT per instance."""
    from scipy import ndimage

    ids = [i for i in np.unique(instances) if i != 0 and i != ignore_index]
    distances = [ndimage.distance_transform_edt(instances != i, sampling=spacing) for i in ids]
    distances += [np.full(instances.shape, np.inf)] * max(0, 2 - len(distances))
    ordered = np.sort(np.stack(distances), axis=0)
    return ordered[0], ordered[1]


def brute_two_nearest(instances: np.ndarray, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """d1, d2 by visiting every pixel and every instance pixel (tiny arrays only)."""
    spacing = np.ones(instances.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    points = np.argwhere(np.ones(instances.shape, dtype=bool)) * spacing
    nearest = []
    for i in np.unique(instances[instances != 0]):
        members = np.argwhere(instances == i) * spacing
        nearest.append(np.sqrt(((points[:, None, :] - members[None]) ** 2).sum(-1)).min(axis=1))
    nearest += [np.full(len(points), np.inf)] * max(0, 2 - len(nearest))
    ordered = np.sort(np.stack(nearest), axis=0)
    return ordered[0].reshape(instances.shape), ordered[1].reshape(instances.shape)


def reference_unet(instances, *, w0, sigma, spacing=None, class_weights=None, classes=None, ignore_index=None):
    """Ronneberger et al. Eq. 2 in float64 from the full per-instance loop, every instance counted."""
    classes = (instances != 0).astype(int) if classes is None else classes
    ignored = classes == ignore_index if ignore_index is not None else np.zeros(instances.shape, dtype=bool)
    kept = np.where(ignored, 0, instances)
    d1, d2 = reference_two_nearest(kept, spacing)
    separation = np.where(kept == 0, w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2)), 0.0)
    weights = {} if class_weights is None else class_weights
    base = np.vectorize(lambda c: 0.0 if c == ignore_index else weights.get(int(c), 1.0), otypes=[float])(classes)
    return np.where(ignored, 0.0, base + separation)


def one_hot2dist(labels: np.ndarray, num_classes: int, spacing=None) -> np.ndarray:
    """Kervadec et al.'s one_hot2dist (boundary loss, 2019) as published, on the one-hot of ``labels``.

    For each class present: edt(negmask) * negmask - (edt(posmask) - 1) * posmask, scipy's EDT
    with ``sampling`` = resolution = spacing; absent classes 0.
    """
    from scipy import ndimage

    res = np.zeros((num_classes, *labels.shape))
    for k in range(num_classes):
        posmask = labels == k
        if posmask.any():
            negmask = ~posmask
            res[k] = (ndimage.distance_transform_edt(negmask, sampling=spacing) * negmask
                      - (ndimage.distance_transform_edt(posmask, sampling=spacing) - 1) * posmask)
    return res


def reference_instances_from_labels(labels: np.ndarray, connectivity: int = 1, background: int = 0,
                                    ignore_index=None) -> np.ndarray:
    """instances_from_labels as it was before issue 20: one whole-array ndimage.label per label value.

    Values in increasing order, each value's components in scipy's order, offset value after value.
    """
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(labels.ndim, connectivity)
    out = np.zeros(labels.shape, dtype=np.int32)
    offset = 0
    for value in (int(v) for v in np.unique(labels)):
        if value == background or value == ignore_index:
            continue
        components, count = ndimage.label(labels == value, structure=structure)
        out = np.where(components > 0, components.astype(np.int32) + np.int32(offset), out)
        offset += int(count)
    return out


def max_ulp(got, exact, dtype=np.float32) -> float:
    """The largest |got − exact| in ulp of ``dtype`` at the exact value; inf if an exact 0 is not 0.

    An ulp at x is the spacing of ``dtype``'s numbers in the binade of |x| (2^(e−p) for
    |x| in [2^(e−1), 2^e), p the precision), the subnormal spacing below the normal range: a
    correctly rounded result is within 0.5 ulp of the exact value.
    """
    got, exact = np.asarray(got, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    zero = exact == 0
    if (got[zero] != 0).any():
        return float("inf")
    if zero.all():
        return 0.0
    info = np.finfo(dtype)
    _, exponent = np.frexp(np.abs(exact[~zero]))
    ulp = np.ldexp(1.0, np.maximum(exponent - (info.nmant + 1), info.minexp - info.nmant))
    return float((np.abs(got[~zero] - exact[~zero]) / ulp).max())


def exact_weight(labels: np.ndarray, sigma: float, class_weights, spacing=None, ignore_index=None) -> np.ndarray:
    """The paper's weight in float64 from scipy's float64 distances and the float64 φ given."""
    return reference_weight(labels, scipy_distance(labels, spacing), sigma, class_weights, ignore_index)
