"""Weight maps computed at training time, on the label tensors' own device.

:class:`PixelWeights` runs the engine (:func:`weightmaps.maps.compute_batch`) on a batch of label
tensors after an augmentation that changes distances. CPU tensors are viewed as numpy; CUDA
tensors reach CuPy through DLPack on torch's stream and allocator, the torch/CuPy bridge that
only this module needs.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from weightmaps.errors import WeightmapsError
from weightmaps.params import MapParams

__all__ = ["PixelWeights"]

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
