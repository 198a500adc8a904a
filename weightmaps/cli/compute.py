"""``weightmaps compute``: a dataset of masks → a sharded zarr store of weight maps."""

from __future__ import annotations

import json
from typing import Any

import click

from weightmaps.cli.options import (
    ProgressBars,
    class_weights_opt,
    connectivity_opt,
    device_opt,
    echo_json,
    float_labels_opt,
    human_bytes,
    ignore_index_opt,
    json_opt,
    shape_lines,
    label_map_opt,
    storage_options_opt,
    map_opts,
    sigma_opt,
    spacing_opt,
    verbosity_opts,
)


@click.command("compute")
@click.argument("inputs", metavar="INPUT")
@click.option("--out", "-o", required=True, metavar="STORE",
              help="Output zarr store: a directory, or a URL such as s3://bucket/train.zarr.")
@map_opts
@sigma_opt
@class_weights_opt
@click.option("--class-weights-from", metavar="STORE", default=None,
              help="Reuse another store's class weights (e.g. the training set's for a validation set).")
@ignore_index_opt
@spacing_opt
@connectivity_opt
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@device_opt
@click.option("--batch-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="Masks per engine call (default: a shard on the CPU, ~16 M pixels on the GPU).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, metavar="N",
              help="Worker processes, on the CPU and on a GPU alike (default: all cores).")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Labels must be < N (the ignore label excepted).")
@label_map_opt
@float_labels_opt
@click.option("--samples-per-shard", type=click.IntRange(min=1), default=None, metavar="N",
              help="Samples per shard file (default: about 16 MiB of maps).")
@click.option("--max-weight", type=click.FloatRange(min=0, min_open=True), default=None, metavar="W",
              help="Clip every class weight to at most W (recorded in the store), e.g. to fit float16.")
@click.option("--resume", is_flag=True, help="Complete an interrupted run (refused if parameters or inputs changed).")
@click.option("--recompute-changed", is_flag=True,
              help="With --resume: compute again the shards whose masks changed, instead of refusing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; write nothing.")
@click.option("--skip-bad", is_flag=True, help="Record bad inputs in the store's report and go on.")
@click.option("--dask-workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Run the scan and the shards on a local Dask cluster of N worker processes "
              "(needs weightmaps[dask]).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on an existing Dask cluster, e.g. tcp://10.0.0.1:8786 (inputs and STORE must be "
              "on a filesystem every worker sees, by the same paths).")
@storage_options_opt
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
@json_opt
@verbosity_opts
def compute_cmd(inputs: str, out: str, resume: bool, overwrite: bool, progress: bool, as_json: bool,
                dask_workers: int | None, scheduler: str | None, **options: Any) -> None:
    """Compute the weight map of every mask in INPUT into the zarr store STORE.

    INPUT is a directory (searched recursively), a glob, a text file listing mask paths, or a
    zarr array of masks; local, or an fsspec URL (s3://bucket/masks/, gs://..., az://...,
    https://... read-only), as STORE may be. Bad inputs are all listed, then the command exits with status 2 unless
    --skip-bad is given. A killed run is completed with --resume.

    \b
    weightmaps compute data/train/masks --out train.zarr --sigma 2
    weightmaps compute data/val/masks --out val.zarr --sigma 2 --class-weights-from train.zarr
    weightmaps compute data/cells/instances --out cells.zarr --map unet --w0 10 --sigma 5
    weightmaps compute s3://bucket/train/masks/ --out s3://bucket/train.zarr --sigma 2
    """
    from weightmaps.pipeline import compute

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if options.get("recompute_changed") and not resume:
        raise click.UsageError("--recompute-changed applies to --resume")
    if dask_workers is not None and scheduler is not None:
        raise click.UsageError("--dask-workers and --scheduler exclude each other")
    if options.get("workers") is not None and (dask_workers is not None or scheduler is not None):
        raise click.UsageError("--workers sizes the in-process pool; on Dask the cluster's workers do the work "
                               "(--dask-workers N, or start more workers for --scheduler)")
    with ProgressBars(progress) as bars:
        if dask_workers is not None or scheduler is not None:
            from weightmaps import distributed  # looked up at call time: the module is the API

            result = distributed.compute_on_dask(
                dask_workers if dask_workers is not None else scheduler, inputs, out,
                resume=resume, overwrite=overwrite, progress=bars, **options,
            )
        else:
            result = compute(inputs, out, resume=resume, overwrite=overwrite, progress=bars, **options)
    if result.plan is not None:
        if as_json:
            echo_json(result.plan)
            return
        plan = result.plan
        click.echo(f"dry run: would write {plan['n_samples']} weight maps to {plan['store']}"
                   + (" (it exists)" if plan["exists"] else ""))
        click.echo(f"  {plan['n_shards']} shard(s), {human_bytes(plan['estimated_bytes'])} uncompressed")
        for line in shape_lines(plan["shapes"]):
            click.echo(f"  {line}")
        click.echo(f"  class weights: {json.dumps(plan['class_weights'])}")
        if plan["spacing"] is not None:
            click.echo(f"  spacing: {tuple(plan['spacing'])}")
        for b in plan["bad"]:
            click.echo(f"  would skip {b['path'] or b['id']}: {b['reason']}")
        return
    if as_json:
        echo_json({
            "store": result.store, "n_samples": result.n_samples, "n_computed": result.n_computed,
            "n_bad": result.n_bad, "bad": [b.as_dict() for b in result.bad],
            "class_weights": result.class_weights, "seconds": result.seconds,
            "busy_seconds": result.busy_seconds, "masks_per_second": result.masks_per_second,
            "steady_masks_per_second": result.steady_masks_per_second, "device": result.device,
        })
        return
    skipped = f", skipped {result.n_bad} bad input(s) (listed in the store's report)" if result.n_bad else ""
    resumed = f" ({result.n_samples - result.n_computed} were already there)" if result.n_computed < result.n_samples else ""
    click.echo(
        f"wrote {result.n_computed} weight maps to {result.store}{resumed}{skipped} in "
        f"{result.seconds['total']:.1f} s ({result.masks_per_second:.1f} masks/s on {result.device})"
    )
