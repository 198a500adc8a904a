"""A batch of maps of any kind, as a :class:`~weightmaps.params.MapParams` describes it.

The one place that knows which function makes which kind of map: the shards (every runner, Dask
included) and :class:`~weightmaps.torch.PixelWeights` call :func:`compute_batch` and stay the same
for every kind.
"""

from __future__ import annotations

from typing import Any

from weightmaps.backend import Backend
from weightmaps.engine import StageTimer, distance_to_edges, untimed, weight_map
from weightmaps.params import MapParams

__all__ = ["compute_batch"]


def compute_batch(
    masks: Any, params: MapParams, backend: Backend, *, timer: StageTimer | None = None, validate: bool = False
) -> Any:
    """The maps of a stack of same-shaped masks (on ``backend``'s device), in ``params.dtype``.

    Shape ``(N, *params.map_shape(mask shape))``.

    ``validate`` as for :func:`weightmaps.weight_map` (the U-Net map always checks its input).
    """
    if params.kind == "unet":
        from weightmaps.unet import unet_batch

        with (timer or untimed)("distance"):
            return unet_batch(masks, params, backend)
    if params.kind == "distance":
        with (timer or untimed)("distance"):
            distance = distance_to_edges(masks, spacing=params.spacing, connectivity=params.connectivity,
                                         device=backend, batch=True)
        return distance.astype(params.dtype, copy=False)
    if params.kind == "sdf":
        from weightmaps.sdf import signed_distance

        with (timer or untimed)("distance"):
            return signed_distance(masks, num_classes=params.num_classes, spacing=params.spacing,  # type: ignore[arg-type]
                                   ignore_index=params.ignore_index, dtype=params.dtype, device=backend, batch=True)
    return weight_map(masks, **params.engine_kwargs(), device=backend, batch=True, timer=timer, validate=validate)
