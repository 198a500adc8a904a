"""Run :func:`weightmaps.compute` on a Dask cluster: the scan as a map-reduce, one task per shard.

Nothing here is a scheduler of ours: Dask distributed places the work, retries it, survives
dying workers and serves the dashboard. This module only cuts the job into tasks whose results
are identical to the in-process pipeline's:

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
   worker), *alone* on the cluster after all other shards, where a death is its own.
4. What remains is a worker cut off from the scheduler (network partition) that keeps running a
   task already rescheduled elsewhere, or a task of an interrupted run still running on a
   long-lived cluster when ``--resume`` starts. Writes are idempotent for that case: an attempt
   writes the whole shard (deterministic bytes: same masks, same parameters, same codec; zarr's
   ``LocalStore`` replaces the shard file by an atomic rename, 3.1.6 here) and then its marker
   (atomic rename too), so two attempts leave the same files as one, never a torn one.

Failures: a shard that fails after its retries, or whose workers keep dying, is recorded as a
:class:`ShardFailure`; the other shards finish, the store is *not* finalized (``complete`` stays
False, the failed shards have no marker) and :class:`IncompleteRunError` is raised -- a
``RuntimeError``, so the CLI exits 1 ("runtime failure"), not 2 ("bad input"). ``--resume``
retries exactly the failed shards. An input that crashes its reader is normally met by the scan
first: a scan chunk that keeps killing workers is read again alone, then one sample per task; a
sample that still kills its worker is a bad input like a corrupt file (listed and exit 2, or
skipped with ``skip_bad``), so the compute pass never sees it.

Paths: workers read the inputs and write the store by the paths the client gives, so both must
be the same paths on every machine (a shared filesystem such as NFS, Lustre or a cloud file
mount). The source readers and the store use local file APIs today: ``s3://`` or other fsspec
URLs are not supported yet.

Dask is an optional extra (``pip install "weightmaps[dask]"``); importing this module does not
import it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from weightmaps.backend import cuda_device_count
from weightmaps.errors import BadSample, IncompleteRunError, ShardFailure, WeightmapsError
from weightmaps.pipeline import ComputeResult, compute
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
from weightmaps.layout import ShardTask

if TYPE_CHECKING:
    from weightmaps.sources import MaskSource
    from weightmaps.store import StoreWriter

__all__ = [
    "DaskExecutor",
    "ShardFailure",
    "compute_on_dask",
    "open_client",
    "run_shards_on_dask",
    "scan_on_dask",
]

log = logging.getLogger("weightmaps")

SHARD_RETRIES = 2
"""Retries of a shard task that raised (a transient I/O error, say); worker deaths count apart."""

_MAX_SCAN_CHUNK = 256  # samples per scan task, at most
_SCAN_TASKS_PER_THREAD = 4  # scan tasks per worker thread (load balance vs. overhead)


def _dask() -> ModuleType:
    """The ``distributed`` package, or a clear error naming the extra to install."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise WeightmapsError(
            f"running on Dask needs dask and distributed ({exc}); "
            'install them with: pip install "weightmaps[dask]"'
        ) from None


# --- results -------------------------------------------------------------------------------------


# --- the cluster -----------------------------------------------------------------------------------


@contextlib.contextmanager
def open_client(
    cluster: int | str | Any, *, device: str = "cpu", **cluster_kwargs: Any
) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster``, closed on exit if it was made here.

    Parameters
    ----------
    cluster : int, str, Client or Cluster
        An int ``N`` starts a local cluster of ``N`` worker processes with one thread each
        (with ``device="cuda"``, a ``dask_cuda.LocalCUDACluster`` of ``N`` workers, one per
        GPU), stopped on exit. A string is a scheduler address (``tcp://host:8786``). A
        ``Client`` is used as is, a ``Cluster`` object gets a client; neither is closed.
    device : str
        The run's device; only ``"cuda"`` changes what an int starts.
    **cluster_kwargs
        Passed to the local cluster (e.g. ``dashboard_address=":0"``).

    Examples
    --------
    >>> with open_client(2) as client:          # doctest: +SKIP
    ...     result = compute_on_dask(client, "masks/", "w.zarr", sigma=2)
    """
    distributed = _dask()
    with contextlib.ExitStack() as stack:
        if isinstance(cluster, bool) or cluster is None:
            raise WeightmapsError(f"cluster must be a number of workers, an address or a Client, got {cluster!r}")
        if isinstance(cluster, int):
            if cluster < 1:
                raise WeightmapsError(f"dask workers must be >= 1, got {cluster}")
            if device == "cuda":
                check_gpu_workers(cluster, cuda_device_count())
                try:
                    from dask_cuda import LocalCUDACluster
                except ImportError as exc:
                    raise WeightmapsError(
                        f"a local GPU cluster needs dask-cuda ({exc}); install it with: "
                        'pip install "weightmaps[cuda12]" (or [cuda13])'
                    ) from None
                # One worker per GPU, one thread each: the pipeline overlaps nothing inside a task.
                local = LocalCUDACluster(n_workers=cluster, threads_per_worker=1, **cluster_kwargs)
            else:
                local = distributed.LocalCluster(
                    n_workers=cluster, threads_per_worker=1, processes=True, **cluster_kwargs
                )
            stack.enter_context(local)
            client = stack.enter_context(distributed.Client(local))
        elif isinstance(cluster, str):
            try:
                client = stack.enter_context(distributed.Client(cluster, timeout="30s"))
            except OSError as exc:
                raise WeightmapsError(f"cannot reach the Dask scheduler {cluster!r}: {exc}") from None
        elif isinstance(cluster, distributed.Client):
            client = cluster
        else:  # a Cluster object (LocalCluster, a dask-jobqueue cluster, ...)
            client = stack.enter_context(distributed.Client(cluster))
        _log_cluster(client)
        yield client


def check_gpu_workers(requested: int, gpus: int) -> None:
    """A local GPU cluster runs one worker per GPU: asking for more is a usage error.

    dask-cuda would otherwise start the extra workers on GPUs that do not exist and hang or fail
    deep inside a worker.

    Examples
    --------
    >>> check_gpu_workers(2, gpus=4)
    >>> try:
    ...     check_gpu_workers(4, gpus=1)
    ... except WeightmapsError as exc:
    ...     print(str(exc).split(":")[0])
    4 local GPU workers asked for, but this machine has 1 GPU
    """
    if requested > gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise WeightmapsError(
            f"{requested} local GPU workers asked for, but this machine has {gpus} GPU"
            f"{'' if gpus == 1 else 's'}{where}: a local GPU cluster runs one worker per GPU; ask for "
            f"at most {gpus}" + (" or use --device cpu" if gpus == 0 else "")
            + ", or point --scheduler at a cluster with more GPUs"
        )


def _log_cluster(client: Any) -> None:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    log.info("Dask scheduler %s: %d worker(s), %d thread(s)", info.get("address", "?"), len(workers), threads)
    try:  # the dashboard's pages need bokeh where the scheduler runs
        has_bokeh = client.run_on_scheduler(_has_bokeh)
    except Exception:  # noqa: BLE001 - a cluster may forbid run_on_scheduler; the link is still worth a line
        has_bokeh = True
    if has_bokeh:
        log.info("Dask dashboard: %s", client.dashboard_link)
    else:
        log.info("Dask dashboard: not served (install bokeh where the scheduler runs)")


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _nthreads(client: Any) -> int:
    return max(1, sum(client.nthreads().values()))


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


class _Holder:
    """Carries the job to the cluster as one task result, so each worker fetches it once.

    Not ``client.scatter``: scattered data is lost with the worker holding it (the scheduler
    cannot recompute it), while a task's result is recomputed from its spec.
    """

    def __init__(self, job: Any) -> None:
        self.job = job


def _unwrap(holder: _Holder) -> Any:
    return holder.job


def _scan_chunk(job: _ScanJob, indices: tuple[int, ...]) -> ScanTally:
    tally = ScanTally()
    for i in indices:
        tally.add(i, scan_or_problem(job.source, i, job.checks))
    return tally


def _run_shard_task(job: _ShardJob, task: ShardTask) -> ShardTimes:
    return run_shard(task, job.source, job.writer, job.settings)


def _submit_job(client: Any, job: Any, token: str) -> Any:
    with warnings.catch_warnings():  # a large source is sent once, on purpose
        warnings.filterwarnings("ignore", "Large object of size")
        holder = client.submit(_Holder, job, key=f"weightmaps-job-{token}", pure=False)
    return client.submit(_unwrap, holder, key=f"weightmaps-unwrap-{token}", pure=False)


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
    distributed = _dask()
    start = time.perf_counter()
    source = open_inputs(inputs, label_map, float_labels)
    n = len(source)
    if n == 0:
        raise WeightmapsError(f"no masks found in {source.description}")
    if chunk_size is None:
        chunk_size = max(1, min(_MAX_SCAN_CHUNK, math.ceil(n / (_SCAN_TASKS_PER_THREAD * _nthreads(client)))))
    token = uuid.uuid4().hex
    job = _submit_job(client, _ScanJob(source, ScanChecks(num_classes, ignore_index, digests, instance_masks)), token)
    tally = ScanTally()

    def submit(indices: tuple[int, ...], attempt: str) -> Any:
        key = (f"weightmaps-scan-{token}{attempt}", indices[0], indices[-1])
        return client.submit(_scan_chunk, job, indices, key=key, retries=SHARD_RETRIES, pure=False)

    def accept(indices: tuple[int, ...], future: Any) -> None:
        tally.merge(future.result())  # a KilledWorker makes the chunk a suspect
        if progress:
            progress("scan", tally.n_seen, n)

    def give_up(indices: tuple[int, ...], exc: BaseException) -> None:
        accept(indices, _Done(_killed_tally(indices[0], exc)))

    if progress:
        progress("scan", 0, n)
    # A chunk that still kills its worker alone is read one sample at a time; a sample that does
    # is a bad input.
    _run_quarantined(
        distributed, [tuple(range(s, min(s + chunk_size, n))) for s in range(0, n, chunk_size)], submit, accept,
        give_up, split=lambda indices: [(i,) for i in indices] if len(indices) > 1 else [],
        describe=lambda indices: f"scan: workers died reading samples {indices[0]}-{indices[-1]}",
    )
    return finish_scan(source, tally, skip_bad=skip_bad, started=start)


def _killed_tally(i: int, exc: BaseException) -> ScanTally:
    tally = ScanTally()
    tally.add(i, _killed_reason(exc))
    return tally


class _Done:
    """A finished future's stand-in, for results made here rather than on the cluster."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def _run_quarantined(
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


def _killed_reason(exc: BaseException, what: str = "reading it") -> str:
    allowed = getattr(exc, "allowed_failures", None)
    times = f"{allowed + 1} times" if isinstance(allowed, int) else "every time"
    return (
        f"the worker process {what} died {times}, the last time alone on the cluster "
        f"(KilledWorker): a reader crashing on the file, or more memory than a worker has"
    )


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
    distributed = _dask()
    if not tasks:
        return []
    token = uuid.uuid4().hex
    job = _submit_job(client, _ShardJob(source, writer, settings), token)
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
        failures.append((task, _failure(task, writer, _killed_reason(exc, "computing this shard"))))

    _run_quarantined(distributed, tasks, submit, accept, give_up, split=lambda task: [],
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


@dataclass(frozen=True)
class DaskExecutor:
    """What :func:`weightmaps.pipeline.compute` delegates to when given ``executor=``.

    ``scan(inputs, **scan_kwargs)`` replaces the in-process scan, ``run_shards(tasks, source,
    writer, settings, on_done)`` the process / thread pools.
    """

    client: Any

    def scan(self, inputs: Any, **kwargs: Any) -> ScanResult:
        return scan_on_dask(self.client, inputs, **kwargs)

    def run_shards(
        self, tasks: Sequence[ShardTask], source: MaskSource, writer: StoreWriter, settings: ShardSettings,
        on_done: Callable[[ShardTimes], None] | None = None,
    ) -> list[ShardTimes]:
        return run_shards_on_dask(self.client, tasks, source, writer, settings, on_done)


def compute_on_dask(
    cluster: int | str | Any,
    inputs: Any,
    out: str | os.PathLike[str],
    *,
    device: str = "auto",
    cluster_kwargs: Mapping[str, Any] | None = None,
    **compute_kwargs: Any,
) -> ComputeResult:
    """:func:`weightmaps.compute` with its scan and its shards run on a Dask cluster.

    Same arguments and the same store as :func:`~weightmaps.pipeline.compute` (``workers``
    and ``parallel`` do not apply: Dask's workers and threads are the parallelism).

    Parameters
    ----------
    cluster : int, str, Client or Cluster
        See :func:`open_client`: a number of local worker processes (local GPUs with
        ``device="cuda"``), a scheduler address, or a client / cluster of yours.
    device : str
        ``"auto"`` is resolved on this machine for a local cluster (GPUs: a
        ``LocalCUDACluster``), else on a worker; every worker then uses that device. This
        process resolves the device too, so a ``"cuda"`` run needs CuPy here as well.

    Raises
    ------
    IncompleteRunError
        Some shards failed (listed); the others are written and the store is incomplete.

    Examples
    --------
    >>> compute_on_dask(2, "masks/", "w.zarr", sigma=2.0)          # doctest: +SKIP
    >>> compute_on_dask("tcp://10.0.0.1:8786", "/shared/masks", "/shared/w.zarr",
    ...                 sigma=2.0, resume=True)                    # doctest: +SKIP
    """
    if device == "auto" and isinstance(cluster, int) and not isinstance(cluster, bool):
        device = _worker_device(device)  # a local cluster: this machine's GPUs, if any
    with open_client(cluster, device=device, **dict(cluster_kwargs or {})) as client:
        if device == "auto":
            device = client.submit(_worker_device, device, pure=False).result()
        log.info("Dask workers compute on %s", device)
        return compute(inputs, out, device=device, executor=DaskExecutor(client), **compute_kwargs)


def _worker_device(device: str) -> str:
    from weightmaps.backend import get_backend

    return get_backend(device).name
