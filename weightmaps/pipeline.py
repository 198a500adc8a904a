"""``compute()``: a dataset of masks in, a sharded zarr store of weight maps out.

The job runs in four stages; this module strings them together, each lives where its name says:

1. **scan** (:func:`weightmaps.stats.scan`): every mask is decoded once on a bounded thread pool; unreadable or
   invalid files, mixed 2-D/3-D masks and labels outside ``[0, num_classes)`` are collected
   (all of them, then one :class:`BadInputError` listing each), and the class pixel counts,
   the per-sample shapes and the header spacings are gathered in the same pass.
2. **class weights** (:func:`weightmaps.classweights.resolve_class_weights`): a scheme over the counts, an explicit
   mapping, a JSON file, or the weights of another store.
3. **store**: :func:`weightmaps.store.create_store` or :func:`weightmaps.store.resume_store`
   (which refuses when the parameters or the inputs changed); nothing is written on a dry run.
4. **compute** (:func:`weightmaps.shards.run_shard`): one shard at a time, each decoded a second time, computed in
   batches and written by exactly one writer. On the CPU, shards run on a process pool; on a GPU,
   in this process, decode, compute and write overlapping on threads.

So the dataset is decoded twice in all (scan + compute): decoding is cheap next to the distance
transform, and keeping nothing between the passes keeps memory bounded whatever the dataset size.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightmaps.concurrency import default_threads, start_process_server
from weightmaps.backend import Backend, get_backend
from weightmaps.classweights import resolve_class_weights
from weightmaps.engine import OUTPUT_DTYPES, class_weight_table
from weightmaps.errors import BadSample, ResumeMismatchError, StoreExistsError, WeightmapsError
from weightmaps.layout import plan_layout, summarize_shapes
from weightmaps.location import Location
from weightmaps.lock import store_lock
from weightmaps.params import UNET_FIELDS, WEIGHT_KINDS, MapParams
from weightmaps.shards import PoolExecutor, ShardExecutor, ShardSettings, ShardTimes
from weightmaps.spool import Spool
from weightmaps.stats import Progress, ScanResult, open_inputs
from weightmaps.worker_pool import WorkerPool
from weightmaps.validation import (
    MAX_SDF_CLASSES,
    check_class_weights_normal,
    check_connectivity,
    check_distances_fit,
    check_distances_representable,
    check_label_options,
    check_sigma,
    check_spacing,
    check_weights_fit,
    check_weights_representable,
)

if TYPE_CHECKING:
    from weightmaps.sources import MaskSource
    from weightmaps.store import StoreWriter

__all__ = ["BadSample", "ComputeResult", "compute"]

log = logging.getLogger("weightmaps")


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
        and ``total``; ``first_shard``: compute seconds until the first shard was written.
    busy_seconds : dict[str, float]
        Seconds spent in ``decode``, ``compute`` and ``write`` summed over all shards (over all
        workers, so they may exceed the wall-clock time).
    masks_per_second : float
        ``n_computed / seconds["compute"]``.
    steady_masks_per_second : float or None
        Compute rate after the first shard (start-up excluded: CUDA context, kernel compiles,
        the decode queue filling); None with a single shard.
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
    steady_masks_per_second: float | None = None


def _check_against_first_mask(source: MaskSource, spacing: Any, connectivity: int) -> np.ndarray | None:
    """Spacing and connectivity against the first mask's dimensionality, before the scan; the
    first mask (None when it cannot be read: that is left to the scan, which lists every bad input)."""
    try:
        first = source.read(0)
    except (WeightmapsError, IndexError):
        return None
    check_connectivity(connectivity, first.ndim)
    if spacing is not None:
        check_spacing(spacing, first.ndim)
    return first


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


def compute(
    inputs: Any,
    out: str | os.PathLike[str],
    *,
    sigma: float | None = None,
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
    float_labels: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    skip_bad: bool = False,
    samples_per_shard: int | None = None,
    max_weight: float | None = None,
    recompute_changed: bool = False,
    kind: str = "bressan",
    w0: float | None = None,
    tolerance: float | None = None,
    instances: str | None = None,
    executor: ShardExecutor | None = None,
    progress: Progress | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ComputeResult:
    """Compute the weight map of every mask of a dataset into a sharded zarr v3 store.

    ``w(x) = φ_c(x) · (1 − exp(−d(x)² / (2σ²)))`` per pixel, as :func:`weightmaps.weight_map`,
    for every mask (``kind="unet"``: the U-Net map of :func:`weightmaps.unet_weights`, with
    φ as its class weights ``w_c``); the store's maps equal that function on each mask, whatever ``device``
    (up to float rounding between the ``"cpu"`` and ``"scipy"`` distance transforms),
    ``batch_size``, ``workers`` or how often the run was killed and resumed.

    The dataset is decoded twice: once by the scan (validation, class counts, shapes) and once
    by the compute pass. Memory is bounded: at most ``2 × workers`` groups of shards are in
    flight (a shard is about 16 MiB of maps plus its masks; a group one shard on the CPU, up to
    four of small masks on a GPU, which computes them as one batch).

    Parameters
    ----------
    inputs : str, Path, list of paths, zarr.Array or MaskSource
        A directory (recursive), a glob, a text file listing paths, a zarr array of masks, or
        a list of paths (see :func:`weightmaps.sources.open_source`).
    out : path
        The store to write (a directory).
    sigma : float
        Width of the edge uncertainty, in spacing units (of the separation term for
        ``kind="unet"``). Required for the weight maps; not taken by ``"distance"`` and ``"sdf"``.
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
        Worker processes (default: the CPU count; 1 runs in this process). They scan, decode,
        compute and write on the CPU and on a GPU alike (there each owns a CUDA context and its
        share of the device's memory; fewer use the device at once where a mask needs more of
        it). Results do not depend on it.
    num_classes : int, optional
        Labels must lie in ``[0, num_classes)`` (the ignore label excepted).
    label_map : mapping, optional
        Labels replaced when decoding, e.g. ``{255: 1}`` for 0/255 binary masks.
    float_labels : bool
        Accept float masks whose values are all whole numbers (NIfTI from imaging tools); any
        other value is a bad input, named.
    resume : bool
        Complete an interrupted run; refused when the parameters changed, or when a mask whose
        map is written changed (the scan compares every mask's digest with the store's).
    recompute_changed : bool
        On resume, compute again exactly the shards whose masks changed instead of refusing.
    kind : {"bressan", "unet", "distance", "sdf"}
        The map: Bressan et al.'s ``φ_c · δ``; Ronneberger et al.'s U-Net separation weights; the
        distance d to the nearest edge (:func:`weightmaps.distance_to_edges`, +inf without an edge),
        from which :class:`~weightmaps.torch.WeightMapDataset` derives ``φ_c · δ`` for any σ and φ
        when loading; or one signed distance map per class (:func:`weightmaps.signed_distance`,
        needs ``num_classes``), for boundary losses. The class counts and weights are recorded
        for every kind.
    w0, tolerance : float, optional
        For ``kind="unet"``: the separation term's height (default 10) and accuracy (default
        1e-4; see :func:`weightmaps.unet_weights`). ``sigma`` is its width.
    instances : {"as-is", "connected"}, optional
        For ``kind="unet"``: the masks are instance masks (default; their class weights count
        background against instance pixels), or semantic masks whose classes' connected
        components (``connectivity``) are the instances and whose labels are the classes.
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
    max_weight : float, optional
        Clip every class weight to at most this (recorded in the store's parameters), e.g. so
        that a very rare class's balanced weight fits float16.
    executor : ShardExecutor, optional
        Runs the scan and the shards elsewhere, e.g. :class:`weightmaps.distributed.DaskExecutor`
        on a Dask cluster; ``workers`` then does not apply.
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
    given = Location.of(out, storage_options)
    out_path = str(Path(out)) if given.is_local else given.url  # as given, for messages
    # Everything below (the lock, creating, overwriting, resuming) acts on the real store, links
    # resolved: a store reached by two names is still one store with one lock (weightmaps.lock).
    out_location = given.canonical() if given.writable else given
    if resume and overwrite:
        raise WeightmapsError("resume and overwrite exclude each other: resume completes a store, overwrite replaces it")
    if not out_location.writable:
        raise WeightmapsError(f"{out_path}: this filesystem is read-only; write the store elsewhere")
    out_location.check_container()  # a missing bucket or refused credentials fail here, before the scan
    out_exists = out_location.exists()
    if out_exists and not (resume or overwrite):
        raise StoreExistsError(
            out_path, f"store {out_path!r} exists: resume it or overwrite it (--resume / --overwrite)"
        )
    if dtype not in OUTPUT_DTYPES:
        raise WeightmapsError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    if workers is not None and workers < 1:
        raise WeightmapsError(f"workers must be >= 1, got {workers}")
    if batch_size is not None and batch_size < 1:
        raise WeightmapsError(f"batch_size must be >= 1, got {batch_size}")
    if sigma is not None:
        sigma = check_sigma(sigma)
    check_label_options(ignore_index, label_map, num_classes)
    map_fields = _map_fields(kind, sigma, w0, tolerance, instances, num_classes)
    if max_weight is not None and not (math.isfinite(max_weight) and max_weight > 0):
        raise WeightmapsError(f"max_weight must be a finite number > 0, got {max_weight!r}")
    if spacing is not None and map_fields["kind"] not in WEIGHT_KINDS:
        # Whether the dtype holds these distances depends on the spacing alone: known before any
        # mask is read (a header spacing is checked after the scan, below).
        per_axis = (spacing,) if np.isscalar(spacing) else tuple(spacing)  # type: ignore[arg-type]
        check_distances_representable(check_spacing(spacing, len(per_axis)), dtype)
    backend = get_backend(device)
    # One pool of worker processes does the scan and the shards, on the CPU and on a GPU alike;
    # the server that forks them starts now, so that its start overlaps the listing of the inputs.
    processes = workers or os.cpu_count() or 1
    if executor is None and processes > 1:
        start_process_server()

    # Every check that can fail on the parameters runs before the scan (which may take an hour)
    # and so before any store exists; those that need the masks' dimensionality read one first.
    source = open_inputs(inputs, label_map, float_labels, storage_options=storage_options)
    first = _check_against_first_mask(source, spacing, connectivity)

    # The run's worker processes (unless an executor brings its own): they scan, then compute,
    # reading back the masks the scan decoded (its spool) instead of decoding them again.
    with contextlib.ExitStack() as stack:
        runner: ShardExecutor = executor if executor is not None else PoolExecutor(
            stack.enter_context(WorkerPool(source, processes)),
            _spool(stack, len(source), first) if processes > 1 and not dry_run else None,
        )
        # 1. scan
        resuming = resume and out_exists
        scanned = runner.scan(
            source, ignore_index=ignore_index, num_classes=num_classes, label_map=None,
            skip_bad=skip_bad, threads=default_threads(workers), progress=progress,
            digests=resuming,  # a resume compares them with the store's: a changed mask must not keep its map
            instance_masks=map_fields.get("instances") == "as-is",
        )
        spacing_used = _resolve_spacing(spacing, scanned)
        connectivity = check_connectivity(connectivity, scanned.ndim)
        log.info(
            "scanned %d masks (%d bad) in %.2f s: %d shape group(s), classes %s",
            len(source), len(scanned.bad), scanned.seconds, len(scanned.groups()), list(scanned.counts),
        )

        # 2. class weights
        weights, weights_record = resolve_class_weights(
            class_weights if not isinstance(class_weights, os.PathLike) else str(class_weights),
            scanned.counts, scheme_params=scheme_params, class_weights_from=class_weights_from,
            storage_options=storage_options,
            image_pixels=scanned.image_pixels,
        )
        if max_weight is not None:
            weights = {label: min(weight, max_weight) for label, weight in weights.items()}
        params = MapParams(
            sigma=sigma, class_weights=weights, class_weights_origin=weights_record, spacing=spacing_used,
            connectivity=connectivity, ignore_index=ignore_index, dtype=dtype,
            label_map=dict(label_map) if label_map else None,
            num_classes=num_classes, skip_bad=skip_bad, max_weight=max_weight, float_labels=float_labels,
            **map_fields,
        )
        # What the maps could come out as: never inf, never all 0 (before any store exists).
        map_shapes = [params.map_shape(s) for s in scanned.shapes]
        present = set(scanned.counts)  # the classes the maps can hold (a class weight of another is never used)
        if params.kind in WEIGHT_KINDS:
            check_weights_fit(params.class_weights, dtype, headroom=params.w0 or 0.0)
            class_weight_table(params.class_weights, params.ignore_index)
        if params.kind == "bressan":  # never all 0, and every weight a normal number of the dtype
            check_weights_representable(params.class_weights, sigma, spacing_used, scanned.shapes, dtype,  # type: ignore[arg-type]
                                        labels=present)
        if params.kind == "unet":  # w_c + s ≥ w_c: normal when w_c is (s is exact to tolerance·w0 anyway)
            check_class_weights_normal({c: w for c, w in params.class_weights.items() if c in present}, dtype)
        if params.kind not in WEIGHT_KINDS:
            check_distances_fit(scanned.shapes, spacing_used, dtype)
            check_distances_representable(spacing_used, dtype)
        if ignore_index is not None and scanned.ignored_pixels == 0:
            log.warning("ignore_index %d occurs in no mask: no pixel is ignored", ignore_index)
        fingerprint = source.fingerprint()
        bad_report = [b.as_dict() for b in scanned.bad]

        # 3. store
        from weightmaps import store as store_module

        if dry_run:
            plan = _plan(scanned, map_shapes, dtype, samples_per_shard, out_path, out_exists, weights, spacing_used)
            total = time.perf_counter() - t_start
            return ComputeResult(
                store=out_path, n_samples=len(scanned.ids), n_bad=len(scanned.bad), n_computed=0,
                class_weights=weights, seconds={"scan": scanned.seconds, "compute": 0.0, "write": 0.0, "total": total},
                busy_seconds={"decode": 0.0, "compute": 0.0, "write": 0.0}, masks_per_second=0.0,
                bad=scanned.bad, plan=plan, spacing=spacing_used, device=backend.name,
            )
        # One run writes a store at a time, from before it is created, overwritten or resumed to the
        # end: a second run on the same output is refused, naming this one (weightmaps.lock).
        with store_lock(out_location):
            if resuming:
                writer = store_module.resume_store(out_location, ids=scanned.ids, shapes=map_shapes, params=params)
                _check_unchanged(writer, scanned, recompute_changed)
                log.info("resuming %s", out_path)
            else:
                writer = store_module.create_store(
                    out_location, ids=scanned.ids, shapes=map_shapes, params=params, fingerprint=fingerprint,
                    class_counts=scanned.counts, overwrite=overwrite, samples_per_shard=samples_per_shard,
                )
            tasks = list(writer.pending())
            n_total = len(scanned.ids)
            n_pending = sum(len(t.sample_indices) for t in tasks)

            # 4. compute
            t_compute = time.perf_counter()
            settings = ShardSettings(
                params=params, device=backend, batch_size=batch_size,
                source_indices=None if len(scanned.indices) == len(source) else scanned.indices,
                spool=runner.spool if isinstance(runner, PoolExecutor) else None, spooled=scanned.spooled or None,
            )
            busy = {"decode": 0.0, "compute": 0.0, "write": 0.0}
            done = n_total - n_pending
            if progress:
                progress("compute", done, n_total)

            # The first shard carries the start-up (CUDA context, kernel compiles, filling the decode
            # queue): the rate after it is the steady one, what a larger dataset would see.
            first_shard: tuple[int, float] | None = None

            def on_done(times: ShardTimes) -> None:
                nonlocal done, first_shard
                done += times.n
                if first_shard is None:
                    first_shard = (times.n, time.perf_counter() - t_compute)
                busy["decode"] += times.decode
                busy["compute"] += times.compute
                busy["write"] += times.write
                if progress:
                    progress("compute", done, n_total)

            log.info(
                "computing %d of %d masks in %d shard(s) on %s (%s)", n_pending, n_total, len(tasks), backend.name,
                type(executor).__name__ if executor is not None else f"{processes} process(es)",
            )
            runner.run_shards(tasks, source, writer, settings, on_done)
            compute_seconds = time.perf_counter() - t_compute

            # 5. finalize
            t_write = time.perf_counter()
            if not tasks and store_module.open_store(out_location).complete:
                log.info("%s is complete already: nothing to do", out_path)
            else:
                _finalize(writer, bad_report, n_total, n_pending, backend.name, scanned.seconds, compute_seconds, busy)
            write_seconds = time.perf_counter() - t_write
            total = time.perf_counter() - t_start
            rate = n_pending / compute_seconds if compute_seconds > 0 and n_pending else 0.0
            steady = None
            if first_shard is not None and n_pending > first_shard[0] and compute_seconds > first_shard[1]:
                steady = (n_pending - first_shard[0]) / (compute_seconds - first_shard[1])
            seconds = {"scan": scanned.seconds, "compute": compute_seconds, "write": write_seconds, "total": total}
            if first_shard is not None:
                seconds["first_shard"] = first_shard[1]
            log.info("wrote %d masks to %s in %.2f s (%.1f masks/s)", n_pending, out_path, total, rate)
            return ComputeResult(
                store=out_path, n_samples=n_total, n_bad=len(scanned.bad), n_computed=n_pending,
                class_weights=weights, seconds=seconds, busy_seconds=busy, masks_per_second=rate,
                bad=scanned.bad, spacing=spacing_used, device=backend.name, steady_masks_per_second=steady,
            )


def _spool(stack: contextlib.ExitStack, n: int, first: np.ndarray | None) -> Spool | None:
    """The run's spool (removed when the run ends), sized by the first mask; None if none fits."""
    spool = Spool.create(n, first.nbytes) if first is not None else None
    if spool is not None:
        stack.callback(spool.remove)
    return spool


def _map_fields(
    kind: str, sigma: float | None, w0: float | None, tolerance: float | None, instances: str | None,
    num_classes: int | None,
) -> dict[str, Any]:
    """The map kind's own fields of MapParams, checked (with their defaults) before the scan."""
    probe = MapParams(sigma=sigma, class_weights={}, kind=kind, w0=w0, tolerance=tolerance, instances=instances,
                      num_classes=num_classes)
    if probe.kind == "sdf" and int(num_classes) > MAX_SDF_CLASSES:  # type: ignore[arg-type]
        raise WeightmapsError(
            f"num_classes (--num-classes) of an sdf map must be <= {MAX_SDF_CLASSES}: a map holds one channel per "
            f"class, num_classes times its mask; got {num_classes}"
        )
    if probe.instances == "as-is" and num_classes is not None:
        raise WeightmapsError(
            "num_classes checks class labels, and instance masks (instances='as-is') hold instance ids; "
            "leave it out, or compute from semantic masks with instances='connected'"
        )
    return {"kind": probe.kind, **({name: getattr(probe, name) for name in UNET_FIELDS} if kind == "unet" else {})}


def _check_unchanged(writer: StoreWriter, scanned: ScanResult, recompute_changed: bool) -> None:
    """The masks behind the written shards are the ones they were computed from, or those shards
    are computed again (``recompute_changed``): a file copied with its size and mtime (cp -p,
    rsync) once kept its stale map through a resume."""
    recorded = writer.recorded_digests()
    changed = {
        sid: i for sid, i, digest in zip(scanned.ids, scanned.indices, scanned.digests, strict=True)
        if sid in recorded and recorded[sid] != digest
    }
    if not changed:
        return
    if not recompute_changed:
        files = [scanned.source.describe(i) for i in changed.values()]
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        raise ResumeMismatchError(str(writer.path), [
            f"the masks of {len(changed)} sample(s) changed since their maps were written: {shown} "
            "(recompute just their shards with recompute_changed=True (--recompute-changed))"
        ])
    positions = {i for i, sid in enumerate(writer.ids) if sid in changed}
    stale = [t for t in writer.tasks() if positions.intersection(t.sample_indices)]
    log.warning("recomputing %d shard(s) whose masks changed: %d sample(s)", len(stale), len(changed))
    writer.reopen(stale)


def _finalize(
    writer: StoreWriter, bad: list[dict[str, Any]], n_total: int, n_computed: int, device: str,
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
    scanned: ScanResult, map_shapes: list[tuple[int, ...]], dtype: str, samples_per_shard: int | None, out: str,
    exists: bool, weights: dict[int, float], spacing: tuple[float, ...] | None,
) -> dict[str, Any]:
    # The store's own layout, so the dry run reports what a run would write.
    layout = plan_layout(map_shapes, dtype, samples_per_shard)
    return {
        "store": out,
        "exists": exists,
        "n_samples": len(scanned.ids),
        "n_bad": len(scanned.bad),
        "bad": [b.as_dict() for b in scanned.bad],
        "shapes": summarize_shapes(scanned.shapes),
        "n_shards": layout.n_shards,
        "estimated_bytes": sum(math.prod(s) for s in map_shapes) * np.dtype(dtype).itemsize,
        "class_counts": scanned.counts,
        "class_weights": weights,
        "spacing": list(spacing) if spacing is not None else None,
    }
