"""U-Net separation weights (Ronneberger et al. 2015, Eq. 2), exact within a tolerance and windowed.

    w(x) = w_c[class(x)] + s(x),   s(x) = w0 · exp(−(d1(x) + d2(x))² / (2σ²)) on background pixels

d1, d2: the distance (in ``spacing`` units) from x to the nearest pixel of the nearest and of the
second-nearest instance. s is 0 on instance pixels, and everywhere when a mask holds fewer than two
instances. Ignored pixels weigh 0 and are neither background nor instance.

Every implementation users find runs one full-image distance transform per instance: minutes per
image at a few hundred instances. Here each instance's distance is computed only where it can
matter: s ≥ tolerance · w0 needs d1 + d2 ≤ R = σ·sqrt(2·ln(1/tolerance)); s lives on background
pixels, where d1 is at least the smallest spacing, so d2 ≤ R − min(spacing), and an instance's
distance is needed only inside its bounding box grown by that much. Where the exact d1 + d2 ≤ R
both instances' windows cover the pixel and the result is exact; elsewhere the windows can only
leave instances out, so the computed s is below the exact one, itself below tolerance · w0. So
|s − s_exact| ≤ tolerance · w0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from weightmaps.arrays import LabelArray, is_cupy_array, to_numpy
from weightmaps.backend import DISTANCE_DTYPE, Backend, backend_for
from weightmaps.engine import OUTPUT_DTYPES, pixel_class_weights
from weightmaps.errors import WeightmapsError
from weightmaps.params import MapParams
from weightmaps.precision import sigma_units
from weightmaps.transforms import edge_distance, nearest_distance
from weightmaps.validation import (
    check_connectivity,
    check_labels,
    check_sigma,
    check_spacing,
    check_unet_parameters,
    sample_ndim,
)

__all__ = ["instances_from_labels", "nearest_two_instances", "unet_batch", "unet_weights"]


def _check_instances(instances: LabelArray) -> Any:
    instances = instances if is_cupy_array(instances) else np.asarray(instances)
    check_labels(instances)  # integer, non-negative, 2-D or 3-D, non-empty
    return instances


def reach(sigma: float, tolerance: float) -> float:
    """R = σ·sqrt(2·ln(1/tolerance)): beyond d1 + d2 = R the separation term is below tolerance·w0."""
    return sigma * math.sqrt(2.0 * math.log(1.0 / tolerance))


def nearest_two_instances(
    instances: LabelArray,
    *,
    spacing: Any = None,
    within: float | None = None,
    ignore_index: int | None = None,
    device: str | Backend = "auto",
) -> tuple[Any, Any]:
    """d1, d2: distance from every pixel to the nearest pixel of the nearest and second-nearest instance.

    In ``spacing`` units, float32; +inf where there is no such instance. With ``within``, each
    instance's distance is computed only inside its bounding box grown by ``within`` (beyond it
    reads +inf): exact wherever both distances are at most ``within``. Instance 0 (background) and
    ``ignore_index`` are no instances.

    Examples
    --------
    >>> import numpy as np
    >>> d1, d2 = nearest_two_instances(np.array([[1, 0, 0, 2]]), device="cpu")
    >>> d1.tolist(), d2.tolist()
    ([[0.0, 1.0, 1.0, 0.0]], [[3.0, 2.0, 2.0, 3.0]])
    """
    instances = _check_instances(instances)
    backend = backend_for(instances, device)
    spacing = check_spacing(spacing, instances.ndim)
    d1, d2 = _two_nearest(backend, backend.asarray(instances), spacing, None if within is None else float(within),
                          ignore_index)
    restore = (lambda a: a) if is_cupy_array(instances) else to_numpy
    return restore(d1), restore(d2)


def _two_nearest(
    backend: Backend, instances: LabelArray, spacing: tuple[float, ...], within: float | None, ignore_index: int | None,
    stacked: bool | None = None,
) -> tuple[Any, Any]:
    """d1, d2 from every instance's window; ``stacked`` (default: on a GPU) batches the windows."""
    xp = backend.xp
    d1 = xp.full(instances.shape, np.inf, dtype=DISTANCE_DTYPE)
    d2 = xp.full(instances.shape, np.inf, dtype=DISTANCE_DTYPE)
    host = to_numpy(instances)
    boxes, numbered = _instance_boxes(host, ignore_index)
    if not boxes:
        return d1, d2
    # A pixel within `within` of an instance pixel lies at most floor(within / spacing) pixels
    # from it along every axis; the 1e-6 keeps a rounding of the quotient from losing one.
    grow = [host.shape[a] if within is None else math.floor(within / spacing[a] * (1 + 1e-6))
            for a in range(host.ndim)]
    windows = [(number, *_grown(box, grow, host.shape)) for number, box in boxes]
    larger = xp.empty(max(math.prod(shape) for _, _, shape in windows), dtype=DISTANCE_DTYPE)
    if stacked if stacked is not None else backend.on_gpu:
        distances = _stacked_windows(backend, numbered, windows, spacing)
    else:
        distances = ((k, nearest_distance(backend, backend.asarray(numbered[window] == number), spacing, False))
                     for k, (number, window, _) in enumerate(windows))
    # The updates commute: the windows may come in any order.
    for k, distance in distances:
        _, window, shape = windows[k]
        near, second = d1[window], d2[window]
        # The two smallest of (near, second, distance), in place: second = min(second, max(near,
        # distance)), near = min(near, distance).
        bigger = larger[: math.prod(shape)].reshape(shape)
        xp.maximum(near, distance, out=bigger)
        xp.minimum(second, bigger, out=second)
        xp.minimum(near, distance, out=near)
    return d1, d2


def _stacked_windows(
    backend: Backend, numbered: np.ndarray, windows: list[tuple[int, tuple[slice, ...], tuple[int, ...]]],
    spacing: tuple[float, ...],
) -> Iterator[tuple[int, Any]]:
    """Each window's distance to its instance, computed as stacks of windows (one per size class).

    On a GPU hundreds of small transforms cost a launch sequence each; stacked, a size class
    goes to cuCIM as a few 3-D transforms (transforms.edge_distance). A window sits in the
    corner of its class's canvas (sides rounded up to 32, cuCIM's own padding); the rest of the
    canvas holds no instance pixel, so the window's distances are those of the window alone.
    Yields ``(window index, its distances)`` one size class after the other (so that one class's
    stack is held at a time), on the backend's device.
    """
    classes: dict[tuple[int, ...], list[int]] = {}
    for k, (_, _, shape) in enumerate(windows):
        classes.setdefault(tuple(32 * math.ceil(n / 32) for n in shape), []).append(k)
    for canvas, members in classes.items():
        masks = np.zeros((len(members), *canvas), dtype=bool)
        for j, k in enumerate(members):
            number, window, shape = windows[k]
            corner: tuple[Any, ...] = (j, *(slice(0, n) for n in shape))
            masks[corner] = numbered[window] == number
        distance = edge_distance(backend, backend.asarray(masks), spacing, batch=True)
        for j, k in enumerate(members):
            yield k, distance[(j, *(slice(0, n) for n in windows[k][2]))]


def _grown(box: tuple[slice, ...], grow: list[int], shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """A bounding box grown by ``grow`` pixels per axis, clipped to the array; and its shape."""
    window = tuple(slice(max(0, b.start - g), min(n, b.stop + g)) for b, g, n in zip(box, grow, shape, strict=True))
    return window, tuple(w.stop - w.start for w in window)


# Instance ids up to this many times the pixel count are looked up in a table (one pass, no
# sort); sparser ids (anything up to 2**63) are numbered through a sort.
_TABLE_IDS_PER_PIXEL = 4


def _instance_boxes(host: np.ndarray, ignore_index: int | None) -> tuple[list[tuple[int, tuple[slice, ...]]], np.ndarray]:
    """Every instance's number in the returned array, and its bounding box there.

    Ids that are small enough number themselves (the array is returned as it is); otherwise the
    instances are numbered 1..n (0: background and ignored pixels).
    """
    from scipy import ndimage

    top = int(host.max())
    if top <= _TABLE_IDS_PER_PIXEL * host.size + 1024:
        numbered = host if host.dtype.kind != "b" else host.view(np.uint8)
        boxes = ndimage.find_objects(numbered, max_label=top)
        return [(k, box) for k, box in enumerate(boxes, start=1) if box is not None and k != ignore_index], numbered
    ids, inverse = np.unique(host, return_inverse=True)
    numbered = inverse.reshape(host.shape).astype(np.int64)  # 0 stays 0: the smallest id is 0 or more
    if ids[0] != 0:
        numbered += 1
        ids = np.concatenate([[0], ids])
    skip = {0} | ({int(np.searchsorted(ids, ignore_index))} if ignore_index is not None and ignore_index in ids else set())
    boxes = ndimage.find_objects(numbered, max_label=len(ids) - 1)
    return [(k, box) for k, box in enumerate(boxes, start=1) if box is not None and k not in skip], numbered


def unet_weights(
    instances: LabelArray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Mapping[int, float] | None = None,
    classes: Any = None,
    spacing: Any = None,
    ignore_index: int | None = None,
    tolerance: float = 1e-4,
    dtype: str = "float32",
    device: str | Backend = "auto",
) -> Any:
    """The U-Net weight map w = w_c[class] + w0 · exp(−(d1 + d2)² / (2σ²)) of Ronneberger et al. (2015).

    Parameters
    ----------
    instances : array
        Instance labels, 2-D or 3-D integers: 0 is background, every other value one instance
        (ids need not be consecutive). See :func:`instances_from_labels` for semantic masks.
    w0, sigma : float
        Height and width (in ``spacing`` units) of the separation term (the paper: 10 and 5 px).
    class_weights : mapping, optional
        ``w_c`` by class; default 1 for every class.
    classes : array, optional
        The class of every pixel (e.g. the semantic mask the instances came from); default 0 on
        background and 1 on instances.
    spacing : float or sequence of float, optional
        Pixel size per axis.
    ignore_index : int, optional
        A value of ``classes`` (or of ``instances`` without ``classes``): weight 0, and neither
        background nor instance.
    tolerance : float
        |s − s_exact| ≤ tolerance · w0 everywhere (see the module docstring); it sets how far
        each instance's distance is computed.
    dtype : {"float32", "float16"}
    device : {"auto", "cuda", "cpu", "scipy"} or Backend

    Examples
    --------
    >>> import numpy as np
    >>> cells = np.array([[1, 1, 0, 2, 2]])
    >>> unet_weights(cells, w0=10.0, sigma=1.0, device="cpu").round(2)
    array([[1.  , 1.  , 2.35, 1.  , 1.  ]], dtype=float32)
    """
    sigma = check_sigma(sigma)
    w0, tolerance = check_unet_parameters(w0, tolerance)
    if str(np.dtype(dtype)) not in OUTPUT_DTYPES:
        raise WeightmapsError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    instances = _check_instances(instances)
    backend = backend_for(instances, device)
    xp = backend.xp
    data = backend.asarray(instances)
    ndim = sample_ndim(data, False)
    spacing = check_spacing(spacing, ndim)
    if classes is None:
        pixel_class = data != 0
        ignored = (data == ignore_index) if ignore_index is not None else None
        instance_ignore = ignore_index
    else:
        pixel_class = backend.asarray(classes if is_cupy_array(classes) else np.asarray(classes))
        check_labels(pixel_class)
        if pixel_class.shape != data.shape:
            raise WeightmapsError(f"classes have shape {tuple(pixel_class.shape)}, instances {tuple(data.shape)}")
        ignored = (pixel_class == ignore_index) if ignore_index is not None else None
        instance_ignore = None
    if ignored is not None and bool(ignored.any()):
        data = xp.where(ignored, 0, data)  # neither an instance, nor (below) background
    # Distances in units of σ·√2 (see precision.sigma_units): s = w0 · exp(−(u1 + u2)²).
    scaled, factor = sigma_units(spacing, sigma)
    unit = math.sqrt(factor)
    # On a background pixel d1 is at least the smallest spacing (the nearest instance pixel is a
    # step away at least), so d1 + d2 ≤ R needs d2 ≤ R − that: each window grows by that much.
    reach_units = math.sqrt(math.log(1.0 / tolerance)) / unit  # R / (σ√2), in the transform's units
    within = max(reach_units - min(scaled), 0.0)
    d1, d2 = _two_nearest(backend, data, scaled, within, instance_ignore)
    separation = d1
    separation += d2
    separation *= np.float32(unit)
    xp.square(separation, out=separation)
    xp.negative(separation, out=separation)
    xp.exp(separation, out=separation)
    separation *= np.float32(w0)
    separation *= data == 0  # instances get no separation term
    if class_weights is None:
        weights = separation
        weights += np.float32(1.0)
    else:
        weights = separation
        weights += pixel_class_weights(pixel_class, class_weights, ignore_index)
    if ignored is not None:
        weights[ignored] = 0
    out = weights.astype(dtype)
    return out if is_cupy_array(instances) else to_numpy(out)


def instances_from_labels(
    labels: LabelArray, *, connectivity: int = 1, background: int = 0, ignore_index: int | None = None
) -> Any:
    """Instances of a semantic mask: the connected components of every class, numbered 1, 2, ...

    Background and ``ignore_index`` pixels are 0. Components of different classes never merge,
    even when they touch. int32; on the input's device. Numbered class by class in increasing
    label order, within a class in the raster order of each component's first pixel: the ids one
    ``scipy.ndimage.label`` per class gives, offset class after class.

    All classes are labelled together in one pass (see :func:`_same_label_components`), so the
    cost does not grow with the number of labels (one whole-array ``ndimage.label`` per label
    took 23 s on a 1024² mask of 3,900 labels). A CuPy mask is labelled on the host, as the U-Net
    map reads its instances there anyway, and the result is returned on the mask's device.

    Examples
    --------
    >>> import numpy as np
    >>> instances_from_labels(np.array([[1, 1, 0, 1, 2, 2]]))
    array([[1, 1, 0, 2, 3, 3]], dtype=int32)
    """
    labels = _check_instances(labels)
    connectivity = check_connectivity(connectivity, sample_ndim(labels, False))
    out = _same_label_components(to_numpy(labels), connectivity, background, ignore_index)
    if is_cupy_array(labels):
        import cupy

        with cupy.cuda.Device(labels.device.id):
            return cupy.asarray(out)
    return out


def _row_steps(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Steps from a row to its neighbouring rows: along the leading axes, at most ``connectivity`` of them."""
    return [step for step in itertools.product((-1, 0, 1), repeat=ndim)
            if 0 < sum(1 for s in step if s) <= connectivity]


def _same_label_components(
    labels: np.ndarray, connectivity: int, background: int, ignore_index: int | None
) -> np.ndarray:
    """The components of "same label as the neighbour", numbered as :func:`instances_from_labels` says.

    The mask is cut into runs, maximal stretches of one label along the last axis (in a row two
    consecutive runs differ, so no run joins another of its own row). A run joins a run of a
    neighbouring row (one ``_row_steps`` step away) when both hold the same label and touch. Each
    row is a partition of its columns, so the touching runs are found by lookup: two runs touch
    when one starts inside the other, or, where the step may move one column more (the step
    uses fewer than ``connectivity`` axes), when one starts right after the other ends, i.e. the
    column before its start lies in the other. Every run looks up, in every neighbouring row,
    the runs holding its start column (and the column before): with both rows doing so, each
    touching pair is found. The components of that graph of runs are the instances: time and
    memory go with the pixels once (finding the runs, painting the ids) and with the runs
    otherwise, however many labels there are.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lead_shape, width = labels.shape[:-1], labels.shape[-1]
    flat = labels.reshape(-1)
    starts_mask = np.ones(labels.shape, dtype=bool)
    np.not_equal(labels[..., 1:], labels[..., :-1], out=starts_mask[..., 1:])
    starts = np.flatnonzero(starts_mask)  # raster order: sorted
    del starts_mask
    lengths = np.diff(starts, append=flat.size)
    row, column = np.divmod(starts, width)
    values = flat[starts]
    keep = values != background  # numpy compares out-of-range integers correctly (NumPy >= 2)
    if ignore_index is not None:
        keep &= values != ignore_index
    kept = np.flatnonzero(keep)
    lead = np.unravel_index(row[kept], lead_shape)
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for step in _row_steps(len(lead_shape), connectivity):
        moved = [index + s for index, s in zip(lead, step, strict=True)]
        inside = np.ones(kept.size, dtype=bool)
        for m, n in zip(moved, lead_shape, strict=True):
            inside &= (m >= 0) & (m < n)
        runs = kept[inside]
        other_row = np.ravel_multi_index(tuple(m[inside] for m in moved), lead_shape)
        shifts = (0, 1) if sum(1 for s in step if s) < connectivity else (0,)
        for shift in shifts:
            col = column[runs] - shift
            ok = col >= 0
            mine = runs[ok]
            found = np.searchsorted(starts, other_row[ok] * width + col[ok], side="right") - 1
            same = keep[found] & (values[found] == values[mine])
            sources.append(mine[same])
            targets.append(found[same])
    src = np.concatenate(sources) if sources else np.empty(0, dtype=np.intp)
    dst = np.concatenate(targets) if targets else np.empty(0, dtype=np.intp)
    graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(starts.size, starts.size))
    _, component = connected_components(graph, directed=False)
    # Number the components of the kept runs: by label, then by their first run (their first
    # pixel in raster order); np.unique's first indices are those first runs, runs being sorted.
    present, first = np.unique(component[kept], return_index=True)
    if present.size >= np.iinfo(np.int32).max:
        raise WeightmapsError(f"more than {np.iinfo(np.int32).max - 1} instances in one mask")
    order = np.lexsort((first, values[kept][first]))
    number = np.zeros(int(component.max()) + 1, dtype=np.int32)
    number[present[order]] = np.arange(1, present.size + 1, dtype=np.int32)
    run_ids = np.where(keep, number[component], np.int32(0))
    return np.repeat(run_ids, lengths).reshape(labels.shape)


def unet_batch(masks: Any, params: MapParams, backend: Backend) -> Any:
    """The U-Net maps of a stack of same-shaped masks as ``params`` (kind ``"unet"``) describe them.

    ``params.instances`` says what the masks are: ``"as-is"``, instance masks (classes: background
    and instance); ``"connected"``, semantic masks whose classes' connected components are the
    instances and whose labels are the classes.
    """
    if params.kind != "unet":
        raise WeightmapsError(f"unet_batch makes 'unet' maps, not {params.kind!r}")
    xp = backend.xp
    out = xp.empty(masks.shape, dtype=params.dtype)
    for i in range(len(masks)):
        mask = masks[i]
        if params.instances == "connected":
            instances = instances_from_labels(mask, connectivity=params.connectivity, ignore_index=params.ignore_index)
            classes = mask
        else:
            instances, classes = mask, None
        out[i] = unet_weights(
            instances, classes=classes, w0=params.w0, sigma=params.sigma, class_weights=params.class_weights,  # type: ignore[arg-type]
            spacing=params.spacing, ignore_index=params.ignore_index, tolerance=params.tolerance,  # type: ignore[arg-type]
            dtype=params.dtype, device=backend,
        )
    return out
