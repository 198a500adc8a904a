"""``--map unet --instances connected`` against ``--instances as-is`` on the same masks, side by side.

    python benchmarks/unet_connected.py --out benchmarks/results     # 1024², ~300 and ~3,900 labels
    python benchmarks/unet_connected.py --out /tmp/u --quick         # tiny, seconds (the tests run it)

Issue 20: ``connected`` labelled each distinct value over the whole array (one
``scipy.ndimage.label`` per label), so a 1024² mask of ~3,900 labels took ~35 s against ~2 s
``as-is``. For each size and label count, ``--masks`` masks of touching cells
(:func:`weightmaps.sample_data.make_instance_masks`, uint16 TIFF) are read once as instance masks
(``as-is``: every id an instance) and once as semantic masks (``connected``: every id a class, its
connected components the instances; here mostly one per id). Measured, each a median of
``--repeats``, the two variants interleaved:

- **as-is** / **connected**: ``weightmaps.compute(kind="unet")`` end to end (scan, compute, write,
  finalize), all cores, seconds per mask;
- **labelling**: ``instances_from_labels`` alone on one mask, and the per-label loop it replaced
  (below, as it was) on the first mask, once (``--loop-masks 0`` leaves it out: 23 s a mask at
  ~3,900 labels).

w_c = 1 (``class_weights="none"``), w0 = 10, σ = 5, tolerance 1e-4. Reported, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

W0, SIGMA, TOLERANCE = 10.0, 5.0, 1e-4


def per_label_loop(labels: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """``instances_from_labels`` before issue 20: one whole-array ``ndimage.label`` per label value."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(labels.ndim, connectivity)
    out = np.zeros(labels.shape, dtype=np.int32)
    offset = 0
    for value in (int(v) for v in np.unique(labels)):
        if value == 0:
            continue
        components, count = ndimage.label(labels == value, structure=structure)
        out = np.where(components > 0, components.astype(np.int32) + np.int32(offset), out)
        offset += int(count)
    return out


def run_compute(folder: Path, out: Path, n: int, instances: str) -> float:
    """Seconds per mask of one ``weightmaps.compute(kind="unet")`` run."""
    import weightmaps as wm

    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    wm.compute(folder, out, kind="unet", sigma=SIGMA, w0=W0, tolerance=TOLERANCE, instances=instances,
               class_weights="none", device="cpu")
    return (time.perf_counter() - start) / n


def median_time(function: Any, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(side: int, cells: int, work: Path, masks: int, loop_masks: int, repeats: int) -> dict[str, Any]:
    import tifffile

    import weightmaps as wm
    from weightmaps.sample_data import make_instance_masks

    folder = work / f"{side}-{cells}" / "masks"
    folder.mkdir(parents=True)
    stack = make_instance_masks(masks, (side, side), instances=cells, seed=side + cells)
    for i, instances in enumerate(stack):
        tifffile.imwrite(folder / f"cells_{i:03d}.tif", instances.astype(np.uint16))
    seconds: dict[str, list[float]] = {"as-is": [], "connected": []}
    run_compute(folder, work / "warm-up.zarr", masks, "connected")  # imports, the worker pool's start
    for r in range(repeats):
        for variant in (("as-is", "connected") if r % 2 == 0 else ("connected", "as-is")):
            seconds[variant].append(run_compute(folder, work / f"{variant}.zarr", masks, variant))
    mask = stack[0]
    labelling_s, got = median_time(lambda: wm.instances_from_labels(mask), max(repeats, 3))
    loop_s = None
    if loop_masks:
        loop_s, expected = median_time(lambda: per_label_loop(mask), 1)
        if not np.array_equal(got, expected):
            raise SystemExit(f"{side}² / {cells}: instances_from_labels differs from the per-label loop")
    shutil.rmtree(folder.parent)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "side": side, "cells_drawn": cells, "labels_per_mask": float(np.mean([len(np.unique(m)) - 1 for m in stack])),
        "masks": masks, "seconds_per_mask": seconds, "median_s_per_mask": median,
        "connected_over_as_is": median["connected"] / median["as-is"],
        "labelling_s": labelling_s, "per_label_loop_s": loop_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="64² and 96², a few cells, one repeat")
    parser.add_argument("--masks", type=int, default=8, help="masks per configuration")
    parser.add_argument("--loop-masks", type=int, default=1, help="1: time the per-label loop on one mask; 0: not")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=None, metavar="SIDE:CELLS,...", help="default: 1024:300,1024:4000")
    args = parser.parse_args()
    default = "64:6,96:40" if args.quick else "1024:300,1024:4000"
    configs = [tuple(int(v) for v in c.split(":")) for c in (args.configs or default).split(",")]
    masks, repeats = (2, 1) if args.quick else (args.masks, args.repeats)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"), "repeats": repeats, "w0": W0, "sigma": SIGMA, "tolerance": TOLERANCE,
        "results": [],
    }
    stem = f"unet-connected-cpu-{report['date']}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="weightmaps-unet-connected-"))
    try:
        for side, cells in configs:
            result = measure(side, cells, work, masks, args.loop_masks, repeats)
            report["results"].append(result)
            m = result["median_s_per_mask"]
            loop = result["per_label_loop_s"]
            print(f"{side}² ~{result['labels_per_mask']:.0f} labels: as-is {m['as-is']:.3f} s/mask, connected "
                  f"{m['connected']:.3f} s/mask ({result['connected_over_as_is']:.2f}×); labelling "
                  f"{_seconds(result['labelling_s'])}" + (f", per-label loop {_seconds(loop)}" if loop else ""),
                  file=sys.stderr, flush=True)
            write_report(args.out, stem, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(write_report(args.out, stem, report))
    return 0


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.1f} ms"


def write_report(out: Path, stem: str, report: dict[str, Any]) -> str:
    lines = [
        "| mask | labels | as-is s/mask | connected s/mask | connected / as-is | labelling (one pass) | "
        "per-label loop (before) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        m = r["median_s_per_mask"]
        loop = "—" if r["per_label_loop_s"] is None else _seconds(r["per_label_loop_s"])
        lines.append(f"| {r['side']}² | {r['labels_per_mask']:.0f} | {m['as-is']:.3f} | {m['connected']:.3f} | "
                     f"{r['connected_over_as_is']:.2f} | {_seconds(r['labelling_s'])} | {loop} |")
    text = "\n".join(lines) + "\n"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(
        f"# `--map unet`: `--instances connected` against `as-is`: {report['machine']}, {report['date']}\n\n"
        f"Medians of {report['repeats']} run(s), seconds per mask end to end (read, compute, write), all cores; "
        f"w0 = {W0:g}, σ = {SIGMA:g}, tolerance {TOLERANCE:g}. Labelling: `instances_from_labels` on one mask "
        "(median), and the per-label loop it replaced, once.\n\n" + text
    )
    return text


if __name__ == "__main__":
    sys.exit(main())
