""":func:`compute_on_dask`: :func:`weightmaps.compute` with its scan and its shards on a Dask cluster.

The seam between the pipeline and Dask is :class:`DaskExecutor`, the ``executor=`` that
:func:`weightmaps.pipeline.compute` delegates its scan and its shards to; everything else (the
store, the lock, resume, the report) stays the pipeline's. Cut apart from the passes
(:mod:`weightmaps.distributed.jobs`) because this is the only module here that needs the pipeline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightmaps.backend import get_backend
from weightmaps.distributed.cluster import open_client
from weightmaps.distributed.jobs import run_shards_on_dask, scan_on_dask
from weightmaps.layout import ShardTask
from weightmaps.pipeline import ComputeResult, compute
from weightmaps.shards import ShardSettings, ShardTimes
from weightmaps.stats import ScanResult

if TYPE_CHECKING:
    from weightmaps.sources import MaskSource
    from weightmaps.store import StoreWriter

log = logging.getLogger("weightmaps")


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
    return get_backend(device).name
