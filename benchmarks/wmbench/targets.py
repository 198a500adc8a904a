"""Issue 5's targets, as data, and the one function that evaluates them against a report.

A target is reported as met / missed with its measured value, never asserted. Each
:class:`Target` names the size it is read at (or every size of the run), the variant and / or
stage-pass device it reads, its goal and direction, and how the value is derived from those
(one of the ``derive`` functions below). :func:`evaluate_targets` is the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

AT_LEAST, AT_MOST = "at least", "at most"
EVERY_SIZE = "*"
NOT_MEASURED = "not measured"
# Decode and write threads of the GPU path (weightmaps compute --workers, default 4).
PIPELINE_IO_THREADS = 4


class NotMeasured(Exception):
    """Why a target has no value; the message is its status."""


@dataclass(frozen=True)
class Target:
    """One goal of the issue, read off one size's results (a ``sizes`` entry of the report).

    ``name`` may hold ``{label}``, the size's label (for ``size=EVERY_SIZE``); ``variant`` and
    ``stage_device`` are what ``derive`` reads; ``unit`` is ``"×"`` (a ratio) or ``"share"``.
    """

    name: str
    size: str  # a size key, or EVERY_SIZE: one entry per size of the run
    derive: Callable[[Target, dict[str, Any], dict[str, Any]], float | None]
    goal: float
    direction: str = AT_LEAST
    unit: str = "×"
    variant: str | None = None
    stage_device: str | None = None


# --- what a value is read from: raise NotMeasured with the reason when it is not there ---------


def _timed_variant(size: dict[str, Any], key: str) -> dict[str, Any]:
    entry = size["variants"].get(key)
    if entry is None:
        raise NotMeasured(NOT_MEASURED)
    if not entry["measured"]:
        raise NotMeasured(entry.get("reason") or NOT_MEASURED)
    if "median_s" not in entry:
        raise NotMeasured("not timed (correctness check failed)")
    return entry


def _stage_pass(size: dict[str, Any], device: str) -> dict[str, Any]:
    stages = size.get("stages", {}).get(device)
    if stages is None:
        failed = device in size.get("stages_failed", {})
        raise NotMeasured(f"not measured (stage pass on {device} failed)" if failed else NOT_MEASURED)
    return stages


# --- how a value is derived ------------------------------------------------------------------------


def speedup_over_plain_scipy(target: Target, size: dict[str, Any], report: dict[str, Any]) -> float:
    """End to end masks/s of ``target.variant`` over (a)'s."""
    assert target.variant is not None
    return _timed_variant(size, target.variant)["masks_per_s"] / _timed_variant(size, "a")["masks_per_s"]


def distance_share_of_compute(target: Target, size: dict[str, Any], report: dict[str, Any]) -> float | None:
    """The distance transform's share of edges + distance + weights in the stage pass."""
    assert target.stage_device is not None
    return _stage_pass(size, target.stage_device)["distance_share_of_compute"]


def loop_compute_over_stage_compute(target: Target, size: dict[str, Any], report: dict[str, Any]) -> float:
    """A plain loop's own edges + distance + weights seconds over the stage pass's compute seconds."""
    assert target.variant is not None and target.stage_device is not None
    steps = _timed_variant(size, target.variant)["steps_s"]
    loop = sum(steps.get(k, 0.0) for k in ("edges", "distance", "weights"))
    return loop / _stage_pass(size, target.stage_device)["compute_s"]


def end_to_end_over_io_floor(target: Target, size: dict[str, Any], report: dict[str, Any]) -> float:
    """End to end seconds of ``target.variant`` over the CPU-side floor it cannot beat.

    The floor: the stage pass's decode + stats + digest + write seconds (single-threaded) divided
    by the pipeline's decode / write threads, capped at the usable cores.
    """
    assert target.variant is not None and target.stage_device is not None
    median_s = _timed_variant(size, target.variant)["median_s"]
    seconds = _stage_pass(size, target.stage_device)["seconds"]
    threads = min(PIPELINE_IO_THREADS, report["machine"]["cores_usable"] or 1)
    return median_s / (sum(seconds[k] for k in ("decode", "stats", "digest", "write")) / threads)


TARGETS = (
    Target("--device cpu vs (a), end to end, 512 × 256²", "256", speedup_over_plain_scipy, 4.0, variant="c"),
    Target("--device cpu vs (a), end to end, 64 × 1024²", "1024", speedup_over_plain_scipy, 5.0, variant="c"),
    Target("distance transform share of --device cpu compute, {label}", EVERY_SIZE, distance_share_of_compute,
           0.80, unit="share", stage_device="cpu"),
    Target("--device cuda vs (a), end to end, 64 × 1024²", "1024", speedup_over_plain_scipy, 50.0, variant="d"),
    # Compute alone at 256²: the synchronised cuda stage pass against the cuCIM loop's own steps.
    Target("--device cuda (per-sample transforms) vs (e) cuCIM loop, compute alone, 512 × 256²", "256",
           loop_compute_over_stage_compute, 5.0, variant="e", stage_device="cuda-per-sample"),
    Target("--device cuda (batches stacked as 3-D transforms) vs (e) cuCIM loop, compute alone, 512 × 256²",
           "256", loop_compute_over_stage_compute, 5.0, variant="e", stage_device="cuda"),
    # The GPU never the bottleneck: end to end within 1.25× of what decoding and writing cost.
    Target("--device cuda end to end / estimated decode+write floor, {label}", EVERY_SIZE,
           end_to_end_over_io_floor, 1.25, direction=AT_MOST, variant="d", stage_device="cuda"),
)


def _entries(target: Target, report: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """(name, size entry or None when the size is not in the run) for each entry of ``target``."""
    sizes = report["sizes"]
    if target.size == EVERY_SIZE:
        return [(target.name.format(label=s["label"]), s) for s in sizes]
    found = [s for s in sizes if s["key"] == target.size]
    return [(target.name, found[0] if found else None)]


def _measure(target: Target, size: dict[str, Any] | None, report: dict[str, Any]) -> float | None:
    if report["method"]["quick"]:
        raise NotMeasured("not evaluated (--quick sizes)")
    if size is None:
        raise NotMeasured("not measured (size not in this run)")
    return target.derive(target, size, report)


def _status(target: Target, value: float) -> str:
    met = value >= target.goal if target.direction == AT_LEAST else value <= target.goal
    return "met" if met else "missed"


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target's entry for the report: its name, goal, measured value, status, unit, direction."""
    out = []
    for target in TARGETS:
        for name, size in _entries(target, report):
            try:
                value = _measure(target, size, report)
                status = NOT_MEASURED if value is None else _status(target, value)
            except NotMeasured as why:
                value, status = None, str(why)
            out.append({"target": name, "goal": target.goal, "measured": value, "status": status,
                        "unit": target.unit, "direction": target.direction})
    return out


def direction_of(entry: dict[str, Any], report: dict[str, Any]) -> str:
    """An entry's direction; reports of schema 1 stored none: the target of that name gives it."""
    if "direction" in entry:
        return entry["direction"]
    by_name = {name: target.direction for target in TARGETS for name, _ in _entries(target, report)}
    return by_name.get(entry["target"], AT_LEAST)
