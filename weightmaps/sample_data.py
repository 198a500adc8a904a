"""Deterministic, real-looking segmentation datasets for the demo, tests, benchmarks and examples.

Masks are scenes of smooth blobs (ellipses / ellipsoids whose radius is perturbed by a low-order
polynomial of the direction) on background 0; objects overlap and some are cut by the border.
With ``minority=True`` the last class is rare: a few small objects, about 1-5 % of the pixels.

Everything is drawn from ``numpy.random.default_rng(seed)`` using only uniform draws and
correctly-rounded arithmetic (+, -, *, /, sqrt; no transcendental functions), so the same seed gives
the same bytes on every machine.
"""

from __future__ import annotations

import math

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from weightmaps.errors import WeightmapsError

__all__ = ["make_images", "make_instance_masks", "make_masks", "write_dataset"]

# Radius of an object as a fraction of each axis' extent, per dimensionality, so that a common
# object covers roughly 2-10 % of the image / volume and a rare one 0.4-1.5 %.
_COMMON_RADIUS = {2: (0.08, 0.18), 3: (0.17, 0.29)}
_RARE_RADIUS = {2: (0.035, 0.07), 3: (0.09, 0.14)}
# How far the perturbation may push the boundary out, relative to the radius (bounds the box).
_MAX_BULGE = 2.0

# Base colours (RGB) for classes 0..5; further classes get colours from a fixed formula.
_PALETTE = np.array(
    [[70, 80, 60], [200, 70, 60], [60, 110, 210], [230, 200, 60], [150, 70, 190], [60, 190, 170]],
    dtype=np.int32,
)


def make_masks(
    n: int,
    shape: tuple[int, ...] = (256, 256),
    *,
    num_classes: int = 3,
    seed: int = 0,
    minority: bool = True,
    objects: tuple[int, int] = (3, 8),
) -> np.ndarray:
    """Make ``n`` label masks that look like real segmentation ground truth.

    Parameters
    ----------
    n
        Number of masks.
    shape
        Spatial shape, (H, W) or (D, H, W).
    num_classes
        Number of classes including background 0 (2 gives binary masks; at most 256).
    seed
        Seed of ``numpy.random.default_rng``; the first ``k`` masks do not depend on ``n``.
    minority
        Make the last class rare (few, small objects, about 1-5 % of the pixels). Only applies
        when ``num_classes >= 3``, so that binary masks keep an ordinary foreground.
    objects
        How many common objects a mask gets, drawn from ``[low, high)``; the more objects, the
        smaller each (similar coverage) and the more boundaries, e.g. ``(40, 80)`` for scenes
        of many small cells.

    Returns
    -------
    numpy.ndarray
        ``(n, *shape)`` uint8 labels in ``0 .. num_classes - 1``.

    Examples
    --------
    >>> masks = make_masks(2, (64, 64), num_classes=3, seed=1)
    >>> masks.shape, masks.dtype
    ((2, 64, 64), dtype('uint8'))
    >>> bool((make_masks(2, (64, 64), seed=1) == masks).all())
    True
    >>> make_masks(1, (16, 32, 32)).shape
    (1, 16, 32, 32)
    """
    shape = _check_shape(shape)
    if not 1 <= objects[0] < objects[1]:
        raise WeightmapsError(f"objects: {objects} must be (low, high) with 1 <= low < high")
    if not 2 <= num_classes <= 256:
        raise WeightmapsError(f"num_classes: {num_classes} not in 2..256")
    if n < 0:
        raise WeightmapsError(f"n: {n} must be >= 0")
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, *shape), dtype=np.uint8)
    rare = minority and num_classes >= 3
    common = list(range(1, num_classes - 1 if rare else num_classes))
    ndim = len(shape)
    for mask in masks:
        n_objects = max(len(common), int(rng.integers(*objects)))
        # Every common class at least once, the rest drawn at random; painted in random order.
        labels = common + [int(c) for c in rng.choice(common, n_objects - len(common))]
        labels = [labels[i] for i in rng.permutation(n_objects)]
        # More objects, smaller ones. Up to 7 (the default draw; kept as it was so that pinned
        # datasets keep their bytes) the radius scales as 6/n; beyond, as (6/n)^(1/ndim), which
        # keeps the covered share: many small cells, many boundaries.
        scale = min(1.0, 6.0 / n_objects) if n_objects <= 7 else (6.0 / n_objects) ** (1.0 / ndim)
        lo, hi = _COMMON_RADIUS[ndim]
        for j, label in enumerate(labels):
            radius = rng.uniform(lo, hi) * scale
            _paint_blob(mask, rng, label, radius, touch_border=(j == 0))
        if rare:
            lo, hi = _RARE_RADIUS[ndim]
            for _ in range(int(rng.integers(1, 5))):
                _paint_blob(mask, rng, num_classes - 1, rng.uniform(lo, hi), touch_border=False)
    return masks


def make_instance_masks(n: int, shape: tuple[int, ...], *, instances: int = 50, seed: int = 0) -> np.ndarray:
    """Instance masks of touching cells, like nuclei in microscopy: for the U-Net map.

    Discs (balls in 3-D) of random radius at random places, each drawn over the earlier ones, so
    that many touch and some are cut; about 45 % of the pixels are cells. Ids are 1..instances in
    drawing order (a cell drawn over entirely leaves a gap in the ids).

    Returns
    -------
    numpy.ndarray
        ``(n, *shape)`` int32, 0 = background.

    Examples
    --------
    >>> masks = make_instance_masks(2, (128, 128), instances=40, seed=1)
    >>> masks.shape, masks.dtype, 30 < len(np.unique(masks[0])) <= 41
    ((2, 128, 128), dtype('int32'), True)
    """
    shape = _check_shape(shape)
    if instances < 1 or n < 0:
        raise WeightmapsError(f"instances: {instances} must be >= 1 and n: {n} >= 0")
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    # Mean radius such that `instances` cells of it would cover about 60 % of the mask; overlap
    # brings the covered share down to about 45 %.
    volume = math.pi if ndim == 2 else 4.0 * math.pi / 3.0
    mean_radius = (0.6 * math.prod(shape) / instances / volume) ** (1.0 / ndim)
    masks = np.zeros((n, *shape), dtype=np.int32)
    for mask in masks:
        for k in range(1, instances + 1):
            centre = rng.uniform(0, shape)
            radius = mean_radius * rng.uniform(0.6, 1.3)
            box = tuple(slice(max(0, int(c - radius)), min(size, int(c + radius) + 2))
                        for c, size in zip(centre, shape, strict=True))
            grid = np.ogrid[box]
            inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
            mask[box][inside] = k
    return masks


def make_images(masks: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Make plausible RGB images for label masks, so that a small network can learn the task.

    Each class gets its own colour (jittered per image) and stripe texture; edges are blurred
    and pixel noise is added.

    Parameters
    ----------
    masks
        ``(n, *spatial)`` integer labels, e.g. from :func:`make_masks`.
    seed
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    numpy.ndarray
        ``(n, *spatial, 3)`` uint8; ``(n, H, W, 3)`` for 2-D masks.

    Examples
    --------
    >>> images = make_images(make_masks(2, (64, 64)))
    >>> images.shape, images.dtype
    ((2, 64, 64, 3), dtype('uint8'))
    """
    masks = np.asarray(masks)
    if masks.ndim < 3 or not np.issubdtype(masks.dtype, np.integer):
        raise WeightmapsError(
            f"masks: expected (n, H, W) or (n, D, H, W) integers, got {masks.dtype} {masks.shape}"
        )
    rng = np.random.default_rng(seed)
    spatial = masks.shape[1:]
    num_classes = int(masks.max()) + 1 if masks.size else 1
    palette = _palette(num_classes)
    coords = np.ogrid[tuple(slice(0, s) for s in spatial)]
    images = np.empty((*masks.shape, 3), dtype=np.uint8)
    for mask, image in zip(masks, images):
        colours = palette + rng.integers(-20, 21, palette.shape)
        img = colours[mask]  # (*spatial, 3) int32
        for k in np.unique(mask):
            stripes = _stripes(coords, int(k))
            img += np.where(mask == k, stripes, 0)[..., None]
        for axis in range(len(spatial)):  # soften the edges: binomial [1, 2, 1] / 4 per axis, twice
            img = _blur(_blur(img, axis), axis)
        img += rng.integers(-12, 13, img.shape) + int(rng.integers(-15, 16))
        np.clip(img, 0, 255, out=image, casting="unsafe")
    return images


def write_dataset(
    root: str | os.PathLike[str],
    n: int = 8,
    shape: tuple[int, ...] = (256, 256),
    *,
    num_classes: int = 3,
    seed: int = 0,
    fmt: str = "png",
    with_images: bool = True,
    objects: tuple[int, int] = (3, 8),
) -> Path:
    """Write a sample dataset: ``root/masks/<id>.<fmt>`` and ``root/images/<id>.png``.

    Ids are ``sample_00000``, ``sample_00001``, ... Masks are written as PNG mode L, single-page or
    multi-page (3-D) uint8 TIFF, or ``.npy``. Images are PNG for 2-D data; for 3-D data (PNG is
    2-D only) they use the masks' format. Existing files are overwritten.

    Parameters
    ----------
    root
        Output folder, created if needed.
    n, shape, num_classes, seed, objects
        As in :func:`make_masks` (images use the same seed).
    fmt
        Mask format: ``"png"`` (2-D only), ``"tif"`` or ``"npy"``.
    with_images
        Also write the RGB images of :func:`make_images`.

    Returns
    -------
    pathlib.Path
        ``root``.

    Examples
    --------
    >>> import tempfile
    >>> root = write_dataset(tempfile.mkdtemp(), n=2, shape=(32, 32))
    >>> sorted(p.name for p in (root / "masks").iterdir())
    ['sample_00000.png', 'sample_00001.png']
    """
    if fmt not in ("png", "tif", "npy"):
        raise WeightmapsError(f"fmt: {fmt!r} is not one of 'png', 'tif', 'npy'")
    shape = _check_shape(shape)
    if fmt == "png" and len(shape) != 2:
        raise WeightmapsError(
            f"fmt: 'png' holds 2-D masks only; shape {shape} needs 'tif' or 'npy'"
        )
    root = Path(root)
    masks = make_masks(n, shape, num_classes=num_classes, seed=seed, objects=objects)
    width = max(5, len(str(n - 1)))
    ids = [f"sample_{i:0{width}d}" for i in range(n)]
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for id_, mask in zip(ids, masks):
        _write_array(root / "masks" / f"{id_}.{fmt}", mask)
    if with_images:
        images = make_images(masks, seed=seed)
        image_fmt = "png" if len(shape) == 2 else fmt
        (root / "images").mkdir(parents=True, exist_ok=True)
        for id_, image in zip(ids, images):
            _write_array(root / "images" / f"{id_}.{image_fmt}", image, rgb=True)
    return root


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise WeightmapsError(f"shape: {shape} must be (H, W) or (D, H, W) with positive sizes")
    return shape


def _paint_blob(
    mask: np.ndarray, rng: np.random.Generator, label: int, radius: float, *, touch_border: bool
) -> None:
    """Paint one perturbed ellipse / ellipsoid of ``label`` into ``mask`` (in place)."""
    ndim = mask.ndim
    extent = np.array(mask.shape, dtype=np.float64)
    center = rng.uniform(0.0, 1.0, ndim) * extent
    if touch_border:  # sit on a random face of the image so that part of the object is cut off
        axis = int(rng.integers(ndim))
        center[axis] = extent[axis] * int(rng.integers(2))
    # Drawn in float64 (the draws fix the bytes), used in float32 below: typed as plain arrays.
    radii: np.ndarray = radius * extent * rng.uniform(0.6, 1.5, ndim)
    rot: np.ndarray = _rotation(rng, ndim)
    # Low-order radial perturbation of the boundary, a polynomial of the direction u:
    # u.Q.u (elongation), (b.u)^3 (pear shapes), (c.u)^2 (d.u)^2 (four lobes).
    quad: np.ndarray = rng.uniform(-0.2, 0.2, (ndim, ndim))
    quad = (quad + quad.T) / 2
    cubic: np.ndarray = rng.uniform(-0.8, 0.8, ndim)
    lobe_c: np.ndarray = rng.uniform(-1.0, 1.0, ndim)
    lobe_d: np.ndarray = rng.uniform(-1.0, 1.0, ndim)

    reach = radii.max() * _MAX_BULGE
    lo = np.maximum(np.floor(center - reach), 0).astype(int)
    hi = np.minimum(np.ceil(center + reach) + 1, extent).astype(int)
    if np.any(lo >= hi):
        return
    # Pixel-centre offsets from the object centre, one broadcastable axis each; the per-pixel
    # work is float32 (all parameters cast once) for speed.
    offsets = [
        (np.arange(lo[a], hi[a], dtype=np.float64) + 0.5 - center[a])
        .astype(np.float32)
        .reshape([-1 if b == a else 1 for b in range(ndim)])
        for a in range(ndim)
    ]
    rot, radii, quad, cubic, lobe_c, lobe_d = (
        x.astype(np.float32) for x in (rot, radii, quad, cubic, lobe_c, lobe_d)
    )
    # Coordinates in the object frame, in units of its radii.
    p = [sum(rot[a, j] * offsets[a] for a in range(ndim)) / radii[j] for j in range(ndim)]
    rho = np.sqrt(sum(pj * pj for pj in p))
    u = [pj / np.maximum(rho, 1e-9) for pj in p]
    bulge = sum(quad[j, k] * u[j] * u[k] for j in range(ndim) for k in range(ndim))
    b_u = sum(cubic[j] * u[j] for j in range(ndim))
    c_u = sum(lobe_c[j] * u[j] for j in range(ndim))
    d_u = sum(lobe_d[j] * u[j] for j in range(ndim))
    bulge = bulge + 0.3 * b_u * b_u * b_u + 0.6 * (c_u * c_u) * (d_u * d_u)
    inside = rho <= 1.0 + bulge
    region = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    region[inside] = label


def _rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A random rotation matrix from uniform draws and sqrt only (no trigonometry)."""
    while True:
        v = rng.uniform(-1.0, 1.0, 2 if ndim == 2 else 4)
        norm = float(np.sqrt(sum(x * x for x in v)))
        if 1e-3 < norm <= 1.0:
            break
    if ndim == 2:
        c, s = v / norm
        return np.array([[c, -s], [s, c]])
    w, x, y, z = v / norm  # unit quaternion
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _palette(num_classes: int) -> np.ndarray:
    if num_classes <= len(_PALETTE):
        return _PALETTE[:num_classes].copy()
    k = np.arange(len(_PALETTE), num_classes)[:, None]
    extra = (k * np.array([97, 57, 151]) + np.array([0, 80, 40])) % 200 + 30
    return np.concatenate([_PALETTE, extra]).astype(np.int32)


def _stripes(coords: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Class ``k``'s texture: integer stripes of a class-dependent direction and period."""
    weights = [(k * 3 + a * 2) % 5 - 2 or 1 for a in range(len(coords))]
    period = 3 + k % 4
    phase = sum(w * c for w, c in zip(weights, coords))
    amplitude = 10 if k == 0 else 28
    return np.asarray(((phase // period) % 2) * amplitude)


def _blur(img: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1] / 4 along ``axis`` (edge-replicated), in integers."""
    pad = [(0, 0)] * img.ndim
    pad[axis] = (1, 1)
    p = np.pad(img, pad, mode="edge")
    n = img.shape[axis]

    def shifted(start: int) -> np.ndarray:
        index = [slice(None)] * img.ndim
        index[axis] = slice(start, start + n)
        return p[tuple(index)]

    return (shifted(0) + 2 * shifted(1) + shifted(2)) // 4


def _write_array(path: Path, arr: np.ndarray, *, rgb: bool = False) -> None:
    suffix = path.suffix
    if suffix == ".png":
        from PIL import Image

        Image.fromarray(arr).save(path)
    elif suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, arr, photometric="rgb" if rgb else "minisblack")
    else:
        np.save(path, arr)
