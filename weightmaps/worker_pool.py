"""One pool of worker processes per run, holding the run's mask source: the scan and the shards run on it.

Every CPU-side step of a run (decoding, validating and counting masks in the scan; decoding,
hashing, compressing and writing in the shards) runs in these processes, whatever the device:
threads in one process shared the GIL and zarr's event loop and used about 1.4 cores whatever
their number (2-core VM, issue 19), where processes scale with the cores. On a GPU each worker
owns its CUDA context and sends its own batches to the device, which the driver time-slices
between them; the device is never the side that waits (0.085 ms of compute per 256² mask on an
H100 against ~1 ms of CPU work per mask).

The source is sent to each worker once, when it starts (a large list of files pickles to
megabytes), and every call names a module-level function that the worker runs as
``fn(source, *args)``: the scan's and the shards' own functions, so this module knows neither.
Workers start on demand (``concurrent.futures`` forks one per submission while none is idle), from
the forkserver that :func:`~weightmaps.concurrency.start_process_server` starts early, and exit
when the driver does (:func:`~weightmaps.concurrency.exit_with_driver`).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any

from weightmaps.concurrency import exit_with_driver, process_context, start_process_server

__all__ = ["WorkerPool"]

# The source of this worker process, set once by the pool's initializer.
_SOURCE: Any = None


def _init_worker(source: Any, driver: int) -> None:
    global _SOURCE
    _SOURCE = source
    # One worker process per core already: zarr's own thread pool (one thread per core by default)
    # would only oversubscribe them.
    import zarr

    zarr.config.set({"threading.max_workers": 1})
    exit_with_driver(driver)


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(_SOURCE, *args)


class WorkerPool:
    """Up to ``processes`` worker processes, each holding ``source``; ``submit(fn, *args)`` runs
    ``fn(source, *args)`` in one of them (``fn`` a module-level function: it is pickled by name).

    Started by the first submission; :meth:`shutdown` (or leaving the ``with`` block) stops it.
    """

    def __init__(self, source: Any, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"a pool needs at least one process, got {processes}")
        self.source = source
        self.processes = processes
        self._executor: cf.ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        if self._executor is None:
            start_process_server()
            self._executor = cf.ProcessPoolExecutor(
                self.processes, mp_context=process_context(), initializer=_init_worker,
                initargs=(self.source, os.getpid()),
            )
        return self._executor.submit(_call, fn, args)

    def shutdown(self, *, cancel: bool = False) -> None:
        """Wait for the calls under way (a shard is written whole or not at all); ``cancel``: drop
        those not started."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.shutdown(cancel=kind is not None)
