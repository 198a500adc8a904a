"""What a float16 store holds: every nonzero value a normal float16 (≥ 2⁻¹⁴ ≈ 6.1e-5), so within
2⁻¹¹ of the exact value; a run whose values could fall below that is refused before the store.

Found: ``compute --map distance --dtype float16 --spacing 1e-7`` (metres: 100 nm pixels) wrote a
complete store of subnormal distances, 19 % off at 1e-7 and a quarter of them 0 at 1e-8, so the
weights ``WeightMapDataset(..., sigma=3 * spacing)`` derived were off by up to 6.8.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import weightmaps as wm
from tests.reference import brute_distance
from tests.test_cli import _restore_logging, run  # noqa: F401  (the CLI tests' autouse logging fixture)
from weightmaps.errors import WeightmapsError
from weightmaps.pipeline import compute
from weightmaps.readers import read_mask
from weightmaps.sample_data import make_masks, write_dataset
from weightmaps.store import open_store

TINY16 = 2.0**-14  # float16's smallest normal number, 6.1035e-05


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three PNG masks of 3 classes, 24 × 20: small enough for the brute-force distances."""
    return write_dataset(tmp_path_factory.mktemp("f16"), n=3, shape=(24, 20), num_classes=3, seed=6,
                         with_images=False) / "masks"


def exact_distance(mask: np.ndarray, spacing: float) -> np.ndarray:
    return brute_distance(mask) * spacing  # in pixel units, then scaled: exact in float64


@pytest.mark.parametrize("kind", ["distance", "sdf"])
@pytest.mark.parametrize("spacing", ["1e-7", "1e-5", "6e-5"])
def test_distances_below_float16s_normal_range_are_refused_before_the_scan(
    masks: Path, tmp_path: Path, kind: str, spacing: str
) -> None:
    out = tmp_path / "d.zarr"
    extra = ["--num-classes", "3"] if kind == "sdf" else []
    code, _, err = run("compute", masks, "--out", out, "--map", kind, "--dtype", "float16", "--spacing", spacing,
                       "--device", "cpu", "--workers", "1", "--no-progress", *extra)
    assert code == 2, err
    assert f"spacing {float(spacing):g} is too small for float16" in err and "6.1e-05" in err and "--spacing" in err
    assert not out.exists()
    # Before the scan: the refusal needs the spacing and the dtype only.
    seen: list[str] = []
    with pytest.raises(WeightmapsError, match="too small for float16"):
        compute(masks, out, kind=kind, dtype="float16", spacing=float(spacing), device="cpu", workers=1,
                num_classes=3 if kind == "sdf" else None, progress=lambda stage, *_: seen.append(stage))
    assert seen == [] and not out.exists()


def test_a_header_spacing_below_the_range_is_refused_after_the_scan_before_the_store(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    root = tmp_path / "nii"
    root.mkdir()
    for i, mask in enumerate(make_masks(2, (4, 16, 16), seed=3)):
        nib.save(nib.Nifti1Image(mask, affine=np.diag([1e-7, 1e-7, 1e-7, 1.0])), root / f"case{i}.nii.gz")
    code, _, err = run("compute", root, "--out", tmp_path / "d.zarr", "--map", "distance", "--dtype", "float16",
                       "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 2 and "too small for float16" in err, err
    assert not (tmp_path / "d.zarr").exists()


def test_at_the_smallest_spacing_float16_holds_distances_to_2_11_and_derived_weights_to_the_promise(
    masks: Path, tmp_path: Path
) -> None:
    spacing = TINY16  # the smallest accepted: the nearest distance off the edges is exactly 2⁻¹⁴
    out = tmp_path / "d.zarr"
    code, _, err = run("compute", masks, "--out", out, "--map", "distance", "--dtype", "float16", "--spacing",
                       repr(spacing), "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 0, err
    store = open_store(out)
    phi = store.class_weights
    sigma = 3 * spacing  # as the user derived them
    for path in sorted(masks.glob("*.png")):
        mask = read_mask(str(path))
        d, exact = store[path.stem].astype(np.float64), exact_distance(mask, spacing)
        assert store[path.stem].dtype == np.float16
        assert (np.abs(d - exact) <= 2.0**-11 * exact).all()
        derived = wm.weight_from_distance(store[path.stem], mask, sigma=sigma, class_weights=phi)
        reference = wm.weight_from_distance(exact, mask, sigma=sigma, class_weights=phi)
        # d within 2⁻¹¹ moves w = φ(1 − e^{−x}) by at most φ · 2⁻¹⁰ / e (x = d²/2σ²; 2x·e^{−x} ≤ 2/e)
        bound = max(phi.values()) * 2.0**-10 / math.e + 1e-6
        assert np.abs(derived.astype(np.float64) - reference).max() <= bound


def test_weights_that_would_leave_float16s_normal_range_are_refused_naming_the_largest_sigma(
    masks: Path, tmp_path: Path
) -> None:
    """φ · δ(smallest spacing) is the smallest nonzero weight: with φ = 1 and σ = 100 it is 5e-5."""
    out = tmp_path / "w.zarr"
    code, _, err = run("compute", masks, "--out", out, "--sigma", "100", "--class-weights", "none", "--dtype",
                       "float16", "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 2, err
    assert "sigma 100 is too large for float16 maps" in err and "sigma at most 90.5" in err, err
    assert "--dtype float32" in err and not out.exists()
    # At the σ it names, every weight is a normal float16, within 2⁻¹¹ of the exact weight.
    code, _, err = run("compute", masks, "--out", out, "--sigma", "90.5", "--class-weights", "none", "--dtype",
                       "float16", "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 0, err
    for path in sorted(masks.glob("*.png")):
        mask = read_mask(str(path))
        w = open_store(out)[path.stem].astype(np.float64)
        exact = -np.expm1(-(exact_distance(mask, 1.0) ** 2) / (2 * 90.5**2))
        assert (w[w != 0] >= TINY16).all()
        assert (np.abs(w - exact) <= (2.0**-11 + 1e-6) * exact).all()
    # A class weight below the range is refused by name (here through the cap, --max-weight).
    code, _, err = run("compute", masks, "--out", tmp_path / "m.zarr", "--sigma", "2", "--max-weight", "1e-5",
                       "--dtype", "float16", "--device", "cpu", "--workers", "1", "--no-progress")
    assert code == 2 and "weight 1e-05 is below float16's smallest normal number" in err and "--max-weight" in err


@pytest.mark.parametrize("kind", ["bressan", "unet", "distance", "sdf"])
def test_a_float16_store_holds_the_float32_maps_rounded_once(masks: Path, tmp_path: Path, kind: str) -> None:
    args = {"bressan": ["--sigma", "3"], "unet": ["--sigma", "3", "--instances", "connected"],
            "distance": ["--spacing", "0.8"], "sdf": ["--num-classes", "3", "--spacing", "0.8"]}[kind]
    for dtype in ("float32", "float16"):
        code, _, err = run("compute", masks, "--out", tmp_path / f"{dtype}.zarr", "--map", kind, "--dtype", dtype,
                           "--device", "cpu", "--workers", "1", "--no-progress", *args)
        assert code == 0, err
    wide, half = open_store(tmp_path / "float32.zarr"), open_store(tmp_path / "float16.zarr")
    for sid in wide.ids:
        w32, w16 = wide[sid].astype(np.float64), half[sid].astype(np.float64)
        assert half[sid].dtype == np.float16
        finite = np.isfinite(w32)
        assert (np.isinf(w16) == ~finite).all()  # +inf (no edge) stays +inf
        # Rounding to nearest float16: within 2⁻¹¹ of the value where it is a normal float16.
        # (An sdf value 1 − d within 2⁻¹⁴ of 0 would be a subnormal; these masks have none.)
        assert (np.abs(w16 - w32)[finite] <= 2.0**-11 * np.abs(w32[finite]) * (1 + 2.0**-12)).all(), sid
