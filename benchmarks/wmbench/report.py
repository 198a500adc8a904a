"""The Markdown report of a ``run.py`` report (a JSON document): the table on stdout and in ``.md``.

It reads only what it prints, so the JSON of earlier runs renders too (``run.py --render``).
"""

from __future__ import annotations

import statistics
from typing import Any

from .check import ATOL, RTOL
from .stages import STAGE_NOTES, STAGES
from .targets import AT_LEAST, direction_of


def format_seconds(x: float) -> str:
    """Three significant digits below 10 s, one decimal above."""
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def _goal(target: dict[str, Any], report: dict[str, Any]) -> str:
    sign = "≥" if direction_of(target, report) == AT_LEAST else "≤"
    return f"{sign} {target['goal']:.0%}" if target["unit"] == "share" else f"{sign} {target['goal']}×"


def _measured(target: dict[str, Any]) -> str:
    value = target["measured"]
    if value is None:
        return ""
    return f"{value:.0%}" if target["unit"] == "share" else f"{value:.2f}×"


def markdown(report: dict[str, Any]) -> str:
    """The whole report: machine and method, end to end, stages, the programs' own clocks, targets."""
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
                f"| {s['label']} | {name} | {format_seconds(e['median_s'])} | {e['masks_per_s']:.1f} | "
                f"{e['ratio_to_a']:.2f} | {format_seconds(e['min_s'])}–{format_seconds(e['max_s'])} | {check} |")
    lines += [
        "",
        "## Stage breakdown (one instrumented single-process pass, the pipeline's own functions)",
        "",
        "Seconds (share of the pass). compute = edges + distance + weights; the pipeline itself runs",
        "shards on all cores, so its wall time is shorter than this single-process sum.",
        "",
        "| size | device | " + " | ".join(STAGES) + " | total s | distance / compute |",
        "| --- | --- | " + " | ".join("---:" for _ in STAGES) + " | ---: | ---: |",
    ]
    for s in report["sizes"]:
        for device, st in s.get("stages", {}).items():
            cells = [f"{format_seconds(st['seconds'].get(k, 0.0))} ({st['share'].get(k, 0):.0%})" for k in STAGES]
            dshare = st["distance_share_of_compute"]
            dshare_text = "n/a" if dshare is None else f"{dshare:.0%}"
            lines.append(f"| {s['label']} | {device} | " + " | ".join(cells)
                         + f" | {format_seconds(st['total_s'])} | {dshare_text} |")
        for device, error in s.get("stages_failed", {}).items():
            lines.append(f"| {s['label']} | {device} | FAILED: {error[:200]} |" + " |" * (len(STAGES) + 1))
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
                steps = ", ".join(f"{k} {format_seconds(x)} ({x / total:.0%})" for k, x in e["steps_s"].items())
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
            lines.append(f"| {s['label']} | ({key}) {e['name']} | " + " | ".join(format_seconds(x) for x in wall + busy) + " |")
    lines += ["", "## Targets (issue 5; reported, never asserted)", "", "| target | goal | measured | status |",
              "| --- | --- | ---: | --- |"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {_goal(t, report)} | {_measured(t)} | {t['status']} |")
    return "\n".join(lines) + "\n"
