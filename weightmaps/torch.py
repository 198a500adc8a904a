"""Training with weight maps in PyTorch: a dataset, the paper's weighted loss, on-the-fly weights.

Optional extra (``pip install weightmaps[torch]``). This is the only module of the library that
imports torch; ``import weightmaps`` never does.

- :class:`WeightMapDataset` reads image, mask and precomputed weight map of one sample, matched by
  sample id, and checks that the weights were computed from these very masks.
- :func:`albumentations_transform` and :func:`torchvision_transform` make joint augmentation a
  one-liner: image, mask and weight move together, padding gets weight 0.
- :func:`weighted_cross_entropy` is Eq. 3 of Bressan et al. (2021): the mean over pixels of
  ``w(x) * CE(x)``.
- :class:`PixelWeights` computes ``w(x)`` for a batch of label tensors after augmentation, on the
  tensors' device (CUDA tensors reach CuPy through DLPack, without a host copy).

Examples
--------
>>> from torch.utils.data import DataLoader
>>> from weightmaps.torch import WeightMapDataset, weighted_cross_entropy
>>> ds = WeightMapDataset("data/images", "data/masks", "weights.zarr")  # doctest: +SKIP
>>> for batch in DataLoader(ds, batch_size=8, num_workers=4):           # doctest: +SKIP
...     loss = weighted_cross_entropy(model(batch["image"]), batch["mask"], batch["weight"])
"""

from __future__ import annotations

import dataclasses

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from weightmaps.engine import weight_from_distance
from weightmaps.errors import WeightmapsError
from weightmaps.location import is_url
from weightmaps.params import MapParams

__all__ = [
    "MAP_KEYS",
    "PixelWeights",
    "WeightMapDataset",
    "albumentations_transform",
    "boundary_loss",
    "boundary_weight",
    "torchvision_transform",
    "weighted_cross_entropy",
]

Sample = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class WeightMapDataset(torch.utils.data.Dataset):
    """Images, masks and precomputed weight maps, matched by sample id.

    Parameters
    ----------
    images, masks
        Anything :func:`weightmaps.sources.open_source` accepts: a directory (searched
        recursively), a glob, a text file listing paths, a zarr array (path or ``zarr.Array``) or a
        list of paths. Images are listed by :func:`weightmaps.sources.open_image_source` (JPEG
        and BMP too, any dtype). Sample ids are paths relative to the root without extension, as
        the store names them, so ``images/a/001.jpg`` pairs with ``masks/a/001.png``.
    weights
        Path or URL (``s3://bucket/w.zarr``) of a store written by :func:`weightmaps.compute`
        from these masks.
    transform
        ``transform(sample) -> sample``, applied to the dict described below; see
        :func:`albumentations_transform` and :func:`torchvision_transform`.
    label_map
        Applied to the masks as they are read; pass the one given to :func:`weightmaps.compute`.
    check
        Compare each mask's digest with the digest the store recorded for its id, so weights
        computed from other masks (an older annotation, another label map) are refused. Costs one
        hash of the mask per read.
    sigma, class_weights
        For a ``--map distance`` store only: derive ``"weight"`` = φ·δ with this σ when loading
        (:func:`weightmaps.weight_from_distance`); ``class_weights`` is a scheme over the store's
        class counts, a mapping, or another store's path (default: the weights the run recorded).
    storage_options
        fsspec options for every URL among ``images``, ``masks`` and ``weights`` (credentials,
        ``endpoint_url``, ...); kept as plain values, each DataLoader worker opens its own
        filesystem on first use.

    Returns (per item)
    ------------------
    ``{"image": float32 (C, H, W), "mask": int64 (H, W), "weight": float32 (H, W), "id": str}``;
    volumes give ``(C, D, H, W)`` and ``(D, H, W)``. A ``distance`` store gives ``"distance"``
    (and ``"weight"`` with ``sigma``) instead of ``"weight"``; an ``sdf`` store ``"sdf"``, float32
    ``(num_classes, H, W)``. ``uint8`` images are scaled to [0, 1],
    ``uint16`` to [0, 1] by 65535 (as ``torchvision``'s ``ToDtype(scale=True)``), ``bool`` to
    0/1; other dtypes are cast to float32 unchanged. A grayscale image gets a channel axis of 1;
    channels-last images (``H, W, C``) are moved to channels-first. The layout is read from the
    mask's shape: the image must have the mask's shape, or one extra axis (last or first).

    Raises
    ------
    WeightmapsError
        At construction: the store is incomplete, or the image / mask / store id sets differ.
        On read (naming the sample id): the mask digest differs from the store's, the weight map
        shape differs from the mask shape, or the image does not fit the mask.

    Notes
    -----
    Only paths and options are kept in the object's state. The store is opened on first use in
    each process (keyed by ``os.getpid()``); the mask and image sources read files lazily and
    re-open a zarr array in the process that unpickles them. So the dataset pickles cleanly and
    ``DataLoader(num_workers>0)`` works with the fork, spawn and forkserver start methods,
    reading exactly what ``num_workers=0`` reads.
    """

    def __init__(
        self,
        images: Any,
        masks: Any,
        weights: str | os.PathLike[str],
        *,
        transform: Callable[[Sample], Sample] | None = None,
        label_map: Mapping[int, int] | None = None,
        check: bool = True,
        sigma: float | None = None,
        class_weights: str | os.PathLike[str] | Mapping[int, float] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        from weightmaps.sources import open_image_source, open_source
        from weightmaps.store import open_store

        self.transform = transform
        self.check = check
        self._weights_path = os.fspath(weights)
        # Kept as plain values: each worker opens its own remote filesystem (fsspec's are not fork-safe).
        self._storage_options = dict(storage_options or {})
        store = open_store(self._weights_path, self._storage_options)
        if not store.complete:
            raise WeightmapsError(
                f"weight store {self._weights_path} is incomplete (compute was interrupted or is "
                "still running); finish it with compute(..., resume=True) before training"
            )
        self._params = store.params
        self._key = {"distance": "distance", "sdf": "sdf"}.get(self._params.kind, "weight")
        self._derive = _derived_weights(store, sigma, class_weights, self._storage_options)
        if label_map is None:  # the label map the store was computed with, if any
            label_map = store.params.label_map
        # Masks are read as the store's run read them: its label map and float-label rule.
        self._masks = open_source(masks, label_map=dict(label_map) if label_map else None,
                                  float_labels=store.params.float_labels, storage_options=self._storage_options)
        self._images = open_image_source(images, storage_options=self._storage_options)

        store_ids = list(store.ids)
        # samples the compute run skipped as bad (skip_bad=True) are not expected in the store
        skipped = set(store.skipped_ids)
        mask_ids = [i for i in self._masks.ids if i not in skipped]
        image_ids = [i for i in self._images.ids if i not in skipped]
        _same_ids("weight store " + self._weights_path, store_ids,
                  "masks " + self._masks.description, mask_ids)
        _same_ids("weight store " + self._weights_path, store_ids,
                  "images " + self._images.description, image_ids)
        self.ids: list[str] = store_ids
        mask_index = {sid: k for k, sid in enumerate(self._masks.ids)}
        image_index = {sid: k for k, sid in enumerate(self._images.ids)}
        self._mask_index = [mask_index[i] for i in store_ids]
        self._image_index = [image_index[i] for i in store_ids]
        self._store: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        state["_pid"] = None
        return state

    def _weight_store(self) -> Any:
        pid = os.getpid()
        if self._pid != pid:  # first use in this process (worker, or parent after a fork)
            from weightmaps.store import open_store

            self._store = open_store(self._weights_path, self._storage_options)
            self._pid = pid
        return self._store

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sid = self.ids[index]
        mask = np.asarray(self._masks.read(self._mask_index[index]))
        if self.check:
            from weightmaps.readers import mask_digest

            expected = self._weight_store().digest(sid)
            got = mask_digest(mask)
            if expected is not None and got != expected:
                raise WeightmapsError(
                    f"sample {sid!r}: mask digest {got} differs from the digest {expected} the "
                    f"weight store {self._weights_path} recorded; the weights were computed from "
                    "other masks (or another label_map): recompute them"
                )
        stored = np.asarray(self._weight_store()[sid])
        if stored.shape != self._params.map_shape(mask.shape):
            raise WeightmapsError(
                f"sample {sid!r}: {self._key} map shape {stored.shape} in {self._weights_path} does not "
                f"fit mask shape {mask.shape}"
            )
        image = _channels_first(self._images.read(self._image_index[index]), mask.shape, sid)
        sample: Sample = {
            "image": torch.from_numpy(_to_float(image)),
            "mask": torch.from_numpy(mask.astype(np.int64, copy=False)),
            self._key: torch.from_numpy(stored.astype(np.float32, copy=False)),
            "id": sid,
        }
        if self._derive is not None:
            sigma, phi = self._derive
            derived = weight_from_distance(stored, mask, sigma=sigma, class_weights=phi,
                                           ignore_index=self._params.ignore_index, spacing=self._params.spacing)
            sample["weight"] = torch.from_numpy(derived)
        if self.transform is not None:
            sample = _as_sample(self.transform(sample), sid, [k for k in MAP_KEYS if k in sample])
        return sample

    def __repr__(self) -> str:
        return (
            f"WeightMapDataset({len(self)} samples, weights={self._weights_path!r}, "
            f"transform={self.transform!r})"
        )


def _derived_weights(
    store: Any, sigma: float | None, class_weights: str | os.PathLike[str] | Mapping[int, float] | None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[float, dict[int, float]] | None:
    """σ and φ to derive weights with at load time (a distance store), or None."""
    kind = store.params.kind
    if kind != "distance":
        if sigma is not None or class_weights is not None:
            raise WeightmapsError(
                f"sigma and class_weights derive weights from a distance store (--map distance); "
                f"{store.path} holds {kind!r} maps"
            )
        return None
    if sigma is None:
        if class_weights is not None:
            raise WeightmapsError("class_weights derive weights with a sigma: give sigma too")
        return None
    from weightmaps.classweights import resolve_class_weights
    from weightmaps.validation import check_sigma

    sigma = check_sigma(sigma)
    if class_weights is None:
        return sigma, dict(store.class_weights)  # those the run recorded (its --class-weights)
    if isinstance(class_weights, (str, os.PathLike)) and (is_url(class_weights) or os.path.isdir(class_weights)):
        weights, _ = resolve_class_weights("balanced", store.class_counts, class_weights_from=class_weights,
                                           storage_options=storage_options)
    else:
        weights, _ = resolve_class_weights(class_weights if not isinstance(class_weights, os.PathLike)
                                           else os.fspath(class_weights), store.class_counts)
    return sigma, weights


def _same_ids(name_a: str, a: Sequence[str], name_b: str, b: Sequence[str]) -> None:
    sa, sb = set(a), set(b)
    if sa == sb:
        return
    only_a, only_b = sorted(sa - sb), sorted(sb - sa)
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} only in {name_a} (first: {only_a[0]!r})")
    if only_b:
        parts.append(f"{len(only_b)} only in {name_b} (first: {only_b[0]!r})")
    raise WeightmapsError("sample ids do not match: " + "; ".join(parts))


def _channels_first(image: np.ndarray, mask_shape: tuple[int, ...], sid: str) -> np.ndarray:
    if image.shape == mask_shape:
        return image[None]
    if image.ndim == len(mask_shape) + 1:
        if image.shape[:-1] == mask_shape:
            return np.moveaxis(image, -1, 0)
        if image.shape[1:] == mask_shape:
            return image
    raise WeightmapsError(
        f"sample {sid!r}: image shape {image.shape} does not fit mask shape {mask_shape} "
        "(expected the mask's shape, or one extra channel axis first or last)"
    )


def _to_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        out = image.astype(np.float32) / np.float32(255)
    elif image.dtype == np.uint16:
        out = image.astype(np.float32) / np.float32(65535)
    else:
        out = image.astype(np.float32)
    return np.ascontiguousarray(out)


def _tensor(x: Any) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))
    return t.as_subclass(torch.Tensor)  # drop tv_tensors wrappers


# The per-pixel maps a sample may carry besides its mask: "sdf" has a channel per class in front.
MAP_KEYS = ("weight", "distance", "sdf")


def _as_sample(out: Any, sid: str, keys: Sequence[str] = ("weight",)) -> Sample:
    """Normalize what a transform returned: tensors, float32 image and maps, int64 mask."""
    expected = {"image", "mask", *keys}
    if not isinstance(out, Mapping) or not expected <= set(out):
        raise WeightmapsError(
            f"sample {sid!r}: transform must return a dict with {', '.join(repr(k) for k in sorted(expected))}"
        )
    sample = dict(out)
    mask = _tensor(sample["mask"])
    if mask.is_floating_point():
        mask = mask.round()
    sample["mask"] = mask.to(torch.int64)
    sample["image"] = _tensor(sample["image"]).to(torch.float32)
    sample.setdefault("id", sid)
    for key in (k for k in MAP_KEYS if k in sample):
        sample[key] = _tensor(sample[key]).to(torch.float32)
        shape = tuple(sample[key].shape[1:] if key == "sdf" else sample[key].shape)
        if shape != tuple(sample["mask"].shape):
            raise WeightmapsError(
                f"sample {sid!r}: after the transform, mask shape {tuple(sample['mask'].shape)} "
                f"differs from {key} shape {shape}; pass the {key} to the transform as a mask "
                "(albumentations: masks=[mask, ...]; torchvision: tv_tensors.Mask)"
            )
    return sample


# --------------------------------------------------------------------------------------------
# Joint transforms
# --------------------------------------------------------------------------------------------


class _AlbumentationsTransform:
    def __init__(self, aug: Callable[..., dict[str, Any]]) -> None:
        self.aug = aug

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"].numpy()
        mask = sample["mask"].numpy()
        # Every map goes as masks, one array a channel: they move with the mask, pixel for pixel.
        keys = [k for k in MAP_KEYS if k in sample]
        channels = [list(sample[k].numpy()) if k == "sdf" else [sample[k].numpy()] for k in keys]
        planes = [mask.astype(np.float32) if mask.ndim == 3 else mask] + [c for group in channels for c in group]
        if mask.ndim == 2:
            out = self.aug(image=np.ascontiguousarray(np.moveaxis(image, 0, -1)), masks=planes)
            new_image, moved = out["image"], list(out["masks"])
        elif mask.ndim == 3:
            # albumentations' 3-D targets: volume (D, H, W, C) and a stacked masks3d array
            out = self.aug(volume=np.ascontiguousarray(np.moveaxis(image, 0, -1)), masks3d=np.stack(planes))
            new_image, moved = out["volume"], list(out["masks3d"])
        else:
            raise WeightmapsError(f"sample {sample.get('id')!r}: mask must be 2-D or 3-D")
        result = {
            **sample,
            "image": torch.from_numpy(np.ascontiguousarray(np.moveaxis(new_image, -1, 0))),
            "mask": torch.from_numpy(np.rint(np.asarray(moved[0])).astype(np.int64)),
        }
        at = 1
        for key, group in zip(keys, channels, strict=True):
            taken = [np.asarray(c, dtype=np.float32) for c in moved[at:at + len(group)]]
            at += len(group)
            result[key] = torch.from_numpy(np.stack(taken) if key == "sdf" else taken[0])
        return result

    def __repr__(self) -> str:
        return f"albumentations_transform({self.aug!r})"


def albumentations_transform(aug: Callable[..., dict[str, Any]]) -> Callable[[Sample], Sample]:
    """Wrap an albumentations ``Compose`` as a joint transform for :class:`WeightMapDataset`.

    The image is passed channels-last (``image=`` for 2-D, ``volume=`` for 3-D) and mask and
    weight as masks (``masks=[mask, weight]``, ``masks3d=`` for 3-D), so geometric transforms move
    all three together and mask interpolation (nearest by default) applies to the weight. Padding
    fills masks with ``fill_mask`` (0 by default in albumentations 2.x, keep it): padded pixels
    get weight 0 and so contribute nothing to :func:`weighted_cross_entropy`, whatever label they
    get. The image arrives as float32 in [0, 1] (uint8 was already scaled).

    Examples
    --------
    >>> import albumentations as A  # doctest: +SKIP
    >>> import cv2  # doctest: +SKIP
    >>> aug = A.Compose([
    ...     A.HorizontalFlip(p=0.5),
    ...     A.PadIfNeeded(256, 256, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
    ...     A.RandomCrop(256, 256),
    ...     A.Affine(rotate=(-15, 15), fill=0, fill_mask=0, p=0.5),
    ... ])  # doctest: +SKIP
    >>> ds = WeightMapDataset(images, masks, store, transform=albumentations_transform(aug))
    ... # doctest: +SKIP

    Notes
    -----
    Weights were computed for the untransformed mask. Flips, crops, padding and rotations keep
    the distance to the edges; strong scaling does not (distances scale too): if that matters,
    compute the weights after augmentation with :class:`PixelWeights`.
    """
    return _AlbumentationsTransform(aug)


class _TorchvisionTransform:
    def __init__(self, aug: Callable[[Any], Any]) -> None:
        self.aug = aug

    def __call__(self, sample: Sample) -> Sample:
        from torchvision import tv_tensors

        keys = ["mask", *(k for k in MAP_KEYS if k in sample)]
        out = self.aug({"image": tv_tensors.Image(sample["image"]), **{k: tv_tensors.Mask(sample[k]) for k in keys}})
        return {**sample, **{k: out[k].as_subclass(torch.Tensor) for k in ("image", *keys)}}

    def __repr__(self) -> str:
        return f"torchvision_transform({self.aug!r})"


def torchvision_transform(aug: Callable[[Any], Any]) -> Callable[[Sample], Sample]:
    """Wrap a ``torchvision.transforms.v2`` transform as a joint transform (2-D samples).

    The image is wrapped as ``tv_tensors.Image`` and both mask and weight as ``tv_tensors.Mask``,
    so v2 transforms move them together and resample masks with nearest interpolation. v2 pads
    and fills with 0 by default (``fill=0``, or per type: ``fill={tv_tensors.Image: 0,
    tv_tensors.Mask: 0}``): padded pixels get weight 0.

    Examples
    --------
    >>> from torchvision import tv_tensors  # doctest: +SKIP
    >>> from torchvision.transforms import v2  # doctest: +SKIP
    >>> aug = v2.Compose([
    ...     v2.RandomHorizontalFlip(),
    ...     v2.RandomCrop(256, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 0}),
    ...     v2.RandomRotation(15, fill={tv_tensors.Image: 0, tv_tensors.Mask: 0}),
    ... ])  # doctest: +SKIP
    >>> ds = WeightMapDataset(images, masks, store, transform=torchvision_transform(aug))
    ... # doctest: +SKIP
    """
    return _TorchvisionTransform(aug)


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    ignore_index: int | None = None,
    normalize: Literal["pixels", "weight_sum"] = "pixels",
) -> torch.Tensor:
    """Pixel-weighted cross-entropy, Eq. 3 of Bressan et al. (2021).

    Parameters
    ----------
    logits
        ``(N, C, H, W)`` or ``(N, C, D, H, W)`` unnormalized scores.
    target
        ``(N, H, W)`` / ``(N, D, H, W)`` integer class indices.
    weight
        Per-pixel weights, same shape as ``target`` (the ``"weight"`` of
        :class:`WeightMapDataset`, or the output of :class:`PixelWeights`). Treated as constants.
    ignore_index
        Target value whose pixels contribute nothing. ``None`` behaves like
        ``F.cross_entropy``'s default (-100).
    normalize
        ``"pixels"`` (default, the paper's Eq. 3): ``sum(w * CE) / (number of pixels)``. The
        denominator counts every pixel of the batch, including ignored ones and pixels of weight
        0 (the paper's δ is 0 on the edges themselves); an ignored pixel counts exactly like a
        pixel of weight 0. The loss scale then does not depend on how much of a batch is
        ignored, and with all weights 1 and nothing ignored it equals ``F.cross_entropy``.

        ``"weight_sum"``: ``sum(w * CE) / sum(w)``, a weighted mean; ignored pixels are left out
        of both sums, so with all weights 1 it equals ``F.cross_entropy(logits, target,
        ignore_index=...)`` (the mean over non-ignored pixels). It is 0, not NaN, when the sum
        of weights is 0.

    Returns
    -------
    torch.Tensor
        A scalar; gradients flow to ``logits``.

    Examples
    --------
    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> target = torch.randint(0, 3, (2, 8, 8))
    >>> loss = weighted_cross_entropy(logits, target, torch.ones(2, 8, 8))
    >>> torch.allclose(loss, torch.nn.functional.cross_entropy(logits, target))
    True
    """
    if logits.ndim not in (4, 5):
        raise WeightmapsError(
            f"logits must be (N, C, H, W) or (N, C, D, H, W); got shape {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise WeightmapsError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
            f"(expected {expected})"
        )
    if tuple(weight.shape) != expected:
        raise WeightmapsError(
            f"weight shape {tuple(weight.shape)} does not match target shape {expected}"
        )
    if normalize not in ("pixels", "weight_sum"):
        raise WeightmapsError(f"normalize must be 'pixels' or 'weight_sum', got {normalize!r}")
    ignore = -100 if ignore_index is None else int(ignore_index)
    ce = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore)  # 0 where ignored
    w = weight.detach().to(dtype=ce.dtype, device=ce.device)
    valid = target != ignore
    w = torch.where(valid, w, torch.zeros((), dtype=w.dtype, device=w.device))
    total = (w * ce).sum()
    if normalize == "pixels":
        return total / max(ce.numel(), 1)
    denom = w.sum()
    # when sum(w) == 0 the numerator is 0 too; dividing by 1 keeps value and gradient finite
    safe = torch.where(denom > 0, denom, torch.ones((), dtype=denom.dtype, device=denom.device))
    return total / safe


def boundary_loss(
    probs: torch.Tensor,
    sdf: torch.Tensor,
    *,
    classes: Sequence[int] | None = None,
    target: torch.Tensor | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Kervadec et al.'s boundary loss (2019, Eq. 5): the mean of softmax probability × signed distance.

    Parameters
    ----------
    probs
        ``(N, C, *spatial)`` class probabilities (``logits.softmax(1)``).
    sdf
        ``(N, C, *spatial)`` signed distance maps, e.g. the ``"sdf"`` of a
        :class:`WeightMapDataset` over a ``--map sdf`` store (negative inside a class).
    classes
        The channels the loss is taken over (Kervadec et al. use the foreground classes only);
        default all.
    target, ignore_index
        With both: pixels whose ``target`` is ``ignore_index`` are left out of the mean (their
        signed distances are 0 already; they must not count in the denominator either).

    Returns
    -------
    The mean over the chosen classes and the counted pixels; minimised by putting each class's
    probability where its signed distance is negative (inside it).

    Examples
    --------
    >>> loss = (1 - alpha) * region_loss + alpha * boundary_loss(logits.softmax(1), batch["sdf"],
    ...                                                          classes=[1, 2])  # doctest: +SKIP
    """
    if probs.shape != sdf.shape or probs.ndim < 3:
        raise WeightmapsError(f"probs {tuple(probs.shape)} and sdf {tuple(sdf.shape)} must both be (N, C, *spatial)")
    channels = list(range(probs.shape[1])) if classes is None else [int(c) for c in classes]
    if not channels or any(not 0 <= c < probs.shape[1] for c in channels):
        raise WeightmapsError(f"classes {classes!r} must be channels of {probs.shape[1]}")
    product = probs[:, channels] * sdf[:, channels].to(device=probs.device, dtype=probs.dtype)
    if target is None or ignore_index is None:
        return product.mean()
    if tuple(target.shape) != (probs.shape[0], *probs.shape[2:]):
        raise WeightmapsError(f"target shape {tuple(target.shape)} does not fit probs {tuple(probs.shape)}")
    counted = (target != ignore_index).unsqueeze(1).to(product.dtype)
    pixels = counted.sum() * len(channels)
    safe = torch.where(pixels > 0, pixels, torch.ones((), dtype=pixels.dtype, device=pixels.device))
    return (product * counted).sum() / safe


def boundary_weight(epoch: int, *, start: float = 0.01, step: float = 0.01, maximum: float = 0.99) -> float:
    """α for ``(1 − α) · region_loss + α · boundary_loss`` at ``epoch`` (from 0): rising per epoch.

    The boundary loss alone has a trivial minimum early on (predict nothing); Kervadec et al.
    start from the region loss and move weight to the boundary term epoch by epoch, 0.01 at a
    time. α = min(start + step · epoch, maximum).

    Examples
    --------
    >>> boundary_weight(0), boundary_weight(10), boundary_weight(500)
    (0.01, 0.11, 0.99)
    """
    if epoch < 0 or not 0 <= start <= maximum <= 1 or step < 0:
        raise WeightmapsError(f"need epoch >= 0 and 0 <= start <= maximum <= 1, step >= 0; got {epoch}, {start}, "
                              f"{maximum}, {step}")
    return round(min(start + step * epoch, maximum), 12)


# --------------------------------------------------------------------------------------------
# On-the-fly weights
# --------------------------------------------------------------------------------------------

_ENGINE_DTYPES = {torch.float32: "float32", torch.float16: "float16"}


class PixelWeights:
    """Weight maps ``w = phi_c * delta`` for a batch of label tensors, on the tensors' device.

    For augmentations that change distances (scaling, elastic deformation), compute the weights
    after augmenting instead of precomputing them. Same numbers as
    :func:`weightmaps.compute` with the same parameters.

    Parameters
    ----------
    sigma
        Width of the uncertainty band, in the units of ``spacing`` (pixels by default).
    class_weights
        ``{label: phi}``, e.g. ``open_store(path).class_weights``; see also :meth:`from_store`.
    spacing
        Physical size of one sample's axes (``(dy, dx)`` or ``(dz, dy, dx)``).
    ignore_index, connectivity
        As in :func:`weightmaps.weight_map`.
    dtype
        Output dtype. ``float32`` and ``float16`` are computed as such by the engine; any other
        float dtype is computed in float32 and cast.
    validate
        Check every batch's labels (none negative, each with a class weight) and raise naming the
        offenders. On a GPU that is one read of the device per batch, which waits for the work
        queued before it; ``False`` skips it for labels you vouch for (an invalid label then gets
        weight NaN, which the loss shows). On the CPU the check always runs: it costs nothing.

    Call
    ----
    ``pw(labels)`` with an integer tensor ``(N, H, W)`` or ``(N, D, H, W)`` returns the weights,
    same shape, on the same device. CUDA tensors go to CuPy through DLPack (no host copy) and back
    with ``torch.from_dlpack``, computed on torch's current stream, with CuPy's memory taken from
    torch's caching allocator (one pool, not two competing for the device); CPU tensors are
    viewed as numpy (no copy) and run through the engine's CPU path. Besides ``validate``'s read,
    a batch reads the device once more: which samples have an edge.

    Examples
    --------
    >>> pw = PixelWeights(sigma=3.0, class_weights={0: 0.6, 1: 2.5})  # doctest: +SKIP
    >>> w = pw(batch["mask"])                                          # doctest: +SKIP
    """

    def __init__(
        self,
        sigma: float,
        class_weights: Mapping[int, float],
        *,
        spacing: Sequence[float] | None = None,
        ignore_index: int | None = None,
        connectivity: int = 1,
        dtype: torch.dtype = torch.float32,
        validate: bool = True,
    ) -> None:
        if not dtype.is_floating_point:
            raise WeightmapsError(f"dtype must be a floating point torch dtype, got {dtype}")
        self.params = MapParams(
            sigma=sigma, class_weights=dict(class_weights), spacing=None if spacing is None else tuple(spacing),
            ignore_index=ignore_index,
            connectivity=connectivity, dtype=_ENGINE_DTYPES.get(dtype, "float32"),
        )
        self.dtype = dtype
        self.validate = bool(validate)

    @classmethod
    def from_params(cls, params: MapParams, *, dtype: torch.dtype | None = None, validate: bool = True
                    ) -> PixelWeights:
        """The maps of ``params`` (e.g. a store's ``params``), in ``dtype`` (default: theirs).

        Any kind but ``"distance"``: weights for ``"bressan"`` and ``"unet"``, ``(N, C, ...)``
        signed distances for ``"sdf"`` (after an augmentation that changes distances).
        """
        if dtype is None:
            dtype = torch.float16 if params.dtype == "float16" else torch.float32
        if not dtype.is_floating_point:
            raise WeightmapsError(f"dtype must be a floating point torch dtype, got {dtype}")
        if params.kind == "distance":
            raise WeightmapsError("a distance store holds no sigma: for weights at training time build "
                                  "PixelWeights(sigma, class_weights) (the store's class_weights)")
        # The constructor builds the paper's parameters; these are checked already, of any kind.
        weights = cls.__new__(cls)
        weights.params = dataclasses.replace(params, dtype=_ENGINE_DTYPES.get(dtype, "float32"))
        weights.dtype = dtype
        weights.validate = bool(validate)
        return weights

    @classmethod
    def from_store(cls, path: str | os.PathLike[str], *, dtype: torch.dtype | None = None
                   ) -> PixelWeights:
        """The parameters and class weights a store was computed with."""
        from weightmaps.store import open_store

        return cls.from_params(open_store(path).params, dtype=dtype)

    def __repr__(self) -> str:
        p = self.params
        return (
            f"PixelWeights(sigma={p.sigma}, class_weights={p.class_weights}, spacing={p.spacing}, "
            f"ignore_index={p.ignore_index}, connectivity={p.connectivity}, dtype={self.dtype}, "
            f"validate={self.validate})"
        )


    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            raise WeightmapsError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.ndim not in (3, 4):
            raise WeightmapsError(
                f"labels must be a batch (N, H, W) or (N, D, H, W); got shape "
                f"{tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise WeightmapsError(f"labels must be an integer tensor, got {labels.dtype}")
        from weightmaps.backend import get_backend
        from weightmaps.maps import compute_batch

        labels = labels.detach()
        if labels.device.type == "cuda":
            import cupy

            with (
                cupy.cuda.Device(labels.device.index),
                _cupy_stream(torch.cuda.current_stream(labels.device)),
                cupy.cuda.using_allocator(_torch_allocator(labels.device)),
            ):
                arr = cupy.from_dlpack(labels.contiguous())
                maps = compute_batch(arr, self.params, get_backend("cuda"), validate=self.validate)
                out = torch.from_dlpack(maps)
        elif labels.device.type == "cpu":
            arr = labels.contiguous().numpy()
            out = torch.from_numpy(np.asarray(compute_batch(arr, self.params, get_backend("cpu"))))
        else:
            raise WeightmapsError(f"labels on device {labels.device} are not supported "
                                  "(cpu or cuda)")
        return out.to(self.dtype)


def _cupy_stream(stream: torch.cuda.Stream) -> Any:
    """torch's stream as a CuPy stream, so that CuPy's work is ordered with torch's."""
    import cupy

    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(stream, "__cuda_stream__"):
        return from_external(stream)  # the CUDA stream protocol: CuPy 14 and newer
    # CuPy 14 deprecates ExternalStream for the protocol above; a torch without it still needs it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(stream.cuda_stream, stream.device.index)


def _torch_allocator(device: torch.device) -> Callable[[int], Any]:
    """A CuPy allocator drawing from torch's caching allocator on ``device``.

    Each CuPy allocation is a uint8 torch tensor that the CuPy memory object keeps alive; its block
    returns to torch's pool when CuPy lets go. CuPy's own pool would otherwise keep the memory of
    every batch's temporaries for itself, which torch then cannot use.
    """
    import cupy

    def allocate(size: int) -> Any:
        block = torch.empty(max(size, 1), dtype=torch.uint8, device=device)
        memory = cupy.cuda.UnownedMemory(block.data_ptr(), size, block, device_id=device.index)
        return cupy.cuda.MemoryPointer(memory, 0)

    return allocate
