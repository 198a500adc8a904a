"""Does the run scale with its worker processes? ``weightmaps compute`` at 1 and N workers, side by side.

    python benchmarks/pool_scaling.py --out benchmarks/results              # 512 × 256², 1 vs 2 workers, 5 repeats
    python benchmarks/pool_scaling.py --out /tmp/s --workers 1,2,4 --n 256 --side 512
    python benchmarks/pool_scaling.py --out /tmp/s --quick                  # a tiny run: checks the script

The GPU path and the CPU path are one runner (``weightmaps.shards.run_on_pool``): every worker
process scans, decodes, computes and writes its own shards. Here the CPU backend stands in for the
device (no GPU on the machines this runs on), so the ratio between worker counts says whether that
runner's CPU side scales with the cores: on a 2-core VM, 1 → 2 workers should be ≥ 1.7×. Each
run is the CLI as a subprocess (files in → store out), the worker counts interleaved and rotated
every repeat; rates are medians, end to end (wall time) and steady (the pipeline's own clock after
its first shard, the scan included per mask). Every run's store is checked equal to the first's.
Prints a Markdown table and writes ``OUT/pool-scaling-<cpu|card>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from wmbench.machine import card_tag, machine_info, versions
from wmbench.runner import SIGMA, Size, Variant, rotated, run_variant


def _maps(store: Path) -> dict[str, bytes]:
    from weightmaps.store import open_store

    opened = open_store(store)
    assert opened.complete, store
    return {sid: np.asarray(opened[sid]).tobytes() for sid in opened.ids}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,4")
    parser.add_argument("--n", type=int, default=512, help="masks")
    parser.add_argument("--side", type=int, default=256, help="mask side (square, PNG, 4 classes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="64 masks of 64², 2 repeats: checks the script")
    args = parser.parse_args()
    if args.quick:
        args.n, args.side, args.repeats = 64, 64, 2
    counts = [int(w) for w in args.workers.split(",")]
    size = Size("scaling", args.n, (args.side, args.side), 4, "png")
    chosen = [Variant(f"w{w}", f"--workers {w}", gpu=args.device == "cuda", device=args.device,
                      extra=("--workers", str(w))) for w in counts]

    from weightmaps.sample_data import write_dataset

    work = Path(tempfile.mkdtemp(prefix="weightmaps-scaling-"))
    try:
        root = write_dataset(work / "data", n=size.n, shape=size.shape, num_classes=size.num_classes, seed=size.seed,
                             fmt=size.fmt, with_images=False)
        runs: dict[str, list[tuple[float, dict[str, Any]]]] = {v.key: [] for v in chosen}
        reference: dict[str, bytes] | None = None
        for r in range(args.repeats + 1):  # the first round is a warm-up (page cache, imports)
            for v in rotated(chosen, r):
                out = work / f"{v.key}-{r}.zarr"
                seconds, reported = run_variant(v, root / "masks", out, size, SIGMA, timeout=900)
                maps = _maps(out)
                if reference is None:
                    reference = maps
                elif maps != reference:
                    print(f"{v.name}: the store differs from the first run's", file=sys.stderr)
                    return 1
                shutil.rmtree(out)
                if r:
                    runs[v.key].append((seconds, reported))
                print(f"round {r} {v.name}: {seconds:.2f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for v in chosen:
        wall = statistics.median(s for s, _ in runs[v.key])
        steady = [1.0 / (rep["seconds"]["scan"] / size.n + 1.0 / rep["steady_masks_per_second"])
                  for _, rep in runs[v.key] if rep.get("steady_masks_per_second")]
        rows.append({"variant": v.name, "workers": int(v.extra[-1]), "median_s": wall, "masks_per_s": size.n / wall,
                     "steady_masks_per_s": statistics.median(steady) if steady else None,
                     "seconds": [s for s, _ in runs[v.key]]})
    base = rows[0]
    for row in rows:
        row["ratio"] = row["masks_per_s"] / base["masks_per_s"]
        if row["steady_masks_per_s"] and base["steady_masks_per_s"]:
            row["steady_ratio"] = row["steady_masks_per_s"] / base["steady_masks_per_s"]
    machine = machine_info()
    tag = card_tag(machine["gpu"])
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "versions": versions(), "size": size.label,
              "device": args.device, "repeats": args.repeats, "rows": rows}
    lines = [f"# Worker scaling: {size.label}, --device {args.device}, {report['date']}", "",
             f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
             f"GPU: {machine['gpu']}",
             f"- method: the CLI as a subprocess per run, worker counts interleaved (rotated), one warm-up round, "
             f"{args.repeats} timed rounds, medians; every store equal to the first run's; σ {SIGMA:g}", "",
             "| workers | median s | masks/s | × 1st | steady masks/s | steady × 1st |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        steady = f"{row['steady_masks_per_s']:.0f}" if row["steady_masks_per_s"] else "–"
        steady_ratio = f"{row['steady_ratio']:.2f}" if "steady_ratio" in row else "–"
        lines.append(f"| {row['workers']} | {row['median_s']:.2f} | {row['masks_per_s']:.0f} | {row['ratio']:.2f} | "
                     f"{steady} | {steady_ratio} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"pool-scaling-{tag}-{report['date']}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
