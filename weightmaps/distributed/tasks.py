"""How work runs as Dask tasks: the job shipped once, then rounds that convict only a real culprit.

Both passes (:mod:`weightmaps.distributed.jobs`) run the same way: the job (the source, the
writer, the settings) travels to the cluster once, as one task's result; then one task per item
(a chunk of samples to scan, a shard to compute), each under its own key. A worker's death counts
against every task it was running or had queued, so an innocent item that shared a worker with a
poison one can fail too: :func:`run_quarantined` runs every such suspect once more *alone* on the
cluster after all other items, where a death is its own, and splits what still dies.

Cut apart from the passes because none of this knows what an item is.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger("weightmaps")

SHARD_RETRIES = 2
"""Retries of a shard task that raised (a transient I/O error, say); worker deaths count apart."""


class _Holder:
    """Carries the job to the cluster as one task result, so each worker fetches it once.

    Not ``client.scatter``: scattered data is lost with the worker holding it (the scheduler
    cannot recompute it), while a task's result is recomputed from its spec.
    """

    def __init__(self, job: Any) -> None:
        self.job = job


def _unwrap(holder: _Holder) -> Any:
    return holder.job


def submit_job(client: Any, job: Any, token: str) -> Any:
    """Send ``job`` to the cluster once; the future every task of the run takes as its job."""
    with warnings.catch_warnings():  # a large source is sent once, on purpose
        warnings.filterwarnings("ignore", "Large object of size")
        holder = client.submit(_Holder, job, key=f"weightmaps-job-{token}", pure=False)
    return client.submit(_unwrap, holder, key=f"weightmaps-unwrap-{token}", pure=False)


class Done:
    """A finished future's stand-in, for results made here rather than on the cluster."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def run_quarantined(
    distributed: ModuleType,
    items: Sequence[Any],
    submit: Callable[[Any, str], Any],
    accept: Callable[[Any, Any], None],
    give_up: Callable[[Any, BaseException], None],
    *,
    split: Callable[[Any], Sequence[Any]],
    describe: Callable[[Any], str],
) -> None:
    """Run one task per item; the items whose workers died run again alone, then split, alone.

    ``accept(item, future)`` takes a finished task's result and raises ``KilledWorker`` (from
    ``future.result()``) when the item's workers died. A worker's death counts against every task
    it was running, so such an item may be innocent: after the first round each suspect runs
    again alone on the cluster, where a death is surely its own. An item that still kills its
    worker is split (``split(item)``, e.g. a chunk into its samples), each part alone; what cannot
    be split, or still dies, is given up (``give_up(item, exc)``). Interrupted, nothing new
    starts and what was started finishes on its own.
    """
    by_key: dict[Any, Any] = {}

    def start(item: Any, attempt: str) -> Any:
        future = submit(item, attempt)
        by_key[future.key] = item
        return future

    queue = distributed.as_completed([start(item, "") for item in items])
    live: list[Any] = []  # the lone task in flight

    def alone(item: Any, attempt: str) -> None:
        future = start(item, attempt)
        live[:] = [future]
        distributed.wait(future)
        live.clear()
        accept(by_key.pop(future.key), future)

    try:
        suspects = []
        for future in queue:
            item = by_key.pop(future.key)
            try:
                accept(item, future)
            except distributed.KilledWorker:
                suspects.append(item)
        for item in suspects:
            log.warning("%s; running it alone", describe(item))
            try:
                alone(item, "-alone")
                continue
            except distributed.KilledWorker as exc:
                parts = split(item)
                if not parts:
                    give_up(item, exc)
                    continue
            for part in parts:
                try:
                    alone(part, "-single")
                except distributed.KilledWorker as exc:
                    give_up(part, exc)
    finally:
        for future in [*queue.futures, *live]:
            future.cancel()


def killed_reason(exc: BaseException, what: str = "reading it") -> str:
    """Why an item was given up after its workers kept dying, ``exc`` the last ``KilledWorker``."""
    allowed = getattr(exc, "allowed_failures", None)
    times = f"{allowed + 1} times" if isinstance(allowed, int) else "every time"
    return (
        f"the worker process {what} died {times}, the last time alone on the cluster "
        f"(KilledWorker): a reader crashing on the file, or more memory than a worker has"
    )
