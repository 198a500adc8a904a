"""One run writes a store at a time: real concurrent runs, stale locks, a killed overwrite."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightmaps as wm
from weightmaps.errors import StoreLockedError
from weightmaps.lock import lock_path, store_lock
from weightmaps.sample_data import write_dataset
from weightmaps.sources import open_source
from weightmaps.store import open_store


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("lock"), n=12, shape=(48, 64), num_classes=4, with_images=False) / "masks"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from weightmaps.cli import main; sys.exit(main())", *args]


def test_a_second_run_on_a_store_being_written_is_refused_and_touches_nothing(masks: Path, tmp_path: Path) -> None:
    """This process writes (holds the lock); another process's run, --overwrite included, is refused."""
    out = tmp_path / "w.zarr"
    wm.compute(masks, out, sigma=2.0, device="cpu", workers=1)
    with store_lock(out) as lock:
        for extra in (["--overwrite", "--sigma", "5"], ["--resume", "--sigma", "2"]):
            second = subprocess.run(
                _cli("compute", str(masks), "--out", str(out), "--device", "cpu", "--no-progress", *extra),
                capture_output=True, text=True, timeout=120,
            )
            assert second.returncode == 2, second.stderr
            assert f"pid {os.getpid()} on this host" in second.stderr and "being written by another run" in second.stderr
            assert lock.exists()  # the refused run left the holder's lock alone
    store = open_store(out)
    assert store.complete and store.params.sigma == 2.0
    np.testing.assert_allclose(
        store[0], wm.weight_map(open_source(masks).read(0), sigma=2.0, class_weights=store.class_weights, device="cpu"),
        rtol=1e-6,
    )
    assert not lock_path(out).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(masks: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)
    dead_pid = int(gone.stdout)
    lock_path(out).write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid, "started": "earlier"}))
    result = wm.compute(list(sorted(str(p) for p in masks.iterdir()))[:4], out, sigma=2.0, device="cpu", workers=1)
    assert result.n_samples == 4 and open_store(out).complete and not lock_path(out).exists()


def test_a_lock_held_on_another_host_is_refused_naming_it(masks: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    lock_path(out).write_text(json.dumps({"host": "render-07", "pid": 4242, "started": "2026-11-26T08:00:00"}))
    with pytest.raises(StoreLockedError, match=r"pid 4242 on host 'render-07', started 2026-11-26T08:00:00") as info:
        wm.compute(masks, out, sigma=2.0, device="cpu", workers=1)
    assert info.value.holder["host"] == "render-07" and isinstance(info.value, wm.WeightmapsError)
    assert not out.exists()


def test_the_lock_is_released_however_the_run_ends(tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    with pytest.raises(RuntimeError), store_lock(out):
        with pytest.raises(StoreLockedError):
            with store_lock(out):
                pass
        raise RuntimeError("the run failed")
    assert not lock_path(out).exists()
    with store_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_an_overwrite_killed_while_deleting_leaves_nothing_that_blocks(masks: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    wm.compute(masks, out, sigma=2.0, device="cpu", workers=1)
    # What a kill during the delete leaves: the old store renamed aside, partly deleted.
    aside = tmp_path / ".w.zarr.weightmaps-deleting-0123"
    os.rename(out, aside)
    (aside / "zarr.json").unlink()
    wm.compute(masks, out, sigma=3.0, device="cpu", workers=1)
    assert not aside.exists() and open_store(out).params.sigma == 3.0


def _aliases(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """(real store path, the same store by another name): a link to the store, or into a linked folder."""
    real = tmp_path / "real" / "w.zarr"
    real.parent.mkdir()
    alias_dir = tmp_path / "alias"
    if kind == "store link":
        alias_dir.mkdir()
        (alias_dir / "w.zarr").symlink_to(real, target_is_directory=True)
    else:
        alias_dir.symlink_to(real.parent, target_is_directory=True)
    return real, alias_dir / "w.zarr"


@pytest.mark.parametrize("kind", ["store link", "folder link"])
def test_a_store_reached_through_a_symlink_has_the_one_lock_of_the_real_store(
    masks: Path, tmp_path: Path, kind: str
) -> None:
    """Run B resuming alias/w.zarr while run A holds real/w.zarr (and the other way round) is refused:
    with a lock per name, B once finished a store A was overwriting (complete, "σ 2", σ 5 maps)."""
    real, alias = _aliases(tmp_path, kind)
    wm.compute(masks, real, sigma=2.0, device="cpu", workers=1)
    for held, other, extra in ((real, alias, ["--resume", "--sigma", "2"]), (alias, real, ["--overwrite", "--sigma", "5"])):
        with store_lock(held) as lock:
            second = subprocess.run(
                _cli("compute", str(masks), "--out", str(other), "--device", "cpu", "--no-progress", *extra),
                capture_output=True, text=True, timeout=120,
            )
            assert second.returncode == 2, second.stderr
            assert "being written by another run" in second.stderr and f"pid {os.getpid()}" in second.stderr
            assert lock == real.parent / ".w.zarr.weightmaps-lock" and lock.exists()
    store = open_store(alias)
    assert store.complete and store.params.sigma == 2.0
    assert not list(tmp_path.glob("*/.w.zarr.weightmaps-*"))  # no lock or leftover by either name


def test_overwrite_through_a_symlink_replaces_the_real_store_under_its_lock(masks: Path, tmp_path: Path) -> None:
    """The rename-aside of --overwrite acts on the real folder, beside the lock, and the link stays."""
    real, alias = _aliases(tmp_path, "store link")
    wm.compute(masks, real, sigma=2.0, device="cpu", workers=1)
    seen: list[tuple[bool, bool]] = []

    def during(stage: str, done: int, total: int) -> None:
        if stage == "compute":
            seen.append((lock_path(real).exists(), (alias.parent / ".w.zarr.weightmaps-lock").exists()))

    wm.compute(masks, alias, sigma=5.0, device="cpu", workers=1, overwrite=True, progress=during)
    assert seen and set(seen) == {(True, False)}  # one lock, beside the real store
    assert alias.is_symlink() and alias.resolve() == real.resolve()
    assert open_store(alias).complete and open_store(real).params.sigma == 5.0
    assert sorted(p.name for p in real.parent.iterdir()) == ["w.zarr"]  # nothing renamed aside is left
    # And the command line, through the link, the same way.
    code = subprocess.run(_cli("compute", str(masks), "--out", str(alias), "--sigma", "3", "--overwrite", "--device",
                               "cpu", "--no-progress"), capture_output=True, text=True, timeout=120)
    assert code.returncode == 0, code.stderr
    assert open_store(real).params.sigma == 3.0 and alias.is_symlink()
