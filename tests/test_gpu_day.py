"""The GPU day's command, rehearsed on the CPU: every phase runs, in time, and keeps its results.

A lent GPU comes with minutes; a wrong path, a missing import on the GPU machine's image or a
phase over its limit must show here, not there. ``gpu_day.sh --rehearse`` builds a fresh virtual
environment with only the packages the GPU machine has (and those of the carried wheels), then runs
every phase with ``--device cpu`` on tiny sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("timeout") is None, reason="needs GNU timeout")


@pytest.mark.slow
def test_gpu_day_rehearsal_runs_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_day.sh"), "--rehearse"],
        env={**os.environ, "OUT": str(out)}, capture_output=True, text=True, timeout=280,
    )
    log = (out / "gpu.txt").read_text() if (out / "gpu.txt").exists() else proc.stdout[-3000:]
    assert proc.returncode == 0, log + proc.stderr[-3000:]
    assert "every phase passed" in log and "TIMED OUT" not in log
    # At most 8 files come back from the device machine.
    names = sorted(p.name for p in out.iterdir())
    assert {"gpu.txt", "gpu-tests.log", "transforms.json", "bench.json", "bench.md", "bench.log"} <= set(names)
    assert len(names) <= 8
    bench = json.loads((out / "bench.json").read_text())
    assert [s["key"] for s in bench["sizes"]] == ["1024", "256", "4096", "3d"]
    for size in bench["sizes"]:
        assert "error" not in size and size["check"]["passed"], size
        d = size["variants"]["d"]
        assert len(d["seconds"]) == 2 and d["steady_masks_per_s"] > 0 and d["projected_10k_s"] > 0
        assert size["variants"]["a"]["n"] == size["subset_n"] < size["n"]
        # The same host's CPU baselines: weightmaps --device cpu (f) and plain scipy on a Pool (g).
        assert {"a", "d", "f", "g"} <= set(size["variants"]) and size["variants"]["g"]["n"] == size["n"]
        assert all(d[f"steady_ratio_to_{base}"] > 0 for base in ("a", "f", "g")), d
        # The stage pass times the pipeline's own compute_maps: every timer seam was entered.
        seconds = size["stages"]["cpu"]["seconds"]
        assert all(seconds[stage] > 0 for stage in ("transfer", "edges", "distance", "weights")), seconds
    [unet] = out.glob("unet-cpu-*-quick.json")  # the U-Net phase, its report only (no .md)
    assert all(r["median_s_per_mask"]["unet"] > 0 for r in json.loads(unet.read_text())["results"])
    transforms = json.loads((out / "transforms.json").read_text())
    assert [row["side"] for row in transforms["transforms"]] == [16, 32]
    # The GPU tests were collected (and skipped here), not broken by an import the image lacks.
    tests_log = (out / "gpu-tests.log").read_text()
    assert "error" not in tests_log.lower() and "skipped" in tests_log
