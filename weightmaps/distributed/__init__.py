"""Run :func:`weightmaps.compute` on a Dask cluster: the scan as a map-reduce, one task per shard.

Nothing here is a scheduler of ours: Dask distributed places the work, retries it, survives
dying workers and serves the dashboard. This package only cuts the job into tasks whose results
are identical to the in-process pipeline's:

* :mod:`~weightmaps.distributed.cluster`: which cluster (:func:`open_client`: a local one, a
  scheduler's address, the caller's client), and the optional import of Dask.
* :mod:`~weightmaps.distributed.tasks`: how work runs as tasks: the job shipped once, and the
  rounds in which a worker's death convicts only its culprit.
* :mod:`~weightmaps.distributed.jobs`: the two passes as tasks (:func:`scan_on_dask`,
  :func:`run_shards_on_dask`), exactly one writer per shard, and what a failed shard becomes.
* :mod:`~weightmaps.distributed.executor`: :func:`compute_on_dask` and :class:`DaskExecutor`, the
  pipeline's ``executor=``.

Paths and URLs: workers read the inputs and write the store by the paths or URLs the client
gives. A path must be the same on every machine (a shared filesystem such as NFS, Lustre or a
cloud file mount); a URL (``s3://...`` or another fsspec URL) must be reachable from every worker
with the same storage options: a source and a store carry only their URLs and storage options,
and each worker opens its own filesystem.

Dask is an optional extra (``pip install "weightmaps[dask]"``); importing this package does not
import it.
"""

from weightmaps.distributed.cluster import check_gpu_workers as check_gpu_workers
from weightmaps.distributed.cluster import open_client
from weightmaps.distributed.executor import DaskExecutor, compute_on_dask
from weightmaps.distributed.jobs import run_shards_on_dask, scan_on_dask
from weightmaps.distributed.tasks import SHARD_RETRIES as SHARD_RETRIES
from weightmaps.errors import ShardFailure

__all__ = [
    "DaskExecutor",
    "ShardFailure",
    "compute_on_dask",
    "open_client",
    "run_shards_on_dask",
    "scan_on_dask",
]
