"""``weightmaps preview``: one mask's weight map as a figure, like Bressan et al. (2021), Fig. 1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from weightmaps.cli.options import (
    class_weights_opt,
    connectivity_opt,
    device_opt,
    ignore_index_opt,
    label_map_opt,
    sigma_opt,
    spacing_opt,
    verbosity_opts,
)


def _middle_slice(array: Any, ndim: int) -> Any:
    return array[array.shape[0] // 2] if ndim == 3 else array


def _display_image(image: Any, mask_shape: tuple[int, ...], path: str) -> Any:
    import numpy as np

    from weightmaps.errors import WeightmapsError

    image = np.asarray(image)
    if len(mask_shape) == 3 and image.ndim >= 3 and image.shape[:3] == mask_shape:
        image = image[mask_shape[0] // 2]
        mask_shape = mask_shape[1:]
    elif len(mask_shape) == 3:
        raise WeightmapsError(f"{path}: image shape {image.shape} does not match the mask volume {mask_shape}")
    if image.shape[:2] != mask_shape:
        raise WeightmapsError(f"{path}: image shape {image.shape} does not match the mask shape {mask_shape}")
    image = image.astype(np.float64)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    low, high = np.nanpercentile(image, [1, 99])
    return np.clip((image - low) / (high - low if high > low else 1.0), 0, 1)


def _check_figure_suffix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The figure format is named by the file's suffix: one matplotlib can write (bad usage: exit 2)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return value  # the command says what to install
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if os.path.splitext(value)[1].lower().lstrip(".") not in formats:
        raise click.BadParameter(f"{value!r}: name the figure format by its suffix, one of {', '.join(formats)}")
    return value


@click.command("preview")
@click.argument("mask", metavar="MASK", type=click.Path(exists=True, dir_okay=False))
@click.option("--image", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The image the mask labels, drawn under the mask.")
@sigma_opt
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), callback=_check_figure_suffix,
              help="Figure file; its suffix names the format (.png, .pdf, .svg, ...).")
@class_weights_opt
@click.option("--class-weights-from", metavar="STORE", default=None, help="Use a store's class weights.")
@ignore_index_opt
@label_map_opt
@spacing_opt
@connectivity_opt
@device_opt
@click.option("--dpi", type=click.IntRange(min=30), default=120, show_default=True)
@verbosity_opts
def preview_cmd(mask: str, image: str | None, sigma: float, out: str, class_weights: str,
                class_weights_from: str | None, ignore_index: int | None, label_map: dict[int, int] | None,
                spacing: tuple[float, ...] | None, connectivity: int, device: str, dpi: int) -> None:
    """Draw MASK, its distance to the label edges, the uncertainty δ and the final weight w.

    Class weights default to the balanced scheme over this mask alone; pass --class-weights-from
    a store to see the weights that store uses. A 3-D mask is computed whole and its middle slice
    is drawn.
    """
    # Lazily: matplotlib is an optional extra and slow to import. Figure + savefig renders with
    # Agg without touching pyplot's global backend.
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise click.ClickException("preview needs matplotlib: pip install 'weightmaps[plot]'") from None
    import numpy as np

    from weightmaps import count_labels, distance_to_edges, uncertainty, weight_map
    from weightmaps.classweights import resolve_class_weights
    from weightmaps.readers import read_image, read_mask

    labels = read_mask(mask, label_map=label_map)
    weights, _ = resolve_class_weights(class_weights, count_labels(labels, ignore_index=ignore_index),
                                       class_weights_from=class_weights_from)
    common: dict[str, Any] = {"spacing": spacing, "connectivity": connectivity, "device": device}
    distance = distance_to_edges(labels, **common)
    delta = uncertainty(labels, sigma=sigma, **common)
    w = weight_map(labels, sigma=sigma, class_weights=weights, ignore_index=ignore_index, **common)
    ndim = labels.ndim
    shown = [_middle_slice(a, ndim) for a in (labels, distance, delta, w)]
    background = _display_image(read_image(image), labels.shape, image) if image else None

    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib import colormaps

    # Discrete colours for the labels present only, each label keeping its tab10 colour.
    present = np.unique(shown[0])
    palette = colormaps["tab10"]
    label_cmap = ListedColormap([palette(int(v) % 10) for v in present])
    label_index = np.searchsorted(present, shown[0])
    panels = (["image"] if background is not None else []) + ["mask", "distance", "delta", "weight"]
    fig = Figure(figsize=(4.3 * len(panels), 4.6), layout="constrained")
    axes = dict(zip(panels, np.atleast_1d(fig.subplots(1, len(panels))), strict=True))
    titles = {
        "image": "image",
        "mask": "mask" + (" over the image" if background is not None else ""),
        "distance": "distance to the nearest edge $d(x)$",
        "delta": rf"uncertainty $\delta(x) = 1 - e^{{-d^2 / 2\sigma^2}}$, $\sigma = {sigma:g}$",
        "weight": r"weight $w(x) = \varphi_{c(x)}\,\delta(x)$",
    }
    for name, ax in axes.items():
        ax.set_title(titles[name], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if background is not None:
        for name in ("image", "mask"):
            axes[name].imshow(background, cmap="gray" if background.ndim == 2 else None, interpolation="nearest")
    im = axes["mask"].imshow(label_index, cmap=label_cmap, norm=BoundaryNorm(np.arange(len(present) + 1) - 0.5, len(present)),
                             alpha=0.5 if background is not None else 1.0, interpolation="nearest")
    bar = fig.colorbar(im, ax=axes["mask"], shrink=0.85, label="label", ticks=np.arange(len(present)))
    bar.set_ticklabels([str(int(v)) for v in present])
    # The maps are drawn on their own (an image underneath would muddy the colour scales), with
    # the label boundaries traced so the eye can place them.
    for name, data, cmap, label in (
        ("distance", shown[1], "magma", "d (spacing units)"),
        ("delta", shown[2], "viridis", "δ"),
        ("weight", shown[3], "inferno", "w"),
    ):
        data = np.asarray(data, dtype=np.float32)
        im = axes[name].imshow(np.where(np.isfinite(data), data, np.nan), cmap=cmap, interpolation="nearest")
        fig.colorbar(im, ax=axes[name], shrink=0.85, label=label)
        if len(present) > 1:
            axes[name].contour(shown[0], levels=np.asarray(present[:-1], dtype=float) + 0.5,
                               colors="white", linewidths=0.4, alpha=0.6)
    phi = ", ".join(f"{k}: {v:.3g}" for k, v in weights.items())
    slice_note = f", middle slice {labels.shape[0] // 2} of {labels.shape[0]}" if ndim == 3 else ""
    fig.suptitle(f"{Path(mask).name}{slice_note}    φ = {{{phi}}}", fontsize=11)
    fig.savefig(out, dpi=dpi)
    click.echo(f"wrote {out}")
