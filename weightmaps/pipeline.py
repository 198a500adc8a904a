"""``compute()``: a dataset of masks in, a sharded zarr store of weight maps out.

The job runs in four stages, each a function below, so a reader finds each in one look:

1. **scan** (:func:`scan`): every mask is decoded once on a bounded thread pool; unreadable or
   invalid files, mixed 2-D/3-D masks and labels outside ``[0, num_classes)`` are collected
   (all of them, then one :class:`BadInputError` listing each), and the class pixel counts,
   the per-sample shapes and the header spacings are gathered in the same pass.
2. **class weights** (:func:`resolve_class_weights`): a scheme over the counts, an explicit
   mapping, a JSON file, or the weights of another store.
3. **store**: :func:`weightmaps.store.create_store` or :func:`weightmaps.store.resume_store`
   (which refuses when the parameters or the inputs changed); nothing is written on a dry run.
4. **compute** (:func:`run_shard`): one shard at a time, each decoded a second time, computed in
   batches and written by exactly one writer. On the CPU, shards run on a process pool; on a GPU,
   in this process, decode, compute and write overlapping on threads.

So the dataset is decoded twice in all (scan + compute): decoding is cheap next to the distance
transform, and keeping nothing between the passes keeps memory bounded whatever the dataset size.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from weightmaps.backend import Backend, get_backend, to_numpy
from weightmaps.classweights import SCHEMES, class_weights as scheme_weights, count_labels
from weightmaps.engine import OUTPUT_DTYPES
from weightmaps.errors import WeightmapsError
from weightmaps.validation import check_connectivity, check_sigma, check_spacing

__all__ = [
    "BadInputError",
    "BadSample",
    "ComputeResult",
    "ScanResult",
    "ShardExecutor",
    "ShardSettings",
    "ShardTimes",
    "compute",
    "resolve_class_weights",
    "run_shard",
    "scan",
]

log = logging.getLogger("weightmaps")

Progress = Callable[[str, int, int], None]

# A shard holds about 16 MiB of maps (the store's choice); in flight at once on the CPU path:
# at most _IN_FLIGHT_PER_WORKER shards per worker process.
_IN_FLIGHT_PER_WORKER = 2
# Scan futures in flight per scan thread (each result is a shape and a few counts).
_SCAN_WINDOW_PER_THREAD = 4
# Default GPU batch: this many pixels per batch (about 64 MiB of float32 maps).
_GPU_BATCH_PIXELS = 1 << 24


# --- errors and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class BadSample:
    """One input sample that failed the scan: its id, its file (None in a zarr array) and why."""

    id: str
    path: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.path if self.path is not None else self.id}: {self.reason}"


class BadInputError(WeightmapsError):
    """The scan found bad inputs; ``bad`` lists every one of them (not just the first)."""

    def __init__(self, bad: Sequence[BadSample], total: int) -> None:
        self.bad = list(bad)
        lines = "\n".join(f"  {b}" for b in self.bad)
        super().__init__(
            f"{len(self.bad)} of {total} input masks are bad:\n{lines}\n"
            "fix or remove them, or skip them with skip_bad=True (--skip-bad)"
        )


@dataclass(frozen=True)
class ScanResult:
    """What the scan pass learnt about a dataset.

    ``indices`` are the source positions of the good samples, in id order; ``ids``, ``shapes``
    and ``spacings`` are aligned with them. ``counts`` sums :func:`~weightmaps.count_labels`
    over the good samples (ignore label excluded).
    """

    source: Any
    indices: tuple[int, ...]
    ids: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    spacings: tuple[tuple[float, ...] | None, ...]
    counts: dict[int, int]
    bad: tuple[BadSample, ...]
    seconds: float

    @property
    def ndim(self) -> int | None:
        return len(self.shapes[0]) if self.shapes else None

    def groups(self) -> dict[tuple[int, ...], int]:
        """Number of samples of each map shape, in order of first appearance."""
        return dict(collections.Counter(self.shapes))


@dataclass(frozen=True)
class ComputeResult:
    """What :func:`compute` did.

    Attributes
    ----------
    store : str
        The store's path (not written on a dry run).
    n_samples : int
        Samples in the store (bad ones skipped excluded).
    n_bad : int
        Bad samples skipped (``skip_bad=True``); they are listed in ``bad`` and the store report.
    n_computed : int
        Samples computed by this call (fewer than ``n_samples`` on a resume, 0 on a dry run).
    class_weights : dict[int, float]
    seconds : dict[str, float]
        Wall-clock seconds of the stages ``scan``, ``compute`` (decode + compute + write of all
        pending shards, overlapped), ``write`` (finalize: markers gathered, metadata consolidated)
        and ``total``.
    busy_seconds : dict[str, float]
        Seconds spent in ``decode``, ``compute`` and ``write`` summed over all shards (over all
        workers, so they may exceed the wall-clock time).
    masks_per_second : float
        ``n_computed / seconds["compute"]``.
    plan : dict or None
        On a dry run, the plan (samples, shape groups, shards, estimated bytes); else None.
    """

    store: str
    n_samples: int
    n_bad: int
    n_computed: int
    class_weights: dict[int, float]
    seconds: dict[str, float]
    busy_seconds: dict[str, float]
    masks_per_second: float
    bad: tuple[BadSample, ...] = ()
    plan: dict[str, Any] | None = None
    spacing: tuple[float, ...] | None = None
    device: str | None = None


# --- 1. scan -----------------------------------------------------------------------------------


def _scan_one(
    source: Any, i: int, num_classes: int | None, ignore_index: int | None
) -> tuple[tuple[int, ...], dict[int, int], tuple[float, ...] | None]:
    labels = source.read(i)
    if labels.ndim not in (2, 3):  # the source promises 2-D or 3-D; a cheap second check
        raise WeightmapsError(f"masks must be 2-D or 3-D, got shape {labels.shape}")
    counts = count_labels(labels, ignore_index=ignore_index)
    if num_classes is not None:
        outside = sorted(label for label in counts if label >= num_classes)
        if outside:
            raise WeightmapsError(
                f"label(s) {outside} >= num_classes={num_classes}"
                + (f" (ignore_index is {ignore_index})" if ignore_index is not None else "")
            )
    spacing = source.spacing(i)
    return tuple(int(s) for s in labels.shape), counts, (tuple(float(s) for s in spacing) if spacing else None)


def _default_threads(workers: int | None) -> int:
    return max(2, min(16, 2 * (workers or os.cpu_count() or 1)))


def _bounded_map(
    pool: cf.Executor, fn: Callable[..., Any], items: Iterable[Any], window: int
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


def scan(
    inputs: Any,
    *,
    ignore_index: int | None = None,
    num_classes: int | None = None,
    label_map: Mapping[int, int] | None = None,
    skip_bad: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Decode every mask once: validate, count classes, and gather shapes and spacings.

    Parameters
    ----------
    inputs : str, Path, list of paths, zarr.Array, or a MaskSource
        Anything :func:`weightmaps.sources.open_source` takes.
    ignore_index : int, optional
        Label left out of the counts (and allowed beyond ``num_classes``).
    num_classes : int, optional
        Labels must lie in ``[0, num_classes)`` (the ignore label excepted).
    label_map : dict, optional
        Applied by the source when decoding, e.g. ``{255: 1}`` for 0/255 binary masks.
    skip_bad : bool
        Drop bad samples (listed in ``ScanResult.bad``) instead of raising.
    threads : int, optional
        Decoding threads (default: twice the CPU count, at most 16).
    progress : callable, optional
        ``progress("scan", done, total)``, called from the calling thread.

    Raises
    ------
    BadInputError
        When any sample is bad and ``skip_bad`` is false; it lists every one.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> masks = zarr.create_array(zarr.storage.MemoryStore(), shape=(3, 4, 4), dtype="uint8")
    >>> masks[:] = np.broadcast_to(np.eye(4, dtype=np.uint8), (3, 4, 4))
    >>> scan(masks).counts
    {0: 36, 1: 12}
    """
    start = time.perf_counter()
    source = _open(inputs, label_map)
    n = len(source)
    if n == 0:
        raise WeightmapsError(f"no masks found in {source.description}")
    threads = threads or _default_threads(None)
    results: dict[int, tuple[tuple[int, ...], dict[int, int], tuple[float, ...] | None]] = {}
    problems: dict[int, str] = {}
    if progress:
        progress("scan", 0, n)
    with cf.ThreadPoolExecutor(threads, thread_name_prefix="weightmaps-scan") as pool:
        scan_one = _ScanOne(source, num_classes, ignore_index)
        for done, (i, future) in enumerate(_bounded_map(pool, scan_one, range(n), threads * _SCAN_WINDOW_PER_THREAD), 1):
            try:
                results[i] = future.result()
            except WeightmapsError as exc:
                problems[i] = _without_path(str(exc), source.samples[i].path)
            if progress:
                progress("scan", done, n)
    _check_dimensions(results, problems)
    bad = tuple(
        BadSample(source.samples[i].id, source.samples[i].path, problems[i]) for i in sorted(problems)
    )
    if bad and not skip_bad:
        raise BadInputError(bad, n)
    for b in bad:
        log.warning("skipping bad input %s", b)
    good = [i for i in range(n) if i not in problems]
    if not good:
        raise WeightmapsError(f"all {n} masks in {source.description} are bad")
    counts: dict[int, int] = {}
    for i in good:
        for label, count in results[i][1].items():
            counts[label] = counts.get(label, 0) + count
    return ScanResult(
        source=source,
        indices=tuple(good),
        ids=tuple(source.samples[i].id for i in good),
        shapes=tuple(results[i][0] for i in good),
        spacings=tuple(results[i][2] for i in good),
        counts=dict(sorted(counts.items())),
        bad=bad,
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class _ScanOne:
    source: Any
    num_classes: int | None
    ignore_index: int | None

    def __call__(self, i: int) -> tuple[tuple[int, ...], dict[int, int], tuple[float, ...] | None]:
        return _scan_one(self.source, i, self.num_classes, self.ignore_index)


def _without_path(message: str, path: str | None) -> str:
    # The report names the file once; drop a leading "path: " the reader already put there.
    if path and message.startswith(f"{path}: "):
        return message[len(path) + 2:]
    return message


def _check_dimensions(results: dict[int, Any], problems: dict[int, str]) -> None:
    # One store holds one dimensionality: the most common one wins (ties: the first sample's),
    # every sample of the other is an offender.
    ndims = collections.Counter(len(shape) for shape, _, _ in results.values())
    if len(ndims) < 2:
        return
    first = len(results[min(results)][0])
    majority = max(ndims, key=lambda d: (ndims[d], d == first))
    for i, (shape, _, _) in list(results.items()):
        if len(shape) != majority:
            problems[i] = (
                f"{len(shape)}-D mask (shape {shape}) in a dataset of {majority}-D masks "
                f"({ndims[majority]} of {sum(ndims.values())}); one store holds one dimensionality"
            )
            del results[i]


def _open(inputs: Any, label_map: Mapping[int, int] | None) -> Any:
    from weightmaps import sources

    if isinstance(inputs, sources.MaskSource):
        if label_map:
            raise WeightmapsError("label_map applies when opening inputs; pass it to open_source instead")
        return inputs
    return sources.open_source(inputs, label_map=dict(label_map) if label_map else None)


# --- 2. class weights --------------------------------------------------------------------------


def resolve_class_weights(
    spec: str | os.PathLike[str] | Mapping[Any, Any] | None,
    counts: Mapping[int, int],
    *,
    scheme_params: Mapping[str, float] | None = None,
    class_weights_from: str | os.PathLike[str] | None = None,
) -> tuple[dict[int, float], dict[str, Any]]:
    """The class weights for a run, and a JSON-ready record of where they came from.

    ``spec`` is a scheme name (see :data:`weightmaps.classweights.SCHEMES`), a path to a JSON
    file ``{label: weight}``, or a mapping. ``class_weights_from`` (another store's path) takes
    the weights of that store, e.g. the training set's for a validation set; it replaces the
    default scheme but conflicts with any other ``spec``. Every label in ``counts`` must have
    a weight.

    Examples
    --------
    >>> resolve_class_weights("balanced", {0: 90, 1: 10})[0]
    {0: 0.5555555555555556, 1: 5.0}
    >>> resolve_class_weights({0: 1, 1: 3}, {0: 90, 1: 10})
    ({0: 1.0, 1: 3.0}, {'source': 'explicit'})
    """
    if class_weights_from is not None:
        if spec not in (None, "balanced"):
            raise WeightmapsError(
                f"give class weights either as {spec!r} or from the store {str(class_weights_from)!r}, not both"
            )
        from weightmaps.store import open_store

        weights = {int(k): float(v) for k, v in open_store(class_weights_from).class_weights.items()}
        record: dict[str, Any] = {"source": "store", "path": str(class_weights_from)}
    elif spec is None or (isinstance(spec, str) and spec in SCHEMES):
        scheme = spec or "balanced"
        params = dict(scheme_params or {})
        weights = scheme_weights(counts, scheme, **params)
        record = {"source": "scheme", "scheme": scheme, "scheme_params": params}
    elif isinstance(spec, Mapping):
        weights = scheme_weights(counts, spec)
        record = {"source": "explicit"}
    else:
        path = Path(spec)
        if not path.is_file():
            raise WeightmapsError(
                f"class weights {str(spec)!r} are neither a scheme ({', '.join(SCHEMES)}) nor a JSON file"
            )
        try:
            loaded = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightmapsError(f"{path}: cannot read class weights JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise WeightmapsError(f"{path}: class weights JSON must be an object {{label: weight}}")
        try:
            weights = scheme_weights(counts, loaded)
        except WeightmapsError as exc:
            raise WeightmapsError(f"{path}: {exc}") from None
        record = {"source": "file", "path": str(path)}
    if scheme_params and record["source"] != "scheme":
        raise WeightmapsError("scheme_params apply to a class-weight scheme only")
    missing = sorted(set(counts) - set(weights))
    if missing:
        where = record.get("path", "the given mapping")
        raise WeightmapsError(f"class weights from {where} have no weight for label(s) {missing} found in the masks")
    return weights, record


# --- 4. compute one shard ----------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSettings:
    """Everything :func:`run_shard` needs besides the task, the source and the writer (picklable).

    ``source_indices`` maps a store sample index to its position in the source (None: the
    same); it differs when bad samples were skipped.
    """

    sigma: float
    class_weights: Mapping[int, float]
    spacing: tuple[float, ...] | None = None
    ignore_index: int | None = None
    connectivity: int = 1
    dtype: str = "float32"
    device: str | Backend = "cpu"
    batch_size: int | None = None
    source_indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ShardTimes:
    n: int
    decode: float
    compute: float
    write: float


def decode_shard(task: Any, source: Any, settings: ShardSettings) -> tuple[np.ndarray, list[str]]:
    """The shard's masks stacked ``(len(task), *shape)`` and their digests."""
    from weightmaps.sources import mask_digest

    masks = []
    digests = []
    for index in task.sample_indices:
        i = settings.source_indices[index] if settings.source_indices is not None else index
        labels = source.read(i)
        if tuple(labels.shape) != tuple(task.shape):
            raise WeightmapsError(
                f"{source.describe(i)}: shape {tuple(labels.shape)} differs from {tuple(task.shape)} "
                "seen by the scan; did the input change during the run?"
            )
        masks.append(labels)
        digests.append(mask_digest(labels))
    return np.stack(masks), digests


def compute_maps(masks: np.ndarray, settings: ShardSettings, backend: Backend | None = None) -> np.ndarray:
    """Weight maps of a stack of same-shaped masks, in batches of ``settings.batch_size``."""
    from weightmaps import weight_map

    backend = backend or get_backend(settings.device)
    n = len(masks)
    batch = settings.batch_size or _default_batch_size(backend, masks.shape[1:])
    out = np.empty(masks.shape, dtype=settings.dtype)
    for start in range(0, n, batch):
        maps = weight_map(
            masks[start:start + batch],
            sigma=settings.sigma,
            class_weights=settings.class_weights,
            spacing=settings.spacing,
            ignore_index=settings.ignore_index,
            connectivity=settings.connectivity,
            dtype=settings.dtype,
            device=backend,
            batch=True,
        )
        out[start:start + batch] = to_numpy(maps)
    return out


def run_shard(task: Any, source: Any, writer: Any, settings: ShardSettings) -> ShardTimes:
    """Decode, compute and write one shard: the unit of work on every path (processes, GPU, Dask).

    Exactly one call writes a given shard (its marker is written last, by the writer), so a
    killed run loses at most the shards in flight.
    """
    t0 = time.perf_counter()
    masks, digests = decode_shard(task, source, settings)
    t1 = time.perf_counter()
    maps = compute_maps(masks, settings)
    t2 = time.perf_counter()
    writer.write_shard(task, maps, digests)
    t3 = time.perf_counter()
    return ShardTimes(len(digests), t1 - t0, t2 - t1, t3 - t2)


# Worker-process state, set once per process by the pool initializer, so that each task pickles
# only its ShardTask (the source and the index map can be large).
_WORKER_STATE: tuple[Any, Any, ShardSettings] | None = None


def _init_worker(source: Any, writer: Any, settings: ShardSettings, driver: int) -> None:
    global _WORKER_STATE
    _WORKER_STATE = (source, writer, settings)
    # One worker process per core already: zarr's own encode thread pool (one thread per core by
    # default) would only oversubscribe them (measured: a 64-map shard writes 25% faster).
    import zarr

    zarr.config.set({"threading.max_workers": 1})
    # If the driver is SIGKILLed, nothing tells its workers: the forkserver stays up while they
    # do, and they hold both ends of their task queue. Exit on our own, so that no orphan idles
    # forever or is still writing a shard while a resumed run writes the same shard.
    threading.Thread(target=_exit_without_driver, args=(driver,), daemon=True, name="weightmaps-driver-watch").start()


def _exit_without_driver(driver: int) -> None:
    while True:
        time.sleep(0.2)
        try:
            os.kill(driver, 0)  # signal 0: only checks that the process exists
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid was reused by someone else's process
            os._exit(1)


def _run_shard_in_worker(task: Any) -> ShardTimes:
    assert _WORKER_STATE is not None, "worker not initialised"
    return run_shard(task, *_WORKER_STATE)


def _mp_context() -> multiprocessing.context.BaseContext:
    # zarr-python runs an asyncio loop on a background thread: a fork()ed child would inherit
    # its locks but not the thread, and hang. forkserver forks from a clean server process
    # (which imports weightmaps once), so workers start in milliseconds and never see that loop.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["weightmaps.pipeline"])
        return ctx
    return multiprocessing.get_context("spawn")


def _start_worker_server() -> None:
    """Start the forkserver now: its interpreter start and imports then overlap the scan."""
    if _mp_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _run_processes(
    tasks: Sequence[Any], source: Any, writer: Any, settings: ShardSettings, workers: int,
    on_done: Callable[[ShardTimes], None],
) -> None:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_done(run_shard(task, source, writer, settings))
        return
    workers = min(workers, len(tasks))
    with cf.ProcessPoolExecutor(
        workers, mp_context=_mp_context(), initializer=_init_worker,
        initargs=(source, writer, settings, os.getpid()),
    ) as pool:
        try:
            for _, future in _bounded_map(pool, _run_shard_in_worker, tasks, _IN_FLIGHT_PER_WORKER * workers):
                on_done(future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _run_threads(
    tasks: Sequence[Any], source: Any, writer: Any, settings: ShardSettings, backend: Backend,
    threads: int, on_done: Callable[[ShardTimes], None],
) -> None:
    """Decode on a thread pool, compute here (one device, one stream of work), write on threads.

    At most ``2 * threads`` shards are decoded ahead and ``threads`` written behind, so memory
    stays bounded by about ``3 * threads + 1`` shards. Each shard is written by one thread.
    """
    ahead = max(1, 2 * threads)
    decoded: collections.deque[tuple[Any, cf.Future[Any], float]] = collections.deque()
    writes: collections.deque[tuple[cf.Future[Any], ShardTimes]] = collections.deque()

    def timed_decode(task: Any) -> tuple[np.ndarray, list[str], float]:
        start = time.perf_counter()
        masks, digests = decode_shard(task, source, settings)
        return masks, digests, time.perf_counter() - start

    def timed_write(task: Any, maps: np.ndarray, digests: list[str]) -> float:
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
                maps = compute_maps(masks, settings, backend)
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
        self, tasks: Sequence[Any], source: Any, writer: Any, settings: ShardSettings,
        on_done: Callable[[ShardTimes], None] | None = None,
    ) -> Any: ...


# --- the job -----------------------------------------------------------------------------------


def _resolve_spacing(spacing: Any, result: ScanResult) -> tuple[float, ...] | None:
    if spacing is not None:
        return check_spacing(spacing, result.ndim)
    found = collections.Counter(result.spacings)
    if len(found) == 1:
        return next(iter(found))
    examples = ", ".join(
        f"{sid}: {sp}" for sid, sp in zip(result.ids, result.spacings, strict=True) if sp != result.spacings[0]
    )
    raise WeightmapsError(
        f"the inputs' header spacings differ ({len(found)} distinct; e.g. {result.ids[0]}: {result.spacings[0]}, "
        f"{examples[:300]}); per-sample spacing is not supported in one store: pass spacing= (--spacing) "
        "or split the dataset by spacing"
    )


def _default_batch_size(backend: Backend, shape: tuple[int, ...]) -> int:
    if backend.name == "cuda":
        return max(1, _GPU_BATCH_PIXELS // math.prod(shape))
    # On the CPU a batch is a loop over samples anyway; one mask at a time keeps every temporary
    # in cache instead of page-faulting fresh shard-sized arrays (measured: 2.7x faster per shard).
    return 1


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def compute(
    inputs: Any,
    out: str | os.PathLike[str],
    *,
    sigma: float,
    class_weights: str | os.PathLike[str] | Mapping[Any, Any] = "balanced",
    class_weights_from: str | os.PathLike[str] | None = None,
    scheme_params: Mapping[str, float] | None = None,
    ignore_index: int | None = None,
    spacing: Sequence[float] | float | None = None,
    connectivity: int = 1,
    dtype: str = "float32",
    device: str | Backend = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    num_classes: int | None = None,
    label_map: Mapping[int, int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    skip_bad: bool = False,
    samples_per_shard: int | None = None,
    parallel: Literal["auto", "processes", "threads"] = "auto",
    executor: ShardExecutor | None = None,
    progress: Progress | None = None,
) -> ComputeResult:
    """Compute the weight map of every mask of a dataset into a sharded zarr v3 store.

    ``w(x) = φ_c(x) · (1 − exp(−d(x)² / (2σ²)))`` per pixel, as :func:`weightmaps.weight_map`,
    for every mask; the store's maps equal ``weight_map`` on each mask, whatever ``device``
    (up to float rounding between the ``"cpu"`` and ``"scipy"`` distance transforms),
    ``batch_size``, ``workers`` or how often the run was killed and resumed.

    The dataset is decoded twice: once by the scan (validation, class counts, shapes) and once
    by the compute pass. Memory is bounded: on the CPU at most ``2 × workers`` shards are in
    flight (each about 16 MiB of maps plus its masks), on the GPU at most about
    ``3 × threads + 1`` shards.

    Parameters
    ----------
    inputs : str, Path, list of paths, zarr.Array or MaskSource
        A directory (recursive), a glob, a text file listing paths, a zarr array of masks, or
        a list of paths (see :func:`weightmaps.sources.open_source`).
    out : path
        The store to write (a directory).
    sigma : float
        Width of the edge uncertainty, in spacing units.
    class_weights : str, path or mapping
        A scheme (``"balanced"``, ``"median"``, ``"log"``, ``"effective"``, ``"none"``)
        over the dataset's class counts, a JSON file ``{label: weight}``, or a mapping.
    class_weights_from : path, optional
        Another store whose class weights to reuse (e.g. the training set's).
    scheme_params : mapping, optional
        Parameters of the scheme (``c`` for ``"log"``, ``beta`` for ``"effective"``).
    ignore_index : int, optional
        Label that gets weight 0 and is left out of the class counts.
    spacing : sequence of float, optional
        Pixel spacing per array axis. Default: the NIfTI header spacing when every sample has
        the same one, else 1. Different header spacings are an error.
    connectivity : int
        Neighbourhood defining label edges (1: faces).
    dtype : {"float32", "float16"}
        dtype of the stored maps.
    device : {"auto", "cuda", "cpu", "scipy"} or Backend
    batch_size : int, optional
        Masks per engine call (default: a whole shard on the CPU, about 16 M pixels on a GPU).
    workers : int, optional
        CPU processes (default: the CPU count; 1 runs in this process), or on the GPU path the
        decode and write threads (default 4). Results do not depend on it.
    num_classes : int, optional
        Labels must lie in ``[0, num_classes)`` (the ignore label excepted).
    label_map : mapping, optional
        Labels replaced when decoding, e.g. ``{255: 1}`` for 0/255 binary masks.
    resume : bool
        Complete an interrupted run; refused when the parameters or the inputs changed.
    overwrite : bool
        Replace an existing store. Without ``resume`` or ``overwrite`` an existing store is an
        error.
    dry_run : bool
        Scan and report the plan (``ComputeResult.plan``); write nothing.
    skip_bad : bool
        Record bad inputs in the store's report and go on, instead of raising
        :class:`BadInputError`.
    samples_per_shard : int, optional
        Samples per shard (default: about 16 MiB of maps per shard, the store's choice).
    parallel : {"auto", "processes", "threads"}
        ``"auto"``: a process pool on the CPU, threads around the device on the GPU. Forcing
        ``"threads"`` on the CPU runs the GPU path with the CPU backend (used by the tests).
    executor : ShardExecutor, optional
        Runs the scan and the shards elsewhere, e.g. :class:`weightmaps.distributed.DaskExecutor`
        on a Dask cluster; ``parallel`` and ``workers`` then do not apply.
    progress : callable, optional
        ``progress(stage, done, total)`` with stage ``"scan"`` or ``"compute"`` (masks),
        called from the calling thread.

    Returns
    -------
    ComputeResult

    Raises
    ------
    BadInputError
        Listing every bad input (unless ``skip_bad``).
    WeightmapsError
        Bad parameters, an existing store, a resume whose parameters or inputs changed.

    Examples
    --------
    >>> import tempfile
    >>> from weightmaps.sample_data import write_dataset
    >>> from weightmaps.store import open_store
    >>> root = write_dataset(tempfile.mkdtemp(), n=4, shape=(32, 32), with_images=False)
    >>> result = compute(root / "masks", root / "w.zarr", sigma=2.0, device="cpu", workers=1)
    >>> result.n_samples, result.n_bad
    (4, 0)
    >>> store = open_store(root / "w.zarr")
    >>> store.complete, store["sample_00000"].shape
    (True, (32, 32))
    """
    t_start = time.perf_counter()
    out_path = Path(out)
    if resume and overwrite:
        raise WeightmapsError("resume and overwrite exclude each other: resume completes a store, overwrite replaces it")
    if out_path.exists() and not (resume or overwrite):
        raise WeightmapsError(f"store {str(out_path)!r} exists: resume it or overwrite it (--resume / --overwrite)")
    if dtype not in OUTPUT_DTYPES:
        raise WeightmapsError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    if workers is not None and workers < 1:
        raise WeightmapsError(f"workers must be >= 1, got {workers}")
    if batch_size is not None and batch_size < 1:
        raise WeightmapsError(f"batch_size must be >= 1, got {batch_size}")
    if parallel not in ("auto", "processes", "threads"):
        raise WeightmapsError(f"parallel must be 'auto', 'processes' or 'threads', got {parallel!r}")
    sigma = check_sigma(sigma)
    backend = get_backend(device)
    use_threads = parallel == "threads" or (parallel == "auto" and backend.name == "cuda")
    if executor is None and not use_threads and (workers or os.cpu_count() or 1) > 1 and not dry_run:
        _start_worker_server()

    # 1. scan
    scan_fn = executor.scan if executor is not None else scan
    scanned = scan_fn(
        inputs, ignore_index=ignore_index, num_classes=num_classes, label_map=label_map,
        skip_bad=skip_bad, threads=_default_threads(workers), progress=progress,
    )
    source = scanned.source
    spacing_used = _resolve_spacing(spacing, scanned)
    connectivity = check_connectivity(connectivity, scanned.ndim)  # before any store is touched
    log.info(
        "scanned %d masks (%d bad) in %.2f s: %d shape group(s), classes %s",
        len(source), len(scanned.bad), scanned.seconds, len(scanned.groups()), list(scanned.counts),
    )

    # 2. class weights
    weights, weights_record = resolve_class_weights(
        class_weights if not isinstance(class_weights, os.PathLike) else str(class_weights),
        scanned.counts, scheme_params=scheme_params, class_weights_from=class_weights_from,
    )
    params = _jsonable({
        "sigma": sigma,
        "spacing": list(spacing_used) if spacing_used is not None else None,
        "connectivity": int(connectivity),
        "ignore_index": ignore_index,
        "dtype": dtype,
        "class_weights": {**weights_record, "values": {str(k): v for k, v in weights.items()}},
        "label_map": {str(k): int(v) for k, v in label_map.items()} if label_map else None,
        "num_classes": num_classes,
        "skip_bad": bool(skip_bad),
    })
    fingerprint = source.fingerprint()
    bad_report = [b.as_dict() for b in scanned.bad]

    # 3. store
    from weightmaps import store as store_module

    if dry_run:
        plan = _plan(scanned, dtype, samples_per_shard, out_path, weights, spacing_used)
        total = time.perf_counter() - t_start
        return ComputeResult(
            store=str(out_path), n_samples=len(scanned.ids), n_bad=len(scanned.bad), n_computed=0,
            class_weights=weights, seconds={"scan": scanned.seconds, "compute": 0.0, "write": 0.0, "total": total},
            busy_seconds={"decode": 0.0, "compute": 0.0, "write": 0.0}, masks_per_second=0.0,
            bad=scanned.bad, plan=plan, spacing=spacing_used, device=backend.name,
        )
    store_args = dict(ids=list(scanned.ids), shapes=list(scanned.shapes), dtype=dtype, params=params, fingerprint=fingerprint)
    if resume and out_path.exists():
        writer = store_module.resume_store(out_path, **store_args)
        log.info("resuming %s", out_path)
    else:
        writer = store_module.create_store(
            out_path, **store_args, class_counts=scanned.counts, class_weights=weights,
            overwrite=overwrite, samples_per_shard=samples_per_shard,
        )
    tasks = list(writer.pending())
    n_total = len(scanned.ids)
    n_pending = sum(len(t.sample_indices) for t in tasks)

    # 4. compute
    t_compute = time.perf_counter()
    settings = ShardSettings(
        sigma=sigma, class_weights=weights, spacing=spacing_used, ignore_index=ignore_index,
        connectivity=int(connectivity), dtype=dtype, device=backend.name, batch_size=batch_size,
        source_indices=None if len(scanned.indices) == len(source) else scanned.indices,
    )
    busy = {"decode": 0.0, "compute": 0.0, "write": 0.0}
    done = n_total - n_pending
    if progress:
        progress("compute", done, n_total)

    def on_done(times: ShardTimes) -> None:
        nonlocal done
        done += times.n
        busy["decode"] += times.decode
        busy["compute"] += times.compute
        busy["write"] += times.write
        if progress:
            progress("compute", done, n_total)

    log.info(
        "computing %d of %d masks in %d shard(s) on %s (%s)", n_pending, n_total, len(tasks), backend.name,
        type(executor).__name__ if executor is not None
        else "threads" if use_threads else f"{workers or os.cpu_count()} process(es)",
    )
    if executor is not None:
        executor.run_shards(tasks, source, writer, settings, on_done)
    elif use_threads:
        _run_threads(tasks, source, writer, settings, backend, workers or 4, on_done)
    else:
        _run_processes(tasks, source, writer, settings, workers or os.cpu_count() or 1, on_done)
    compute_seconds = time.perf_counter() - t_compute

    # 5. finalize
    t_write = time.perf_counter()
    if not tasks and store_module.open_store(out_path).complete:
        log.info("%s is complete already: nothing to do", out_path)
    else:
        _finalize(writer, bad_report, n_total, n_pending, backend.name, scanned.seconds, compute_seconds, busy)
    write_seconds = time.perf_counter() - t_write
    total = time.perf_counter() - t_start
    rate = n_pending / compute_seconds if compute_seconds > 0 and n_pending else 0.0
    seconds = {"scan": scanned.seconds, "compute": compute_seconds, "write": write_seconds, "total": total}
    log.info("wrote %d masks to %s in %.2f s (%.1f masks/s)", n_pending, out_path, total, rate)
    return ComputeResult(
        store=str(out_path), n_samples=n_total, n_bad=len(scanned.bad), n_computed=n_pending,
        class_weights=weights, seconds=seconds, busy_seconds=busy, masks_per_second=rate,
        bad=scanned.bad, spacing=spacing_used, device=backend.name,
    )


def _finalize(
    writer: Any, bad: list[dict[str, Any]], n_total: int, n_computed: int, device: str,
    scan_seconds: float, compute_seconds: float, busy: dict[str, float],
) -> None:
    # The report describes the store; only "last_run" (timings of the run that finished it)
    # differs between a straight run and a killed-and-resumed one.
    writer.finalize({
        "bad": bad, "n_written": n_total, "n_bad": len(bad),
        "last_run": {
            "n_computed": n_computed, "device": device,
            "seconds": {"scan": scan_seconds, "compute": compute_seconds}, "busy_seconds": busy,
            "masks_per_second": n_computed / compute_seconds if compute_seconds > 0 else 0.0,
        },
    })


def _plan(
    scanned: ScanResult, dtype: str, samples_per_shard: int | None, out: Path,
    weights: dict[int, float], spacing: tuple[float, ...] | None,
) -> dict[str, Any]:
    # The store's own shard plan (store._plan), so the dry run reports what a run would write.
    from weightmaps.store import _plan as store_plan

    itemsize = np.dtype(dtype).itemsize
    groups = [
        {
            "shape": list(g.shape), "n_samples": len(g.positions), "samples_per_shard": g.samples_per_shard,
            "n_shards": g.n_shards, "bytes": len(g.positions) * math.prod(g.shape) * itemsize,
        }
        for g in store_plan(scanned.shapes, dtype, samples_per_shard)
    ]
    return {
        "store": str(out),
        "exists": out.exists(),
        "n_samples": len(scanned.ids),
        "n_bad": len(scanned.bad),
        "bad": [b.as_dict() for b in scanned.bad],
        "groups": groups,
        "n_shards": sum(g["n_shards"] for g in groups),
        "estimated_bytes": sum(g["bytes"] for g in groups),
        "class_counts": scanned.counts,
        "class_weights": weights,
        "spacing": list(spacing) if spacing is not None else None,
    }
