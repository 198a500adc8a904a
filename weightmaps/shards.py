"""One shard at a time: decode, compute, write — and the local runner that executes shards.

A shard is the unit of work and of writing (see :mod:`weightmaps.store`). :func:`run_shard` does
everything for one shard; :func:`run_shard_group` the same for a few shards whose masks a GPU
computes in one batch. :func:`run_on_pool` runs them on the run's worker processes
(:class:`~weightmaps.worker_pool.WorkerPool`) on the CPU and on a GPU alike: every process decodes,
computes (on the device, in its own CUDA context) and writes its own shards, so the CPU side of
the work spreads over every core. A :class:`ShardExecutor` (Dask) runs :func:`run_shard` as a task.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from weightmaps import cuda_plan
from weightmaps.concurrency import Interrupt, bounded_map, deferred_interrupt
from weightmaps.arrays import is_cupy_array
from weightmaps.backend import Backend, get_backend
from weightmaps.engine import StageTimer, untimed as _untimed
from weightmaps.errors import WeightmapsError
from weightmaps.params import MapParams
from weightmaps.spool import Spool, SpoolEntry
from weightmaps.stats import ScanResult
from weightmaps.worker_pool import WorkerPool

if TYPE_CHECKING:
    from weightmaps.sources import MaskSource
    from weightmaps.layout import ShardTask
    from weightmaps.store import StoreWriter

__all__ = [
    "PoolExecutor",
    "ShardExecutor",
    "ShardSettings",
    "ShardTimes",
    "compute_maps",
    "compute_task_maps",
    "decode_shard",
    "group_tasks",
    "run_on_pool",
    "run_shard",
    "run_shard_group",
]

log = logging.getLogger("weightmaps")

# A shard holds about 16 MiB of maps (the store's choice); in flight at once: at most
# _IN_FLIGHT_PER_WORKER groups of shards per worker process (one running, one queued).
_IN_FLIGHT_PER_WORKER = 2
# Default GPU batch: this many pixels per batch (about 64 MiB of float32 maps).
_GPU_BATCH_PIXELS = 1 << 24


@dataclass(frozen=True)
class ShardSettings:
    """Everything :func:`run_shard` needs besides the task, the source and the writer (picklable).

    ``params`` says what to compute, ``device`` where (a Backend pickles by name with its
    options). ``source_indices`` maps a store sample index to its position in the source (None:
    the same); it differs when bad samples were skipped. ``device_memory``: bytes of device
    memory the process may hold (its share of a GPU that several processes use; None: all).
    ``spool`` and ``spooled`` (by source position): masks the scan decoded already, read back
    instead of decoded again (:mod:`weightmaps.spool`).
    """

    params: MapParams
    device: str | Backend = "cpu"
    batch_size: int | None = None
    source_indices: tuple[int, ...] | Mapping[int, int] | None = None
    device_memory: int | None = None
    spool: Spool | None = None
    spooled: Mapping[int, SpoolEntry] | None = None

    def source_index(self, index: int) -> int:
        """The source position of store sample ``index``."""
        return self.source_indices[index] if self.source_indices is not None else index

    def for_tasks(self, tasks: Sequence[ShardTask]) -> ShardSettings:
        """These settings with the per-sample maps cut down to ``tasks``' samples: what a worker is
        sent with them (the whole maps of a large dataset would travel with every task)."""
        positions = {i: self.source_index(i) for task in tasks for i in task.sample_indices}
        spooled = self.spooled
        if spooled is not None:
            spooled = {p: spooled[p] for p in positions.values() if p in spooled}
        return dataclasses.replace(
            self, source_indices=positions if self.source_indices is not None else None, spooled=spooled
        )


@dataclass(frozen=True)
class ShardTimes:
    n: int
    decode: float
    compute: float
    write: float


def decode_shard(task: ShardTask, source: MaskSource, settings: ShardSettings) -> tuple[list[np.ndarray], list[str]]:
    """The task's masks (in its order, each of the shape the scan saw) and their digests.

    A mask the scan left in the run's spool is read from there, with the digest the scan took.
    """
    from weightmaps.readers import mask_digest

    positions = [settings.source_index(index) for index in task.sample_indices]
    spooled: dict[int, tuple[np.ndarray, str]] = {}
    if settings.spool is not None and settings.spooled:
        for i in positions:
            entry = settings.spooled.get(i)
            labels = settings.spool.read(entry) if entry is not None else None
            if entry is not None and labels is not None:
                spooled[i] = (labels, entry.digest)
    masks = []
    digests = []
    # Remote masks: the shard's files in one round of concurrent GETs, not one round trip each.
    with source.prefetched([i for i in positions if i not in spooled]):
        for i, shape in zip(positions, task.shapes, strict=True):
            shape = settings.params.mask_shape(shape)
            if i in spooled:
                labels, digest = spooled[i]
            else:
                labels = source.read(i)
                digest = mask_digest(labels)
            if tuple(labels.shape) != shape:
                raise WeightmapsError(
                    f"{source.describe(i)}: shape {tuple(labels.shape)} differs from {shape} "
                    "seen by the scan; did the input change during the run?"
                )
            masks.append(labels)
            digests.append(digest)
    return masks, digests


def compute_task_maps(
    masks: Sequence[np.ndarray], settings: ShardSettings, backend: Backend | None = None,
    timer: StageTimer | None = None,
) -> list[np.ndarray]:
    """The maps of a task's masks, in their order: each run of one shape as one stack.

    The layout puts masks of one shape next to each other, so a task is one stack or a few.
    """
    maps: list[np.ndarray] = []
    start = 0
    while start < len(masks):
        stop = start + 1
        while stop < len(masks) and masks[stop].shape == masks[start].shape:
            stop += 1
        maps.extend(compute_maps(_stack_labels(masks[start:stop]), settings, backend, timer))
        start = stop
    return maps


def _stack_labels(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Same-shaped label arrays as one integer stack, whatever mix of integer dtypes they come in.

    ``np.stack`` promotes int64 with uint64 (any signed dtype with uint64) to float64, which is
    no label dtype and not exact above 2**53. Labels are >= 0 (the readers check), so the stack
    takes int64 when every value fits it, else uint64; each mask's range is checked all the same.
    """
    dtype = np.result_type(*masks)
    if dtype.kind in "iub":
        return np.stack(masks)
    ranges = [(int(m.min()), int(m.max())) for m in masks]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    dtype = np.dtype(np.int64) if high <= np.iinfo(np.int64).max else np.dtype(np.uint64)
    if low < 0 and dtype == np.uint64:
        raise WeightmapsError(
            f"labels {low} and {high} in one batch fit neither int64 nor uint64; labels must be >= 0"
        )
    return np.stack([m.astype(dtype, copy=False) for m in masks])


def compute_maps(
    masks: np.ndarray, settings: ShardSettings, backend: Backend | None = None, timer: StageTimer | None = None
) -> np.ndarray:
    """The maps of a stack of same-shaped masks, in batches of ``settings.batch_size``.

    On a GPU each batch goes up once and its maps come down once, straight into the returned
    array, which lies in pinned host memory (the copy runs at full bus speed and the write
    thread takes the array as it is). ``timer`` (for profiling) is entered around each step:
    ``"transfer"`` (both ways) and :func:`weightmaps.weight_map`'s own.
    """
    from weightmaps.maps import compute_batch

    backend = backend or get_backend(settings.device)
    timed = timer or _untimed
    n = len(masks)
    batch = settings.batch_size or _default_batch_size(backend, masks.shape[1:])
    out = backend.host_buffer((n, *settings.params.map_shape(masks.shape[1:])), np.dtype(settings.params.dtype))
    for start in range(0, n, batch):
        with timed("transfer"):
            data = backend.asarray(masks[start:start + batch])
        maps = compute_batch(data, settings.params, backend, timer=timer)
        with timed("transfer"):
            if is_cupy_array(maps):
                maps.get(out=out[start:start + batch])
            else:
                out[start:start + batch] = maps
    return out


def run_shard(task: ShardTask, source: MaskSource, writer: StoreWriter, settings: ShardSettings) -> ShardTimes:
    """Decode, compute and write one shard: the unit of work on every path (local pool, Dask).

    Exactly one call writes a given shard (its marker is written last, by the writer), so a
    killed run loses at most the shards in flight.
    """
    [times] = run_shard_group((task,), source, writer, settings)
    return times


def run_shard_group(
    tasks: Sequence[ShardTask], source: MaskSource, writer: StoreWriter, settings: ShardSettings
) -> list[ShardTimes]:
    """:func:`run_shard` for a few shards at once: their masks computed together, each shard
    written whole by this call. On a GPU the masks of several shards fill one stacked transform
    where one shard's would not (see :func:`group_tasks`). Times are per shard; the compute time
    of the group is shared among its shards by their masks."""
    backend = get_backend(settings.device)
    if settings.device_memory is not None and backend.limit_memory is not None:
        backend.limit_memory(settings.device_memory)
    decoded = []
    decode_seconds = []
    for task in tasks:
        start = time.perf_counter()
        decoded.append(decode_shard(task, source, settings))
        decode_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    maps = compute_task_maps([m for masks, _ in decoded for m in masks], settings, backend)
    compute_seconds = time.perf_counter() - start
    times = []
    first = 0
    for task, (_, digests), decoding in zip(tasks, decoded, decode_seconds, strict=True):
        start = time.perf_counter()
        writer.write_shard(task, maps[first:first + len(task)], digests)
        first += len(task)
        times.append(ShardTimes(len(task), decoding, compute_seconds * len(task) / len(maps),
                                time.perf_counter() - start))
    return times


def _run_group_in_worker(
    source: MaskSource, group: tuple[tuple[ShardTask, ...], ShardSettings], writer: StoreWriter
) -> list[ShardTimes]:
    tasks, settings = group
    return run_shard_group(tasks, source, writer, settings)


def group_tasks(tasks: Sequence[ShardTask], backend: Backend, processes: int) -> list[tuple[ShardTask, ...]]:
    """The tasks in the groups :func:`run_shard_group` computes together: alone on the CPU; on a
    GPU, consecutive shards of one 2-D shape as many as fill cuCIM's stacked cube
    (:func:`weightmaps.cuda_plan.shards_per_batch`), leaving every process some work."""
    if not (backend.on_gpu and backend.stack_batches):
        return [(task,) for task in tasks]
    groups: list[tuple[ShardTask, ...]] = []
    i = 0
    while i < len(tasks):
        shape = tasks[i].shapes[0]
        per_task = len(tasks[i])
        size = cuda_plan.shards_per_batch(per_task, shape, len(tasks), processes) if len(shape) == 2 else 1
        group = [tasks[i]]
        while (len(group) < size and i + len(group) < len(tasks)
               and set(tasks[i + len(group)].shapes) == {shape} and set(group[-1].shapes) == {shape}):
            group.append(tasks[i + len(group)])
        groups.append(tuple(group))
        i += len(group)
    return groups


def run_on_pool(
    pool: WorkerPool, tasks: Sequence[ShardTask], writer: StoreWriter, settings: ShardSettings,
    on_done: Callable[[ShardTimes], None], *, concurrency: int | None = None,
) -> None:
    """Every task on the pool's processes (in this process when there is one process or one task),
    ``on_done`` called here as each shard is written.

    At most ``concurrency`` groups run at once (default: every process), with as many queued
    behind them, so memory stays bounded by about two groups of shards per process.
    """
    # A Ctrl-C stops the loop between shards (a shard is written whole, then its marker; the
    # workers ignore SIGINT and finish theirs), never inside the pool's locking or a write.
    with deferred_interrupt() as interrupt:
        _run_groups(pool, group_tasks(tasks, get_backend(settings.device), pool.processes), writer, settings,
                    on_done, concurrency, interrupt)


def _run_groups(
    pool: WorkerPool, groups: list[tuple[ShardTask, ...]], writer: StoreWriter, settings: ShardSettings,
    on_done: Callable[[ShardTimes], None], concurrency: int | None, interrupt: Interrupt,
) -> None:
    if pool.processes <= 1 or len(groups) <= 1:
        for group in groups:
            interrupt.check()
            for times in run_shard_group(group, pool.source, writer, settings):
                on_done(times)
        return
    running = min(concurrency or pool.processes, pool.processes)
    window = _IN_FLIGHT_PER_WORKER * running if running == pool.processes else running
    for _, future in bounded_map(pool, functools.partial(_run_group_in_worker, writer=writer),
                                 [(group, settings.for_tasks(group)) for group in groups], window, interrupt):
        for times in future.result():
            on_done(times)


class ShardExecutor(Protocol):
    """Runs the scan and the shards of :func:`compute` somewhere else (e.g. a Dask cluster).

    ``scan`` takes the arguments of :func:`scan` and returns the same :class:`ScanResult`;
    ``run_shards`` runs :func:`run_shard` once per task (exactly one writer per shard), calling
    ``on_done`` in the calling thread as each finishes. :func:`compute` finalizes the store.
    """

    def scan(self, inputs: Any, **kwargs: Any) -> ScanResult: ...

    def run_shards(
        self, tasks: Sequence[ShardTask], source: MaskSource, writer: StoreWriter, settings: ShardSettings,
        on_done: Callable[[ShardTimes], None] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class PoolExecutor:
    """The in-process :class:`ShardExecutor`: the scan and the shards on the run's
    :class:`~weightmaps.worker_pool.WorkerPool` (what :func:`~weightmaps.pipeline.compute` uses
    without ``executor=``).

    The scan leaves the masks it decoded in ``spool``, and the shards read them back from there
    (:mod:`weightmaps.spool`). On a GPU, every process uses the device: each gets an equal share of its memory (the limit of
    its CuPy pool), and where a sample needs more than :func:`weightmaps.cuda_plan.worker_bytes`
    allows for all of them, fewer run at once (:func:`weightmaps.cuda_plan.device_workers`).
    """

    pool: WorkerPool
    spool: Spool | None = None  # where the scan leaves the masks it decoded, for the shards

    def scan(self, inputs: Any, **kwargs: Any) -> ScanResult:
        from weightmaps.stats import scan

        return scan(inputs, pool=self.pool, spool=self.spool, **kwargs)

    def run_shards(
        self, tasks: Sequence[ShardTask], source: MaskSource, writer: StoreWriter, settings: ShardSettings,
        on_done: Callable[[ShardTimes], None] | None = None,
    ) -> None:
        if source is not self.pool.source:
            raise WeightmapsError("the worker pool holds another source than the one computed")
        backend = get_backend(settings.device)
        concurrency = None
        if backend.total_memory is not None and self.pool.processes > 1 and tasks:
            largest = max((settings.params.mask_shape(s) for t in tasks for s in set(t.shapes)), key=math.prod)
            batch = settings.batch_size or _default_batch_size(backend, largest)
            need = cuda_plan.worker_bytes(largest, batch * math.prod(largest))
            concurrency, share = cuda_plan.device_workers(self.pool.processes, backend.total_memory(), need)
            settings = dataclasses.replace(settings, device_memory=share)
            log.info("%d process(es) on the device at once, %.1f GiB of its memory each", concurrency, share / 2**30)
        run_on_pool(self.pool, tasks, writer, settings, on_done or (lambda times: None), concurrency=concurrency)


def _default_batch_size(backend: Backend, shape: tuple[int, ...]) -> int:
    if backend.on_gpu:
        return max(1, _GPU_BATCH_PIXELS // math.prod(shape))
    # On the CPU a batch is a loop over samples anyway; one mask at a time keeps every temporary
    # in cache instead of page-faulting fresh shard-sized arrays (measured: 2.7x faster per shard).
    return 1
