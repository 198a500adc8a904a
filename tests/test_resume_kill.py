"""SIGKILL `weightmaps compute` at random points, resume until complete: the store equals a straight run's."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from weightmaps.sample_data import write_dataset
from weightmaps.store import open_store

N_MASKS = 96
SEED = 20250
MAX_KILLS = 5


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
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
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


@pytest.mark.parametrize("delay", [0.15, 0.6, 1.5])
def test_ctrl_c_is_a_clean_exit_at_any_moment(tmp_path: Path, delay: float) -> None:
    """Ctrl-C goes to the whole process group (forkserver and workers too): one message, no traceback."""
    masks = write_dataset(tmp_path / "data", n=N_MASKS, shape=(96, 96), num_classes=4, seed=SEED, with_images=False)
    out = tmp_path / "w.zarr"
    proc = subprocess.Popen(_compute_args(masks / "masks", out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert proc.returncode in (0, 130), stderr  # 0: it finished before the interrupt
    if proc.returncode == 130:
        assert "Interrupted; a partly written store can be completed with --resume." in stderr
        # Whatever was interrupted, the store is resumable to the same maps as a straight run.
        subprocess.run([*_compute_args(masks / "masks", out), "--resume"], check=True, capture_output=True, timeout=300)
    assert open_store(out).complete
