"""The ``weightmaps`` CLI: exit codes, messages naming the files, and the four commands."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from weightmaps.cli import main
from weightmaps.sample_data import make_masks, write_dataset
from weightmaps.store import open_store


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the "weightmaps" logger; leave it as it was for other tests."""
    logger = logging.getLogger("weightmaps")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/masks: 12 PNG masks of 48x40; root/images: their RGB images."""
    return write_dataset(tmp_path_factory.mktemp("cli"), n=12, shape=(48, 40), seed=11)


@pytest.fixture(scope="module")
def store(data: Path) -> Path:
    out = data / "w.zarr"
    code, stdout, stderr = run("compute", data / "masks", "--out", out, "--sigma", "2", "--device", "cpu",
                               "--workers", "1", "--samples-per-shard", "4", "--no-progress")
    assert code == 0, stderr
    assert "wrote 12 weight maps" in stdout
    return out


def _good_masks(root: Path, n: int = 3) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(make_masks(n, (32, 32), seed=3)):
        Image.fromarray(mask).save(root / f"good{i}.png")


# --- each bad input: exit 2, the message names the file ------------------------------------------


def _corrupt(root: Path) -> str:
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return "corrupt.png"


def _float_tiff(root: Path) -> str:
    tifffile.imwrite(root / "float.tif", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    return "float.tif"


def _mixed_dims(root: Path) -> str:
    np.save(root / "volume.npy", make_masks(1, (4, 32, 32))[0])
    return "volume.npy"


def _label_too_big(root: Path) -> str:
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(root / "nine.png")
    return "nine.png"


def _rgb(root: Path) -> str:
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "rgb.png")
    return "rgb.png"


def _duplicate_id(root: Path) -> str:
    np.save(root / "good0.npy", make_masks(1, (32, 32))[0])
    return "good0.npy"


@pytest.mark.parametrize("make_bad", [_corrupt, _float_tiff, _mixed_dims, _label_too_big, _rgb, _duplicate_id])
def test_bad_input_exits_2_naming_the_file(tmp_path: Path, make_bad: object) -> None:
    root = tmp_path / "masks"
    _good_masks(root)
    name = make_bad(root)  # type: ignore[operator]
    out = tmp_path / "out.zarr"
    code, stdout, stderr = run("compute", root, "--out", out, "--sigma", "2", "--num-classes", "3",
                               "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 2, stderr
    assert name in stderr
    assert not out.exists()


def test_several_offenders_listed_at_once(tmp_path: Path) -> None:
    root = tmp_path / "masks"
    _good_masks(root)
    names = [f(root) for f in (_corrupt, _float_tiff, _mixed_dims, _label_too_big, _rgb)]
    code, _, stderr = run("compute", root, "--out", tmp_path / "o.zarr", "--sigma", "2", "--num-classes", "3",
                          "--device", "cpu", "--no-progress")
    assert code == 2
    assert "5 of 8 input masks are bad" in stderr
    for name in names:
        assert name in stderr
    # --skip-bad goes on and records them.
    code, stdout, stderr = run("compute", root, "--out", tmp_path / "o.zarr", "--sigma", "2", "--num-classes", "3",
                               "--device", "cpu", "--workers", "1", "--skip-bad", "--no-progress")
    assert code == 0, stderr
    assert "skipped 5 bad input(s)" in stdout
    assert len(open_store(tmp_path / "o.zarr").report["bad"]) == 5
    code, stdout, _ = run("info", tmp_path / "o.zarr")
    assert code == 0 and "5 bad input(s) skipped" in stdout and "rgb.png" in stdout


# --- compute --------------------------------------------------------------------------------------


def test_existing_store_exits_2_naming_it(data: Path, store: Path) -> None:
    code, _, stderr = run("compute", data / "masks", "--out", store, "--sigma", "2", "--no-progress")
    assert code == 2
    assert str(store) in stderr and "--resume" in stderr


def test_resume_and_overwrite_together_is_a_usage_error(data: Path, store: Path) -> None:
    code, _, stderr = run("compute", data / "masks", "--out", store, "--sigma", "2", "--resume", "--overwrite")
    assert code == 2
    assert "exclude each other" in stderr


def test_bad_option_values_are_usage_errors(data: Path, tmp_path: Path) -> None:
    for args in (["--sigma", "0"], ["--sigma", "2", "--spacing", "1,x"], ["--sigma", "2", "--label-map", "255"],
                 ["--sigma", "2", "--device", "tpu"], ["--sigma", "2", "--workers", "0"]):
        code, _, stderr = run("compute", data / "masks", "--out", tmp_path / "x.zarr", *args)
        assert code == 2, args
        assert "Invalid value" in stderr, args
    code, _, stderr = run("compute", data / "masks", "--out", tmp_path / "x.zarr", "--sigma", "2",
                          "--spacing", "1,1,1", "--no-progress")
    assert code == 2 and "spacing" in stderr
    assert not (tmp_path / "x.zarr").exists()


def test_resume_changed_sigma_exits_2(data: Path, store: Path) -> None:
    code, _, stderr = run("compute", data / "masks", "--out", store, "--sigma", "3", "--resume", "--no-progress")
    assert code == 2
    assert "sigma" in stderr


def test_dry_run_json_and_overwrite(data: Path, store: Path, tmp_path: Path) -> None:
    code, stdout, _ = run("compute", data / "masks", "--out", tmp_path / "d.zarr", "--sigma", "2", "--dry-run",
                          "--json", "--no-progress")
    assert code == 0
    plan = json.loads(stdout)
    assert plan["n_samples"] == 12 and plan["shapes"]["most_common"] == [{"shape": [48, 40], "n_samples": 12}]
    assert not (tmp_path / "d.zarr").exists()
    code, stdout, _ = run("compute", data / "masks", "--out", tmp_path / "d.zarr", "--sigma", "2", "--dry-run")
    assert code == 0 and "dry run: would write 12 weight maps" in stdout
    # --overwrite replaces a store; --label-map and float16 are recorded.
    out = tmp_path / "o.zarr"
    for _ in range(2):
        code, _, stderr = run("compute", data / "masks", "--out", out, "--sigma", "2", "--overwrite", "--workers", "1",
                              "--label-map", "2:1", "--dtype", "float16", "--device", "cpu", "--no-progress", "-q")
        assert code == 0, stderr
    ws = open_store(out)
    assert ws.params.label_map == {2: 1} and ws.params.dtype == "float16"
    assert set(ws.class_weights) == {0, 1}


def test_progress_and_logs_on_stderr(data: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run("-v", "compute", data / "masks", "--out", tmp_path / "p.zarr", "--sigma", "2",
                               "--device", "cpu", "--workers", "1")
    assert code == 0
    assert "mask/s" in stderr  # the tqdm bar
    assert "INFO: scanned 12 masks" in stderr
    assert "mask/s" not in stdout and stdout.startswith("wrote 12 weight maps")


def test_class_weights_from_store(data: Path, store: Path, tmp_path: Path) -> None:
    code, _, stderr = run("compute", data / "masks", "--out", tmp_path / "v.zarr", "--sigma", "2",
                          "--class-weights-from", store, "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 0, stderr
    assert open_store(tmp_path / "v.zarr").class_weights == open_store(store).class_weights


# --- stats, info, preview --------------------------------------------------------------------------


def test_stats_json_and_table(data: Path, store: Path) -> None:
    code, stdout, _ = run("stats", data / "masks", "--json", "--no-progress")
    assert code == 0
    stats = json.loads(stdout)
    assert stats["n_samples"] == 12
    assert {int(k): v for k, v in stats["class_counts"].items()} == open_store(store).class_counts
    assert set(stats["class_weights"]) == {"balanced", "median", "log", "effective", "none"}
    assert {int(k): v for k, v in stats["class_weights"]["balanced"].items()} == open_store(store).class_weights
    code, stdout, _ = run("stats", data / "masks", "--ignore-index", "0", "--no-progress")
    assert code == 0
    assert "ignore label 0 excluded" in stdout and "balanced" in stdout


def test_info_prints_completeness(data: Path, store: Path, tmp_path: Path) -> None:
    code, stdout, _ = run("info", store)
    assert code == 0
    assert "12 weight maps, complete" in stdout and "sigma: 2.0" in stdout and "float32" in stdout
    code, stdout, _ = run("info", store, "--json")
    info = json.loads(stdout)
    assert info["complete"] and info["n_written"] == 12 and info["bytes_on_disk"] > 0
    code, _, stderr = run("info", tmp_path)
    assert code == 2 and "not a weightmaps store" in stderr


def test_info_incomplete_store(data: Path, tmp_path: Path) -> None:
    from weightmaps.pipeline import compute

    out = tmp_path / "partial.zarr"

    def stop_after_first_shard(stage: str, done: int, total: int) -> None:
        if stage == "compute" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute(data / "masks", out, sigma=2, device="cpu", workers=1, samples_per_shard=4,
                progress=stop_after_first_shard)
    code, stdout, _ = run("info", out)
    assert code == 1  # scripts test for a finished store by the exit status
    assert "INCOMPLETE: 4 of 12 maps written" in stdout
    code, stdout, _ = run("info", out, "--json")
    assert code == 1 and json.loads(stdout)["complete"] is False


def test_info_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`weightmaps info STORE | head -1` with more output than a pipe holds: no traceback."""
    import shlex

    masks = tmp_path / "masks"
    masks.mkdir()
    np.save(masks / "good.npy", np.eye(8, dtype=np.uint8))
    for i in range(1500):  # each skipped input is a line of `info`: ~150 kB, more than a pipe holds
        (masks / f"broken_{i:04d}_with_a_rather_long_name_to_make_the_line_longer.npy").write_bytes(b"not numpy")
    code, _, err = run("compute", masks, "--out", tmp_path / "w.zarr", "--sigma", "1", "--skip-bad", "--no-progress",
                       "--device", "cpu", "--workers", "1")
    assert code == 0, err
    cli = f"{shlex.quote(sys.executable)} -c 'import sys; from weightmaps.cli import main; sys.exit(main())'"
    proc = subprocess.run(["bash", "-c", f"{cli} info {shlex.quote(str(tmp_path / 'w.zarr'))} | head -1"],
                          capture_output=True, text=True, timeout=120)
    assert "1 weight maps, complete" in proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_a_single_spacing_applies_to_every_axis(data: Path, tmp_path: Path) -> None:
    code, _, err = run("compute", data / "masks", "--out", tmp_path / "w.zarr", "--sigma", "2", "--spacing", "0.5",
                       "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert open_store(tmp_path / "w.zarr").params.spacing == (0.5, 0.5)


def test_preview_writes_a_png(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    code, _, stderr = run("preview", data / "masks" / "sample_00000.png", "--image",
                          data / "images" / "sample_00000.png", "--sigma", "2", "--out", out)
    assert code == 0, stderr
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.width > 800 and img.height > 200
        pixels = np.asarray(img.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # a figure, not a blank canvas
    # A 3-D mask is drawn by its middle slice; class weights from a JSON file.
    volume = tmp_path / "vol.npy"
    np.save(volume, make_masks(1, (6, 24, 24), seed=1)[0])
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"0": 1, "1": 2, "2": 3}))
    code, _, stderr = run("preview", volume, "--sigma", "1", "--out", tmp_path / "vol.png", "--class-weights", weights)
    assert code == 0, stderr
    assert (tmp_path / "vol.png").stat().st_size > 10_000


# --- a real process -------------------------------------------------------------------------------


def test_console_script_subprocess(data: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "weightmaps"
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from weightmaps.cli import main; main()"]
    out = tmp_path / "s.zarr"
    proc = subprocess.run([*cmd, "compute", str(data / "masks"), "--out", str(out), "--sigma", "2", "--device", "cpu",
                           "--workers", "2", "--samples-per-shard", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "compute" in proc.stderr and "mask/s" in proc.stderr
    assert open_store(out).complete
    proc = subprocess.run([*cmd, "compute", str(data / "masks"), "--out", str(out), "--sigma", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert str(out) in proc.stderr


def test_a_label_mapped_twice_is_a_usage_error(data: Path, tmp_path: Path) -> None:
    code, _, err = run("compute", data / "masks", "--out", tmp_path / "w.zarr", "--sigma", "2", "--label-map", "1:2,1:3")
    assert code == 2 and "label 1 is mapped twice (1:2 and 1:3)" in err
    assert not (tmp_path / "w.zarr").exists()


def test_max_weight_is_recorded(data: Path, tmp_path: Path) -> None:
    code, _, err = run("compute", data / "masks", "--out", tmp_path / "w.zarr", "--sigma", "2", "--device", "cpu",
                       "--max-weight", "0.75", "--no-progress")
    assert code == 0, err
    ws = open_store(tmp_path / "w.zarr")
    assert ws.params.max_weight == 0.75 and max(ws.class_weights.values()) == 0.75


def test_preview_to_an_unknown_format_is_a_usage_error(data: Path, tmp_path: Path) -> None:
    code, _, err = run("preview", next((data / "masks").iterdir()), "--sigma", "2", "--out", tmp_path / "x.xyz")
    assert code == 2 and "name the figure format by its suffix" in err and "png" in err
    assert not (tmp_path / "x.xyz").exists()


def test_cli_messages_name_flags_not_python_arguments(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "a.npy", np.zeros((4, 4), np.float32))  # a float mask: bad input
    np.save(tmp_path / "masks" / "b.npy", np.eye(4, dtype=np.uint8))
    code, _, err = run("compute", tmp_path / "masks", "--out", tmp_path / "w.zarr", "--sigma", "1", "--no-progress")
    assert code == 2 and "--skip-bad" in err and "skip_bad=True" not in err


@pytest.mark.parametrize("big_label", [7, 2**63 + 1])  # fits int64 / only uint64 holds it
def test_masks_of_one_shape_in_int64_and_uint64_are_computed(tmp_path: Path, big_label: int) -> None:
    """numpy stacks int64 with uint64 as float64: each mask is cast to one integer dtype, checked."""
    import weightmaps as wm

    masks = tmp_path / "masks"
    masks.mkdir()
    a, b = make_masks(2, (32, 32), num_classes=3, seed=21)
    signed = a.astype(np.int64)
    unsigned = b.astype(np.uint64)
    unsigned[4:12, 4:12] = big_label
    np.save(masks / "a.npy", signed)
    np.save(masks / "b.npy", unsigned)
    out = tmp_path / "w.zarr"
    code, _, err = run("compute", masks, "--out", out, "--sigma", "2", "--device", "cpu", "--workers", "1",
                       "--no-progress")
    assert code == 0, err
    store = open_store(out)
    assert store.complete and big_label in store.class_weights
    for sid, mask in (("a", signed), ("b", unsigned)):
        expected = wm.weight_map(mask, sigma=2.0, class_weights=store.class_weights, device="cpu")
        np.testing.assert_array_equal(store[sid], expected)
    # Every kind goes through the same stacking: a distance store of the same masks.
    code, _, err = run("compute", masks, "--out", tmp_path / "s.zarr", "--map", "distance", "--device", "cpu",
                       "--workers", "1", "--no-progress")
    assert code == 0, err
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")["b"], wm.distance_to_edges(unsigned, device="cpu"))
