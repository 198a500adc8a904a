"""Dask: the store of a cluster run equals the in-process store, whatever dies on the way.

A real ``LocalCluster`` of two worker processes (one thread each), shared by the module. Worker
deaths are real too: :class:`CrashingSource` (pickled to the workers by reference to this
module) calls ``os._exit`` when it reads one sample for the n-th time, counted in a file, so a
test can kill a worker during the compute pass only (the scan reads each sample once), once or
every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

# No test here may wait without bound (a loaded 2-core machine once hung this file for more than
# 15 minutes): each test, the cluster's start in its first test included, fails after 4 minutes
# with a traceback; those that kill workers on purpose get longer (below). Idle, the whole file
# takes about a minute, its longest test 40 s.
# The slow tier (tests/conftest.py): real Dask clusters.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
# How long the module's cluster may take to have both workers up before its first test fails.
CLUSTER_START_S = 120

from weightmaps.errors import BadInputError, IncompleteRunError, WeightmapsError  # noqa: E402
from weightmaps.pipeline import compute  # noqa: E402
from weightmaps.stats import scan  # noqa: E402
from weightmaps.sample_data import write_dataset  # noqa: E402
from weightmaps.sources import MaskSource, open_source  # noqa: E402
from weightmaps.store import open_store  # noqa: E402
from weightmaps.distributed import (  # noqa: E402
    compute_on_dask,
    open_client,
    scan_on_dask,
)

N, SHAPE, PER_SHARD = 40, (48, 64), 8  # 5 shards
ARGS = {"sigma": 2.0, "device": "cpu", "samples_per_shard": PER_SHARD}
VICTIM = "sample_00013"  # in shard 1


class CrashingSource(MaskSource):
    """A directory source whose worker dies when it reads ``victim`` for the n-th time, n in ``on``."""

    def __init__(self, masks: Path, counter: Path, on: range) -> None:
        plain = open_source(str(masks))
        super().__init__(plain.samples, description=plain.description)
        self.counter = str(counter)
        self.on = on

    def read(self, i: int) -> np.ndarray:
        if self.samples[i].id == VICTIM:
            with open(self.counter, "a") as f:
                f.write("read\n")
            with open(self.counter) as f:
                if len(f.readlines()) in self.on:
                    os._exit(13)
        return super().read(i)


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), n=N, shape=SHAPE, with_images=False) / "masks"


@pytest.fixture(scope="module")
def reference(masks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    compute(str(masks), out, workers=1, **ARGS)
    return out


@pytest.fixture
def client(cluster_client: Any) -> Any:
    """The module's client with a worker up: a test whose workers were killed (on purpose, or a
    timed-out test's) does not hand the next one a cluster without any, whose tasks would wait for
    ever. One, not both: after the worker-killing tests a nanny does not always bring its worker
    back (seen on a loaded 2-core machine), and every test here runs on one worker."""
    cluster_client.wait_for_workers(1, timeout=CLUSTER_START_S)
    return cluster_client


@pytest.fixture(scope="module")
def cluster_client() -> Any:
    # One worker death is survived, a second one of the same task fails it (KilledWorker): keeps
    # the poison tests short. The scheduler reads the setting when it starts.
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster, timeout=f"{CLUSTER_START_S}s") as c,
    ):
        c.wait_for_workers(2, timeout=CLUSTER_START_S)  # raises TimeoutError naming the wait
        yield c


def assert_same_store(a: Path, b: Path) -> None:
    x, y = open_store(a), open_store(b)
    assert x.complete and y.complete
    assert x.ids == y.ids
    for i in range(len(x)):
        np.testing.assert_array_equal(x[i], y[i])
    assert _attributes(x._meta) == _attributes(y._meta)


def _attributes(meta: dict[str, Any]) -> dict[str, Any]:
    """The root attributes less a store's own identity and the timings of the run that made it."""
    meta = {k: v for k, v in meta.items() if k != "uid"}
    meta["report"] = {k: v for k, v in meta["report"].items() if k != "last_run"}
    return meta


def test_store_equals_in_process(client: Any, masks: Path, reference: Path, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    result = compute_on_dask(client, str(masks), tmp_path / "w.zarr", progress=lambda *a: calls.append(a), **ARGS)
    assert (result.n_samples, result.n_computed, result.n_bad) == (N, N, 0)
    assert_same_store(reference, tmp_path / "w.zarr")
    for stage in ("scan", "compute"):
        done = [d for s, d, t in calls if s == stage]
        assert done[0] == 0 and done[-1] == N and done == sorted(done)
        assert {t for s, _, t in calls if s == stage} == {N}


def test_scan_map_reduce_equals_in_process(client: Any, masks: Path, tmp_path: Path) -> None:
    # good masks, a corrupt file, a 3-D mask among 2-D ones, labels beyond num_classes
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in sorted(masks.iterdir())[:9]:
        (mixed / p.name).write_bytes(p.read_bytes())
    (mixed / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    np.save(mixed / "volume.npy", np.zeros((3, 8, 8), np.uint8))
    np.save(mixed / "too_many.npy", np.full((8, 8), 7, np.uint8))
    kwargs: dict[str, Any] = {"ignore_index": 0, "num_classes": 3}
    with pytest.raises(BadInputError) as local:
        scan(str(mixed), **kwargs)
    with pytest.raises(BadInputError) as remote:
        scan_on_dask(client, str(mixed), chunk_size=3, **kwargs)
    assert remote.value.bad == local.value.bad and len(local.value.bad) == 3
    a = scan(str(mixed), skip_bad=True, **kwargs)
    b = scan_on_dask(client, str(mixed), skip_bad=True, chunk_size=3, **kwargs)
    for field in ("indices", "ids", "shapes", "spacings", "counts", "image_pixels", "bad"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.image_pixels
    assert scan_on_dask(client, str(masks)).counts == scan(str(masks)).counts  # default chunks


@pytest.mark.timeout(300)
def test_a_worker_dies_mid_run(client: Any, masks: Path, reference: Path, tmp_path: Path) -> None:
    counter = tmp_path / "reads"
    source = CrashingSource(masks, counter, on=range(2, 3))  # the 2nd read is the compute pass's
    compute_on_dask(client, source, tmp_path / "w.zarr", **ARGS)
    assert counter.read_text().count("read") == 3  # scan, the killed attempt, the rescheduled one
    assert_same_store(reference, tmp_path / "w.zarr")


@pytest.mark.timeout(480)  # workers die three times, then a second cluster starts for the resume
def test_a_shard_that_keeps_killing_workers(client: Any, masks: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    source = CrashingSource(masks, tmp_path / "reads", on=range(2, 1000))
    with pytest.raises(IncompleteRunError) as failed:
        compute_on_dask(client, source, out, **ARGS)
    err = failed.value
    assert not isinstance(err, WeightmapsError)  # a failed run (exit 1), not bad input (exit 2)
    assert [f.shard for f in err.failures] == [1]
    assert "KilledWorker" in err.failures[0].reason and VICTIM in err.failures[0].ids
    assert [b.id for b in err.bad] == [f"sample_{i:05d}" for i in range(8, 16)]
    assert err.bad[5].path == str(masks / f"{VICTIM}.png")
    assert err.n_written == N - PER_SHARD
    store = open_store(out)
    assert not store.complete
    assert np.isnan(store[VICTIM]).all() and not np.isnan(store["sample_00000"]).any()
    # the input is fine again: --resume on another cluster computes the failed shard only
    result = compute_on_dask(1, str(masks), out, resume=True, cluster_kwargs={"dashboard_address": ":0"}, **ARGS)
    assert result.n_computed == PER_SHARD
    assert_same_store(reference, out)


@pytest.mark.timeout(300)
def test_an_input_that_kills_its_reader_is_a_bad_input(client: Any, masks: Path, tmp_path: Path) -> None:
    source = CrashingSource(masks, tmp_path / "reads", on=range(1, 1000))
    result = compute_on_dask(client, source, tmp_path / "w.zarr", skip_bad=True, **ARGS)
    assert (result.n_samples, result.n_bad) == (N - 1, 1)
    store = open_store(tmp_path / "w.zarr")
    assert store.complete and VICTIM not in store
    [bad] = store.report["bad"]
    assert bad["id"] == VICTIM and "died" in bad["reason"]


class Interrupt(Exception):
    pass


def test_resume_completes_an_interrupted_cluster_run(
    client: Any, masks: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "w.zarr"

    def interrupt_after_two_shards(stage: str, done: int, total: int) -> None:
        if stage == "compute" and done >= 2 * PER_SHARD:
            raise Interrupt  # like Ctrl-C in the CLI: pending shard tasks are cancelled

    with pytest.raises(Interrupt):
        compute_on_dask(client, str(masks), out, progress=interrupt_after_two_shards, **ARGS)
    assert not open_store(out).complete
    assert len(list((out / "maps" / "_markers").glob("*.json"))) < N // PER_SHARD
    # a shard task already running when the run was interrupted may still finish and write its
    # (identical) shard while the resume runs: writes are idempotent
    result = compute_on_dask(client, str(masks), out, resume=True, **ARGS)
    assert result.n_computed <= N - 2 * PER_SHARD
    assert_same_store(reference, out)


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")
def test_cli_dask_workers(masks: Path, reference: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from weightmaps.cli import main

    args = ["compute", str(masks), "--sigma", "2", "--device", "cpu", "--samples-per-shard", str(PER_SHARD),
            "--no-progress"]
    run = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "w.zarr"), "--dask-workers", "2"])
    assert run.exit_code == 0, run.output
    assert_same_store(reference, tmp_path / "w.zarr")
    run = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x.zarr"), "--dask-workers", "2",
                                    "--scheduler", "tcp://127.0.0.1:1"])
    assert run.exit_code == 2 and "exclude each other" in run.output
    run = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "y.zarr"), "--dask-workers", "2", "--workers", "4"])
    assert run.exit_code == 2 and "--workers sizes the in-process pool" in run.output
    assert not (tmp_path / "y.zarr").exists()


def test_cli_exit_status_of_an_incomplete_run(
    masks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import weightmaps.distributed
    from weightmaps.cli import main

    def failing(*args: Any, **kwargs: Any) -> None:
        failure = weightmaps.distributed.ShardFailure(1, ("a", "b"), "KilledWorker: ...")
        raise IncompleteRunError(str(tmp_path / "w.zarr"), [failure], [], 38)

    monkeypatch.setattr(weightmaps.distributed, "compute_on_dask", failing)
    run = CliRunner().invoke(main, ["compute", str(masks), "--out", str(tmp_path / "w.zarr"), "--sigma", "2",
                                    "--scheduler", "tcp://127.0.0.1:1"])
    assert run.exit_code == 1
    assert "shard 1 (a, b): KilledWorker" in run.output and "--resume" in run.output


def test_dask_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys, weightmaps, weightmaps.pipeline, weightmaps.distributed; "
        "assert not {'dask', 'distributed'} & set(sys.modules), sorted(m for m in sys.modules if 'dask' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(WeightmapsError, match=r"weightmaps\[dask\]"):
        with open_client(2):
            pass


def test_bad_cluster_arguments() -> None:
    with pytest.raises(WeightmapsError, match="dask workers must be >= 1"):
        with open_client(0):
            pass
    with pytest.raises(WeightmapsError, match="number of workers, an address or a Client"):
        with open_client(True):
            pass


def test_more_local_gpu_workers_than_gpus_is_a_usage_error() -> None:
    from weightmaps.backend import cuda_device_count
    from weightmaps.distributed import check_gpu_workers

    gpus = cuda_device_count()
    with pytest.raises(WeightmapsError, match=rf"{gpus + 1} local GPU workers asked for, but this machine has {gpus} GPU"):
        with open_client(gpus + 1, device="cuda"):
            pass
    check_gpu_workers(2, 2)
    with pytest.raises(WeightmapsError, match="one worker per GPU; ask for at most 2"):
        check_gpu_workers(3, 2)


def test_cli_refuses_more_gpu_workers_than_gpus(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from weightmaps.backend import cuda_device_count
    from weightmaps.cli import main

    root = write_dataset(tmp_path, n=2, shape=(16, 16), with_images=False)
    result = CliRunner().invoke(main, ["compute", str(root / "masks"), "--out", str(tmp_path / "w.zarr"), "--sigma", "1",
                                      "--device", "cuda", "--dask-workers", str(cuda_device_count() + 1)])
    assert result.exit_code == 2, result.output
    assert "local GPU workers asked for" in result.output
    assert not (tmp_path / "w.zarr").exists()


def test_unet_maps_on_the_cluster_equal_in_process(client: Any, masks: Path, tmp_path: Path) -> None:
    """The U-Net map goes through the same shards: the same store on Dask as in this process."""
    args = {**ARGS, "kind": "unet", "w0": 5.0, "instances": "connected"}
    compute(str(masks), tmp_path / "local.zarr", workers=1, **args)
    compute_on_dask(client, str(masks), tmp_path / "dask.zarr", **args)
    assert_same_store(tmp_path / "local.zarr", tmp_path / "dask.zarr")
    assert open_store(tmp_path / "dask.zarr").params.kind == "unet"


def test_sdf_maps_on_the_cluster_equal_in_process(client: Any, masks: Path, tmp_path: Path) -> None:
    """Multi-channel maps take the same shards: the sdf store of a cluster run equals this process's."""
    args = {"device": "cpu", "samples_per_shard": PER_SHARD, "kind": "sdf", "num_classes": 3}
    compute(str(masks), tmp_path / "local.zarr", workers=1, **args)
    compute_on_dask(client, str(masks), tmp_path / "dask.zarr", **args)
    assert_same_store(tmp_path / "local.zarr", tmp_path / "dask.zarr")
    assert open_store(tmp_path / "dask.zarr").shape(0) == (3, *SHAPE)


def test_masks_and_store_in_a_bucket(client: Any, masks: Path, reference: Path, s3_server: Any, s3_bucket: str) -> None:
    """Workers get the sources and the writer as URLs and storage options, and open their own
    filesystems: the store in the bucket equals the in-process store of the local masks."""
    s3_server.filesystem().put(f"{masks}/", f"{s3_bucket}/masks/", recursive=True)
    url = f"s3://{s3_bucket}/w.zarr"
    result = compute_on_dask(client, f"s3://{s3_bucket}/masks/", url, storage_options=s3_server.storage_options,
                             **ARGS)
    assert (result.n_samples, result.n_computed) == (N, N)
    x, y = open_store(url, s3_server.storage_options), open_store(reference)
    assert x.complete and x.ids == y.ids
    for i in range(len(x)):
        np.testing.assert_array_equal(x[i], y[i])
    # the same but for the inputs' fingerprint (sizes and ETags there, sizes and mtimes here)
    assert {**_attributes(x._meta), "fingerprint": None} == {**_attributes(y._meta), "fingerprint": None}
