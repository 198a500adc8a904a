"""The scan: what the pipeline learns about a dataset before writing.

:func:`scan` decodes every mask once on a bounded thread pool (or worker processes): unreadable or
invalid files, mixed 2-D/3-D masks and labels outside ``[0, num_classes)`` are collected (all of
them, then one :class:`~weightmaps.errors.BadInputError` listing each), and the class pixel
counts, per-sample shapes and header spacings are gathered in the same pass. The Dask scan
(:mod:`weightmaps.distributed`) merges the same :class:`ScanTally` and ends in the same
:func:`finish_scan`.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from weightmaps.concurrency import Interrupt, bounded_map, default_threads, deferred_interrupt
from weightmaps.classweights import add_counts, add_image_pixels, count_labels
from weightmaps.errors import BadInputError, BadSample, WeightmapsError
from weightmaps.readers import mask_digest
from weightmaps.spool import Spool, SpoolChunk, SpoolEntry
from weightmaps.worker_pool import WorkerPool

if TYPE_CHECKING:
    from weightmaps.sources import MaskSource

__all__ = ["SampleScan", "ScanChecks", "ScanResult", "ScanTally", "finish_scan", "scan", "scan_one"]

log = logging.getLogger("weightmaps")

Progress = Callable[[str, int, int], None]

# Scan futures in flight per scan thread (each result is a shape and a few counts).
_SCAN_WINDOW_PER_THREAD = 4
# With worker processes: samples per task, and the smallest dataset worth a process pool. Below
# that the threads finish while the process server is still starting (measured, 2 cores, 256²:
# 512 masks 0.29 s on threads vs 0.39 s on processes; 2048 masks 0.97 s vs 0.41-0.65 s).
# Counted in masks, not pixels: on an H200's 16-core machine the pool's start (about 1 s) made
# 256 masks of 1024², 8 of 4096² and 32 of 128³ scan 2-9x slower on processes than on threads
# (benchmarks/results/h200-2026-11-26-gpu-day-2 against -1); 2048 of 256² were level.
_SCAN_CHUNK = 32
_SCAN_PROCESSES_FROM = 1024
# With the run's own pool (whose start the shards pay anyway), from this many masks on.
_SCAN_ON_POOL_FROM = 4 * _SCAN_CHUNK



class SampleScan(NamedTuple):
    """What the scan learns from one good sample."""

    shape: tuple[int, ...]
    counts: dict[int, int]  # pixels per label, the ignore label excluded
    spacing: tuple[float, ...] | None  # from the file's header (NIfTI), else None
    ignored: int = 0  # pixels of the ignore label
    digest: str | None = None  # readers.mask_digest, when the scan was asked for digests
    spooled: SpoolEntry | None = None  # where the scan left the decoded labels (a run's spool)


# A sample's scan: what it holds, or the reason it is bad.
ScanOutcome = SampleScan | str


@dataclass(frozen=True)
class ScanChecks:
    """What the scan checks and records of each sample besides its shape and class counts."""

    num_classes: int | None = None  # labels must lie in [0, num_classes), the ignore label excepted
    ignore_index: int | None = None  # left out of the counts (its pixels counted apart)
    digests: bool = False  # record each mask's digest (a resume compares them with the store's)
    # Instance masks: count two classes, background (0) and instance (every other id), as the
    # U-Net map's class weights see them; num_classes does not apply to instance ids.
    instance_masks: bool = False
    # Keep the decoded labels there for the compute pass (chunked scans only: one file a chunk).
    spool: Spool | None = None


@dataclass(frozen=True)
class ScanResult:
    """What the scan pass learnt about a dataset.

    ``indices`` are the source positions of the good samples, in id order; ``ids``, ``shapes``
    and ``spacings`` are aligned with them. ``counts`` sums :func:`~weightmaps.count_labels`
    over the good samples (ignore label excluded); ``image_pixels`` is, per class, the pixels of
    the good samples in which it occurs (see :func:`~weightmaps.classweights.class_image_pixels`).
    """

    source: MaskSource
    indices: tuple[int, ...]
    ids: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    spacings: tuple[tuple[float, ...] | None, ...]
    counts: dict[int, int]
    bad: tuple[BadSample, ...]
    seconds: float
    image_pixels: dict[int, int] = field(default_factory=dict)
    ignored_pixels: int = 0
    digests: tuple[str, ...] = ()  # aligned with ids when the scan recorded digests, else empty
    spooled: dict[int, SpoolEntry] = field(default_factory=dict)  # by source position, good samples

    @property
    def ndim(self) -> int:
        """2 or 3: a scan result holds at least one good sample, and one dimensionality."""
        return len(self.shapes[0])

    def groups(self) -> dict[tuple[int, ...], int]:
        """Number of samples of each map shape, in order of first appearance."""
        return dict(collections.Counter(self.shapes))


@dataclass
class ScanTally:
    """The scan so far, merged chunk by chunk (in process, or from Dask tasks).

    Counts are summed per dimensionality, so that a chunk sends a few numbers, not one dict per
    sample, and the samples of the minority dimensionality (bad, see :func:`check_dimensions`)
    drop out with their bucket.
    """

    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    spacings: dict[int, tuple[float, ...] | None] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)
    counts: dict[int, dict[int, int]] = field(default_factory=dict)  # ndim -> label -> pixels
    image_pixels: dict[int, dict[int, int]] = field(default_factory=dict)  # ndim -> label -> pixels
    ignored: int = 0  # pixels of the ignore label, all samples
    digests: dict[int, str] = field(default_factory=dict)
    spooled: dict[int, SpoolEntry] = field(default_factory=dict)
    n_seen: int = 0

    def add(self, i: int, outcome: ScanOutcome) -> None:
        self.n_seen += 1
        if isinstance(outcome, str):
            self.problems[i] = outcome
            return
        self.shapes[i] = outcome.shape
        self.spacings[i] = outcome.spacing
        self.ignored += outcome.ignored
        if outcome.digest is not None:
            self.digests[i] = outcome.digest
        if outcome.spooled is not None:
            self.spooled[i] = outcome.spooled
        ndim = len(outcome.shape)
        add_counts(self.counts.setdefault(ndim, {}), outcome.counts)
        add_image_pixels(self.image_pixels.setdefault(ndim, {}), outcome.counts)

    def merge(self, other: ScanTally) -> None:
        self.n_seen += other.n_seen
        self.ignored += other.ignored
        self.digests.update(other.digests)
        self.spooled.update(other.spooled)
        self.shapes.update(other.shapes)
        self.spacings.update(other.spacings)
        self.problems.update(other.problems)
        for mine, theirs in ((self.counts, other.counts), (self.image_pixels, other.image_pixels)):
            for ndim, counts in theirs.items():
                add_counts(mine.setdefault(ndim, {}), counts)


def finish_scan(source: MaskSource, tally: ScanTally, *, skip_bad: bool, started: float) -> ScanResult:
    """The end of every scan (in process or on Dask): one dimensionality, bad inputs, the result."""
    n = len(source)
    check_dimensions(tally.shapes, tally.problems)
    # What discovery left out first (a dangling link, a missing list line, two files of one id).
    bad = source.problems + tuple(
        BadSample(source.samples[i].id, source.samples[i].path, tally.problems[i]) for i in sorted(tally.problems)
    )
    if bad and not skip_bad:
        raise BadInputError(bad, n + len(source.problems))
    for b in bad:
        log.warning("skipping bad input %s", b)
    good = [i for i in range(n) if i not in tally.problems]
    if not good:
        raise WeightmapsError(f"all {n} masks in {source.description} are bad")
    ndim = len(tally.shapes[good[0]])
    return ScanResult(
        source=source,
        indices=tuple(good),
        ids=tuple(source.samples[i].id for i in good),
        shapes=tuple(tally.shapes[i] for i in good),
        spacings=tuple(tally.spacings[i] for i in good),
        counts=dict(sorted(tally.counts.get(ndim, {}).items())),
        bad=bad,
        seconds=time.perf_counter() - started,
        image_pixels=dict(sorted(tally.image_pixels.get(ndim, {}).items())),
        ignored_pixels=tally.ignored,
        digests=tuple(tally.digests[i] for i in good) if tally.digests else (),
        spooled={i: tally.spooled[i] for i in good if i in tally.spooled},
    )


def scan_one(source: MaskSource, i: int, checks: ScanChecks, spool: SpoolChunk | None = None) -> SampleScan:
    labels = source.read(i)
    if labels.ndim not in (2, 3):  # the source promises 2-D or 3-D; a cheap second check
        raise WeightmapsError(f"masks must be 2-D or 3-D, got shape {labels.shape}")
    counts = count_labels(labels)
    ignored = counts.pop(int(checks.ignore_index), 0) if checks.ignore_index is not None else 0
    if checks.instance_masks:
        counts = _as_instance_classes(counts)
    if checks.num_classes is not None:
        outside = sorted(label for label in counts if label >= checks.num_classes)
        if outside:
            raise WeightmapsError(
                f"label(s) {outside} >= num_classes={checks.num_classes}"
                + (f" (ignore_index is {checks.ignore_index})" if checks.ignore_index is not None else "")
            )
    spacing = source.spacing(i)
    spooling = spool is not None and checks.spool is not None and checks.spool.holds(i)
    digest = mask_digest(labels) if checks.digests or spooling else None
    return SampleScan(
        tuple(int(s) for s in labels.shape), counts, tuple(float(s) for s in spacing) if spacing else None, ignored,
        digest if checks.digests else None,
        spool.add(labels, digest) if spool is not None and spooling and digest is not None else None,
    )


def _as_instance_classes(counts: dict[int, int]) -> dict[int, int]:
    """Pixels per instance id → pixels of background (0) and of instances (1)."""
    background = counts.pop(0, 0)
    instances = sum(counts.values())
    return {c: n for c, n in ((0, background), (1, instances)) if n}


def scan(
    inputs: Any,
    *,
    ignore_index: int | None = None,
    num_classes: int | None = None,
    label_map: Mapping[int, int] | None = None,
    float_labels: bool = False,
    skip_bad: bool = False,
    threads: int | None = None,
    processes: int = 0,
    progress: Progress | None = None,
    digests: bool = False,
    instance_masks: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    pool: WorkerPool | None = None,
    spool: Spool | None = None,
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
    float_labels : bool
        Accept float masks whose values are all whole numbers.
    skip_bad : bool
        Drop bad samples (listed in ``ScanResult.bad``) instead of raising.
    threads : int, optional
        Decoding threads (default: twice the CPU count, at most 16).
    processes : int
        Decode on this many worker processes instead, in chunks of samples (datasets of at least
        1024 masks; the result is the same). PNG decoding and the class counts hold the GIL long
        enough that threads use two cores poorly.
    progress : callable, optional
        ``progress("scan", done, total)``, called from the calling thread.
    digests : bool
        Record every mask's digest (a resume compares them with the store's).
    instance_masks : bool
        The masks are instance masks: count background (0) and instance (1) pixels, not ids.
    storage_options : dict, optional
        fsspec options where ``inputs`` are URLs (``s3://bucket/masks/``).
    pool : WorkerPool, optional
        The run's worker processes, holding ``inputs`` (a MaskSource): the scan runs on them
        (from a few hundred masks on; their start is the run's anyway) and ``processes`` does
        not apply.
    spool : Spool, optional
        Where a chunked scan leaves each mask it decoded, for the compute pass
        (``ScanResult.spooled``; see :mod:`weightmaps.spool`).

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
    source = open_inputs(inputs, label_map, float_labels, storage_options=storage_options)
    n = len(source)
    if n == 0:
        raise WeightmapsError(f"no masks found in {source.description}")
    threads = threads or default_threads(None)
    if progress:
        progress("scan", 0, n)
    checks = ScanChecks(num_classes, ignore_index, digests, instance_masks, spool)
    tally = ScanTally()
    with contextlib.ExitStack() as stack:
        if pool is None and processes > 1 and n >= _SCAN_PROCESSES_FROM:
            pool = stack.enter_context(WorkerPool(source, processes))
        if pool is not None and pool.source is not source:
            raise WeightmapsError("the worker pool holds another source than the one scanned")
        on_processes = pool is not None and pool.processes > 1 and n >= _SCAN_ON_POOL_FROM
        log.info("scanning %d masks from %s on %s", n, source.description,
                 f"{pool.processes} processes" if pool is not None and on_processes else f"{threads} threads")
        # A Ctrl-C during the scan stops it between waits, never inside the pool's locking.
        interrupt = stack.enter_context(deferred_interrupt())
        if pool is not None and on_processes:
            outcomes = _scan_on_processes(pool, range(n), checks, interrupt)
        else:
            outcomes = _scan_on_threads(source, range(n), checks, threads, interrupt)
        for i, outcome in outcomes:
            tally.add(i, outcome)
            if progress:
                progress("scan", tally.n_seen, n)
    return finish_scan(source, tally, skip_bad=skip_bad, started=start)


def scan_or_problem(source: MaskSource, i: int, checks: ScanChecks, spool: SpoolChunk | None = None) -> ScanOutcome:
    """Sample ``i``'s scan outcome, or the reason it is bad (without its path, which the report names)."""
    try:
        return scan_one(source, i, checks, spool)
    except WeightmapsError as exc:
        return without_path(str(exc), source.samples[i].path)


def _scan_on_threads(
    source: MaskSource, indices: range, checks: ScanChecks, threads: int, interrupt: Interrupt | None = None,
) -> Iterator[tuple[int, ScanOutcome]]:
    with cf.ThreadPoolExecutor(threads, thread_name_prefix="weightmaps-scan") as pool:
        if source.remote:
            # A thread per mask would wait a round trip per mask: a chunk's GETs go out together.
            chunks = [indices[start:start + _SCAN_CHUNK] for start in range(0, len(indices), _SCAN_CHUNK)]
            for chunk, future in bounded_map(pool, functools.partial(_scan_many, source, checks=checks), chunks,
                                             threads * 2, interrupt):
                yield from zip(chunk, future.result(), strict=True)
            return

        def one(i: int) -> ScanOutcome:
            return scan_or_problem(source, i, checks)

        for i, future in bounded_map(pool, one, indices, threads * _SCAN_WINDOW_PER_THREAD, interrupt):
            yield i, future.result()


def _scan_many(source: MaskSource, indices: range, checks: ScanChecks) -> list[ScanOutcome]:
    with contextlib.ExitStack() as stack:
        spool = None
        if checks.spool is not None and len(indices) and checks.spool.holds(indices[0]):
            spool = stack.enter_context(checks.spool.chunk(indices[0]))
        stack.enter_context(source.prefetched(indices))  # remote masks: one round of concurrent GETs for them all
        return [scan_or_problem(source, i, checks, spool) for i in indices]


def _scan_on_processes(
    pool: WorkerPool, indices: range, checks: ScanChecks, interrupt: Interrupt | None = None,
) -> Iterator[tuple[int, ScanOutcome]]:
    chunks = [indices[start:start + _SCAN_CHUNK] for start in range(0, len(indices), _SCAN_CHUNK)]
    # A few chunks per process in flight (each result is a chunk's shapes and counts): an
    # interrupted scan waits for those only, and what has not started never will.
    for chunk, future in bounded_map(pool, functools.partial(_scan_many, checks=checks), chunks,
                                     pool.processes * 2, interrupt):
        yield from zip(chunk, future.result(), strict=True)


def without_path(message: str, path: str | None) -> str:
    # The report names the file once; drop a leading "path: " the reader already put there.
    if path and message.startswith(f"{path}: "):
        return message[len(path) + 2:]
    return message


def check_dimensions(shapes: dict[int, tuple[int, ...]], problems: dict[int, str]) -> None:
    """One store holds one dimensionality: the most common one wins (ties: the first sample's);
    every sample of the other moves from ``shapes`` to ``problems``."""
    ndims = collections.Counter(len(shape) for shape in shapes.values())
    if len(ndims) < 2:
        return
    first = len(shapes[min(shapes)])
    majority = max(ndims, key=lambda d: (ndims[d], d == first))
    for i, shape in list(shapes.items()):
        if len(shape) != majority:
            problems[i] = (
                f"{len(shape)}-D mask (shape {shape}) in a dataset of {majority}-D masks "
                f"({ndims[majority]} of {sum(ndims.values())}); one store holds one dimensionality"
            )
            del shapes[i]


def open_inputs(
    inputs: Any, label_map: Mapping[int, int] | None, float_labels: bool = False, *,
    storage_options: Mapping[str, Any] | None = None,
) -> MaskSource:
    from weightmaps import sources

    if isinstance(inputs, sources.MaskSource):
        if label_map or float_labels:
            raise WeightmapsError("label_map and float_labels apply when opening inputs; pass them to open_source instead")
        return inputs
    return sources.open_source(
        inputs, label_map=dict(label_map) if label_map else None, float_labels=float_labels, on_problems="collect",
        storage_options=storage_options,
    )
