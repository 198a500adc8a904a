"""``weightmaps preview``: one mask's weight map as a figure, like Bressan et al. (2021), Fig. 1.

With ``--map unet``: the instances, the distance d1 + d2 to the two nearest ones and the U-Net weight.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from weightmaps.arrays import LabelArray
from weightmaps.cli.options import (
    class_weights_opt,
    connectivity_opt,
    device_opt,
    ignore_index_opt,
    label_map_opt,
    map_opts,
    sigma_opt,
    spacing_opt,
    storage_options_opt,
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


def _file_or_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A local file that must exist, or a URL (s3://..., read with --storage-option)."""
    from weightmaps.location import is_url

    if value is None or is_url(value):
        return value
    return str(click.Path(exists=True, dir_okay=False).convert(value, param, ctx))


@click.command("preview")
@click.argument("mask", metavar="MASK", callback=_file_or_url)
@click.option("--image", default=None, callback=_file_or_url,
              help="The image the mask labels, drawn under the mask (a file or a URL).")
@map_opts
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
@click.option("--num-classes", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --map sdf: the channels (default: the mask's largest label + 1).")
@click.option("--dpi", type=click.IntRange(min=30), default=120, show_default=True)
@storage_options_opt
@verbosity_opts
def preview_cmd(mask: str, image: str | None, kind: str, w0: float | None, tolerance: float | None,
                instances: str | None, sigma: float | None, out: str, class_weights: str,
                class_weights_from: str | None, ignore_index: int | None, label_map: dict[int, int] | None,
                spacing: tuple[float, ...] | None, connectivity: int, device: str, num_classes: int | None,
                dpi: int, storage_options: dict[str, Any]) -> None:
    """Draw MASK, its distance to the label edges, the uncertainty δ and the final weight w.

    With --map unet: the instances, the distance d1 + d2 to the two nearest instances (drawn up
    to the reach beyond which the separation term is below the tolerance) and the U-Net weight.
    With --map distance: the distance alone; with --map sdf: one signed distance panel per class.
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

    from weightmaps.params import MapParams
    from weightmaps.readers import read_image, read_mask

    labels = read_mask(mask, label_map=label_map, storage_options=storage_options)
    if kind == "sdf" and num_classes is None:
        num_classes = int(np.max(np.where(labels == ignore_index, 0, labels))) + 1 if ignore_index is not None \
            else int(labels.max()) + 1
    params = MapParams(sigma=sigma, class_weights={}, kind=kind, w0=w0, tolerance=tolerance, instances=instances,
                       num_classes=num_classes)
    common: dict[str, Any] = {"spacing": spacing, "connectivity": connectivity, "device": device}
    if params.kind == "unet":
        drawn, weights, maps = _unet_panels(labels, params, class_weights, class_weights_from, ignore_index, common,
                                            storage_options)
    elif params.kind in ("distance", "sdf"):
        drawn, weights, maps = labels, {}, _distance_panels(labels, params, ignore_index, common)
    else:
        drawn, weights, maps = _bressan_panels(labels, float(sigma), class_weights, class_weights_from,  # type: ignore[arg-type]
                                               ignore_index, common, storage_options)
    ndim = labels.ndim
    drawn = _middle_slice(drawn, ndim)
    shown = [(name, title, _middle_slice(data, ndim), cmap, label) for name, title, data, cmap, label in maps]
    background = _display_image(read_image(image, storage_options=storage_options), labels.shape, image) \
        if image else None

    from matplotlib.colors import BoundaryNorm, ListedColormap, TwoSlopeNorm
    from matplotlib import colormaps

    present = np.unique(drawn)
    label_index = np.searchsorted(present, drawn)
    panels = (["image"] if background is not None else []) + ["mask"] + [m[0] for m in shown]
    fig = Figure(figsize=(4.3 * len(panels), 4.6), layout="constrained")
    axes = dict(zip(panels, np.atleast_1d(fig.subplots(1, len(panels))), strict=True))
    titles = {
        "image": "image",
        "mask": ("instances" if params.kind == "unet" else "mask") + (" over the image" if background is not None else ""),
        **{name: title for name, title, *_ in shown},
    }
    for name, ax in axes.items():
        ax.set_title(titles[name], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if background is not None:
        for name in ("image", "mask"):
            axes[name].imshow(background, cmap="gray" if background.ndim == 2 else None, interpolation="nearest")
    alpha = 0.5 if background is not None else 1.0
    if len(present) <= 10:
        # Discrete colours for the labels present only, each label keeping its tab10 colour.
        palette = colormaps["tab10"]
        label_cmap = ListedColormap([palette(int(v) % 10) for v in present])
        im = axes["mask"].imshow(label_index, cmap=label_cmap, alpha=alpha, interpolation="nearest",
                                 norm=BoundaryNorm(np.arange(len(present) + 1) - 0.5, len(present)))
        bar = fig.colorbar(im, ax=axes["mask"], shrink=0.85, label="label", ticks=np.arange(len(present)))
        bar.set_ticklabels([str(int(v)) for v in present])
    else:  # many instances: cycled colours, background black, no legend
        cycled = np.where(drawn == 0, np.nan, label_index % 20)
        axes["mask"].set_facecolor("black")
        axes["mask"].imshow(cycled, cmap="tab20", vmin=0, vmax=19, alpha=alpha, interpolation="nearest")
    # The maps are drawn on their own (an image underneath would muddy the colour scales), with
    # the label boundaries traced so the eye can place them.
    edges = _edges(drawn)
    for name, _, data, cmap, label in shown:
        data = np.asarray(data, dtype=np.float32)
        # Signed maps: white at 0 (the boundary), blue inside, red outside.
        signed = cmap == "RdBu_r" and np.nanmin(data) < 0 < np.nanmax(data)
        im = axes[name].imshow(np.where(np.isfinite(data), data, np.nan), cmap=cmap, interpolation="nearest",
                               norm=TwoSlopeNorm(vcenter=0.0) if signed else None)
        fig.colorbar(im, ax=axes[name], shrink=0.85, label=label)
        if edges.any():
            axes[name].imshow(np.where(edges, 1.0, np.nan), cmap="gray", vmin=0, vmax=1, alpha=0.6,
                              interpolation="nearest")
    phi = ", ".join(f"{k}: {v:.3g}" for k, v in weights.items())
    slice_note = f", middle slice {labels.shape[0] // 2} of {labels.shape[0]}" if ndim == 3 else ""
    name = "w_c" if params.kind == "unet" else "φ"
    fig.suptitle(f"{Path(mask).name}{slice_note}" + (f"    {name} = {{{phi}}}" if weights else ""), fontsize=11)
    fig.savefig(out, dpi=dpi)
    click.echo(f"wrote {out}")


Panel = tuple[str, str, Any, str, str]  # name, title, data, colour map, colour bar label


def _bressan_panels(labels: LabelArray, sigma: float, class_weights: str, class_weights_from: str | None,
                    ignore_index: int | None, common: dict[str, Any], storage_options: dict[str, Any],
                    ) -> tuple[Any, dict[int, float], list[Panel]]:
    from weightmaps import count_labels, distance_to_edges, uncertainty, weight_map
    from weightmaps.classweights import resolve_class_weights

    weights, _ = resolve_class_weights(class_weights, count_labels(labels, ignore_index=ignore_index),
                                       class_weights_from=class_weights_from, storage_options=storage_options)
    return labels, weights, [
        ("distance", "distance to the nearest edge $d(x)$", distance_to_edges(labels, **common), "magma",
         "d (spacing units)"),
        ("delta", rf"uncertainty $\delta(x) = 1 - e^{{-d^2 / 2\sigma^2}}$, $\sigma = {sigma:g}$",
         uncertainty(labels, sigma=sigma, **common), "viridis", "δ"),
        ("weight", r"weight $w(x) = \varphi_{c(x)}\,\delta(x)$",
         weight_map(labels, sigma=sigma, class_weights=weights, ignore_index=ignore_index, **common), "inferno", "w"),
    ]


def _unet_panels(labels: LabelArray, params: Any, class_weights: str, class_weights_from: str | None,
                 ignore_index: int | None, common: dict[str, Any], storage_options: dict[str, Any],
                 ) -> tuple[Any, dict[int, float], list[Panel]]:
    import numpy as np

    from weightmaps import count_labels
    from weightmaps.classweights import resolve_class_weights
    from weightmaps.unet import instances_from_labels, nearest_two_instances, reach, unet_weights

    counts = count_labels(labels, ignore_index=ignore_index)
    if params.instances == "connected":
        instances = instances_from_labels(labels, connectivity=common["connectivity"], ignore_index=ignore_index)
        classes = labels
    else:
        instances, classes = labels, None
        counts = {c: n for c, n in ((0, counts.get(0, 0)), (1, sum(n for c, n in counts.items() if c))) if n}
    weights, _ = resolve_class_weights(class_weights, counts, class_weights_from=class_weights_from,
                                       storage_options=storage_options)
    radius = reach(params.sigma, params.tolerance)
    kept = instances if classes is None or ignore_index is None else np.where(classes == ignore_index, 0, instances)
    d1, d2 = nearest_two_instances(kept, spacing=common["spacing"], within=radius, device=common["device"],
                                   ignore_index=ignore_index if classes is None else None)
    total = np.where(d1 + d2 <= radius, d1 + d2, np.inf)
    w = unet_weights(instances, classes=classes, w0=params.w0, sigma=params.sigma, class_weights=weights,
                     spacing=common["spacing"], ignore_index=ignore_index, tolerance=params.tolerance,
                     device=common["device"])
    return instances, weights, [
        ("distance", rf"$d_1 + d_2$ to the two nearest instances (up to R = {radius:.3g})", total, "magma",
         "d1 + d2 (spacing units)"),
        ("weight", rf"weight $w_c + w_0 e^{{-(d_1 + d_2)^2 / 2\sigma^2}}$, $w_0 = {params.w0:g}$, "
         rf"$\sigma = {params.sigma:g}$", w, "inferno", "w"),
    ]


def _distance_panels(labels: LabelArray, params: Any, ignore_index: int | None, common: dict[str, Any]) -> list[Panel]:
    from weightmaps import distance_to_edges, signed_distance

    if params.kind == "distance":
        return [("distance", "distance to the nearest edge $d(x)$ (weights derived when loading)",
                 distance_to_edges(labels, **common), "magma", "d (spacing units)")]
    sdf = signed_distance(labels, num_classes=params.num_classes, spacing=common["spacing"], ignore_index=ignore_index,
                          device=common["device"])
    return [(f"class {k}", f"signed distance, class {k}", sdf[k], "RdBu_r", "spacing units")
            for k in range(params.num_classes)]


def _edges(labels: LabelArray) -> Any:
    """Pixels whose right or lower neighbour has another label: the boundaries, one pixel wide."""
    import numpy as np

    edges = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        step = np.diff(labels, axis=axis) != 0
        index = [slice(None)] * labels.ndim
        index[axis] = slice(0, -1)
        edges[tuple(index)] |= step
    return edges
