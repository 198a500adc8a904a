"""``weightmaps info``: what a store holds and whether it is complete."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import click

from weightmaps.cli.options import (
    echo_json,
    human_bytes,
    json_opt,
    shape_lines,
    storage_options_opt,
    verbosity_opts,
)
from weightmaps.layout import summarize_shapes
from weightmaps.params import UNET_FIELDS

if TYPE_CHECKING:
    from weightmaps.store import WeightStore


@click.command("info")
@click.argument("store", metavar="STORE")
@storage_options_opt
@json_opt
@verbosity_opts
def info_cmd(store: str, as_json: bool, storage_options: dict[str, Any]) -> None:
    """Parameters, samples, completeness, dtype, size on disk and class weights of STORE.

    Exits with status 1 when the store is incomplete (a run was interrupted: finish it with
    `weightmaps compute ... --resume`), so that scripts can test for a finished store.
    """
    from weightmaps.store import open_store

    ws = open_store(store, storage_options)
    n = len(ws)
    written = n if ws.complete else len(ws.recorded_digests())
    info: dict[str, Any] = {
        "store": str(ws.path),
        "complete": ws.complete,
        "n_samples": n,
        "n_written": written,
        "dtype": str(ws.dtype),
        "shapes": summarize_shapes(ws.shapes()),
        "bytes_on_disk": ws.nbytes_on_disk(),
        "params": ws.params.to_json(),
        "class_counts": {str(k): v for k, v in ws.class_counts.items()},
        "class_weights": {str(k): v for k, v in ws.class_weights.items()},
        "report": ws.report,
    }
    if as_json:
        echo_json(info)
    else:
        _print(ws, info, written)
    if not ws.complete:
        click.get_current_context().exit(1)  # scripts check for a finished store by the exit status


def _print(ws: WeightStore, info: dict[str, Any], written: int) -> None:
    n = len(ws)
    state = "complete" if ws.complete else f"INCOMPLETE: {written} of {n} maps written (finish it with --resume)"
    click.echo(f"{ws.path}: {n} weight maps, {state}")
    click.echo(f"  dtype {info['dtype']}, {human_bytes(info['bytes_on_disk'])} on disk")
    for line in shape_lines(info["shapes"]):
        click.echo(f"  {line}")
    params = ws.params
    for f in dataclasses.fields(params):
        if f.name in ("class_weights", "class_weights_origin"):  # the table below says them
            continue
        if f.name in UNET_FIELDS and params.kind != "unet":  # another kind's fields: not this map's
            continue
        if f.name == "sigma" and params.sigma is None:  # the distance kinds take none
            continue
        click.echo(f"  {f.name}: {getattr(params, f.name)}")
    click.echo(f"  class weights: {_weights_origin(params.class_weights_origin)}")
    width = max(len("pixels"), *(len(str(c)) for c in ws.class_counts.values()))
    click.echo(f"  {'class':>5}  {'pixels':>{width}}  {'weight':>10}")
    for label, weight in ws.class_weights.items():
        click.echo(f"  {label:>5}  {ws.class_counts.get(label, 0):>{width}}  {weight:>10.4g}")
    report = ws.report or {}
    bad = report.get("bad") or []
    if bad:
        click.echo(f"  {len(bad)} bad input(s) skipped:")
        for b in bad:
            click.echo(f"    {b.get('path') or b.get('id')}: {b.get('reason')}")


def _weights_origin(record: dict[str, Any]) -> str:
    """Where a store's class weights came from, in words (the record compute() writes)."""
    source = record.get("source")
    if source == "scheme":
        params = record.get("scheme_params") or {}
        extra = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{record.get('scheme')} scheme over the class counts" + (f" ({extra})" if extra else "")
    if source in ("file", "store"):
        return f"from the {source} {record.get('path')}"
    return "given explicitly"
