"""Joint augmentation adapters: albumentations and torchvision v2 transforms over a whole sample.

:func:`albumentations_transform` and :func:`torchvision_transform` wrap a library's transform so
that image, mask and every per-pixel map move together, and padding gets weight 0. They know
only the sample dict (:mod:`weightmaps.torch.sample`), not the dataset that applies them; the
dataset normalizes what they return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from weightmaps.errors import WeightmapsError
from weightmaps.torch.sample import MAP_KEYS, Sample

__all__ = ["albumentations_transform", "torchvision_transform"]


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
