"""``run.py``'s datasets, and the benchmark of one of them: check, timed runs, stage passes."""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .check import compare, read_maps
from .runner import VARIANTS, Size, rotated, run_variant
from .stages import CPU_STAGE_DEVICES, GPU_STAGE_DEVICES, timed_stages

SIZES = {
    "256": Size("256", 512, (256, 256), 4, "png"),
    "256bin": Size("256bin", 512, (256, 256), 2, "png", seed=1),
    # Many small objects: many boundaries, where scipy's transform is slowest (issue 9).
    "256many": Size("256many", 512, (256, 256), 4, "png", seed=2, objects=(40, 80)),
    "1024": Size("1024", 64, (1024, 1024), 4, "png"),
    "4096": Size("4096", 4, (4096, 4096), 4, "png"),
    "3d": Size("3d", 8, (128, 128, 128), 4, "tif", spacing=(3.0, 1.0, 1.0)),
}
# --quick: the same datasets shrunk, to check that the runner works (the numbers mean nothing).
QUICK_SIZES = {
    "256": Size("256", 6, (64, 64), 4, "png"),
    "256bin": Size("256bin", 6, (64, 64), 2, "png", seed=1),
    "256many": Size("256many", 6, (64, 64), 4, "png", seed=2, objects=(40, 80)),
    "1024": Size("1024", 3, (128, 128), 4, "png"),
    "4096": Size("4096", 2, (256, 256), 4, "png"),
    "3d": Size("3d", 2, (16, 16, 16), 4, "tif", spacing=(3.0, 1.0, 1.0)),
}
DEFAULT_SIZES = "256,256bin,256many,1024,4096,3d"
DEFAULT_QUICK_SIZES = "256,256bin,3d"


def bench_size(size: Size, work: Path, repeats: int, sigma: float, gpu_reason: str | None,
               log: Callable[[str], None]) -> dict[str, Any]:
    """Every variant on one dataset, and the stage passes: the size's entry of the report.

    Writes the dataset under ``work``; one warm-up run of every variant, checked against (a)
    (a size that fails the check is not timed); ``repeats`` timed runs, interleaved and rotated;
    then the stage pass per device. ``gpu_reason`` says why GPU variants are not run (None: run).
    """
    from weightmaps.sample_data import write_dataset

    root = work / f"data-{size.key}"
    start = time.perf_counter()
    write_dataset(root, n=size.n, shape=size.shape, num_classes=size.num_classes, seed=size.seed,
                  fmt=size.fmt, with_images=False, objects=size.objects)
    masks = root / "masks"
    log(f"[{size.key}] {size.label}: data written in {time.perf_counter() - start:.1f} s")
    result: dict[str, Any] = {
        "key": size.key, "label": size.label, "n": size.n, "shape": list(size.shape),
        "num_classes": size.num_classes, "format": size.fmt,
        "spacing": list(size.spacing) if size.spacing else None,
        "input_bytes": sum(p.stat().st_size for p in masks.iterdir()),
        "variants": {}, "check": {"ran": False},
    }
    runnable = [v for v in VARIANTS if gpu_reason is None or not v.gpu]
    for v in VARIANTS:
        entry: dict[str, Any] = {"name": v.name, "measured": v in runnable}
        if v not in runnable:
            entry["reason"] = gpu_reason
        result["variants"][v.key] = entry
    runs_dir = work / f"runs-{size.key}"
    runs_dir.mkdir(parents=True)

    # Warm-up run of every variant; its outputs are the correctness check (before any timing).
    outputs = {}
    for v in runnable:
        out = runs_dir / f"{v.key}-warmup"
        seconds, _ = run_variant(v, masks, out, size, sigma)
        result["variants"][v.key]["warmup_s"] = seconds
        outputs[v.key] = out
        log(f"[{size.key}] warm-up ({v.key}) {v.name}: {seconds:.2f} s")
    reference = read_maps(VARIANTS[0], outputs["a"])
    check: dict[str, Any] = {"ran": True, "against": "a", "compared": {}}
    for v in runnable[1:]:
        check["compared"][v.key] = compare(reference, read_maps(v, outputs[v.key]), size.n)
    check["passed"] = all(c["ok"] for c in check["compared"].values())
    result["check"] = check
    for out in outputs.values():
        shutil.rmtree(out)
    log(f"[{size.key}] correctness vs (a): " + ", ".join(
        f"({k}) {'ok' if c['ok'] else 'FAILED'} max|diff| {c['max_abs_diff']:.2g}" for k, c in check["compared"].items()))
    if not check["passed"]:
        log(f"[{size.key}] correctness check FAILED: not timing this size")
        return result

    # Timed runs: interleaved, order rotated each repeat, fresh output directory each run.
    for r in range(repeats):
        for v in rotated(runnable, r):
            out = runs_dir / f"{v.key}-{r}"
            seconds, reported = run_variant(v, masks, out, size, sigma)
            shutil.rmtree(out)
            entry = result["variants"][v.key]
            entry.setdefault("seconds", []).append(seconds)
            entry.setdefault("reported", []).append(reported)
            log(f"[{size.key}] run {r + 1}/{repeats} ({v.key}) {v.name}: {seconds:.2f} s")
    base = None
    for v in runnable:
        entry = result["variants"][v.key]
        entry["median_s"] = statistics.median(entry["seconds"])
        entry["min_s"], entry["max_s"] = min(entry["seconds"]), max(entry["seconds"])
        entry["masks_per_s"] = size.n / entry["median_s"]
        base = base or entry["masks_per_s"]
        entry["ratio_to_a"] = entry["masks_per_s"] / base
        if v.script:  # the plain scripts' own per-step seconds, median over the runs
            steps = sorted({k for rep in entry["reported"] for k in rep.get("seconds", {})})
            entry["steps_s"] = {k: statistics.median(rep["seconds"].get(k, 0.0) for rep in entry["reported"])
                                for k in steps}

    # Stage breakdown per device, on the same masks.
    result["stages"] = {}
    for device in CPU_STAGE_DEVICES + (GPU_STAGE_DEVICES if gpu_reason is None else ()):
        stages, error = timed_stages(masks, runs_dir / f"stages-{device}", size, device, sigma, log)
        if error is None:
            result["stages"][device] = stages
        else:
            result.setdefault("stages_failed", {})[device] = error
    shutil.rmtree(runs_dir)
    return result
