"""Small concurrency helpers shared by the scan (threads) and the shard runners (processes)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from collections.abc import Set as AbstractSet
from types import FrameType
from typing import Any, Protocol

# How often a loop waiting on a pool looks at the interrupt flag: a Ctrl-C is acted on within this.
_POLL_S = 0.1


class Interrupt:
    """The flag a deferred Ctrl-C sets (see :func:`deferred_interrupt`)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise KeyboardInterrupt here, at the caller's safe point, if a Ctrl-C came."""
        if self._event.is_set():
            raise KeyboardInterrupt

    def wait(self, futures: Collection[cf.Future[Any]]) -> AbstractSet[cf.Future[Any]]:
        """Wait until one of ``futures`` is done (those done), checking the flag every 0.1 s."""
        while True:
            self.check()
            done, _ = cf.wait(futures, timeout=_POLL_S, return_when=cf.FIRST_COMPLETED)
            if done:
                self.check()  # a Ctrl-C during the wait stops the loop before it takes more work
                return done

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()


# The flag of the deferred_interrupt active in the main thread, if any (nested blocks share it).
_ACTIVE: Interrupt | None = None


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    """Inside the block, Ctrl-C (SIGINT) sets a flag instead of raising KeyboardInterrupt.

    A KeyboardInterrupt raised by the default handler lands wherever the main thread happens to
    be, and that may be inside ``concurrent.futures``' or ``threading``'s own locking: a lock taken
    and never released, and the pool's threads and its ``shutdown`` then wait for each other for
    ever (seen once in the scan on a loaded machine). Code that drives a pool instead runs in this
    block and, at points where nothing is half-done (between waits, before taking more work),
    calls the yielded flag's :meth:`Interrupt.check` (or waits with :meth:`Interrupt.wait`, which
    checks every 0.1 s). ``check`` raises KeyboardInterrupt there, so everything above sees what a
    Ctrl-C always gave: the pool code's cleanup runs, the exception reaches the caller (the CLI
    prints its message and exits 130).

    Contract:

    * Only the main thread receives signals: there, while Python's default handler is installed,
      the block installs its own and restores the previous one on leaving. Anywhere else (another
      thread, a handler someone else installed, SIGINT ignored) it installs nothing and the flag
      is only ever set by :meth:`Interrupt.set`; a Ctrl-C then behaves as it did before.
    * Every SIGINT inside the block only sets the flag (a second one never raises inside a pool
      either); the code in the block must check it often, in loops that wait in bounded slices.
    * Blocks nest: an inner block (e.g. a runner called by the pipeline) gets the outer's flag.
    * A block that ends normally with the flag set raises KeyboardInterrupt as it ends: a Ctrl-C
      is never lost. One that ends with an exception lets that exception through.
    """
    global _ACTIVE
    if threading.current_thread() is not threading.main_thread():
        yield Interrupt()
        return
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    flag = Interrupt()
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield flag
        return
    previous = signal.signal(signal.SIGINT, flag.on_signal)
    _ACTIVE = flag
    try:
        yield flag
    finally:
        _ACTIVE = None
        signal.signal(signal.SIGINT, previous)
    flag.check()  # reached only when the block ended normally


def default_threads(workers: int | None) -> int:
    """Decode threads: twice the workers (or cores), at least 2, at most 16."""
    return max(2, min(16, 2 * (workers or os.cpu_count() or 1)))


class Submitter(Protocol):
    """What :func:`bounded_map` submits to: a ``concurrent.futures`` executor, or a
    :class:`~weightmaps.worker_pool.WorkerPool`."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> cf.Future[Any]: ...


def bounded_map(
    pool: Submitter, fn: Callable[..., Any], items: Iterable[Any], window: int, interrupt: Interrupt | None = None,
) -> Iterator[tuple[Any, cf.Future[Any]]]:
    """(item, finished future) pairs, in completion order, with at most ``window`` submitted.

    With ``interrupt`` (a :func:`deferred_interrupt` flag) the waits check it; however the loop
    ends early (a Ctrl-C, the caller's exception), the items not started are cancelled, so that
    the pool's shutdown waits for the running ones only.
    """
    pending: dict[cf.Future[Any], Any] = {}
    iterator = iter(items)
    exhausted = False
    try:
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
            if interrupt is not None:
                done = interrupt.wait(pending)
            else:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future
    finally:
        for future in pending:
            future.cancel()


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
