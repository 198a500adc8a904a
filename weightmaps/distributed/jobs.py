"""The two passes as Dask tasks: the scan as a map-reduce, then one task per shard.

* **scan** (:func:`scan_on_dask`): one task per chunk of samples validates its masks and sums their
  class counts (per dimensionality, so that the mixed-2-D/3-D rule is applied after the reduce);
  only per-sample shapes, spacings and problems travel back. The client reduces them into the
  same :class:`~weightmaps.stats.ScanResult` the in-process :func:`~weightmaps.stats.scan`
  returns.
* **compute** (:func:`run_shards_on_dask`): one task per pending shard runs
  :func:`~weightmaps.shards.run_shard`, which decodes, computes and writes the whole shard and
  then its marker. The driver (this process) alone calls ``finalize``.

Exactly one writer per shard, under Dask's semantics:

1. Every shard is one task with its own key (``pure=False`` and a per-run token, so neither a
   second run on the same scheduler nor a cached result can share it). The scheduler assigns a
   key to one worker at a time.
2. Dask has no speculative execution: it never starts a duplicate of a running task. Work
   stealing only moves a task that has not started (the victim refuses once it executes).
3. ``retries`` start a new attempt only after the previous one *returned* an exception, so that
   attempt is over; a worker's death reschedules its tasks only after the scheduler removed it
   (and its nanny kills the process). After ``distributed.scheduler.allowed-failures`` deaths
   (default 3) the task fails with ``KilledWorker``. A worker's death counts against every task
   it was running or had queued, so an innocent shard that shared a worker with a poison one can
   fail too: every such suspect runs once more (a new key; every earlier attempt died with its
   worker), *alone* on the cluster after all other shards, where a death is its own
   (:func:`~weightmaps.distributed.tasks.run_quarantined`).
4. What remains is a worker cut off from the scheduler (network partition) that keeps running a
   task already rescheduled elsewhere, or a task of an interrupted run still running on a
   long-lived cluster when ``--resume`` starts. Writes are idempotent for that case: an attempt
   writes the whole shard (deterministic bytes: same masks, same parameters, same codec; each
   shard file is put in place whole, by an atomic rename on a disk or one PUT in object storage)
   and then its marker (the same way), so two attempts leave the same files as one, never a torn
   one.

Failures: a shard that fails after its retries, or whose workers keep dying, is recorded as a
:class:`~weightmaps.errors.ShardFailure`; the other shards finish, the store is *not* finalized
(``complete`` stays False, the failed shards have no marker) and :class:`IncompleteRunError` is
raised -- a ``RuntimeError``, so the CLI exits 1 ("runtime failure"), not 2 ("bad input").
``--resume`` retries exactly the failed shards. An input that crashes its reader is normally met
by the scan first: a scan chunk that keeps killing workers is read again alone, then one sample
per task; a sample that still kills its worker is a bad input like a corrupt file (listed and
exit 2, or skipped with ``skip_bad``), so the compute pass never sees it.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightmaps.distributed.cluster import import_distributed, total_threads
from weightmaps.distributed.tasks import (
    SHARD_RETRIES,
    Done,
    killed_reason,
    run_quarantined,
    submit_job,
)
from weightmaps.errors import (
    BadSample,
    IncompleteRunError,
    ShardFailure,
    WeightmapsError,
)
from weightmaps.layout import ShardTask
from weightmaps.shards import ShardSettings, ShardTimes, run_shard
from weightmaps.stats import (
    Progress,
    ScanChecks,
    ScanResult,
    ScanTally,
    finish_scan,
    open_inputs,
    scan_or_problem,
)

if TYPE_CHECKING:
    from weightmaps.sources import MaskSource
    from weightmaps.store import StoreWriter

log = logging.getLogger("weightmaps")

_MAX_SCAN_CHUNK = 256  # samples per scan task, at most
_SCAN_TASKS_PER_THREAD = 4  # scan tasks per worker thread (load balance vs. overhead)


# --- tasks (run on the workers) --------------------------------------------------------------------


@dataclass(frozen=True)
class _ScanJob:
    source: MaskSource
    checks: ScanChecks


@dataclass(frozen=True)
class _ShardJob:
    source: MaskSource
    writer: StoreWriter
    settings: ShardSettings


def _scan_chunk(job: _ScanJob, indices: tuple[int, ...]) -> ScanTally:
    tally = ScanTally()
    for i in indices:
        tally.add(i, scan_or_problem(job.source, i, job.checks))
    return tally


def _run_shard_task(job: _ShardJob, task: ShardTask) -> ShardTimes:
    return run_shard(task, job.source, job.writer, job.settings)


# --- scan ------------------------------------------------------------------------------------------


def scan_on_dask(
    client: Any,
    inputs: Any,
    *,
    ignore_index: int | None = None,
    num_classes: int | None = None,
    label_map: Mapping[int, int] | None = None,
    float_labels: bool = False,
    skip_bad: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    digests: bool = False,
    instance_masks: bool = False,
    **_ignored: Any,
) -> ScanResult:
    """:func:`weightmaps.stats.scan` as a map-reduce on a Dask cluster; the same result.

    Each task scans ``chunk_size`` samples (default: about four tasks per worker thread, at
    most 256 samples each) and returns their shapes, spacings and problems and their class
    counts summed per dimensionality. A chunk whose workers keep dying is scanned again alone
    on the cluster, then one sample per task; a sample that still kills its worker is a bad input.

    Extra keyword arguments of the in-process scan (``threads``) are accepted and ignored.

    Examples
    --------
    >>> with open_client(2) as client:                            # doctest: +SKIP
    ...     scan_on_dask(client, "masks/").counts
    {0: 3932160, 1: 1048576}
    """
    distributed = import_distributed()
    start = time.perf_counter()
    source = open_inputs(inputs, label_map, float_labels)
    n = len(source)
    if n == 0:
        raise WeightmapsError(f"no masks found in {source.description}")
    if chunk_size is None:
        chunk_size = max(1, min(_MAX_SCAN_CHUNK, math.ceil(n / (_SCAN_TASKS_PER_THREAD * total_threads(client)))))
    token = uuid.uuid4().hex
    job = submit_job(client, _ScanJob(source, ScanChecks(num_classes, ignore_index, digests, instance_masks)), token)
    tally = ScanTally()

    def submit(indices: tuple[int, ...], attempt: str) -> Any:
        key = (f"weightmaps-scan-{token}{attempt}", indices[0], indices[-1])
        return client.submit(_scan_chunk, job, indices, key=key, retries=SHARD_RETRIES, pure=False)

    def accept(indices: tuple[int, ...], future: Any) -> None:
        tally.merge(future.result())  # a KilledWorker makes the chunk a suspect
        if progress:
            progress("scan", tally.n_seen, n)

    def give_up(indices: tuple[int, ...], exc: BaseException) -> None:
        accept(indices, Done(_killed_tally(indices[0], exc)))

    if progress:
        progress("scan", 0, n)
    # A chunk that still kills its worker alone is read one sample at a time; a sample that does
    # is a bad input.
    run_quarantined(
        distributed, [tuple(range(s, min(s + chunk_size, n))) for s in range(0, n, chunk_size)], submit, accept,
        give_up, split=lambda indices: [(i,) for i in indices] if len(indices) > 1 else [],
        describe=lambda indices: f"scan: workers died reading samples {indices[0]}-{indices[-1]}",
    )
    return finish_scan(source, tally, skip_bad=skip_bad, started=start)


def _killed_tally(i: int, exc: BaseException) -> ScanTally:
    tally = ScanTally()
    tally.add(i, killed_reason(exc))
    return tally


# --- compute ---------------------------------------------------------------------------------------


def run_shards_on_dask(
    client: Any,
    tasks: Sequence[ShardTask],
    source: MaskSource,
    writer: StoreWriter,
    settings: ShardSettings,
    on_done: Callable[[ShardTimes], None] | None = None,
) -> list[ShardTimes]:
    """Run :func:`~weightmaps.shards.run_shard` as one Dask task per shard; exactly one writer each.

    ``on_done(times)`` is called in this thread as each shard completes (in completion order,
    driven by ``distributed.as_completed``). Shard tasks retry :data:`SHARD_RETRIES` times; a
    shard whose workers keep dying (``KilledWorker``) runs once more alone on the cluster after
    the others, so that a death is surely its own. When shards still
    fail, the others are finished first, then :class:`IncompleteRunError` is raised; nothing is
    finalized here (the caller finalizes a complete run).

    Returns
    -------
    list of ShardTimes
        In completion order.

    Raises
    ------
    IncompleteRunError
        Naming each failed shard, its samples and the reason.
    """
    distributed = import_distributed()
    if not tasks:
        return []
    token = uuid.uuid4().hex
    job = submit_job(client, _ShardJob(source, writer, settings), token)
    finished: list[ShardTimes] = []
    failures: list[tuple[ShardTask, ShardFailure]] = []

    def submit(task: ShardTask, attempt: str) -> Any:
        key = (f"weightmaps-shard-{token}{attempt}", task.shard)
        return client.submit(_run_shard_task, job, task, key=key, retries=SHARD_RETRIES, pure=False)

    def accept(task: ShardTask, future: Any) -> None:
        try:
            times = future.result()
        except distributed.KilledWorker:
            raise  # a suspect: it runs again alone
        except Exception as exc:  # after its retries: record it, finish the other shards
            failures.append((task, _failure(task, writer, f"{type(exc).__name__}: {exc}")))
            return
        finished.append(times)
        if on_done:
            on_done(times)

    def give_up(task: ShardTask, exc: BaseException) -> None:
        failures.append((task, _failure(task, writer, killed_reason(exc, "computing this shard"))))

    run_quarantined(distributed, tasks, submit, accept, give_up, split=lambda task: [],
                    describe=lambda task: f"shard {task.shard}: its workers died")
    if failures:
        bad = [
            BadSample(sid, source.samples[settings.source_index(index)].path, failure.reason)
            for task, failure in failures
            for sid, index in zip(failure.ids, task.sample_indices, strict=True)
        ]
        raise IncompleteRunError(str(writer.path), [f for _, f in failures], bad, sum(t.n for t in finished))
    return finished


def _failure(task: ShardTask, writer: StoreWriter, reason: str) -> ShardFailure:
    ids = writer.ids
    failure = ShardFailure(task.shard, tuple(ids[i] for i in task.sample_indices), reason)
    log.error("%s", failure)
    return failure
