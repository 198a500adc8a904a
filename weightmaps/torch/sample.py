"""The sample dict every :class:`~weightmaps.torch.WeightMapDataset` item and joint transform shares.

A sample is ``{"image", "mask", <map keys>, "id"}``. This module owns that contract: which map
keys a sample may carry (:data:`MAP_KEYS`) and how whatever a transform returned is brought back
to it (tensors; float32 image and maps, int64 mask; shapes that still agree). It is cut out so
that the dataset and the augmentation adapters both lean on it without leaning on each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from weightmaps.errors import WeightmapsError

__all__ = ["MAP_KEYS", "Sample", "normalize_sample"]

Sample = dict[str, Any]

# The per-pixel maps a sample may carry besides its mask: "sdf" has a channel per class in front.
MAP_KEYS = ("weight", "distance", "sdf")


def _tensor(x: Any) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))
    return t.as_subclass(torch.Tensor)  # drop tv_tensors wrappers


def normalize_sample(out: Any, sid: str, keys: Sequence[str] = ("weight",)) -> Sample:
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
