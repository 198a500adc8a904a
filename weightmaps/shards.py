"""One shard at a time: decode, compute, write — and the runners that execute shards.

A shard is the unit of work and of writing (see :mod:`weightmaps.store`). :func:`run_shard` does
everything for one shard and is what every runner calls: the CPU path runs it on a process pool
(:func:`run_processes`), the GPU path overlaps decode / compute / write with threads around the
device (:func:`run_threads`), and a :class:`ShardExecutor` (Dask) runs it as a task.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from weightmaps._concurrency import (
    Interrupt,
    bounded_map,
    deferred_interrupt,
    exit_with_driver,
    process_context,
    start_process_server,
)
from weightmaps.backend import Backend, get_backend, is_cupy_array
from weightmaps.engine import StageTimer, untimed as _untimed
from weightmaps.errors import WeightmapsError
from weightmaps.params import MapParams
from weightmaps.stats import ScanResult

if TYPE_CHECKING:
    from weightmaps.sources import MaskSource
    from weightmaps.layout import ShardTask
    from weightmaps.store import StoreWriter

__all__ = [
    "ShardExecutor",
    "ShardSettings",
    "ShardTimes",
    "compute_maps",
    "compute_task_maps",
    "decode_shard",
    "run_processes",
    "run_shard",
    "run_threads",
]

# A shard holds about 16 MiB of maps (the store's choice); in flight at once on the CPU path:
# at most _IN_FLIGHT_PER_WORKER shards per worker process.
_IN_FLIGHT_PER_WORKER = 2
# Default GPU batch: this many pixels per batch (about 64 MiB of float32 maps).
_GPU_BATCH_PIXELS = 1 << 24


@dataclass(frozen=True)
class ShardSettings:
    """Everything :func:`run_shard` needs besides the task, the source and the writer (picklable).

    ``params`` says what to compute, ``device`` where (a Backend pickles by name with its
    options). ``source_indices`` maps a store sample index to its position in the source (None:
    the same); it differs when bad samples were skipped.
    """

    params: MapParams
    device: str | Backend = "cpu"
    batch_size: int | None = None
    source_indices: tuple[int, ...] | None = None

    def source_index(self, index: int) -> int:
        """The source position of store sample ``index``."""
        return self.source_indices[index] if self.source_indices is not None else index


@dataclass(frozen=True)
class ShardTimes:
    n: int
    decode: float
    compute: float
    write: float


def decode_shard(task: ShardTask, source: MaskSource, settings: ShardSettings) -> tuple[list[np.ndarray], list[str]]:
    """The task's masks (in its order, each of the shape the scan saw) and their digests."""
    from weightmaps.readers import mask_digest

    masks = []
    digests = []
    # Remote masks: the shard's files in one round of concurrent GETs, not one round trip each.
    with source.prefetched([settings.source_index(index) for index in task.sample_indices]):
        for index, shape in zip(task.sample_indices, task.shapes, strict=True):
            i = settings.source_index(index)
            labels = source.read(i)
            shape = settings.params.mask_shape(shape)
            if tuple(labels.shape) != shape:
                raise WeightmapsError(
                    f"{source.describe(i)}: shape {tuple(labels.shape)} differs from {shape} "
                    "seen by the scan; did the input change during the run?"
                )
            masks.append(labels)
            digests.append(mask_digest(labels))
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
    out = _host_array(backend, (n, *settings.params.map_shape(masks.shape[1:])), np.dtype(settings.params.dtype))
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


def _host_array(backend: Backend, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if backend.xp is np:
        return np.empty(shape, dtype=dtype)
    import cupyx

    return cupyx.empty_pinned(shape, dtype=dtype)


def run_shard(task: ShardTask, source: MaskSource, writer: StoreWriter, settings: ShardSettings) -> ShardTimes:
    """Decode, compute and write one shard: the unit of work on every path (processes, GPU, Dask).

    Exactly one call writes a given shard (its marker is written last, by the writer), so a
    killed run loses at most the shards in flight.
    """
    t0 = time.perf_counter()
    masks, digests = decode_shard(task, source, settings)
    t1 = time.perf_counter()
    maps = compute_task_maps(masks, settings)
    t2 = time.perf_counter()
    writer.write_shard(task, maps, digests)
    t3 = time.perf_counter()
    return ShardTimes(len(digests), t1 - t0, t2 - t1, t3 - t2)


# Worker-process state, set once per process by the pool initializer, so that each task pickles
# only its ShardTask (the source and the index map can be large).
_WORKER_STATE: tuple[Any, Any, ShardSettings] | None = None


def _init_worker(source: MaskSource, writer: StoreWriter, settings: ShardSettings, driver: int) -> None:
    global _WORKER_STATE
    _WORKER_STATE = (source, writer, settings)
    # One worker process per core already: zarr's own encode thread pool (one thread per core by
    # default) would only oversubscribe them (measured: a 64-map shard writes 25% faster).
    import zarr

    zarr.config.set({"threading.max_workers": 1})
    exit_with_driver(driver)


def _run_shard_in_worker(task: ShardTask) -> ShardTimes:
    assert _WORKER_STATE is not None, "worker not initialised"
    return run_shard(task, *_WORKER_STATE)


def run_processes(
    tasks: Sequence[ShardTask], source: MaskSource, writer: StoreWriter, settings: ShardSettings, workers: int,
    on_done: Callable[[ShardTimes], None],
) -> None:
    # A Ctrl-C stops the loop between shards (a shard is written whole, then its marker; the
    # workers ignore SIGINT and finish theirs), never inside the pool's locking or a zarr write.
    with deferred_interrupt() as interrupt:
        _run_processes(tasks, source, writer, settings, workers, on_done, interrupt)


def _run_processes(
    tasks: Sequence[ShardTask], source: MaskSource, writer: StoreWriter, settings: ShardSettings, workers: int,
    on_done: Callable[[ShardTimes], None], interrupt: Interrupt,
) -> None:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            interrupt.check()
            on_done(run_shard(task, source, writer, settings))
        return
    workers = min(workers, len(tasks))
    start_process_server()
    with cf.ProcessPoolExecutor(
        workers, mp_context=process_context(), initializer=_init_worker,
        initargs=(source, writer, settings, os.getpid()),
    ) as pool:
        try:
            for _, future in bounded_map(pool, _run_shard_in_worker, tasks, _IN_FLIGHT_PER_WORKER * workers, interrupt):
                on_done(future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def run_threads(
    tasks: Sequence[ShardTask], source: MaskSource, writer: StoreWriter, settings: ShardSettings, backend: Backend,
    threads: int, on_done: Callable[[ShardTimes], None],
) -> None:
    """Decode on a thread pool, compute here (one device, one stream of work), write on threads.

    At most ``2 * threads`` shards are decoded ahead and ``threads`` written behind, so memory
    stays bounded by about ``3 * threads + 1`` shards. Each shard is written by one thread.
    """
    ahead = max(1, 2 * threads)
    decoded: collections.deque[tuple[Any, cf.Future[Any], float]] = collections.deque()
    writes: collections.deque[tuple[cf.Future[Any], ShardTimes]] = collections.deque()

    def timed_decode(task: ShardTask) -> tuple[list[np.ndarray], list[str], float]:
        start = time.perf_counter()
        masks, digests = decode_shard(task, source, settings)
        return masks, digests, time.perf_counter() - start

    def timed_write(task: ShardTask, maps: list[np.ndarray], digests: list[str]) -> float:
        start = time.perf_counter()
        writer.write_shard(task, maps, digests)
        return time.perf_counter() - start

    def finish_write() -> None:
        future, times = writes.popleft()
        write_seconds = future.result()
        on_done(ShardTimes(times.n, times.decode, times.compute, write_seconds))

    with (
        cf.ThreadPoolExecutor(threads, thread_name_prefix="weightmaps-decode") as decode_pool,
        cf.ThreadPoolExecutor(threads, thread_name_prefix="weightmaps-write") as write_pool,
    ):
        try:
            queue = iter(tasks)
            for task in queue:
                decoded.append((task, decode_pool.submit(timed_decode, task), 0.0))
                if len(decoded) >= ahead:
                    break
            while decoded:
                task, future, _ = decoded.popleft()
                next_task = next(queue, None)
                if next_task is not None:
                    decoded.append((next_task, decode_pool.submit(timed_decode, next_task), 0.0))
                masks, digests, decode_seconds = future.result()
                start = time.perf_counter()
                maps = compute_task_maps(masks, settings, backend)
                compute_seconds = time.perf_counter() - start
                del masks
                writes.append((
                    write_pool.submit(timed_write, task, maps, digests),
                    ShardTimes(len(digests), decode_seconds, compute_seconds, 0.0),
                ))
                while len(writes) > threads or (writes and writes[0][0].done()):
                    finish_write()
            while writes:
                finish_write()
        except BaseException:
            for _, future, _ in decoded:
                future.cancel()
            for future, _ in writes:  # let started writes finish: a shard is written whole or not at all
                future.cancel()
            raise


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


def _default_batch_size(backend: Backend, shape: tuple[int, ...]) -> int:
    if backend.name == "cuda":
        return max(1, _GPU_BATCH_PIXELS // math.prod(shape))
    # On the CPU a batch is a loop over samples anyway; one mask at a time keeps every temporary
    # in cache instead of page-faulting fresh shard-sized arrays (measured: 2.7x faster per shard).
    return 1
