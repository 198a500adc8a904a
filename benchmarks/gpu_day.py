"""The GPU day's benchmark: the GPU-relevant variants at every size, kept as they finish.

    python3 benchmarks/gpu_day.py --out $OUT --budget-s 170          # on the lent GPU
    python3 benchmarks/gpu_day.py --out /tmp/r --device cpu --tiny    # the CPU rehearsal

A lent GPU comes with minutes, not hours (see ../shared/gpu/README.md), so this runs only what
needs the GPU, on datasets large enough for steady rates, and never loses what it measured:

- per size: (a) the plain scipy script and (e) the per-image cuCIM loop on a subset (their rates
  are per mask; the whole set would take minutes), (d) ``weightmaps compute --device cuda``, and
  two baselines of the same host's CPU on the whole set: (f) ``weightmaps compute --device cpu``
  on every core and (g) the plain scipy script on a ``multiprocessing.Pool`` of every core
  (``plain_scipy_pool.py``); a warm-up of each on the subset first, whose maps are checked
  against (a)'s; then ``--repeats`` interleaved timed runs; then the cuda stage pass
  (``wmbench.stages.stage_breakdown``);
- (d)'s GPU busy share of its compute stage: nvidia-smi's utilization sampled through the run
  (``wmbench.gpu_busy``), integrated, over the pipeline's own compute seconds;
- **steady state apart from start-up**: each program's own clock gives its seconds per mask once
  running (the pipeline: scan per mask + compute after the first shard; the plain scripts: pass 1
  per mask + pass 2 after the first mask); start-up = wall time − n × that. Ratios are quoted both
  ways, and the time a user waits for 10,000 masks is derived from both;
- ``bench.json`` and ``bench.md`` in ``--out`` are rewritten after every size; a run that would
  start after ``--budget-s`` is skipped and recorded as such; a killed process keeps every
  finished size.

``--device cpu`` runs (d) and the stage pass on the CPU and skips (e): the rehearsal of
``gpu_day.sh --rehearse``, which proves the script works where no GPU is.

Ratios: (d) against (a) (one core, what a user would write first), (f) (our own CPU path on every
core: the GPU path must beat it by 3x) and (g) (a user's pool of every core), steady and end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The same runner, timing method, correctness check and stage pass as benchmarks/run.py.
from wmbench.check import RTOL, compare, read_maps
from wmbench.gpu_busy import GpuBusy
from wmbench.machine import card_tag, machine_info, versions
from wmbench.report import format_seconds
from wmbench.runner import SIGMA, Size, Variant, rotated, run_variant
from wmbench.stages import timed_stages

# (size, masks in the subset that (a) and the warm-ups run on), in the order they run: the
# headline size first, so that a short day still measures it.
SIZES = {
    "1024": (Size("1024", 256, (1024, 1024), 4, "png"), 24),
    "256": (Size("256", 2048, (256, 256), 4, "png"), 256),
    "4096": (Size("4096", 8, (4096, 4096), 4, "png"), 2),
    "3d": (Size("3d", 32, (128, 128, 128), 4, "tif", spacing=(3.0, 1.0, 1.0)), 4),
}
TINY_SIZES = {
    "1024": (Size("1024", 12, (128, 128), 4, "png"), 4),
    "256": (Size("256", 24, (64, 64), 4, "png"), 6),
    "4096": (Size("4096", 3, (256, 256), 4, "png"), 2),
    "3d": (Size("3d", 4, (16, 16, 16), 4, "tif", spacing=(3.0, 1.0, 1.0)), 2),
}
PROJECTED_MASKS = 10_000
# A size is not started with less of the budget left: writing its data alone takes ~10 s, and a
# warm-up cut short by the budget records a timeout, not a number (4096² on the H100, first run).
MIN_SIZE_BUDGET_S = 45.0


class Budget:
    """Seconds left of the day's benchmark; nothing starts once they are spent."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# The variants run on the subset only; the others on the whole set.
ON_SUBSET = ("a", "e")
# The baselines the GPU path's ratios are quoted against.
BASES = ("a", "f", "g")
# Steady (d) vs (a) measured on 2026-11-26 with the thread-based GPU path
# (results/<card>-2026-11-26.md): the 4096² and 128³ targets are "better than that".
EARLIER_STEADY_VS_A = {"h100": {"4096": 22.6, "3d": 25.5}, "h200": {"4096": 34.0, "3d": 44.0}}


def variants(device: str, tiny: bool, more_workers: int | None) -> list[Variant]:
    plain = Variant("a", "plain scipy script (subset)", gpu=False, script="plain_scipy.py")
    # Tiny datasets fit one shard; two masks a shard give the steady-state clock something to read.
    extra = ("--samples-per-shard", "2") if tiny else ()
    chosen = [plain, Variant("d", f"weightmaps --device {device}", gpu=True, device=device, extra=extra),
              Variant("f", "weightmaps --device cpu, every core", gpu=False, device="cpu", extra=extra),
              Variant("g", "plain scipy script on a Pool of every core", gpu=False, script="plain_scipy_pool.py")]
    if more_workers:  # the GPU path with another number of worker processes (default: the cores)
        chosen.append(Variant("h", f"weightmaps --device {device} --workers {more_workers}", gpu=True,
                              device=device, extra=(*extra, "--workers", str(more_workers))))
    if device == "cuda":
        chosen.append(Variant("e", "plain cuCIM/CuPy loop (subset)", gpu=True, script="plain_cucim.py"))
    return chosen


def _subset(masks: Path, k: int) -> Path:
    """The first ``k`` mask files, hard-linked into a folder of their own."""
    subset = masks.parent / "masks-subset"
    subset.mkdir()
    for path in sorted(masks.iterdir())[:k]:
        try:
            os.link(path, subset / path.name)
        except OSError:
            shutil.copy2(path, subset / path.name)
    return subset


def steady_seconds_per_mask(variant: Variant, reported: dict[str, Any], n: int) -> float | None:
    """Seconds per mask once running, from the program's own clock (None if it cannot say)."""
    if variant.script:
        return reported.get("steady_s_per_mask")
    rate = reported.get("steady_masks_per_second")
    scan = reported.get("seconds", {}).get("scan")
    if not rate or scan is None:
        return None
    return scan / n + 1.0 / rate


def summarize(entry: dict[str, Any], variant: Variant, n: int) -> None:
    runs = entry["seconds"]
    entry["median_s"] = statistics.median(runs)
    entry["min_s"], entry["max_s"] = min(runs), max(runs)
    entry["masks_per_s"] = n / entry["median_s"]
    steady = [s for s in (steady_seconds_per_mask(variant, r, n) for r in entry["reported"]) if s]
    if steady:
        per_mask = statistics.median(steady)
        entry["steady_s_per_mask"] = per_mask
        entry["steady_masks_per_s"] = 1.0 / per_mask
        entry["startup_s"] = max(0.0, entry["median_s"] - n * per_mask)
        entry["projected_10k_s"] = entry["startup_s"] + PROJECTED_MASKS * per_mask
    if not variant.script:
        shares = [r["busy_seconds"]["compute"] / r["seconds"]["compute"] for r in entry["reported"]
                  if r.get("seconds", {}).get("compute")]
        if shares:  # summed over the worker processes: may exceed 1
            entry["compute_busy_share"] = statistics.median(shares)
        gpu = [r["gpu_busy_s"] / r["seconds"]["compute"] for r in entry["reported"]
               if r.get("gpu_busy_s") is not None and r.get("seconds", {}).get("compute")]
        if gpu:
            entry["gpu_busy_share"] = statistics.median(gpu)


def bench_size(size: Size, subset_n: int, work: Path, repeats: int, device: str, tiny: bool,
               more_workers: int | None, budget: Budget, log: Callable[[str], None]) -> dict[str, Any]:
    from weightmaps.sample_data import write_dataset

    start = time.perf_counter()
    root = write_dataset(work / f"data-{size.key}", n=size.n, shape=size.shape, num_classes=size.num_classes,
                         seed=size.seed, fmt=size.fmt, with_images=False, objects=size.objects)
    masks = root / "masks"
    subset = _subset(masks, subset_n)
    log(f"[{size.key}] {size.label}: data written in {time.perf_counter() - start:.1f} s")
    result: dict[str, Any] = {"key": size.key, "label": size.label, "n": size.n, "subset_n": subset_n,
                              "shape": list(size.shape), "variants": {}, "check": {"ran": False}, "skipped": []}
    chosen = variants(device, tiny, more_workers)
    runs_dir = work / f"runs-{size.key}"
    runs_dir.mkdir()

    def run(v: Variant, data: Path, tag: str) -> tuple[float, dict[str, Any]]:
        # No run outlives the budget: a hung variant costs its size, not the day.
        with GpuBusy() as busy:
            seconds, reported = run_variant(v, data, runs_dir / f"{v.key}-{tag}", size, SIGMA,
                                            timeout=max(1.0, budget.left()))
        if busy.busy_seconds is not None and v.gpu:
            reported["gpu_busy_s"] = busy.busy_seconds
        return seconds, reported

    # Warm-up on the subset (imports, kernel compiles, page cache); the maps are the check. A
    # variant that fails is recorded and left out; the others go on.
    outputs = {}
    for v in list(chosen):
        entry = result["variants"][v.key] = {"name": v.name, "n": subset_n if v.key in ON_SUBSET else size.n}
        try:
            entry["warmup_s"], _ = run(v, subset, "warmup")
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
            log(f"[{size.key}] warm-up ({v.key}) {v.name} FAILED: {entry['error']}")
            if v.key == "a":
                raise
            chosen.remove(v)
            continue
        outputs[v.key] = runs_dir / f"{v.key}-warmup"
        log(f"[{size.key}] warm-up ({v.key}) {v.name}: {entry['warmup_s']:.2f} s")
    reference = read_maps(chosen[0], outputs["a"])
    compared = {v.key: compare(reference, read_maps(v, outputs[v.key]), subset_n) for v in chosen[1:]}
    result["check"] = {"ran": True, "on": f"the subset of {subset_n}", "against": "a", "compared": compared,
                       "passed": all(c["ok"] for c in compared.values())}
    for out in outputs.values():
        shutil.rmtree(out)
    log(f"[{size.key}] check vs (a): " + ", ".join(
        f"({k}) {'ok' if c['ok'] else 'FAILED'} max|diff| {c['max_abs_diff']:.2g}" for k, c in compared.items()))
    if not result["check"]["passed"]:
        return result

    for r in range(repeats):
        for v in rotated(chosen, r):
            if budget.left() <= 0:
                result["skipped"].append(f"run {r + 1} of ({v.key}): time budget spent")
                continue
            entry = result["variants"][v.key]
            try:
                seconds, reported = run(v, subset if v.key in ON_SUBSET else masks, str(r))
            except Exception as exc:
                entry.setdefault("run_errors", []).append(f"{type(exc).__name__}: {str(exc)[-1000:]}")
                log(f"[{size.key}] run {r + 1}/{repeats} ({v.key}) FAILED: {entry['run_errors'][-1]}")
                continue
            finally:
                shutil.rmtree(runs_dir / f"{v.key}-{r}", ignore_errors=True)
            entry.setdefault("seconds", []).append(seconds)
            entry.setdefault("reported", []).append(reported)
            log(f"[{size.key}] run {r + 1}/{repeats} ({v.key}) {v.name}: {seconds:.2f} s")
    for v in chosen:
        entry = result["variants"][v.key]
        if entry.get("seconds"):
            summarize(entry, v, entry["n"])
        if v.script and entry.get("reported"):
            entry["steps_s"] = {k: statistics.median(rep["seconds"].get(k, 0.0) for rep in entry["reported"])
                                for k in sorted({k for rep in entry["reported"] for k in rep.get("seconds", {})})}
    for key in BASES:
        base = result["variants"].get(key, {})
        for entry in result["variants"].values():
            if "masks_per_s" in entry and "masks_per_s" in base:
                entry[f"ratio_to_{key}"] = entry["masks_per_s"] / base["masks_per_s"]
            if "steady_masks_per_s" in entry and "steady_masks_per_s" in base:
                entry[f"steady_ratio_to_{key}"] = entry["steady_masks_per_s"] / base["steady_masks_per_s"]

    # The stage pass; at 256² also without stacking (a shard of 64 masks fills a quarter cube).
    result["stages"], result["stages_failed"] = {}, {}
    for stage_device in [device] + (["cuda-per-sample"] if device == "cuda" and size.key == "256" else []):
        if budget.left() <= 0:
            result["skipped"].append(f"stage pass on {stage_device}: time budget spent")
            continue
        stages, error = timed_stages(masks, runs_dir / "stages", size, stage_device, SIGMA, log)
        if error is None:
            result["stages"][stage_device] = stages
        else:
            result["stages_failed"][stage_device] = error
    shutil.rmtree(runs_dir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return result


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issues 9 and 19's targets: reported as met / missed with the measured value, never asserted."""
    sizes = {s["key"]: s for s in report["sizes"]}
    out = []

    def add(name: str, value: float | None, goal: float | None, unit: str = "×", why: str = "not measured") -> None:
        if goal is None:
            status = "no earlier number for this card"
        else:
            status = why if value is None else ("met" if value >= goal else "missed")
        out.append({"target": name, "goal": goal, "unit": unit, "measured": value, "status": status})

    if report["method"]["tiny"]:
        return out

    def d(key: str) -> dict[str, Any]:
        return sizes.get(key, {}).get("variants", {}).get("d", {})

    s = sizes.get("256", {})
    stages = (s.get("stages") or {}).get(report["method"]["device"])
    loop = s.get("variants", {}).get("e", {}).get("steps_s")
    value = None
    if stages and loop and stages["compute_s"]:
        e_n = s["variants"]["e"].get("n") or 1
        value = sum(loop.get(k, 0.0) for k in ("edges", "distance", "weights")) / e_n / (stages["compute_s"] / s["n"])
    add("compute per mask (edges + distance + weights, synced) vs (e) cuCIM loop's, 256²", value, 5.0)
    for key in ("256", "1024"):
        add(f"steady-state (d) vs (f) weightmaps --device cpu on every core, {key}²", d(key).get("steady_ratio_to_f"), 3.0)
    for key, goal in (("256", 20.0), ("1024", 50.0)):
        add(f"steady-state (d) vs (a), {key}²", d(key).get("steady_ratio_to_a"), goal)
    earlier = EARLIER_STEADY_VS_A.get(report["tag"], {})
    for key, label in (("4096", "4096²"), ("3d", "128³")):
        add(f"steady-state (d) vs (a), {label}, above the thread-based path's", d(key).get("steady_ratio_to_a"),
            earlier.get(key))
    return out


def markdown(report: dict[str, Any]) -> str:
    m, meth = report["machine"], report["method"]
    lines = [
        f"# weightmaps GPU day: {report['tag']}, {report['date']}" + (" (--tiny: a rehearsal, not a measurement)" if meth["tiny"] else ""),
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; GPU: {m['gpu']} (CUDA backend: {m['cuda_backend']})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- method: every variant a subprocess, files in → maps out; warm-up on the subset, checked against (a) "
        f"(allclose rtol {RTOL:g}); {meth['repeats']} interleaved timed runs, median; (a) and (e) on the subset only; "
        f"steady s/mask from each program's own clock; start-up = median wall − n × steady; "
        f"10k = start-up + {PROJECTED_MASKS} × steady; σ {SIGMA:g}",
        "",
        "| size | variant | n | median s | masks/s | × (a) | steady masks/s | steady × (a) | start-up s | 10k masks s | check |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in report["sizes"]:
        if "error" in s:
            lines.append(f"| {s['label']} | all | FAILED: {s['error'][:300]} |" + " |" * 8)
            continue
        for key, e in s["variants"].items():
            c = s["check"].get("compared", {}).get(key)
            check = "reference" if key == "a" else ("not run" if c is None else
                                                     ("ok" if c["ok"] else "FAILED") + f" ({c['max_abs_diff']:.1g})")

            def cell(name: str, fmt: str = "{:.3g}", e: dict[str, Any] = e) -> str:
                return fmt.format(e[name]) if name in e else "–"

            if "error" in e:
                lines.append(f"| {s['label']} | ({key}) {e['name']} | FAILED: {e['error'][-300:]} |" + " |" * 8)
                continue
            lines.append(
                f"| {s['label']} | ({key}) {e['name']} | {e['n']} | {cell('median_s')} | {cell('masks_per_s')} | "
                f"{cell('ratio_to_a', '{:.2f}')} | {cell('steady_masks_per_s')} | {cell('steady_ratio_to_a', '{:.1f}')} | "
                f"{cell('startup_s', '{:.2f}')} | {cell('projected_10k_s', '{:.1f}')} | {check} |")
        for note in s.get("skipped", []):
            lines.append(f"| {s['label']} | skipped: {note} |" + " |" * 9)
    lines += ["", "## (d) against the CPU baselines of the same host", "",
              "(a): the plain scipy script, one core; (f): weightmaps --device cpu, every core; (g): the plain "
              "scipy script on a multiprocessing.Pool of every core. Steady: each program's own clock; end to "
              "end: wall time of the whole run (start-up and scan included).", "",
              "| size | steady × (a) | steady × (f) | steady × (g) | end to end × (a) | × (f) | × (g) | GPU busy share of compute |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in report["sizes"]:
        d = s.get("variants", {}).get("d")
        if not d or "error" in d:
            continue

        def ratio(name: str, d: dict[str, Any] = d) -> str:
            return f"{d[name]:.1f}" if name in d else "–"

        busy = d.get("gpu_busy_share")
        lines.append(f"| {s['label']} | " + " | ".join(ratio(f"steady_ratio_to_{k}") for k in BASES) + " | "
                     + " | ".join(ratio(f"ratio_to_{k}") for k in BASES) + f" | {'–' if busy is None else f'{busy:.0%}'} |")
    lines += ["", "## Stage pass (single process, device synced per stage)", "",
              "| size | device | seconds per stage | compute s | total s |", "| --- | --- | --- | ---: | ---: |"]
    for s in report["sizes"]:
        for device, st in (s.get("stages") or {}).items():
            parts = ", ".join(f"{k} {format_seconds(v)}" for k, v in st["seconds"].items())
            lines.append(f"| {s['label']} | {device} | {parts} | {format_seconds(st['compute_s'])} | {format_seconds(st['total_s'])} |")
        for device, error in (s.get("stages_failed") or {}).items():
            lines.append(f"| {s['label']} | {device} | FAILED: {error[:200]} | | |")
    lines += ["", "## The pipeline's own account, (d) median", "",
              "| size | scan s | compute s | first shard s | finalize s | busy decode | busy compute | busy write | busy compute / compute s |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in report["sizes"]:
        runs = [r for r in s.get("variants", {}).get("d", {}).get("reported", []) if "seconds" in r]
        if runs:
            wall = [statistics.median(r["seconds"].get(k, 0.0) for r in runs) for k in ("scan", "compute", "first_shard", "write")]
            busy = [statistics.median(r["busy_seconds"].get(k, 0.0) for r in runs) for k in ("decode", "compute", "write")]
            share = s["variants"]["d"].get("compute_busy_share")
            lines.append(f"| {s['label']} | " + " | ".join(format_seconds(x) for x in wall + busy)
                         + f" | {'–' if share is None else f'{share:.0%}'} |")
    lines += ["", "## Targets (issues 9 and 19; reported, never asserted)", "", "| target | goal | measured | status |",
              "| --- | --- | ---: | --- |"]
    for t in report["targets"]:
        goal = "–" if t["goal"] is None else f"≥ {t['goal']:.0%}" if t["unit"] == "share" else f"≥ {t['goal']:g}×"
        value = "" if t["measured"] is None else (f"{t['measured']:.0%}" if t["unit"] == "share" else f"{t['measured']:.2f}×")
        lines.append(f"| {t['target']} | {goal} | {value} | {t['status']} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    report["targets"] = targets(report)
    for name, text in (("bench.json", json.dumps(report, indent=1, allow_nan=False) + "\n"), ("bench.md", markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)  # a kill mid-write keeps the previous complete file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=170.0, help="start nothing after this many seconds")
    parser.add_argument("--tiny", action="store_true", help="tiny datasets: the rehearsal, measures nothing")
    parser.add_argument("--more-workers", type=int, default=None, metavar="N",
                        help="also time (h): weightmaps with --workers N worker processes (default: the cores)")
    args = parser.parse_args()
    table = TINY_SIZES if args.tiny else SIZES
    keys = [k for k in args.sizes.split(",") if k]
    if unknown := [k for k in keys if k not in table]:
        parser.error(f"unknown size(s) {unknown}; choose from {list(table)}")
    budget = Budget(args.budget_s)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    machine = machine_info()
    if args.device == "cuda" and machine["cuda_backend"] != "available":
        log(f"CUDA backend unavailable: {machine['cuda_backend']}")
        return 2
    now = time.localtime()
    report: dict[str, Any] = {
        "schema": 1, "date": time.strftime("%Y-%m-%d", now), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", now),
        "tag": card_tag(machine["gpu"]), "machine": machine, "versions": versions(),
        "method": {"device": args.device, "repeats": args.repeats, "tiny": args.tiny, "sigma": SIGMA,
                   "budget_s": args.budget_s},
        "sizes": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="weightmaps-gpu-day-"))
    failed = False
    try:
        for key in keys:
            size, subset_n = table[key]
            if budget.left() < min(MIN_SIZE_BUDGET_S, args.budget_s / 4):
                report["sizes"].append({"key": key, "label": size.label, "variants": {}, "check": {},
                                        "error": f"not run: {max(0.0, budget.left()):.0f} s of the budget left"})
                log(f"[{key}] not run: {max(0.0, budget.left()):.0f} s of the budget left")
                continue
            try:
                result = bench_size(size, subset_n, work / key, args.repeats, args.device, args.tiny,
                                    args.more_workers, budget, log)
                failed |= not result["check"].get("passed", False)
            except Exception as exc:  # one size failing must not lose the others' numbers
                log(f"[{key}] FAILED: {type(exc).__name__}: {exc}")
                result = {"key": key, "label": size.label, "error": f"{type(exc).__name__}: {str(exc)[:2000]}",
                          "variants": {}, "check": {}}
                failed = True
            report["sizes"].append(result)
            write_report(report, args.out)
            log(f"[{key}] written to {args.out / 'bench.json'} ({budget.left():.0f} s of the budget left)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(report, args.out)
    print(markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
