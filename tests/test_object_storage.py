"""Stores and datasets in object storage, against a real S3 server on 127.0.0.1 (moto's stand-alone
server, spoken to over HTTP by s3fs exactly as AWS is): compute → info → open_store → DataLoader
workers; SIGKILL and resume; the lock; overwrite; missing buckets and refused credentials."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import weightmaps as wm  # noqa: E402
from weightmaps.errors import StoreExistsError, StoreLockedError, WeightmapsError  # noqa: E402
from weightmaps.lock import store_lock  # noqa: E402
from weightmaps.sample_data import write_dataset  # noqa: E402
from weightmaps.store import open_store  # noqa: E402
from tests.processes import process_group  # noqa: E402
from tests.s3server import S3Server  # noqa: E402
from tests.test_cli import run  # noqa: E402

# The slow tier (tests/conftest.py): the S3 server, runs killed with SIGKILL.
pytestmark = pytest.mark.slow


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "weightmaps"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from weightmaps.cli import main; main()"]


def _same_maps(a: Any, b: Any) -> None:
    assert list(a.ids) == list(b.ids)
    for sid in b.ids:
        x, y = a[sid], b[sid]
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), sid


def _meta_without_identity(store: Any) -> dict[str, Any]:
    meta = dict(store._meta)
    meta.pop("uid", None)
    meta["report"] = {k: v for k, v in (meta["report"] or {}).items() if k != "last_run"}
    return meta


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), n=12, shape=(40, 36), num_classes=3, seed=3)


@pytest.fixture(scope="module")
def local_store(dataset: Path) -> Path:
    out = dataset.parent / "local.zarr"
    wm.compute(dataset / "masks", out, sigma=2.0, device="cpu", workers=1, samples_per_shard=4)
    return out


def test_compute_into_s3_equals_local_and_reads_back(s3_server: S3Server, s3_bucket: str, dataset: Path,
                                                     local_store: Path) -> None:
    url = f"s3://{s3_bucket}/runs/w.zarr"
    result = wm.compute(dataset / "masks", url, sigma=2.0, device="cpu", workers=1, samples_per_shard=4,
                        storage_options=s3_server.storage_options)
    assert result.store == url and result.n_computed == 12
    remote, local = open_store(url, s3_server.storage_options), open_store(local_store)
    assert remote.complete and remote.path == url
    _same_maps(remote, local)
    assert remote.digest(remote.ids[0]) == local.digest(local.ids[0])
    assert _meta_without_identity(remote) == _meta_without_identity(local)
    # the lock object is gone; the markers are there, one per shard
    fs = s3_server.filesystem()
    assert not fs.exists(f"{s3_bucket}/runs/.w.zarr.weightmaps-lock")
    assert len(fs.ls(f"{s3_bucket}/runs/w.zarr/maps/_markers")) == 3
    assert remote.nbytes_on_disk() > 0


def test_cli_compute_info_and_class_weights_from_s3(s3_server: S3Server, s3_bucket: str, dataset: Path,
                                                    local_store: Path) -> None:
    opts = [f"--storage-option=endpoint_url={s3_server.endpoint}", "--storage-option=key=testing",
            "--storage-option=secret=testing"]
    url = f"s3://{s3_bucket}/w.zarr"
    code, out, err = run("compute", dataset / "masks", "--out", url, "--sigma", "2", "--device", "cpu",
                         "--workers", "1", "--samples-per-shard", "4", "--no-progress", "--json", *opts)
    assert code == 0, err
    assert json.loads(out)["store"] == url
    code, out, err = run("info", url, "--json", *opts)
    assert code == 0, err
    info = json.loads(out)
    assert info["complete"] and info["n_samples"] == 12 and info["store"] == url
    # a second run on it is refused without --overwrite, naming it
    code, _, err = run("compute", dataset / "masks", "--out", url, "--sigma", "2", "--device", "cpu", *opts)
    assert code == 2 and url in err
    # validation set: the class weights of the training store in the bucket
    val = f"s3://{s3_bucket}/val.zarr"
    code, _, err = run("compute", dataset / "masks", "--out", val, "--sigma", "2", "--device", "cpu",
                       "--workers", "1", "--class-weights-from", url, "--no-progress", *opts)
    assert code == 0, err
    assert open_store(val, s3_server.storage_options).class_weights == open_store(local_store).class_weights


def test_missing_bucket_and_refused_access_exit_2(s3_server: S3Server, dataset: Path) -> None:
    opts = [f"--storage-option=endpoint_url={s3_server.endpoint}"]
    missing = "s3://no-such-bucket-here/w.zarr"
    code, _, err = run("compute", dataset / "masks", "--out", missing, "--sigma", "2", "--device", "cpu",
                       "--storage-option=key=testing", "--storage-option=secret=testing", *opts)
    assert code == 2, err
    assert missing in err and "does not exist" in err and "Traceback" not in err

    refusing = S3Server(enforce_auth=True).start()
    try:
        url = "s3://some-bucket/w.zarr"
        code, _, err = run("compute", dataset / "masks", "--out", url, "--sigma", "2", "--device", "cpu",
                           f"--storage-option=endpoint_url={refusing.endpoint}", "--storage-option=key=nobody",
                           "--storage-option=secret=nothing")
        assert code == 2, err
        assert url in err and "access refused" in err and "Traceback" not in err
        code, _, err = run("info", url, f"--storage-option=endpoint_url={refusing.endpoint}",
                           "--storage-option=key=nobody", "--storage-option=secret=nothing")
        assert code == 2 and "access refused" in err
    finally:
        refusing.stop()


def test_overwrite_deletes_only_a_weightmaps_store(s3_server: S3Server, s3_bucket: str, dataset: Path,
                                                   local_store: Path) -> None:
    opts = s3_server.storage_options
    fs = s3_server.filesystem()
    foreign = f"s3://{s3_bucket}/notes.zarr"
    fs.pipe(f"{s3_bucket}/notes.zarr/readme.txt", b"my thesis")
    with pytest.raises(WeightmapsError, match="not a weightmaps store; refusing"):
        wm.compute(dataset / "masks", foreign, sigma=2.0, device="cpu", workers=1, overwrite=True,
                   storage_options=opts)
    assert fs.cat(f"{s3_bucket}/notes.zarr/readme.txt") == b"my thesis"

    url = f"s3://{s3_bucket}/w.zarr"
    wm.compute(dataset / "masks", url, sigma=5.0, device="cpu", workers=1, storage_options=opts)
    with pytest.raises(StoreExistsError):
        wm.compute(dataset / "masks", url, sigma=2.0, device="cpu", workers=1, storage_options=opts)
    # an overwrite killed after it marked the old store incomplete and deleted part of it: the
    # leftover says incomplete, and the next overwrite recognises it as ours
    meta = json.loads(fs.cat(f"{s3_bucket}/w.zarr/zarr.json"))
    meta["attributes"]["weightmaps"]["complete"] = False
    fs.pipe(f"{s3_bucket}/w.zarr/zarr.json", json.dumps(meta).encode())
    fs.rm(f"{s3_bucket}/w.zarr/maps", recursive=True)
    assert not open_store(url, opts).complete
    wm.compute(dataset / "masks", url, sigma=2.0, device="cpu", workers=1, samples_per_shard=4,
               overwrite=True, storage_options=opts)
    _same_maps(open_store(url, opts), open_store(local_store))
    assert open_store(url, opts).complete


def test_lock_object_refuses_a_second_run_and_a_dead_local_run_is_taken_over(
    s3_server: S3Server, s3_bucket: str, dataset: Path
) -> None:
    opts = s3_server.storage_options
    fs = s3_server.filesystem()
    url = f"s3://{s3_bucket}/w.zarr"
    lock = f"{s3_bucket}/.w.zarr.weightmaps-lock"
    with store_lock(url, opts) as held:
        assert held == f"s3://{lock}" and fs.exists(lock)
        with pytest.raises(StoreLockedError, match="being written by another run"):
            wm.compute(dataset / "masks", url, sigma=2.0, device="cpu", workers=1, storage_options=opts)
        with pytest.raises(StoreLockedError), store_lock(url, opts):
            pass
        # Another name of the same objects (s3a:// is s3fs too), and the trailing slash: one lock.
        for alias in (f"s3a://{s3_bucket}/w.zarr", f"s3://{s3_bucket}/w.zarr/"):
            with pytest.raises(StoreLockedError, match="being written by another run"):
                wm.compute(dataset / "masks", alias, sigma=2.0, device="cpu", workers=1, storage_options=opts)
        assert not fs.exists(f"{s3_bucket}/w.zarr")
    assert not fs.exists(lock)
    # a run on another host: refused, named
    fs.pipe(lock, json.dumps({"host": "render-07", "pid": 4242, "started": "2026-11-26T08:00:00"}).encode())
    with pytest.raises(StoreLockedError, match="render-07"):
        wm.compute(dataset / "masks", url, sigma=2.0, device="cpu", workers=1, storage_options=opts)
    # a killed run of this host: taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    fs.pipe(lock, json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": "earlier"}).encode())
    wm.compute(dataset / "masks", url, sigma=2.0, device="cpu", workers=1, storage_options=opts)
    assert open_store(url, opts).complete and not fs.exists(lock)


N_KILL_MASKS = 64


@pytest.mark.timeout(420)
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_sigkill_mid_run_then_resume_equals_a_straight_run(s3_server: S3Server, s3_bucket: str,
                                                          tmp_path: Path) -> None:
    """The CLI in its own process group, credentials from the environment (the fsspec way)."""
    masks = write_dataset(tmp_path / "data", n=N_KILL_MASKS, shape=(48, 40), seed=9, with_images=False) / "masks"
    ref = tmp_path / "ref.zarr"
    url = f"s3://{s3_bucket}/killed.zarr"
    common = ["--sigma", "2", "--device", "cpu", "--workers", "2", "--samples-per-shard", "2", "--no-progress"]
    subprocess.run([*_cli(), "compute", str(masks), "--out", str(ref), *common], check=True, capture_output=True,
                   timeout=120)
    fs = s3_server.filesystem()
    markers = f"{s3_bucket}/killed.zarr/maps/_markers"

    def written() -> int:
        try:
            return len(fs.ls(markers, refresh=True))
        except FileNotFoundError:
            return 0

    rng = random.Random(15)
    kills = 0
    for attempt in range(4):
        args = [*_cli(), "compute", str(masks), "--out", url, *common] + (["--resume"] if attempt else [])
        with process_group(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=s3_server.env) as proc:
            if attempt < 3:
                target = written() + rng.randint(1, 4)
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline and written() < target:
                    time.sleep(0.01)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    kills += 1
            _, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, stderr.decode()
        assert not open_store(url, s3_server.storage_options).complete
    assert proc.returncode == 0, stderr.decode()
    assert kills >= 2, "the run finished before it could be killed twice"
    final, expected = open_store(url, s3_server.storage_options), open_store(ref)
    assert final.complete
    _same_maps(final, expected)
    assert _meta_without_identity(final) == _meta_without_identity(expected)


@pytest.fixture(scope="module")
def bucket_dataset(s3_server: S3Server, dataset: Path) -> tuple[str, str]:
    """The dataset's images and masks in a bucket, and its store computed there from the bucket's
    masks by the CLI (credentials from the environment): (dataset URL, store URL)."""
    bucket = s3_server.new_bucket()
    s3_server.filesystem().put(f"{dataset}/", f"{bucket}/data/", recursive=True)
    data, store = f"s3://{bucket}/data", f"s3://{bucket}/w.zarr"
    done = subprocess.run([*_cli(), "compute", f"{data}/masks/", "--out", store, "--sigma", "2", "--device", "cpu",
                           "--workers", "2", "--samples-per-shard", "4", "--no-progress"],
                          capture_output=True, text=True, env=s3_server.env, timeout=120)
    assert done.returncode == 0, done.stderr
    return data, store


def test_masks_in_the_bucket_give_the_store_local_masks_give(s3_server: S3Server, bucket_dataset: tuple[str, str],
                                                           local_store: Path) -> None:
    _, url = bucket_dataset
    remote, local = open_store(url, s3_server.storage_options), open_store(local_store)
    assert remote.complete
    _same_maps(remote, local)
    for sid in local.ids:  # the digests a Dataset checks masks against
        assert remote.digest(sid) == local.digest(sid)


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_read_images_masks_and_store_from_the_bucket(
    s3_server: S3Server, bucket_dataset: tuple[str, str], dataset: Path, local_store: Path, start_method: str
) -> None:
    torch = pytest.importorskip("torch")
    from weightmaps.torch import WeightMapDataset

    data, url = bucket_dataset
    remote = WeightMapDataset(f"{data}/images/", f"{data}/masks/", url, storage_options=s3_server.storage_options)
    local = WeightMapDataset(dataset / "images", dataset / "masks", local_store)
    assert remote.ids == local.ids
    remote[0]  # the parent reads first: a forked worker must not reuse the parent's filesystem
    loader = torch.utils.data.DataLoader(remote, batch_size=5, num_workers=2, multiprocessing_context=start_method)
    seen = []
    for batch in loader:
        for k, sid in enumerate(batch["id"]):
            want = local[local.ids.index(sid)]
            for key in ("image", "mask", "weight"):
                assert torch.equal(batch[key][k], want[key]), (sid, key)
            seen.append(sid)
    assert sorted(seen) == sorted(local.ids)


def test_a_bucket_named_bucket_is_not_a_missing_bucket(s3_server: S3Server, dataset: Path, local_store: Path) -> None:
    """'Is the bucket missing?' is read from the error's words, never from the path: a prefix with
    no zarr metadata in s3://my-bucket-... once read as a missing bucket."""
    bucket = f"my-bucket-{os.getpid()}"
    fs = s3_server.filesystem()
    fs.mkdir(bucket)
    fs.put(f"{dataset}/masks/", f"{bucket}/cells/masks/", recursive=True)
    url = f"s3://{bucket}/cells.zarr"
    wm.compute(f"s3://{bucket}/cells/masks/", url, sigma=2.0, device="cpu", workers=1, samples_per_shard=4,
               storage_options=s3_server.storage_options)
    _same_maps(open_store(url, s3_server.storage_options), open_store(local_store))


def test_stats_and_monai_loading_from_the_bucket(s3_server: S3Server, bucket_dataset: tuple[str, str],
                                                 dataset: Path, local_store: Path) -> None:
    data, url = bucket_dataset
    opts = [f"--storage-option=endpoint_url={s3_server.endpoint}", "--storage-option=key=testing",
            "--storage-option=secret=testing"]
    code, out, err = run("stats", f"{data}/masks/", "--json", "--no-progress", *opts)
    assert code == 0, err
    code_local, out_local, _ = run("stats", dataset / "masks", "--json", "--no-progress")
    remote_stats, local_stats = json.loads(out), json.loads(out_local)
    assert remote_stats["class_counts"] == local_stats["class_counts"] and remote_stats["n_samples"] == 12

    pytest.importorskip("monai")
    from weightmaps.monai import LoadWeightMapd
    from weightmaps.readers import read_mask

    load = LoadWeightMapd(url, id_key="id", label_key="label", storage_options=s3_server.storage_options)
    local = open_store(local_store)
    for sid in local.ids[:3]:
        label = read_mask(dataset / "masks" / f"{sid}.png")[None]
        got = load({"id": sid, "label": label})["weight"]
        np.testing.assert_array_equal(np.asarray(got)[0], local[sid])


def test_distance_store_in_the_bucket_with_another_bucket_store_s_class_weights(
    s3_server: S3Server, bucket_dataset: tuple[str, str], dataset: Path, local_store: Path
) -> None:
    """σ and φ chosen at load time, φ from a store in the bucket (both by URL)."""
    pytest.importorskip("torch")
    from weightmaps.torch import WeightMapDataset

    data, bressan = bucket_dataset
    distance = bressan.replace("w.zarr", "d.zarr")
    wm.compute(f"{data}/masks/", distance, kind="distance", device="cpu", workers=1,
               storage_options=s3_server.storage_options)
    ds = WeightMapDataset(dataset / "images", dataset / "masks", distance, sigma=2.0, class_weights=bressan,
                          storage_options=s3_server.storage_options)
    local = open_store(local_store)
    for k in range(3):
        sample = ds[k]
        np.testing.assert_allclose(sample["weight"].numpy(), local[sample["id"]], rtol=1e-6)


def test_preview_of_a_mask_and_image_in_the_bucket(s3_server: S3Server, bucket_dataset: tuple[str, str],
                                                   tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    data, store = bucket_dataset
    opts = [f"--storage-option=endpoint_url={s3_server.endpoint}", "--storage-option=key=testing",
            "--storage-option=secret=testing"]
    figure = tmp_path / "p.png"
    code, _, err = run("preview", f"{data}/masks/sample_00001.png", "--image", f"{data}/images/sample_00001.png",
                       "--sigma", "2", "--class-weights-from", store, "--out", figure, "--device", "cpu", *opts)
    assert code == 0, err
    assert figure.stat().st_size > 10_000
    code, _, err = run("preview", f"{data}/masks/nothing.png", "--sigma", "2", "--out", figure, *opts)
    assert code == 2 and f"{data}/masks/nothing.png: no such file" in err
    code, _, err = run("preview", tmp_path / "nothing.png", "--sigma", "2", "--out", figure)
    assert code == 2 and "does not exist" in err


def test_a_bucket_gone_silent_at_the_end_does_not_hide_the_run_s_own_error(caplog: pytest.LogCaptureFixture) -> None:
    server = S3Server().start()
    opts = {**server.storage_options, "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    bucket = server.new_bucket()
    with pytest.raises(RuntimeError, match="the run's own error"), caplog.at_level("WARNING", logger="weightmaps"):
        with store_lock(f"s3://{bucket}/w.zarr", opts):
            server.stop()
            raise RuntimeError("the run's own error")
    assert "could not remove the lock" in caplog.text and ".w.zarr.weightmaps-lock" in caplog.text
