"""MONAI dictionary transforms: compute a map in a transform chain, or load one from a store.

Needs the ``monai`` extra; ``import weightmaps`` never imports MONAI. Both transforms are
deterministic, so ``CacheDataset`` / ``PersistentDataset`` cache their output like any other
deterministic transform's.

>>> from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Spacingd  # doctest: +SKIP
>>> chain = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]),
...                  Spacingd(["image", "label"], pixdim=(1.0, 1.0, 2.5), mode=("bilinear", "nearest")),
...                  ComputeWeightMapd("label", map="bressan", sigma=3.0, class_weights={0: 1, 1: 5})])
... # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from weightmaps.errors import WeightmapsError
from weightmaps.params import MAP_KINDS, UNET_FIELDS, WEIGHT_KINDS, MapParams

__all__ = ["ComputeWeightMapd", "LoadWeightMapd"]


class ComputeWeightMapd(MapTransform):
    """Compute a weightmaps map from a channel-first label (``(1, *spatial)``) into ``output_key``.

    Parameters
    ----------
    keys
        The label key(s); each label is one channel, integer-valued (MONAI's float labels of
        whole numbers are taken as integers).
    map
        ``"bressan"`` (φ·δ), ``"unet"`` (U-Net separation weights), ``"distance"`` (d to the
        nearest edge) or ``"sdf"`` (a signed distance channel per class).
    sigma, class_weights, num_classes, ignore_index, connectivity, w0, tolerance, instances
        As for :func:`weightmaps.compute` with that map. ``class_weights``: a mapping, or the
        path of a store whose class weights to use (a per-sample scheme would weigh every sample
        differently).
    spacing
        Per spatial axis; default: the label's ``pixdim`` (after ``Spacingd``, the target one).
    dtype
        ``"float32"`` or ``"float16"``.
    output_key
        Where the map goes (with one label key), as a ``MetaTensor`` with the label's metadata:
        ``(1, *spatial)``, or ``(num_classes, *spatial)`` for ``"sdf"``. Default ``"weight"``,
        ``"distance"`` or ``"sdf"`` by map. With several keys: ``"<key>_<output_key>"``.

    A label on a GPU is computed there (CuPy through DLPack, no host copy) and the map stays on it.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        map: str = "bressan",
        *,
        sigma: float | None = None,
        class_weights: Mapping[int, float] | str | os.PathLike[str] | None = None,
        num_classes: int | None = None,
        spacing: Sequence[float] | None = None,
        ignore_index: int | None = None,
        connectivity: int = 1,
        w0: float | None = None,
        tolerance: float | None = None,
        instances: str | None = None,
        dtype: str = "float32",
        output_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if map not in MAP_KINDS:
            raise WeightmapsError(f"map must be one of {MAP_KINDS}, got {map!r}")
        if class_weights is None:
            weights: dict[int, float] = {}
            if map in WEIGHT_KINDS and map != "unet":
                raise WeightmapsError(f"map {map!r} needs class_weights: a mapping, or a store's path")
        elif isinstance(class_weights, (str, os.PathLike)):
            from weightmaps.store import open_store

            weights = dict(open_store(class_weights).class_weights)
        else:
            weights = {int(k): float(v) for k, v in class_weights.items()}
        unet = {"w0": w0, "tolerance": tolerance, "instances": instances} if map == "unet" else {}
        if map != "unet" and any(v is not None for v in (w0, tolerance, instances)):
            raise WeightmapsError(f"{', '.join(UNET_FIELDS)} apply to map 'unet', not {map!r}")
        self.params = MapParams(
            sigma=sigma, class_weights=weights, ignore_index=ignore_index, connectivity=connectivity,
            num_classes=num_classes, dtype=dtype, kind=map, **unet,  # type: ignore[arg-type]
        )
        self.unet_default_weights = map == "unet" and class_weights is None
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.output_key = output_key or {"distance": "distance", "sdf": "sdf"}.get(map, "weight")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        for key in keys:
            d[self.output_key if len(keys) == 1 else f"{key}_{self.output_key}"] = self._map_of(d[key], key)
        return d

    def _map_of(self, label: Any, key: Hashable) -> Any:
        from weightmaps.backend import get_backend
        from weightmaps.maps import compute_batch

        tensor = label if isinstance(label, torch.Tensor) else torch.as_tensor(np.asarray(label))
        if tensor.ndim not in (3, 4) or tensor.shape[0] != 1:
            raise WeightmapsError(f"{key!r}: expected a channel-first label (1, *spatial), got shape {tuple(tensor.shape)}")
        spacing = self.spacing or _pixdim(tensor)
        params = self.params if spacing is None else _with_spacing(self.params, spacing)
        values = tensor.detach().as_subclass(torch.Tensor)
        if values.is_floating_point():
            rounded = values.round()
            if not bool(torch.equal(rounded, values)):
                raise WeightmapsError(f"{key!r}: label values are not whole numbers")
            values = rounded
        values = values.to(torch.int64)
        if params.kind == "unet" and self.unet_default_weights:
            params = _with_unet_default_weights(params, values)
        if values.device.type == "cuda":
            import cupy

            with cupy.cuda.Device(values.device.index):
                maps = compute_batch(cupy.from_dlpack(values.contiguous()), params, get_backend("cuda"))
                out = torch.from_dlpack(maps)
        else:
            out = torch.from_numpy(np.asarray(compute_batch(values.contiguous().numpy(), params, get_backend("cpu"))))
        out = out[0] if params.kind == "sdf" else out  # (1, C, ...) → (C, ...); the others stay (1, ...)
        if isinstance(label, MetaTensor):  # the label's metadata (its affine among them)
            return MetaTensor(out, meta=dict(label.meta), applied_operations=list(label.applied_operations))
        return out


class LoadWeightMapd(MapTransform):
    """Add a precomputed map from a weightmaps store, by sample id, to each dictionary.

    Parameters
    ----------
    store
        The store's path (opened lazily in each process, so DataLoader workers each open their own).
    id_key
        The dictionary key holding the sample's id in the store (its path relative to the masks'
        root, without extension, as ``weightmaps info`` lists them).
    label_key
        With ``check=True``, the label the map must have been computed from: its digest must equal
        the store's (load it with ``LoadImaged(..., dtype=None)``, which keeps the file's dtype,
        before any spatial transform). ``check=False`` skips this.
    storage_options
        fsspec options where ``store`` is a URL (``s3://bucket/w.zarr``): credentials, ``endpoint_url``.
    output_key
        Where the map goes: ``(1, *spatial)`` (``(C, *spatial)`` for an sdf store), float32, as a
        ``MetaTensor`` with the label's metadata when there is one.
    """

    def __init__(
        self, store: str | os.PathLike[str], *, id_key: str = "id", label_key: str | None = "label",
        output_key: str = "weight", check: bool = True, storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__([id_key], allow_missing_keys=False)
        self.store_path = os.fspath(store)
        self.storage_options = dict(storage_options or {})  # plain values: each worker opens its own filesystem
        self.id_key, self.label_key, self.output_key, self.check = id_key, label_key, output_key, check
        self._store: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_pid": None}

    def _opened(self) -> Any:
        if self._pid != os.getpid():
            from weightmaps.store import open_store

            self._store = open_store(self.store_path, self.storage_options)
            if not self._store.complete:
                raise WeightmapsError(f"store {self.store_path} is incomplete: finish it with --resume")
            self._pid = os.getpid()
        return self._store

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from weightmaps.readers import mask_digest

        d = dict(data)
        store = self._opened()
        sid = str(d[self.id_key])
        stored = np.asarray(store[sid], dtype=np.float32)
        label = d.get(self.label_key) if self.label_key is not None else None
        if self.check and label is not None:
            values = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label)
            values = values[0] if values.ndim == stored.ndim + (0 if store.params.kind == "sdf" else 1) else values
            expected = store.digest(sid)
            if expected is not None and mask_digest(values) != expected:
                raise WeightmapsError(
                    f"sample {sid!r}: the label's digest differs from the one {self.store_path} recorded: the map "
                    "was computed from another mask, or the label was transformed or cast before this transform "
                    "(load it with LoadImaged(..., dtype=None) and put LoadWeightMapd before spatial transforms)"
                )
        out = torch.from_numpy(stored if store.params.kind == "sdf" else stored[None])
        d[self.output_key] = MetaTensor(out, meta=dict(label.meta), applied_operations=list(label.applied_operations)) \
            if isinstance(label, MetaTensor) else out
        return d


def _pixdim(tensor: torch.Tensor) -> tuple[float, ...] | None:
    if not isinstance(tensor, MetaTensor):
        return None
    pixdim = [float(p) for p in tensor.pixdim][: tensor.ndim - 1]
    return tuple(pixdim) if len(pixdim) == tensor.ndim - 1 else None


def _with_spacing(params: MapParams, spacing: Sequence[float]) -> MapParams:
    import dataclasses

    return dataclasses.replace(params, spacing=tuple(spacing))


def _with_unet_default_weights(params: MapParams, values: torch.Tensor) -> MapParams:
    """w_c = 1 for every class the U-Net map sees (as unet_weights' default)."""
    import dataclasses

    if params.instances == "connected":
        classes = {int(v) for v in torch.unique(values).tolist()}
    else:
        classes = {0, 1}
    return dataclasses.replace(params, class_weights={c: 1.0 for c in classes if c != params.ignore_index})
