"""Small concurrency helpers shared by the scan (threads) and the shard runners (processes)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol


def default_threads(workers: int | None) -> int:
    """Decode threads: twice the workers (or cores), at least 2, at most 16."""
    return max(2, min(16, 2 * (workers or os.cpu_count() or 1)))


class Submitter(Protocol):
    """What :func:`bounded_map` submits to: a ``concurrent.futures`` executor, or a
    :class:`~weightmaps.worker_pool.WorkerPool`."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> cf.Future[Any]: ...


def bounded_map(
    pool: Submitter, fn: Callable[..., Any], items: Iterable[Any], window: int
) -> Iterator[tuple[Any, cf.Future[Any]]]:
    """(item, finished future) pairs, in completion order, with at most ``window`` submitted."""
    pending: dict[cf.Future[Any], Any] = {}
    iterator = iter(items)
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            try:
                item = next(iterator)
            except StopIteration:
                exhausted = True
                break
            pending[pool.submit(fn, item)] = item
        if not pending:
            return
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in done:
            yield pending.pop(future), future


# What the forkserver imports once, so that a forked worker imports nothing before its first task.
# "__main__" among them stops every worker from re-running the main script (for the CLI: click and
# the whole pipeline); the sources (zarr) are what a worker unpickles its MaskSource with. Each
# worker's start is serial in the parent (it blocks writing the >64 KiB pickled source into the
# child's pipe until the child reads it), so a worker's imports cost once per worker, in a row:
# without this list a 2048-mask scan on 16 processes spent 10 s starting them (H100 host).
_WORKER_PRELOAD = ["__main__", "weightmaps.shards", "weightmaps.stats", "weightmaps.sources", "PIL.PngImagePlugin"]


def process_context() -> multiprocessing.context.BaseContext:
    """The start method of every process pool of the pipeline (scan and shards)."""
    # zarr-python runs an asyncio loop on a background thread: a fork()ed child would inherit
    # its locks but not the thread, and hang. forkserver forks from a clean server process
    # (which imports weightmaps once), so workers start in milliseconds and never see that loop.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_WORKER_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def start_process_server() -> None:
    """Start the forkserver now, so that its interpreter start and imports overlap other work.

    It starts with Ctrl-C ignored: a Ctrl-C (sent to the whole process group) during its first
    second of imports used to print a KeyboardInterrupt traceback from it, and the workers it forks
    inherit the same, so the driver alone handles the interrupt and lets each worker finish the
    shard it is writing. Every pool calls this before its first task.
    """
    if process_context().get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()  # signal dispositions can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through exec
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def exit_with_driver(driver: int) -> None:
    """In a pool worker: exit when the driver process is gone.

    If the driver is SIGKILLed, nothing tells its workers: the forkserver stays up while they do,
    and they hold both ends of their task queue. Exit on our own, so that no orphan idles forever
    or is still writing a shard while a resumed run writes the same shard.
    """
    threading.Thread(target=_watch_driver, args=(driver,), daemon=True, name="weightmaps-driver-watch").start()


def _watch_driver(driver: int) -> None:
    while True:
        time.sleep(0.2)
        try:
            os.kill(driver, 0)  # signal 0: only checks that the process exists
        except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to someone else
            os._exit(1)
