"""The benchmark runner works end to end at tiny sizes, and its baseline computes what weightmaps does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightmaps
from weightmaps.sample_data import make_masks

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CPU_VARIANTS = ("a", "b", "c")
GPU_VARIANTS = ("d", "e")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--out", str(out), "--quick"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = out.glob("*-quick.json")
    assert path.with_suffix(".md").is_file()
    assert "| size | variant |" in proc.stdout
    return json.loads(path.read_text())


def test_quick_run_reports_every_variant(quick_report: dict) -> None:
    sizes = {s["key"]: s for s in quick_report["sizes"]}
    assert {"256", "256bin", "3d"} <= set(sizes)
    assert sizes["3d"]["spacing"] == [3.0, 1.0, 1.0]
    gpu = quick_report["machine"]["cuda_backend"] == "available"
    for size in sizes.values():
        assert "error" not in size
        variants = size["variants"]
        assert set(variants) == set(CPU_VARIANTS + GPU_VARIANTS)
        measured = CPU_VARIANTS + (GPU_VARIANTS if gpu else ())
        for key in measured:
            v = variants[key]
            assert v["measured"] and v["masks_per_s"] > 0 and v["ratio_to_a"] > 0
            assert len(v["seconds"]) == quick_report["method"]["repeats"]
        assert variants["a"]["ratio_to_a"] == pytest.approx(1.0)
        if not gpu:
            for key in GPU_VARIANTS:
                assert not variants[key]["measured"]
                assert variants[key]["reason"] == "not measured (no GPU)"
                assert "masks_per_s" not in variants[key]


def test_quick_run_checked_correctness_before_timing(quick_report: dict) -> None:
    for size in quick_report["sizes"]:
        check = size["check"]
        assert check["ran"] and check["passed"]
        assert set(check["compared"]) >= {"b", "c"}
        for compared in check["compared"].values():
            assert compared["ok"] and compared["n_maps"] == size["n"]


def test_quick_run_stage_breakdown(quick_report: dict) -> None:
    for size in quick_report["sizes"]:
        for device in ("scipy", "cpu"):
            stages = size["stages"][device]
            assert stages["same_maps_as_pipeline"]
            assert set(stages["seconds"]) >= {"decode", "stats", "edges", "distance", "weights", "write"}
            assert stages["total_s"] > 0 and 0 < stages["distance_share_of_compute"] <= 1
            assert sum(stages["share"].values()) == pytest.approx(1.0)


def test_quick_run_targets_are_reported_not_asserted(quick_report: dict) -> None:
    targets = quick_report["targets"]
    assert targets and all(t["status"] for t in targets)
    assert all(t["measured"] is None for t in targets)  # quick sizes evaluate nothing
    assert quick_report["machine"]["cpu"] and quick_report["versions"]["numpy"]


def test_render_reprints_the_markdown(quick_report: dict, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(quick_report))
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--render", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| size | variant |" in proc.stdout and "not measured" in proc.stdout


@pytest.mark.parametrize("shape", [(40, 48), (12, 14, 16)])
def test_plain_script_edges_are_weightmaps_edges(shape: tuple[int, ...]) -> None:
    # Baseline (a) must compute the same edges as weightmaps (face neighbours, border no edge),
    # so that the benchmark compares like with like.
    from scipy import ndimage

    for labels in make_masks(4, shape, num_classes=4, seed=7):
        cross = ndimage.generate_binary_structure(labels.ndim, 1)
        plain = (ndimage.grey_dilation(labels, footprint=cross) != labels) | (
            ndimage.grey_erosion(labels, footprint=cross) != labels
        )
        np.testing.assert_array_equal(plain, weightmaps.edge_mask(labels))


def test_plain_script_matches_weight_map(tmp_path: Path) -> None:
    from weightmaps.sample_data import write_dataset

    root = write_dataset(tmp_path / "data", n=3, shape=(8, 20, 24), num_classes=3, seed=3, fmt="npy",
                         with_images=False)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "plain_scipy.py"), str(root / "masks"), str(out),
         "--sigma", "2", "--spacing", "3,1,1"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["n"] == 3
    masks = [np.load(p) for p in sorted((root / "masks").glob("*.npy"))]
    phi = weightmaps.class_weights(weightmaps.class_counts(masks))
    for path, labels in zip(sorted(out.glob("*.npy")), masks, strict=True):
        expected = weightmaps.weight_map(labels, sigma=2.0, class_weights=phi, spacing=(3, 1, 1), device="scipy")
        np.testing.assert_allclose(np.load(path), expected, rtol=1e-5)
