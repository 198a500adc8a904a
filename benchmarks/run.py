"""The benchmark: weight maps for a dataset, files in → files out, against the plain scipy script.

    python benchmarks/run.py --out benchmarks/results                 # every size, 3 repeats
    python benchmarks/run.py --out /tmp/b --sizes 256,1024 --repeats 5
    python benchmarks/run.py --out /tmp/b --quick                     # tiny sizes, for the tests
    python benchmarks/run.py --render benchmarks/results/cpu-<date>.json   # reprint a table

For each size, on the same generated masks (``weightmaps.sample_data``: multi-class scenes of
smooth blobs with a rare class, plus a binary set; PNG files, 3-D volumes as multi-page TIFF with
spacing (3, 1, 1)), it times end to end, files in → maps out:

    (a) ``benchmarks/plain_scipy.py``: the per-image numpy + scipy script a user would write
    (b) ``weightmaps compute --device scipy``     (c) ``weightmaps compute --device cpu``
    (d) ``weightmaps compute --device cuda``      (e) ``benchmarks/plain_cucim.py`` (GPU only)

Every variant runs as a **subprocess** (the ``weightmaps`` CLI, or ``python script.py``), so each
time includes the interpreter start and the imports, as a user would see it. Method: one warm-up
run of every variant, whose outputs are checked against (a)'s (``allclose``, rtol 1e-5) before
anything is timed; then ``--repeats`` runs of each, interleaved (a, b, c, a, b, c, ... with the
order rotated every repeat so a drift of the shared machine hits every variant alike), each into
a fresh output directory deleted afterwards; the median is reported, with the spread.

Then a stage breakdown per size and device: one single-process pass over the same masks that
makes the pipeline's own calls, timing each stage (``wmbench.stages.stage_breakdown``).

Results: a Markdown table on stdout, and ``OUT/<cpu|card>-<date>.json`` / ``.md`` with the
machine, the versions and every run. Issue targets are reported as met / missed with the ratio,
never asserted; the exit status is 1 only when a correctness check failed.

This file is the command line; the parts live in the ``wmbench`` package beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wmbench.check import ATOL, RTOL
from wmbench.machine import card_tag, gpu_unmeasured_reason, machine_info, versions
from wmbench.report import markdown
from wmbench.runner import SIGMA, weightmaps_command
from wmbench.suite import DEFAULT_QUICK_SIZES, DEFAULT_SIZES, QUICK_SIZES, SIZES, bench_size
from wmbench.targets import evaluate_targets

# 2: stage passes time the pipeline's own compute_maps (no weight_map_* keys); targets carry a direction.
SCHEMA = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark weightmaps against the plain scipy script.")
    parser.add_argument("--out", type=Path, help="folder for <cpu|card>-<date>.json and .md")
    parser.add_argument("--sizes", default=None, help=f"comma-separated, from {','.join(SIZES)} (default: all; "
                        f"--quick: {DEFAULT_QUICK_SIZES})")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="tiny datasets: checks the runner, measures nothing")
    parser.add_argument("--sigma", type=float, default=SIGMA)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="print the Markdown of an earlier run's JSON and exit")
    args = parser.parse_args(argv)
    if args.render is not None:
        print(markdown(json.loads(args.render.read_text())))
        return 0

    if args.out is None:
        parser.error("--out is required")
    table = QUICK_SIZES if args.quick else SIZES
    keys = [k.strip() for k in (args.sizes or (DEFAULT_QUICK_SIZES if args.quick else DEFAULT_SIZES)).split(",") if k.strip()]
    unknown = [k for k in keys if k not in table]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(table)}")
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be at least 1")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    machine = machine_info()
    gpu_reason = gpu_unmeasured_reason(machine)
    now = dt.datetime.now().astimezone()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "tag": card_tag(machine["gpu"]),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "machine": machine,
        "versions": versions(),
        "method": {
            "quick": args.quick, "warmup": 1, "repeats": repeats, "statistic": "median", "sigma": args.sigma,
            "end_to_end": "each variant is a subprocess (interpreter start + imports included), files in -> maps out",
            "cli": weightmaps_command()[1], "check": {"rtol": RTOL, "atol": ATOL, "against": "a"},
            "stages": "one single-process pass per device making the pipeline's calls, each stage timed "
                      "(compute_maps and weight_map through their timer)",
        },
        "load_average": {"start": os.getloadavg()[0]},
        "sizes": [],
    }
    work = args.work or Path(tempfile.mkdtemp(prefix="weightmaps-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for key in keys:
            try:
                report["sizes"].append(bench_size(table[key], work / key, repeats, args.sigma, gpu_reason, log))
            except Exception as exc:  # one size failing must not lose the others' numbers
                log(f"[{key}] FAILED: {exc}")
                size = table[key]
                report["sizes"].append({"key": key, "label": size.label, "n": size.n, "shape": list(size.shape),
                                        "error": f"{type(exc).__name__}: {exc}", "variants": {},
                                        "check": {"ran": False}})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["load_average"]["end"] = os.getloadavg()[0]
    report["targets"] = evaluate_targets(report)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{report['tag']}-{report['date']}" + ("-quick" if args.quick else "")
    text = markdown(report)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    log(f"wrote {args.out / stem}.json and .md")
    return 0 if all(s["check"].get("passed", False) for s in report["sizes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
