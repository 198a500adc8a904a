"""Losses on weight maps and signed distances: pure torch functions of tensors, no I/O.

:func:`weighted_cross_entropy` is Eq. 3 of Bressan et al. (2021), the mean over pixels of
``w(x) * CE(x)``; :func:`boundary_loss` and its schedule :func:`boundary_weight` are Kervadec et
al.'s (2019). They take a batch's tensors, wherever those came from (the dataset, or
:class:`~weightmaps.torch.PixelWeights`), so they depend on nothing else in the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from weightmaps.errors import WeightmapsError

__all__ = ["boundary_loss", "boundary_weight", "weighted_cross_entropy"]


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
