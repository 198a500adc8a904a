"""Reaching a Dask cluster: the optional import, :func:`open_client` and what it logs.

Everything about *which* cluster runs the work (a local one started here, a scheduler's address,
a client or cluster of the caller's, one worker per GPU) and nothing about the work itself, which
:mod:`weightmaps.distributed.jobs` cuts into tasks.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from weightmaps.backend import cuda_device_count
from weightmaps.errors import WeightmapsError

log = logging.getLogger("weightmaps")


def import_distributed() -> ModuleType:
    """The ``distributed`` package, or a clear error naming the extra to install."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise WeightmapsError(
            f"running on Dask needs dask and distributed ({exc}); "
            'install them with: pip install "weightmaps[dask]"'
        ) from None


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
    distributed = import_distributed()
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


def total_threads(client: Any) -> int:
    """The worker threads of the cluster behind ``client`` (at least 1)."""
    return max(1, sum(client.nthreads().values()))
