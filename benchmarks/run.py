"""The benchmark: weight maps for a dataset, files in → files out, against the plain scipy script.

    python benchmarks/run.py --out benchmarks/results                 # every size, 3 repeats
    python benchmarks/run.py --out /tmp/b --sizes 256,1024 --repeats 5
    python benchmarks/run.py --out /tmp/b --quick                     # tiny sizes, for the tests

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

Then a stage breakdown per size and device: one instrumented, single-process pass over the same
masks that calls the very functions the pipeline calls (see :func:`stage_breakdown`), timing each.

Results: a Markdown table on stdout, and ``OUT/<cpu|card>-<date>.json`` / ``.md`` with the
machine, the versions and every run. Issue targets are reported as met / missed with the ratio,
never asserted; the exit status is 1 only when a correctness check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCHEMA = 1
SIGMA = 3.0
RTOL, ATOL = 1e-5, 0.0
NO_GPU = "not measured (no GPU)"

# --- what is measured --------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    key: str
    n: int
    shape: tuple[int, ...]
    num_classes: int
    fmt: str  # mask file format
    spacing: tuple[float, ...] | None = None
    seed: int = 0
    objects: tuple[int, int] = (3, 8)  # common objects per mask (sample_data.make_masks)

    @property
    def label(self) -> str:
        side = self.shape[-1]
        power = "³" if len(self.shape) == 3 and len(set(self.shape)) == 1 else "²"
        dims = f"{side}{power}" if len(set(self.shape)) == 1 else "×".join(map(str, self.shape))
        kind = "binary" if self.num_classes == 2 else f"{self.num_classes} classes"
        if self.objects != (3, 8):
            kind += f", {self.objects[0]}-{self.objects[1] - 1} objects"
        extra = f", spacing {self.spacing}" if self.spacing else ""
        return f"{self.n} × {dims} ({kind}, {self.fmt}{extra})"


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


@dataclass(frozen=True)
class Variant:
    key: str
    name: str
    gpu: bool
    script: str | None = None  # a plain script in benchmarks/, else the weightmaps CLI
    device: str | None = None  # the CLI's --device
    extra: tuple[str, ...] = ()  # further CLI arguments


VARIANTS = (
    Variant("a", "plain scipy script", gpu=False, script="plain_scipy.py"),
    Variant("b", "weightmaps --device scipy", gpu=False, device="scipy"),
    Variant("c", "weightmaps --device cpu", gpu=False, device="cpu"),
    Variant("d", "weightmaps --device cuda", gpu=True, device="cuda"),
    Variant("e", "plain cuCIM/CuPy loop", gpu=True, script="plain_cucim.py"),
)


# --- machine and versions ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
        if out:
            return out.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no CuPy, no driver, no device
        return None


def machine_info() -> dict[str, Any]:
    from weightmaps.backend import cuda_unavailable_reason

    cuda_reason = cuda_unavailable_reason()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_gib": _memory_gib(),
        "gpu": _gpu_name() or "none",
        "cuda_backend": "available" if cuda_reason is None else cuda_reason,
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "edt", "zarr", "pillow", "tifffile", "weightmaps"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    for module in ("cupy", "cucim"):  # their distributions are named per CUDA version
        try:
            found[module] = __import__(module).__version__
        except Exception:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit:
            found["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def card_tag(gpu: str) -> str:
    """``cpu`` without a GPU, else a short name of the card: ``h100``, ``h200``, ``a100``, ..."""
    if gpu == "none":
        return "cpu"
    model = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", gpu)
    return (model.group(1) if model else re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")).lower()


# --- running one variant -----------------------------------------------------------------------


def weightmaps_command() -> tuple[list[str], str]:
    """How to call the CLI: the installed ``weightmaps`` script beside this Python, else ``-c``."""
    script = shutil.which("weightmaps", path=str(Path(sys.executable).parent))
    if script:
        return [script], script
    return [sys.executable, "-c", "import sys; from weightmaps.cli import main; sys.exit(main())"], (
        f"{sys.executable} -c 'from weightmaps.cli import main; main()'"
    )


def variant_command(variant: Variant, masks: Path, out: Path, size: Size, sigma: float) -> list[str]:
    spacing = ["--spacing", ",".join(f"{s:g}" for s in size.spacing)] if size.spacing else []
    if variant.script:
        return [sys.executable, str(HERE / variant.script), str(masks), str(out), "--sigma", f"{sigma:g}", *spacing]
    cli, _ = weightmaps_command()
    return [*cli, "-q", "compute", str(masks), "--out", str(out), "--sigma", f"{sigma:g}",
            "--device", str(variant.device), "--no-progress", "--json", *spacing, *variant.extra]


def run_variant(variant: Variant, masks: Path, out: Path, size: Size, sigma: float,
                timeout: float | None = None) -> tuple[float, dict[str, Any]]:
    """Wall-clock seconds of one end-to-end run, and what the program reported on stdout."""
    cmd = variant_command(variant, masks, out, size, sigma)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"({variant.key}) {variant.name} failed with exit status {proc.returncode}:\n"
            f"  {' '.join(cmd)}\n{proc.stderr[-3000:]}"
        )
    lines = proc.stdout.strip()
    try:  # the plain scripts print one JSON line last; the CLI prints a JSON document
        reported = json.loads(lines) if variant.device else json.loads(lines.splitlines()[-1])
    except (ValueError, IndexError):
        reported = {"stdout": lines[-2000:]}
    return seconds, reported


# --- correctness -------------------------------------------------------------------------------


def read_maps(variant: Variant, out: Path) -> dict[str, np.ndarray]:
    if variant.script:  # one .npy per mask, named by the mask's stem (= the store's sample id)
        return {p.stem: np.load(p) for p in sorted(out.glob("*.npy"))}
    from weightmaps.store import open_store

    store = open_store(out)
    if not store.complete:
        raise RuntimeError(f"({variant.key}) {out} is not complete")
    return {sample_id: np.asarray(store[sample_id]) for sample_id in store.ids}


def compare(reference: dict[str, np.ndarray], maps: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """(a)'s maps against another variant's: same ids, shapes, all finite, allclose."""
    result: dict[str, Any] = {"n_maps": len(maps), "rtol": RTOL, "atol": ATOL}
    problems = []
    if len(reference) != n or sorted(reference) != sorted(maps):
        problems.append(f"ids differ: (a) has {len(reference)}, this variant {len(maps)}, expected {n}")
    max_abs = max_rel = 0.0
    for sample_id in sorted(set(reference) & set(maps)):
        ref, got = reference[sample_id].astype(np.float64), maps[sample_id].astype(np.float64)
        if ref.shape != got.shape:
            problems.append(f"{sample_id}: shape {got.shape} != {ref.shape}")
            continue
        if not np.isfinite(got).all():
            problems.append(f"{sample_id}: {int((~np.isfinite(got)).sum())} non-finite values")
            continue
        diff = np.abs(got - ref)
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / np.maximum(np.abs(ref), 1e-30))[ref != 0].max(initial=0.0)))
        if not np.allclose(got, ref, rtol=RTOL, atol=ATOL):
            problems.append(f"{sample_id}: not allclose (max |diff| {diff.max():.3g})")
    result.update(max_abs_diff=max_abs, max_rel_diff=max_rel, ok=not problems, problems=problems[:10])
    return result


# --- the stage breakdown -----------------------------------------------------------------------


class StageTimer:
    """Seconds per stage; on a GPU the device is synchronised before the clock starts and stops."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.seconds: dict[str, float] = {}
        self.sync = sync

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


# Stages in pipeline order; "compute" = edges + distance + weights.
STAGES = ("decode", "stats", "digest", "transfer", "edges", "distance", "weights", "write")
STAGE_NOTES = {
    "decode": "source.read (PNG/TIFF decode + validation), twice per mask as in the pipeline: scan + compute pass",
    "stats": "count_labels (class pixel counts, scan pass)",
    "digest": "mask_digest (blake2b per mask, for the shard markers)",
    "transfer": "backend.asarray + to_numpy into the shard's output array (host<->device on a GPU, a copy on the CPU)",
    "edges": "engine._edges",
    "distance": "engine._distance (backend.distance_transform per sample)",
    "weights": "backend.apply_weights",
    "write": "create_store + StoreWriter.write_shard (zstd encode, shard file, marker) + finalize",
}


def stage_breakdown(masks: Path | list[str], store: Path, size: Size, device: str, sigma: float) -> dict[str, Any]:
    """One single-process pass through the library functions the pipeline runs, each timed.

    ``weightmaps.pipeline.compute`` scans (``source.read`` + ``count_labels`` per mask), creates
    the store, then per shard ``decode_shard`` (``source.read`` + ``mask_digest``),
    ``compute_maps`` (``weight_map(batch=True)`` = ``_edges`` → ``_distance`` →
    ``backend.apply_weights``, in batches) and ``StoreWriter.write_shard``. The same calls
    are made here in the same order, with a clock around each. As a check that nothing is
    left out, ``shards.compute_maps`` also runs on every shard (timed apart, as
    ``weight_map_call``) and must return the very same maps. ``masks`` is anything
    ``open_source`` takes (a folder, or a list of files for the warm-up pass).
    """
    from weightmaps import engine, get_backend
    from weightmaps.backend import to_numpy
    from weightmaps.classweights import class_weights, count_labels
    from weightmaps.shards import ShardSettings, _default_batch_size, compute_maps
    from weightmaps.sources import mask_digest, open_source
    from weightmaps.store import create_store
    from weightmaps.validation import check_spacing

    if device == "cuda-per-sample":  # without the stacking of engine._stacked_distance, measured apart
        import dataclasses

        backend = dataclasses.replace(get_backend("cuda"), stack_batches=False)
    else:
        backend = get_backend(device)
    if backend.name == "cuda":
        import cupy

        timer = StageTimer(cupy.cuda.Device().synchronize)
    else:
        timer = StageTimer(lambda: None)
    source = open_source(masks if isinstance(masks, list) else str(masks))

    # Scan pass (stats.scan): decode every mask, count its classes.
    counts: dict[int, int] = {}
    shapes = []
    for i in range(len(source)):
        with timer("decode"):
            labels = source.read(i)
        with timer("stats"):
            for label, count in count_labels(labels).items():
                counts[label] = counts.get(label, 0) + count
        shapes.append(labels.shape)
    weights = class_weights(dict(sorted(counts.items())), "balanced")
    table, ignore_label = engine._class_weight_table(weights, None)
    spacing = check_spacing(size.spacing, len(size.shape))
    settings = ShardSettings(sigma=sigma, class_weights=weights, spacing=size.spacing, device=backend.name)
    with timer("write"):
        writer = create_store(store, ids=source.ids, shapes=shapes, dtype="float32",
                              params={"sigma": sigma, "benchmark": "stage breakdown"}, class_counts=counts,
                              class_weights=weights, fingerprint=source.fingerprint())

    # Compute pass, shard by shard (shards.run_shard).
    call_seconds, identical = 0.0, True
    for task in writer.tasks():
        with timer("decode"):
            masks_np = np.stack([source.read(i) for i in task.sample_indices])
        with timer("digest"):
            digests = [mask_digest(m) for m in masks_np]
        batch = _default_batch_size(backend, task.shape)
        maps = np.empty(masks_np.shape, dtype=np.float32)
        for start in range(0, len(masks_np), batch):
            with timer("transfer"):
                data = backend.asarray(masks_np[start:start + batch])
                device_table = backend.asarray(table)
            with timer("edges"):
                edges = engine._edges(data, 1, True)
            with timer("distance"):
                distance = engine._distance(backend, edges, spacing, True, squared=backend.weights_from_squared)
            with timer("weights"):
                w = backend.apply_weights(data, distance, device_table, engine._inv_two_sigma_sq(sigma),
                                          ignore_label, np.dtype("float32"))
            with timer("transfer"):
                maps[start:start + batch] = to_numpy(w)
            del data, edges, distance, w
        timer.sync()
        start = time.perf_counter()
        reference = compute_maps(masks_np, settings, backend)  # the pipeline's own call
        call_seconds += time.perf_counter() - start
        identical &= bool(np.array_equal(reference, maps, equal_nan=True))
        with timer("write"):
            writer.write_shard(task, maps, digests)
    with timer("write"):
        writer.finalize({"benchmark": "stage breakdown"})

    seconds = {stage: timer.seconds.get(stage, 0.0) for stage in STAGES}
    total = sum(seconds.values())
    compute = seconds["edges"] + seconds["distance"] + seconds["weights"]
    return {
        "device": backend.name,
        "seconds": seconds,
        "share": {stage: s / total for stage, s in seconds.items()} if total else {},
        "total_s": total,
        "compute_s": compute,
        "distance_share_of_compute": seconds["distance"] / compute if compute else None,
        "weight_map_call_s": call_seconds,
        "weight_map_overhead_s": call_seconds - compute - seconds["transfer"],
        "same_maps_as_pipeline": identical,
    }


# --- one size ----------------------------------------------------------------------------------


def _rotated(items: Sequence[Any], k: int) -> list[Any]:
    k %= len(items)
    return [*items[k:], *items[:k]]


def bench_size(size: Size, work: Path, repeats: int, sigma: float, gpu_ok: bool, gpu_reason: str,
               log: Callable[[str], None]) -> dict[str, Any]:
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
    runnable = [v for v in VARIANTS if gpu_ok or not v.gpu]
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
        for v in _rotated(runnable, r):
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
    first_mask = [str(min(masks.iterdir()))]
    for device in ["scipy", "cpu"] + (["cuda", "cuda-per-sample"] if gpu_ok else []):
        stages, error = timed_stages(masks, runs_dir / f"stages-{device}", size, device, sigma, log)
        if error is None:
            result["stages"][device] = stages
        else:
            result.setdefault("stages_failed", {})[device] = error
    shutil.rmtree(runs_dir)
    return result


def timed_stages(masks: Path, store: Path, size: Size, device: str, sigma: float,
                 log: Callable[[str], None]) -> tuple[dict[str, Any] | None, str | None]:
    """The stage pass on one device after a one-mask warm-up: (stages, None) or (None, error).

    A failing pass (a device out of memory, a transform it cannot take) costs only its own
    entry: the size's timed runs and the other devices' passes are kept.
    """
    first_mask = [str(min(masks.iterdir()))]
    try:
        # Warm-up on one mask: lazy imports, first-call setup and GPU kernel compiles stay out.
        stage_breakdown(first_mask, store, size, device, sigma)
        shutil.rmtree(store)
        stages = stage_breakdown(masks, store, size, device, sigma)
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc)[:500]}"
        log(f"[{size.key}] stage pass on {device} FAILED: {error}")
        return None, error
    finally:
        shutil.rmtree(store, ignore_errors=True)
    share = stages["distance_share_of_compute"]
    log(f"[{size.key}] stages on {device}: {stages['total_s']:.2f} s single-process, distance "
        f"{'n/a' if share is None else f'{share:.0%}'} of compute")
    return stages, None


# --- targets and report ------------------------------------------------------------------------


def _target(name: str, value: float | None, goal: float, *, unit: str = "×", below: bool = False,
            reason: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"target": name, "goal": goal, "measured": value}
    if value is None:
        entry["status"] = reason or "not measured"
    else:
        met = value <= goal if below else value >= goal
        entry["status"] = "met" if met else "missed"
    entry["unit"] = unit
    return entry


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = {s["key"]: s for s in report["sizes"]}
    quick = report["method"]["quick"]
    gpu_reason = None if report["machine"]["cuda_backend"] == "available" else NO_GPU

    def ratio(size: str, variant: str, base: str = "a") -> tuple[float | None, str | None]:
        if quick:
            return None, "not evaluated (--quick sizes)"
        s = sizes.get(size)
        if s is None:
            return None, "not measured (size not in this run)"
        v, b = s["variants"][variant], s["variants"][base]
        if not v["measured"] or not b["measured"]:
            return None, v.get("reason") or b.get("reason")
        if "masks_per_s" not in v:
            return None, "not timed (correctness check failed)"
        return v["masks_per_s"] / b["masks_per_s"], None

    out = []
    value, why = ratio("256", "c")
    out.append(_target("--device cpu vs (a), end to end, 512 × 256²", value, 4.0, reason=why))
    value, why = ratio("1024", "c")
    out.append(_target("--device cpu vs (a), end to end, 64 × 1024²", value, 5.0, reason=why))
    for s in report["sizes"]:
        stages = s.get("stages", {}).get("cpu")
        value = stages["distance_share_of_compute"] if stages and not quick else None
        out.append(_target(f"distance transform share of --device cpu compute, {s['label']}", value, 0.80,
                           unit="share", reason="not evaluated (--quick sizes)" if quick else "not measured"))
    value, why = ratio("1024", "d")
    out.append(_target("--device cuda vs (a), end to end, 64 × 1024²", value, 50.0, reason=why or gpu_reason))
    # Compute alone at 256²: the instrumented cuda pass against the cuCIM loop's own edges+distance+weights.
    value, why = None, gpu_reason or ("not evaluated (--quick sizes)" if quick else None)
    s = sizes.get("256")
    for device, label in (("cuda-per-sample", "per-sample transforms"), ("cuda", "batches stacked as 3-D transforms")):
        value = None
        if why is None and s and device in s.get("stages", {}) and "steps_s" in s["variants"]["e"]:
            steps = s["variants"]["e"]["steps_s"]
            loop = sum(steps.get(k, 0.0) for k in ("edges", "distance", "weights"))
            value = loop / s["stages"][device]["compute_s"]
        out.append(_target(f"--device cuda ({label}) vs (e) cuCIM loop, compute alone, 512 × 256²", value, 5.0,
                           reason=why or "not measured"))
    # GPU never the bottleneck: end to end within 1.25x of the CPU-side floor (decode + stats + digest +
    # write of the instrumented pass, single-threaded, divided by the pipeline's decode/write threads).
    for s in report["sizes"]:
        value, why = None, gpu_reason or ("not evaluated (--quick sizes)" if quick else None)
        stages = s.get("stages", {}).get("cuda")
        if why is None and stages and "median_s" in s["variants"]["d"]:
            threads = min(4, report["machine"]["cores_usable"] or 1)
            floor = sum(stages["seconds"][k] for k in ("decode", "stats", "digest", "write")) / threads
            value = s["variants"]["d"]["median_s"] / floor
        out.append(_target(f"--device cuda end to end / estimated decode+write floor, {s['label']}", value, 1.25,
                           below=True, reason=why or "not measured"))
    return out


def _fmt_s(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def markdown(report: dict[str, Any]) -> str:
    m, v, meth = report["machine"], report["versions"], report["method"]
    lines = [
        f"# weightmaps benchmark: {report['tag']}, {report['date']}" + (" (--quick: not a measurement)" if meth["quick"] else ""),
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory_gib']} GiB; "
        f"GPU: {m['gpu']} (CUDA backend: {m['cuda_backend']})",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- load average (1 min) at start / end: {report['load_average']['start']:.2f} / {report['load_average']['end']:.2f}",
        f"- method: each variant a subprocess, files in → maps out (interpreter start and imports included); "
        f"1 warm-up run (checked against (a): allclose rtol {RTOL:g}, atol {ATOL:g}), then {meth['repeats']} "
        f"interleaved runs, median; sigma {meth['sigma']:g}; CLI: `{meth['cli']}`",
        "",
        "## End to end",
        "",
        "| size | variant | median s | masks/s | × (a) | runs min–max s | check vs (a) |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for s in report["sizes"]:
        if "error" in s:
            lines.append(f"| {s['label']} | all | FAILED: {s['error'][:300]} | | | | |")
        for key, e in s["variants"].items():
            name = f"({key}) {e['name']}"
            if not e["measured"]:
                lines.append(f"| {s['label']} | {name} | {e['reason']} | | | | |")
                continue
            c = s["check"]["compared"].get(key) if s["check"].get("ran") else None
            check = "reference" if key == "a" else (
                "not run" if c is None else ("ok" if c["ok"] else "FAILED") + f", max abs diff {c['max_abs_diff']:.1g}")
            if "median_s" not in e:
                lines.append(f"| {s['label']} | {name} | not timed | | | | {check} |")
                continue
            lines.append(
                f"| {s['label']} | {name} | {_fmt_s(e['median_s'])} | {e['masks_per_s']:.1f} | "
                f"{e['ratio_to_a']:.2f} | {_fmt_s(e['min_s'])}–{_fmt_s(e['max_s'])} | {check} |")
    lines += [
        "",
        "## Stage breakdown (one instrumented single-process pass, the pipeline's own functions)",
        "",
        "Seconds (share of the pass). compute = edges + distance + weights; the pipeline itself runs",
        "shards on all cores, so its wall time is shorter than this single-process sum.",
        "",
        "| size | device | " + " | ".join(STAGES) + " | total s | distance / compute | weight_map call overhead s |",
        "| --- | --- | " + " | ".join("---:" for _ in STAGES) + " | ---: | ---: | ---: |",
    ]
    for s in report["sizes"]:
        for device, st in s.get("stages", {}).items():
            cells = [f"{_fmt_s(st['seconds'][k])} ({st['share'].get(k, 0):.0%})" for k in STAGES]
            dshare = st["distance_share_of_compute"]
            dshare_text = "n/a" if dshare is None else f"{dshare:.0%}"
            lines.append(f"| {s['label']} | {device} | " + " | ".join(cells) + f" | {_fmt_s(st['total_s'])} | "
                         f"{dshare_text} | {st['weight_map_overhead_s']:.3f} |")
        for device, error in s.get("stages_failed", {}).items():
            lines.append(f"| {s['label']} | {device} | FAILED: {error[:200]} |" + " |" * (len(STAGES) + 2))
    lines += ["", "Stages: " + "; ".join(f"**{k}** {note}" for k, note in STAGE_NOTES.items()) + ".", ""]
    lines += [
        "## The plain scripts' own steps (median seconds over the timed runs)",
        "",
        "| size | variant | steps |",
        "| --- | --- | --- |",
    ]
    for s in report["sizes"]:
        for key, e in s["variants"].items():
            if "steps_s" in e:
                total = sum(e["steps_s"].values()) or 1.0
                steps = ", ".join(f"{k} {_fmt_s(x)} ({x / total:.0%})" for k, x in e["steps_s"].items())
                lines.append(f"| {s['label']} | ({key}) {e['name']} | {steps} |")
    lines += [
        "",
        "## The pipeline's own account (its `--json` seconds, median over the timed runs)",
        "",
        "Wall seconds of scan / compute / finalize / total, and busy seconds summed over the worker",
        "processes (decode, compute, write) as `weightmaps.pipeline.compute` reports them.",
        "",
        "| size | variant | scan | compute | finalize | total | busy decode | busy compute | busy write |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in report["sizes"]:
        for key, e in s["variants"].items():
            runs = [r for r in e.get("reported", []) if "seconds" in r and "busy_seconds" in r]
            if not runs:
                continue
            wall = [statistics.median(r["seconds"].get(k, 0.0) for r in runs) for k in ("scan", "compute", "write", "total")]
            busy = [statistics.median(r["busy_seconds"].get(k, 0.0) for r in runs) for k in ("decode", "compute", "write")]
            lines.append(f"| {s['label']} | ({key}) {e['name']} | " + " | ".join(_fmt_s(x) for x in wall + busy) + " |")
    lines += ["", "## Targets (issue 5; reported, never asserted)", "", "| target | goal | measured | status |",
              "| --- | --- | ---: | --- |"]
    for t in report["targets"]:
        goal = f"≥ {t['goal']:.0%}" if t["unit"] == "share" else (f"≤ {t['goal']}×" if "floor" in t["target"] else f"≥ {t['goal']}×")
        measured = "" if t["measured"] is None else (
            f"{t['measured']:.0%}" if t["unit"] == "share" else f"{t['measured']:.2f}×")
        lines.append(f"| {t['target']} | {goal} | {measured} | {t['status']} |")
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


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

    from weightmaps.backend import cuda_unavailable_reason

    cuda_reason = cuda_unavailable_reason()
    gpu_ok = cuda_reason is None
    machine = machine_info()
    gpu_reason = NO_GPU if machine["gpu"] == "none" else f"not measured (CUDA backend unavailable: {cuda_reason})"
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
            "stages": "one instrumented single-process pass per device calling the pipeline's functions",
        },
        "load_average": {"start": os.getloadavg()[0]},
        "sizes": [],
    }
    work = args.work or Path(tempfile.mkdtemp(prefix="weightmaps-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for key in keys:
            try:
                report["sizes"].append(bench_size(table[key], work / key, repeats, args.sigma, gpu_ok, gpu_reason, log))
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
    report["targets"] = targets(report)

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
