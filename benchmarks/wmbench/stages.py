"""The stage pass: where the time of one device goes, from the pipeline's own calls.

One single-process pass over a dataset makes the calls ``weightmaps.pipeline.compute`` makes, in
its order, with a clock around each stage. The compute stages are timed inside the library, by
the ``timer`` that :func:`weightmaps.shards.compute_maps` and :func:`weightmaps.weight_map` take,
so the pass measures the pipeline's code rather than a copy of it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any


from .runner import Size

if TYPE_CHECKING:
    from weightmaps.backend import Backend

# Stages in pipeline order; "compute" = edges + distance + weights.
STAGES = ("decode", "stats", "digest", "spool", "transfer", "edges", "distance", "weights", "write")
STAGE_NOTES = {
    "decode": "source.read (PNG/TIFF decode + validation), once per mask as in the pipeline: the scan",
    "stats": "count_labels (class pixel counts, scan pass)",
    "digest": "mask_digest (blake2b per mask, for the shard markers; taken by the scan)",
    "spool": "the decoded mask written to the run's spool by the scan and read back by its shard",
    "transfer": "compute_maps: each batch to the device and its maps back into the shard's array "
                "(host<->device on a GPU, a copy on the CPU)",
    "edges": "weight_map's label edges",
    "distance": "weight_map's distance transform (per sample, or batches stacked as 3-D on cuda)",
    "weights": "weight_map's backend.apply_weights",
    "write": "create_store + StoreWriter.write_shard (zstd encode, shard file, marker) + finalize",
}
# Weightmaps' devices, and cuda without stacking a batch of 2-D transforms into one 3-D call.
CPU_STAGE_DEVICES = ("scipy", "cpu")
GPU_STAGE_DEVICES = ("cuda", "cuda-per-sample")
STAGE_DEVICES = CPU_STAGE_DEVICES + GPU_STAGE_DEVICES


class StageTimer:
    """Seconds per stage; on a GPU the device is synchronised before the clock starts and stops.

    ``timer(stage)`` is a context manager, as the library's ``timer`` arguments take.
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self.seconds: dict[str, float] = {}
        self.sync = sync

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        # Without the syncs a GPU stage would be charged to whichever later stage waits for it.
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def stage_backend(device: str) -> Backend:
    """The backend of one of :data:`STAGE_DEVICES`."""
    from weightmaps import get_backend

    if device == "cuda-per-sample":  # measured apart: is stacking worth it on this card?
        import dataclasses

        return dataclasses.replace(get_backend("cuda"), stack_batches=False)
    return get_backend(device)


def stage_breakdown(masks: Path | list[str], store: Path, size: Size, device: str, sigma: float) -> dict[str, Any]:
    """One single-process pass through the pipeline's calls, each stage timed.

    ``weightmaps.pipeline.compute`` scans (``source.read`` + ``count_labels`` + ``mask_digest`` per
    mask, the labels left in the run's spool), creates the store, then per shard reads its masks
    back from the spool, computes the maps (``shards.compute_task_maps``) and writes them
    (``StoreWriter.write_shard``). The same calls are made here in the same order; ``compute_maps``
    times its own transfers and ``weight_map``'s edges, distance and weights through the timer.
    ``masks`` is anything ``open_source`` takes (a folder, or a list of files for the warm-up
    pass); ``device`` one of :data:`STAGE_DEVICES`.
    """
    from weightmaps.classweights import add_counts, class_weights, count_labels
    from weightmaps.params import MapParams
    from weightmaps.readers import mask_digest
    from weightmaps.shards import ShardSettings, compute_task_maps
    from weightmaps.sources import open_source
    from weightmaps.spool import Spool
    from weightmaps.store import create_store

    backend = stage_backend(device)
    timer = StageTimer(backend.synchronize)
    source = open_source(masks if isinstance(masks, list) else str(masks))

    # Scan pass (stats.scan): decode every mask, count its classes, take its digest, spool it.
    counts: dict[int, int] = {}
    shapes = []
    spool = Spool.create(len(source), source.read(0).nbytes, where=str(store.parent))
    assert spool is not None, "no room for a spool next to the store"
    spooled = {}
    try:
        with spool.chunk(0) as chunk:
            for i in range(len(source)):
                with timer("decode"):
                    labels = source.read(i)
                with timer("stats"):
                    add_counts(counts, count_labels(labels))
                with timer("digest"):
                    digest = mask_digest(labels)
                with timer("spool"):
                    spooled[i] = chunk.add(labels, digest)
                shapes.append(labels.shape)
        params = MapParams(sigma=sigma, class_weights=class_weights(dict(sorted(counts.items())), "balanced"),
                           spacing=size.spacing)
        settings = ShardSettings(params=params, device=backend)
        with timer("write"):
            writer = create_store(store, ids=source.ids, shapes=shapes, params=params, class_counts=counts,
                                  fingerprint=source.fingerprint())

        # Compute pass, shard by shard (shards.run_shard).
        for task in writer.tasks():
            with timer("spool"):
                entries = [spooled[i] for i in task.sample_indices]
                masks = [spool.read(e) for e in entries if e is not None]
            assert len(masks) == len(task), "a mask did not come back from the spool"
            maps = compute_task_maps(masks, settings, backend, timer=timer)
            with timer("write"):
                writer.write_shard(task, maps, [e.digest for e in entries if e is not None])
        with timer("write"):
            writer.finalize({"benchmark": "stage breakdown"})
    finally:
        spool.remove()

    seconds = {stage: timer.seconds.get(stage, 0.0) for stage in STAGES}
    total = sum(seconds.values())
    compute = seconds["edges"] + seconds["distance"] + seconds["weights"]
    return {
        "device": backend.name,
        "seconds": seconds,
        "share": {stage: s / total for stage, s in seconds.items()} if total else {},
        "total_s": total,
        "compute_s": compute,
        "distance_share_of_compute": seconds["distance"] / compute if compute else None,
    }


def timed_stages(masks: Path, store: Path, size: Size, device: str, sigma: float,
                 log: Callable[[str], None]) -> tuple[dict[str, Any] | None, str | None]:
    """The stage pass on one device after a one-mask warm-up: (stages, None) or (None, error).

    A failing pass (a device out of memory, a transform it cannot take) costs only its own
    entry: the size's timed runs and the other devices' passes are kept.
    """
    first_mask = [str(min(masks.iterdir()))]
    try:
        # Warm-up on one mask: lazy imports, first-call setup and GPU kernel compiles stay out.
        stage_breakdown(first_mask, store, size, device, sigma)
        shutil.rmtree(store)
        stages = stage_breakdown(masks, store, size, device, sigma)
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc)[:500]}"
        log(f"[{size.key}] stage pass on {device} FAILED: {error}")
        return None, error
    finally:
        shutil.rmtree(store, ignore_errors=True)
    share = stages["distance_share_of_compute"]
    log(f"[{size.key}] stages on {device}: {stages['total_s']:.2f} s single-process, distance "
        f"{'n/a' if share is None else f'{share:.0%}'} of compute")
    return stages, None
