"""The spool: a run decodes each mask once, the store is the same, and nothing is left behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import weightmaps.stats
from weightmaps.params import MapParams
from weightmaps.pipeline import compute
from weightmaps.readers import mask_digest
from weightmaps.sample_data import make_masks
from weightmaps.shards import ShardSettings, decode_shard
from weightmaps.sources import MaskSource, open_source
from weightmaps.spool import Spool
from weightmaps.store import open_store

SIGMA = 2.0


class CountingSource(MaskSource):
    """A mask source that logs every read to a file (one line a read, from any process)."""

    def __init__(self, inner: MaskSource, log: Path) -> None:
        super().__init__(inner.samples, description=inner.description, problems=inner.problems)
        self.log = str(log)

    def read(self, i: int) -> np.ndarray:
        with open(self.log, "a") as f:
            f.write(f"{i}\n")
        return super().read(i)

    def reads(self) -> list[int]:
        return [int(line) for line in Path(self.log).read_text().split()] if Path(self.log).exists() else []


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder spools go to, empty, this test's own."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def _masks(root: Path, n: int, shape: tuple[int, int] = (24, 32)) -> Path:
    folder = root / "masks"
    folder.mkdir(parents=True)
    for i, mask in enumerate(make_masks(n, shape, num_classes=3, seed=7)):
        Image.fromarray(mask).save(folder / f"m{i:04d}.png")
    return folder


def _same_maps(a: Path, b: Path) -> None:
    left, right = open_store(a), open_store(b)
    assert left.complete and right.complete and left.ids == right.ids
    for sid in left.ids:
        assert left[sid].tobytes() == right[sid].tobytes(), sid


def test_each_mask_is_decoded_once(tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _masks(tmp_path, 40)
    reference = tmp_path / "ref.zarr"
    compute(folder, reference, sigma=SIGMA, device="cpu", workers=1, samples_per_shard=6)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_ON_POOL_FROM", 0)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_CHUNK", 7)  # chunks and shards cut differently
    source = CountingSource(open_source(folder), tmp_path / "reads.log")
    compute(source, tmp_path / "w.zarr", sigma=SIGMA, device="cpu", workers=2, samples_per_shard=6)
    reads = source.reads()
    # Mask 0 is read once more before the scan (the spacing and connectivity checks).
    assert sorted(reads) == sorted([0, *range(40)])
    _same_maps(reference, tmp_path / "w.zarr")
    assert list(private_tmp.glob("weightmaps-spool-*")) == []  # the run removed its spool


def test_a_spool_too_small_for_the_dataset_holds_its_first_masks(
    tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _masks(tmp_path, 30)
    reference = tmp_path / "ref.zarr"
    compute(folder, reference, sigma=SIGMA, device="cpu", workers=1, samples_per_shard=4)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_ON_POOL_FROM", 0)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_CHUNK", 5)
    real_create = Spool.create.__func__  # type: ignore[attr-defined]

    def small(cls: type[Spool], n: int, per_sample: int, where: str | None = None) -> Spool | None:
        spool = real_create(cls, n, per_sample, where)
        return Spool(spool.root, 12) if spool is not None else None

    monkeypatch.setattr(Spool, "create", classmethod(small))
    source = CountingSource(open_source(folder), tmp_path / "reads.log")
    compute(source, tmp_path / "w.zarr", sigma=SIGMA, device="cpu", workers=2, samples_per_shard=4)
    counts = np.bincount(source.reads(), minlength=30)
    assert counts[0] == 2 and (counts[1:12] == 1).all() and (counts[12:] == 2).all(), counts
    _same_maps(reference, tmp_path / "w.zarr")


def test_bad_samples_skipped_and_the_spool_agree(tmp_path: Path, private_tmp: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With bad samples skipped, store positions and source positions differ: each shard still
    reads its own masks from the spool."""
    folder = _masks(tmp_path, 20)
    (folder / "m0003.png").write_bytes(b"not a png")
    (folder / "m0011.png").write_bytes(b"nor this")
    reference = tmp_path / "ref.zarr"
    compute(folder, reference, sigma=SIGMA, device="cpu", workers=1, samples_per_shard=3, skip_bad=True)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_ON_POOL_FROM", 0)
    monkeypatch.setattr(weightmaps.stats, "_SCAN_CHUNK", 4)
    result = compute(folder, tmp_path / "w.zarr", sigma=SIGMA, device="cpu", workers=2, samples_per_shard=3,
                     skip_bad=True)
    assert result.n_bad == 2 and result.n_samples == 18
    _same_maps(reference, tmp_path / "w.zarr")


def test_a_spooled_mask_whose_file_is_gone_is_decoded_again(tmp_path: Path) -> None:
    folder = _masks(tmp_path, 3)
    source = open_source(folder)
    spool = Spool.create(3, source.read(0).nbytes, where=str(tmp_path))
    assert spool is not None and spool.limit == 3
    with spool.chunk(0) as chunk:  # digests of the spool's own, to tell where a mask came from
        entries = {i: chunk.add(source.read(i), f"spooled-{i}") for i in range(3)}
    params = MapParams(sigma=SIGMA, class_weights={0: 1.0, 1: 1.0, 2: 1.0})
    from weightmaps.layout import tasks_of

    shapes = [source.read(i).shape for i in range(3)]
    [task] = tasks_of(np.array([0, 768, 1536]), shapes, 1 << 20)
    settings = ShardSettings(params, spool=spool, spooled=entries)
    masks, digests = decode_shard(task, source, settings)
    assert digests == ["spooled-0", "spooled-1", "spooled-2"]
    for i in range(3):
        np.testing.assert_array_equal(masks[i], source.read(i))
    os.remove(Path(spool.root) / "0.bin")
    masks, digests = decode_shard(task, source, settings)
    for i in range(3):
        np.testing.assert_array_equal(masks[i], source.read(i))
        assert digests[i] == mask_digest(source.read(i))
    spool.remove()
    assert not Path(spool.root).exists()


def test_orphan_spools_of_dead_runs_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60).stdout.strip()
    orphan = tmp_path / f"weightmaps-spool-{dead}-abc"
    orphan.mkdir()
    (orphan / "0.bin").write_bytes(b"x")
    mine = tmp_path / f"weightmaps-spool-{os.getpid()}-def"
    mine.mkdir()
    unrelated = tmp_path / "weightmaps-spool-notapid"
    unrelated.mkdir()
    spool = Spool.create(4, 100, where=str(tmp_path))
    assert spool is not None
    assert not orphan.exists() and mine.exists() and unrelated.exists()
    assert Spool.create(4, 1 << 62, where=str(tmp_path)) is None  # not even one mask fits
