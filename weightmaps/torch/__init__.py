"""Training with weight maps in PyTorch: a dataset, the paper's weighted loss, on-the-fly weights.

Optional extra (``pip install weightmaps[torch]``). Only this package (and :mod:`weightmaps.monai`,
which builds on MONAI) imports torch; ``import weightmaps`` never does.

- :class:`WeightMapDataset` reads image, mask and precomputed weight map of one sample, matched by
  sample id, and checks that the weights were computed from these very masks.
- :func:`albumentations_transform` and :func:`torchvision_transform` make joint augmentation a
  one-liner: image, mask and weight move together, padding gets weight 0.
- :func:`weighted_cross_entropy` is Eq. 3 of Bressan et al. (2021): the mean over pixels of
  ``w(x) * CE(x)``.
- :class:`PixelWeights` computes ``w(x)`` for a batch of label tensors after augmentation, on the
  tensors' device (CUDA tensors reach CuPy through DLPack, without a host copy).

The modules, each importing only from those listed before it: ``sample`` (the sample dict: its map
keys, normalizing a transform's output), ``dataset``, ``augment`` (the joint transforms),
``losses`` and ``pixel_weights``. This file only re-exports them.

Examples
--------
>>> from torch.utils.data import DataLoader
>>> from weightmaps.torch import WeightMapDataset, weighted_cross_entropy
>>> ds = WeightMapDataset("data/images", "data/masks", "weights.zarr")  # doctest: +SKIP
>>> for batch in DataLoader(ds, batch_size=8, num_workers=4):           # doctest: +SKIP
...     loss = weighted_cross_entropy(model(batch["image"]), batch["mask"], batch["weight"])
"""

from weightmaps.torch.augment import albumentations_transform, torchvision_transform
from weightmaps.torch.dataset import WeightMapDataset
from weightmaps.torch.losses import (
    boundary_loss,
    boundary_weight,
    weighted_cross_entropy,
)
from weightmaps.torch.pixel_weights import PixelWeights
from weightmaps.torch.sample import MAP_KEYS

# The type of an item: importable from here as before, and as before not in ``__all__``.
from weightmaps.torch.sample import Sample as Sample

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
