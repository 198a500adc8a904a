"""The scan and the class weights: what the pipeline learns about a dataset before writing.

:func:`scan` decodes every mask once on a bounded thread pool: unreadable or invalid files, mixed
2-D/3-D masks and labels outside ``[0, num_classes)`` are collected (all of them, then one
:class:`BadInputError` listing each), and the class pixel counts, per-sample shapes and header
spacings are gathered in the same pass. :func:`resolve_class_weights` turns the counts (or a file,
a mapping, another store) into the class weights of a run.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightmaps._concurrency import bounded_map, default_threads, exit_with_driver, process_context
from weightmaps.classweights import SCHEMES, add_image_pixels, class_weights as scheme_weights, count_labels
from weightmaps.errors import BadInputError, WeightmapsError

__all__ = ["BadSample", "ScanResult", "resolve_class_weights", "scan"]

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

ScanOutcome = tuple[tuple[int, ...], dict[int, int], tuple[float, ...] | None]


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


@dataclass(frozen=True)
class ScanResult:
    """What the scan pass learnt about a dataset.

    ``indices`` are the source positions of the good samples, in id order; ``ids``, ``shapes``
    and ``spacings`` are aligned with them. ``counts`` sums :func:`~weightmaps.count_labels`
    over the good samples (ignore label excluded); ``image_pixels`` is, per class, the pixels of
    the good samples in which it occurs (see :func:`~weightmaps.classweights.class_image_pixels`).
    """

    source: Any
    indices: tuple[int, ...]
    ids: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    spacings: tuple[tuple[float, ...] | None, ...]
    counts: dict[int, int]
    bad: tuple[BadSample, ...]
    seconds: float
    image_pixels: dict[int, int] = field(default_factory=dict)

    @property
    def ndim(self) -> int | None:
        return len(self.shapes[0]) if self.shapes else None

    def groups(self) -> dict[tuple[int, ...], int]:
        """Number of samples of each map shape, in order of first appearance."""
        return dict(collections.Counter(self.shapes))


def scan_one(
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


def scan(
    inputs: Any,
    *,
    ignore_index: int | None = None,
    num_classes: int | None = None,
    label_map: Mapping[int, int] | None = None,
    skip_bad: bool = False,
    threads: int | None = None,
    processes: int = 0,
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
    processes : int
        Decode on this many worker processes instead, in chunks of samples (datasets of at least
        1024 masks; the result is the same). PNG decoding and the class counts hold the GIL long
        enough that threads use two cores poorly.
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
    source = open_inputs(inputs, label_map)
    n = len(source)
    if n == 0:
        raise WeightmapsError(f"no masks found in {source.description}")
    threads = threads or default_threads(None)
    results: dict[int, ScanOutcome] = {}
    problems: dict[int, str] = {}
    if progress:
        progress("scan", 0, n)
    if processes > 1 and n >= _SCAN_PROCESSES_FROM:
        outcomes = _scan_on_processes(source, range(n), num_classes, ignore_index, processes)
    else:
        outcomes = _scan_on_threads(source, range(n), num_classes, ignore_index, threads)
    for done, (i, outcome) in enumerate(outcomes, 1):
        if isinstance(outcome, str):
            problems[i] = outcome
        else:
            results[i] = outcome
        if progress:
            progress("scan", done, n)
    check_dimensions(results, problems)
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
    image_pixels: dict[int, int] = {}
    for i in good:
        for label, count in results[i][1].items():
            counts[label] = counts.get(label, 0) + count
        add_image_pixels(image_pixels, results[i][1])
    return ScanResult(
        source=source,
        indices=tuple(good),
        ids=tuple(source.samples[i].id for i in good),
        shapes=tuple(results[i][0] for i in good),
        spacings=tuple(results[i][2] for i in good),
        counts=dict(sorted(counts.items())),
        bad=bad,
        seconds=time.perf_counter() - start,
        image_pixels=dict(sorted(image_pixels.items())),
    )


def _scan_or_problem(source: Any, i: int, num_classes: int | None, ignore_index: int | None) -> ScanOutcome | str:
    """Sample ``i``'s scan outcome, or the reason it is bad (without its path, which the report names)."""
    try:
        return scan_one(source, i, num_classes, ignore_index)
    except WeightmapsError as exc:
        return without_path(str(exc), source.samples[i].path)


def _scan_on_threads(
    source: Any, indices: range, num_classes: int | None, ignore_index: int | None, threads: int
) -> Iterator[tuple[int, ScanOutcome | str]]:
    with cf.ThreadPoolExecutor(threads, thread_name_prefix="weightmaps-scan") as pool:
        def one(i: int) -> ScanOutcome | str:
            return _scan_or_problem(source, i, num_classes, ignore_index)

        for i, future in bounded_map(pool, one, indices, threads * _SCAN_WINDOW_PER_THREAD):
            yield i, future.result()


# The source of a scan worker process, set once by the pool initializer so that each task
# carries only its sample indices.
_SCAN_SOURCE: Any = None


def _init_scan_worker(source: Any, driver: int) -> None:
    global _SCAN_SOURCE
    _SCAN_SOURCE = source
    exit_with_driver(driver)


def _scan_chunk(indices: range, num_classes: int | None, ignore_index: int | None) -> list[ScanOutcome | str]:
    return [_scan_or_problem(_SCAN_SOURCE, i, num_classes, ignore_index) for i in indices]


def _scan_on_processes(
    source: Any, indices: range, num_classes: int | None, ignore_index: int | None, processes: int
) -> Iterator[tuple[int, ScanOutcome | str]]:
    chunks = [indices[start:start + _SCAN_CHUNK] for start in range(0, len(indices), _SCAN_CHUNK)]
    if not chunks:
        return
    with cf.ProcessPoolExecutor(
        min(processes, len(chunks)), mp_context=process_context(),
        initializer=_init_scan_worker, initargs=(source, os.getpid()),
    ) as pool:
        futures = {pool.submit(_scan_chunk, c, num_classes, ignore_index): c for c in chunks}
        for future in cf.as_completed(futures):
            yield from zip(futures[future], future.result(), strict=True)


def without_path(message: str, path: str | None) -> str:
    # The report names the file once; drop a leading "path: " the reader already put there.
    if path and message.startswith(f"{path}: "):
        return message[len(path) + 2:]
    return message


def check_dimensions(results: dict[int, Any], problems: dict[int, str]) -> None:
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


def open_inputs(inputs: Any, label_map: Mapping[int, int] | None) -> Any:
    from weightmaps import sources

    if isinstance(inputs, sources.MaskSource):
        if label_map:
            raise WeightmapsError("label_map applies when opening inputs; pass it to open_source instead")
        return inputs
    return sources.open_source(inputs, label_map=dict(label_map) if label_map else None)


def resolve_class_weights(
    spec: str | os.PathLike[str] | Mapping[Any, Any] | None,
    counts: Mapping[int, int],
    *,
    scheme_params: Mapping[str, float] | None = None,
    class_weights_from: str | os.PathLike[str] | None = None,
    image_pixels: Mapping[int, int] | None = None,
) -> tuple[dict[int, float], dict[str, Any]]:
    """The class weights for a run, and a JSON-ready record of where they came from.

    ``spec`` is a scheme name (see :data:`weightmaps.classweights.SCHEMES`), a path to a JSON
    file ``{label: weight}``, or a mapping. ``class_weights_from`` (another store's path) takes
    the weights of that store, e.g. the training set's for a validation set; it replaces the
    default scheme but conflicts with any other ``spec``. Every label in ``counts`` must have
    a weight. ``image_pixels`` (from the scan) gives the ``"median"`` scheme Eigen & Fergus's
    per-class frequencies.

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
        extra = {"image_pixels": image_pixels} if scheme == "median" and image_pixels is not None else {}
        weights = scheme_weights(counts, scheme, **params, **extra)
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
