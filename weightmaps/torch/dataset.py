"""The training-time dataset: image, mask and precomputed map of each sample, matched by id.

:class:`WeightMapDataset` reads a weight store written by :func:`weightmaps.compute` together with
the images and masks it was computed from, refuses mismatched ids or masks (digests), derives
weights from a ``--map distance`` store on load, and pickles with paths only, for DataLoader
workers. Bringing a read image to the sample's layout and dtype (channels first, float32) is
done here too; the sample dict itself, which transforms also see, is :mod:`weightmaps.torch.sample`'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from weightmaps.engine import weight_from_distance
from weightmaps.errors import WeightmapsError
from weightmaps.location import is_url
from weightmaps.torch.sample import MAP_KEYS, Sample, normalize_sample

__all__ = ["WeightMapDataset"]


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
            sample = normalize_sample(self.transform(sample), sid, [k for k in MAP_KEYS if k in sample])
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
