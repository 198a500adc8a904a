"""Ctrl-C (SIGINT) while the scan or the shards run: the run stops at a safe point of its own.

A KeyboardInterrupt raised by Python's default handler lands wherever the main thread is, and in
these loops that is mostly inside ``concurrent.futures``' or ``threading``'s locking: once, a lock
was left taken and ``weightmaps compute`` never exited. Here a real SIGINT is sent, by the source
itself while it reads a chosen sample (from a pool thread, a scan process or a shard process), and
the KeyboardInterrupt must come from :meth:`weightmaps.concurrency.Interrupt.check` — never from
the pools' code — promptly (what was not started is cancelled), leaving no thread behind and no
store that looks complete.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightmaps.lock import lock_path
from weightmaps.pipeline import compute
from weightmaps.sample_data import make_masks
from weightmaps.sources import MaskSource, open_source
from weightmaps.stats import scan
from weightmaps.store import open_store

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals"),
    pytest.mark.timeout(180),
]


class InterruptingSource(MaskSource):
    """A folder of masks whose reader sends SIGINT to ``target`` on its ``nth`` read of ``victim``.

    Every read is counted in ``counter`` (one line each, appended: the processes share it) and
    takes ``pause`` seconds, and the read that sends the signal then waits ``linger`` seconds, so
    that the signal arrives while the pool is busy. Pickled to worker processes by reference to
    this module, like any source.
    """

    def __init__(self, masks: Path, counter: Path, *, victim: str, nth: int, target: int,
                 pause: float = 0.0, linger: float = 0.5) -> None:
        plain = open_source(str(masks))
        super().__init__(plain.samples, description=plain.description)
        self.counter, self.victim, self.nth, self.target = str(counter), victim, nth, target
        self.pause, self.linger = pause, linger

    def read(self, i: int) -> np.ndarray:
        sid = self.samples[i].id
        with open(self.counter, "a") as f:
            f.write(f"{sid}\n")
        if sid == self.victim:
            with open(self.counter) as f:
                if sum(line.strip() == sid for line in f) == self.nth:
                    os.kill(self.target, signal.SIGINT)
                    time.sleep(self.linger)
        time.sleep(self.pause)
        return super().read(i)


def reads(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def assert_stopped_at_a_safe_point(info: pytest.ExceptionInfo[KeyboardInterrupt]) -> None:
    frames = traceback.extract_tb(info.tb)
    inside_pools = [f for f in frames if "concurrent/futures" in f.filename or f.filename.endswith("threading.py")]
    assert not inside_pools, "KeyboardInterrupt raised inside the pool's code:\n" + "".join(traceback.format_list(frames))
    assert frames[-1].name == "check" and frames[-1].filename.endswith(os.path.join("weightmaps", "concurrency.py")), (
        "".join(traceback.format_list(frames)))


def assert_no_pool_threads_left() -> None:
    deadline = time.monotonic() + 10
    while any(t.name.startswith("weightmaps-") and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.05)


def npy_masks(folder: Path, n: int, shape: tuple[int, int] = (16, 16)) -> Path:
    folder.mkdir()
    for i, mask in enumerate(make_masks(n, shape, num_classes=3, seed=4)):
        np.save(folder / f"m{i:05d}.npy", mask)
    return folder


def test_ctrl_c_during_the_scan_on_threads_stops_it_between_waits(tmp_path: Path) -> None:
    masks = npy_masks(tmp_path / "masks", 400)
    counter = tmp_path / "reads"
    source = InterruptingSource(masks, counter, victim="m00020", nth=1, target=os.getpid(), pause=0.002)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as info:
        scan(source, threads=4)
    assert_stopped_at_a_safe_point(info)
    assert time.monotonic() - started < 30
    assert reads(counter) < 200  # what was not started was cancelled, not read to the end
    assert_no_pool_threads_left()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_ctrl_c_during_the_scan_on_processes_stops_it_between_waits(tmp_path: Path) -> None:
    from weightmaps import stats

    n = stats._SCAN_PROCESSES_FROM + 64  # enough masks for the scan to take worker processes
    masks = npy_masks(tmp_path / "masks", n, shape=(8, 8))
    counter = tmp_path / "reads"
    source = InterruptingSource(masks, counter, victim="m00040", nth=1, target=os.getpid(), pause=0.001,
                                linger=1.0)
    with pytest.raises(KeyboardInterrupt) as info:
        scan(source, processes=2)
    assert_stopped_at_a_safe_point(info)
    assert reads(counter) < n // 2


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_during_the_shards_stops_between_them_and_resume_completes(tmp_path: Path, workers: int) -> None:
    masks = npy_masks(tmp_path / "masks", 40, shape=(24, 24))
    straight = tmp_path / "straight.zarr"
    compute(str(masks), straight, sigma=2.0, device="cpu", workers=1, samples_per_shard=2)
    out = tmp_path / "w.zarr"
    counter = tmp_path / "reads"
    # The scan reads every mask once: the second read of m00005 is the compute pass's (shard 2).
    source = InterruptingSource(masks, counter, victim="m00005", nth=2, target=os.getpid(), pause=0.01)
    with pytest.raises(KeyboardInterrupt) as info:
        compute(source, out, sigma=2.0, device="cpu", workers=workers, samples_per_shard=2)
    assert_stopped_at_a_safe_point(info)
    assert reads(counter) < 40 + 30  # the scan, then a few shards: the rest was never started
    assert_no_pool_threads_left()
    store = open_store(out)
    assert not store.complete  # nothing half-written looks complete
    assert not lock_path(out).exists()  # the lock went with the run
    result = compute(str(masks), out, sigma=2.0, device="cpu", workers=workers, samples_per_shard=2, resume=True)
    assert 0 < result.n_computed < 40
    done, expected = open_store(out), open_store(straight)
    assert done.complete and done.ids == expected.ids
    for sid in expected.ids:
        assert done[sid].tobytes() == expected[sid].tobytes(), sid


def test_deferred_interrupt_contract() -> None:
    from weightmaps.concurrency import deferred_interrupt

    # Normal exit with the flag set: the Ctrl-C is not lost.
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt() as flag:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
            deadline = time.monotonic() + 10
            while not flag.is_set():  # the handler runs between bytecodes: it sets, never raises
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with deferred_interrupt() as inner:
                assert inner is flag  # nested blocks share the flag
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # An exception leaving the block is the one that propagates.
    with pytest.raises(ValueError):
        with deferred_interrupt() as flag:
            flag.set()
            raise ValueError
    # Another thread installs nothing (only the main thread can) and gets a flag of its own.
    seen: dict[str, Any] = {}

    def elsewhere() -> None:
        with deferred_interrupt() as flag:
            seen["handler"] = signal.getsignal(signal.SIGINT)
            seen["set"] = flag.is_set()

    with deferred_interrupt():
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(10)
    assert seen == {"handler": seen["handler"], "set": False}
