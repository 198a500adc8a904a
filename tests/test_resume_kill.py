"""SIGKILL `weightmaps compute` at random points, resume until complete: the store equals a straight run's."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.processes import process_group
from weightmaps.sample_data import write_dataset
from weightmaps.store import open_store

N_MASKS = 96
SEED = 20250
MAX_KILLS = 5

# The slow tier (tests/conftest.py): runs killed with SIGKILL.
pytestmark = pytest.mark.slow


def _command() -> list[str]:
    script = Path(sys.executable).parent / "weightmaps"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from weightmaps.cli import main; main()"]


def _compute_args(masks: Path, out: Path) -> list[str]:
    return [*_command(), "compute", str(masks), "--out", str(out), "--sigma", "2", "--device", "cpu",
            "--workers", "2", "--samples-per-shard", "2", "--no-progress"]


def _markers(out: Path) -> int:
    return len(list(out.glob("maps/_markers/*.json")))


def _meta(out: Path) -> dict[str, object]:
    return json.loads((out / "zarr.json").read_text())["attributes"]["weightmaps"]


@pytest.mark.timeout(420)
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_sigkill_and_resume_equals_straight_run(tmp_path: Path) -> None:
    masks = write_dataset(tmp_path / "data", n=N_MASKS, shape=(48, 40), seed=5, with_images=False) / "masks"
    ref, out = tmp_path / "ref.zarr", tmp_path / "out.zarr"
    subprocess.run(_compute_args(masks, ref), check=True, capture_output=True, timeout=60)
    n_shards = _markers(ref)
    assert n_shards == N_MASKS // 2

    rng = random.Random(SEED)
    kills = 0
    killed_at: list[int] = []
    for attempt in range(MAX_KILLS + 1):
        args = _compute_args(masks, out) + (["--resume"] if attempt else [])
        # A new session: the kill takes the whole job (driver, forkserver and workers), like a
        # scheduler killing it or the machine going down.
        with process_group(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            if attempt < MAX_KILLS:
                before = _markers(out) if out.exists() else 0
                # Aim early in what is left: a shard of two tiny masks takes a few ms, so aiming at up
                # to half of the rest let a fast run finish before it was killed three times.
                target = before + rng.randint(1, max(1, (n_shards - before) // 6))
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline and (not out.exists() or _markers(out) < target):
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.01))  # land anywhere: between shards, mid-write, in finalize
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    kills += 1
                    killed_at.append(_markers(out))
            stdout, stderr = proc.communicate(timeout=60)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, stderr.decode()
        store = open_store(out)
        assert not store.complete or _markers(out) == n_shards
    assert proc.returncode == 0, stderr.decode()
    assert kills >= 3, f"the job finished before it could be killed enough times ({killed_at})"

    final, expected = open_store(out), open_store(ref)
    assert final.complete
    assert final.ids == expected.ids
    for sid in expected.ids:
        a, b = final[sid], expected[sid]
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), sid
        assert not np.isnan(a).any()
    # Every attribute equals the straight run's (nothing in them depends on timing), except the
    # store's own identity.
    got, want = _meta(out), _meta(ref)
    for meta in (got, want):
        meta.pop("uid", None)
        meta["report"].pop("last_run")  # type: ignore[union-attr]
    assert got == want


def _interrupt_at(proc: subprocess.Popen[str], moment: str, out: Path) -> tuple[list[str], threading.Thread]:
    """Send SIGINT to the run's whole group (as a terminal's Ctrl-C does) when it reaches ``moment``,
    which is watched for in its stderr and its store, not timed: a slow machine's imports move
    every moment later. Returns the stderr lines, which the returned thread goes on reading."""
    lines: list[str] = []
    reached = threading.Event()
    wanted = {
        "start-up": re.compile(r"\|\s*click$"),  # -X importtime: click imported, the CLI still importing
        "scan": re.compile(r"INFO: scanning \d+ masks"),
        "compute": re.compile(r"INFO: computing \d+ of \d+ masks"),
    }.get(moment)

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if wanted is not None and wanted.search(lines[-1]):
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if reached.is_set() or (moment == "shards" and out.exists() and _markers(out) > 0):
            os.killpg(proc.pid, signal.SIGINT)
            return lines, reader
        time.sleep(0.002)
    assert proc.poll() is not None, f"the run never reached {moment!r} in 120 s:\n" + "\n".join(lines[-20:])
    return lines, reader  # it finished first: a clean exit too


@pytest.mark.timeout(420)
@pytest.mark.parametrize("moment", ["start-up", "scan", "compute", "shards"])
def test_ctrl_c_is_a_clean_exit_at_any_moment(tmp_path: Path, moment: str) -> None:
    """Ctrl-C goes to the whole process group (forkserver and workers too): one message, exit 130,
    no traceback, no store that looks complete, and --resume ends with the straight run's maps."""
    masks = write_dataset(tmp_path / "data", n=N_MASKS, shape=(96, 96), num_classes=4, seed=SEED, with_images=False)
    ref, out = tmp_path / "ref.zarr", tmp_path / "w.zarr"
    subprocess.run(_compute_args(masks / "masks", ref), check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"} if moment == "start-up" else None
    with process_group([*_compute_args(masks / "masks", out), "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env) as proc:
        lines, reader = _interrupt_at(proc, moment, out)
        proc.wait(timeout=120)
        reader.join(30)  # to the end of stderr: the forkserver holds it open until it exits
    stderr = "\n".join(lines)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    # Each moment leaves most of the work to do (48 shards after the first marker): interrupted.
    assert proc.returncode == 130, stderr
    # While the CLI imports, its start-up handler says just "Interrupted."; from then on every
    # interrupt ends with the same sentence.
    full = "Interrupted; a partly written store can be completed with --resume."
    assert full in stderr or (moment == "start-up" and stderr.endswith("Interrupted.")), stderr
    if out.exists():
        assert not open_store(out).complete
    subprocess.run([*_compute_args(masks / "masks", out), "--resume"], check=True, capture_output=True, timeout=300)
    final, expected = open_store(out), open_store(ref)
    assert final.complete and final.ids == expected.ids
    for sid in expected.ids:
        assert final[sid].tobytes() == expected[sid].tobytes(), sid
