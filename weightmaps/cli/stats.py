"""``weightmaps stats``: class pixel counts of a dataset and the class weights of every scheme."""

from __future__ import annotations

from typing import Any

import click

from weightmaps.cli.options import (
    ProgressBars,
    echo_json,
    float_labels_opt,
    ignore_index_opt,
    json_opt,
    label_map_opt,
    storage_options_opt,
    verbosity_opts,
)


@click.command("stats")
@click.argument("inputs", metavar="INPUT")
@ignore_index_opt
@label_map_opt
@float_labels_opt
@click.option("--num-classes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Labels must be < N (the ignore label excepted).")
@click.option("--skip-bad", is_flag=True, help="Leave bad inputs out (listed on stderr) instead of failing.")
@storage_options_opt
@json_opt
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@verbosity_opts
def stats_cmd(inputs: str, ignore_index: int | None, label_map: dict[int, int] | None, float_labels: bool,
              num_classes: int | None, skip_bad: bool, as_json: bool, progress: bool,
              storage_options: dict[str, Any]) -> None:
    """Class pixel counts over the masks in INPUT, and the class weights every scheme gives.

    Reads every mask once (the scan pass of `weightmaps compute`), so it also validates INPUT.
    """
    from weightmaps.classweights import SCHEMES, class_weights
    from weightmaps.stats import scan

    with ProgressBars(progress) as bars:
        result = scan(inputs, ignore_index=ignore_index, num_classes=num_classes, label_map=label_map,
                      float_labels=float_labels, skip_bad=skip_bad, progress=bars, storage_options=storage_options)
    counts = result.counts
    weights = {
        scheme: class_weights(counts, scheme, **({"image_pixels": result.image_pixels} if scheme == "median" else {}))
        for scheme in SCHEMES
    }
    total = sum(counts.values())
    if as_json:
        report: dict[str, Any] = {
            "input": result.source.description,
            "n_samples": len(result.ids),
            "n_bad": len(result.bad),
            "bad": [b.as_dict() for b in result.bad],
            "shapes": [{"shape": list(s), "n_samples": n} for s, n in result.groups().items()],
            "ignore_index": ignore_index,
            "class_counts": {str(k): v for k, v in counts.items()},
            "class_fractions": {str(k): v / total for k, v in counts.items()},
            "class_weights": {scheme: {str(k): v for k, v in w.items()} for scheme, w in weights.items()},
        }
        echo_json(report)
        return
    shapes = ", ".join(f"{n} × {'x'.join(map(str, s))}" for s, n in result.groups().items())
    click.echo(f"{len(result.ids)} masks in {result.source.description} ({shapes}), {total} counted pixels"
               + (f", ignore label {ignore_index} excluded" if ignore_index is not None else ""))
    header = ["label", "pixels", "fraction", *SCHEMES]
    rows = [
        [str(label), str(n), f"{n / total:.4%}", *(f"{weights[s][label]:.4g}" for s in SCHEMES)]
        for label, n in counts.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    click.echo("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        click.echo("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    for b in result.bad:
        click.echo(f"skipped {b}", err=True)
