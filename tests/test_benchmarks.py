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

# The slow tier (tests/conftest.py): the benchmarks, run for real at tiny sizes.
pytestmark = pytest.mark.slow


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
            assert set(stages["seconds"]) >= {"decode", "stats", "edges", "distance", "weights", "write"}
            # Timed inside compute_maps / weight_map through their timer: each seam was entered.
            assert all(stages["seconds"][k] > 0 for k in ("transfer", "edges", "distance", "weights"))
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


@pytest.mark.parametrize("name", ["cpu-2026-11-25.json", "cpu-2026-11-26-256many.json"])
def test_render_reads_committed_results(name: str) -> None:
    # Results written before the package layout (schema 1: weight_map_* keys, targets without a
    # direction) still print, the at-most target with its ≤.
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--render", str(BENCHMARKS / "results" / name)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| size | device |" in proc.stdout and "overhead" not in proc.stdout
    assert "decode+write floor, 512 × 256² (4 classes, png) | ≤ 1.25× |" in proc.stdout
    assert "| --device cpu vs (a), end to end, 512 × 256² | ≥ 4.0× |" in proc.stdout


def _size_entry(key: str, label: str, a_s: float, c_s: float, d_s: float, n: int = 100) -> dict:
    def timed(seconds: float) -> dict:
        return {"measured": True, "median_s": seconds, "masks_per_s": n / seconds}

    stage_seconds = {"decode": 2.0, "stats": 0.5, "digest": 0.5, "transfer": 0.1, "edges": 0.1, "distance": 0.8,
                     "weights": 0.1, "write": 1.0}
    stages = {"seconds": stage_seconds, "compute_s": 1.0, "distance_share_of_compute": 0.8}
    return {"key": key, "label": label,
            "variants": {"a": timed(a_s), "c": timed(c_s), "d": timed(d_s),
                         "e": {**timed(9.0), "steps_s": {"edges": 2.0, "distance": 3.0, "weights": 1.0, "read": 5.0}}},
            "stages": {"cpu": stages, "cuda": stages}}


def test_targets_are_evaluated_from_their_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from wmbench.targets import AT_MOST, evaluate_targets

    report = {"method": {"quick": False}, "machine": {"cores_usable": 2, "cuda_backend": "available"},
              "sizes": [_size_entry("256", "L256", a_s=10.0, c_s=2.0, d_s=1.0)]}
    got = {t["target"]: t for t in evaluate_targets(report)}
    cpu256 = got["--device cpu vs (a), end to end, 512 × 256²"]
    assert cpu256["measured"] == pytest.approx(5.0) and cpu256["status"] == "met"
    assert got["--device cpu vs (a), end to end, 64 × 1024²"]["status"] == "not measured (size not in this run)"
    share = got["distance transform share of --device cpu compute, L256"]
    assert share["unit"] == "share" and share["status"] == "met"
    stacked = got["--device cuda (batches stacked as 3-D transforms) vs (e) cuCIM loop, compute alone, 512 × 256²"]
    assert stacked["measured"] == pytest.approx(6.0) and stacked["status"] == "met"
    per_sample = got["--device cuda (per-sample transforms) vs (e) cuCIM loop, compute alone, 512 × 256²"]
    assert per_sample["measured"] is None and per_sample["status"] == "not measured"
    # Floor: (2 + 0.5 + 0.5 + 1) s over min(4 threads, 2 cores) = 2 s; (d) took 1 s: 0.5, at most 1.25.
    floor = got["--device cuda end to end / estimated decode+write floor, L256"]
    assert floor["direction"] == AT_MOST and floor["measured"] == pytest.approx(0.5) and floor["status"] == "met"

    report["sizes"][0]["variants"]["d"]["median_s"] = 3.0
    floor = {t["target"]: t for t in evaluate_targets(report)}[floor["target"]]
    assert floor["measured"] == pytest.approx(1.5) and floor["status"] == "missed"


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


def benchmark_module(name: str):
    """A script of benchmarks/ imported as a module (they are scripts, not a package)."""
    import importlib

    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_unet_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/unet.py end to end at tiny sizes: every variant measured, the maps agree."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "unet.py"), "--out", str(tmp_path), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = tmp_path.glob("unet-cpu-*-quick.json")
    report = json.loads(path.read_text())
    assert len(report["results"]) == 2
    for result in report["results"]:
        assert set(result["median_s_per_mask"]) == {"loop", "unet", "unet_1_worker", "bressan"}
        assert all(v > 0 for v in result["median_s_per_mask"].values())
        assert result["max_abs_diff"] <= 1e-4 * 10.0 + 1e-5  # the map's bound, tolerance · w0


def test_unet_connected_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/unet_connected.py at tiny sizes: both variants timed, the labelling equals the old loop."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "unet_connected.py"), "--out", str(tmp_path), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = tmp_path.glob("unet-connected-cpu-*-quick.json")
    results = json.loads(path.read_text())["results"]
    assert [r["side"] for r in results] == [64, 96]
    for r in results:
        assert set(r["median_s_per_mask"]) == {"as-is", "connected"}
        assert all(v > 0 for v in r["median_s_per_mask"].values()) and r["per_label_loop_s"] > 0


def test_unet_connected_benchmark_loop_is_the_old_labelling() -> None:
    bench = benchmark_module("unet_connected")
    from tests.reference import reference_instances_from_labels

    labels = make_masks(1, (40, 48), num_classes=5, seed=4)[0]
    np.testing.assert_array_equal(bench.per_label_loop(labels), reference_instances_from_labels(labels))


def test_unet_benchmark_loop_is_the_reference_map() -> None:
    """The benchmark's baseline computes the U-Net map (against tests/reference.py)."""
    bench = benchmark_module("unet")
    from tests.reference import reference_unet
    from weightmaps.sample_data import make_instance_masks

    cells = make_instance_masks(1, (40, 50), instances=9, seed=2)[0]
    np.testing.assert_allclose(bench.scipy_unet(cells, 10.0, 5.0), reference_unet(cells, w0=10.0, sigma=5.0), rtol=1e-6)


def test_precision_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/precision.py at tiny sizes: every step timed before and after, the after maps rounded once."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "precision.py"), "--out", str(tmp_path), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = tmp_path.glob("precision-cpu-*-quick.json")
    rows = json.loads(path.read_text())["rows"]
    assert {r["step"] for r in rows} == {"weights", "weight_map", "distance", "derived", "sdf"}
    for r in rows:
        assert all(v > 0 for v in r["median_s"].values())
        if r["step"] != "derived" or "0.7, 0.7" not in r["case"]:  # no short grid there: ≤ 2.5 ulp
            assert all(e <= 0.5 + 2.0**-20 for e in r["max_ulp"]["after"].values()), r


def test_precision_benchmark_before_is_the_old_float32_pass() -> None:
    """The benchmark's "before" weight pass is the float32 formula (what main computed before issue 20)."""
    bench = benchmark_module("precision")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 5000)
    squared = rng.uniform(0, 400, 5000).astype(np.float32)
    table = np.array([0.5, 2.0, 7.0], dtype=np.float32)
    got = bench.weights_before(labels, squared.copy(), table, np.float32(1 / 18))
    expected = table[labels] * -np.expm1(squared * np.float32(-1 / 18))
    np.testing.assert_allclose(got, expected, rtol=3e-7)
    assert got.dtype == np.float32


def test_sdf_loading_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/sdf_loading.py end to end at tiny sizes: both loaders measured, the store sized."""
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "sdf_loading.py"), "--out", str(tmp_path), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = tmp_path.glob("sdf-loading-cpu-*-quick.json")
    results = json.loads(path.read_text())["results"]
    assert [r["key"] for r in results] == ["64", "3d"]
    for r in results:
        assert all(v > 0 for v in r["median_samples_per_s"].values()) and r["store_bytes"] > 0


def test_sdf_benchmark_baseline_is_one_hot2dist() -> None:
    bench = benchmark_module("sdf_loading")
    from tests.reference import one_hot2dist

    labels = make_masks(1, (40, 48), num_classes=4, seed=3)[0]
    np.testing.assert_array_equal(bench.one_hot2dist(labels, 4), one_hot2dist(labels, 4))
    np.testing.assert_allclose(weightmaps.signed_distance(labels, num_classes=4, device="cpu"),
                               bench.one_hot2dist(labels, 4), rtol=1e-5, atol=1e-5)


def test_object_storage_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/object_storage.py end to end at a tiny size: every variant timed, maps equal to disk."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "object_storage.py"), "--out", str(tmp_path),
                           "--n", "12", "--side", "32", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = tmp_path.glob("object-storage-cpu-*.json")
    report = json.loads(path.read_text())
    assert set(report["masks_per_s"]) == {"disk", "s3 out", "s3 all", "s3 all +20 ms"}
    assert all(v > 0 for v in report["masks_per_s"].values()) and all(report["maps_equal_to_disk"].values())


def test_pool_scaling_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/pool_scaling.py at a tiny size: both worker counts timed, every store equal."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "pool_scaling.py"), "--out", str(tmp_path), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = tmp_path.glob("pool-scaling-cpu-*-quick.json")
    rows = json.loads(path.read_text())["rows"]
    assert [r["workers"] for r in rows] == [1, 2]
    assert all(r["masks_per_s"] > 0 and len(r["seconds"]) == 2 for r in rows)
    assert rows[0]["ratio"] == pytest.approx(1.0)


def test_shard_write_benchmark_quick_run() -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "shard_write.py"), "--quick", "--repeats", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("\n| ") == 3  # the header's rule and one row per map size


def test_plain_scipy_on_a_pool_writes_the_plain_script_s_maps(tmp_path: Path) -> None:
    """Baseline (g) is baseline (a) on a pool: the same files, the same bytes."""
    from weightmaps.sample_data import write_dataset

    root = write_dataset(tmp_path / "data", n=6, shape=(24, 32), num_classes=3, seed=5, with_images=False)
    for script, out in (("plain_scipy.py", "a"), ("plain_scipy_pool.py", "g")):
        proc = subprocess.run([sys.executable, str(BENCHMARKS / script), str(root / "masks"), str(tmp_path / out),
                               "--sigma", "2"] + (["--processes", "2"] if out == "g" else []),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["n"] == 6 and report["steady_s_per_mask"] > 0 and report["startup_s"] > 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "g").iterdir())
    for name in names:
        assert np.load(tmp_path / "a" / name).tobytes() == np.load(tmp_path / "g" / name).tobytes()
