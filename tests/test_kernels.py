"""kernels/*.cuh without a GPU: g++ runs the math against numpy; nvcc checks that it compiles."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.reference import reference_uncertainty
from weightmaps.kernel_sources import kernel_dir, kernel_source

HERE = Path(__file__).parent
KERNELS = HERE.parent / "kernels"
float_p = ctypes.POINTER(ctypes.c_float)
double_p = ctypes.POINTER(ctypes.c_double)
int64_p = ctypes.POINTER(ctypes.c_longlong)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is required to test kernels/*.cuh on the host")
    library = tmp_path_factory.mktemp("kernels") / "libweightmap_host.so"
    # -ffp-contract=off: no fused multiply-adds the device code would not do either.
    subprocess.run(
        [compiler, "-O2", "-std=c++17", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         "-I", str(KERNELS), str(HERE / "kernel_host.cpp"), "-o", str(library)],
        check=True, capture_output=True, text=True,
    )
    lib = ctypes.CDLL(str(library))
    lib.wm_square_array.argtypes = [float_p, double_p, ctypes.c_longlong, ctypes.c_double]
    lib.wm_uncertainty_array.argtypes = [float_p, double_p, ctypes.c_longlong, ctypes.c_double, ctypes.c_double]
    lib.wm_weight_array.argtypes = [int64_p, float_p, float_p, ctypes.c_longlong, double_p,
                                    ctypes.c_longlong, ctypes.c_double, ctypes.c_double, ctypes.c_longlong]
    return lib


def _ptr(array: np.ndarray, kind):
    return array.ctypes.data_as(kind)


def host_square(lib, distance: np.ndarray, grid: float) -> np.ndarray:
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    out = np.full(distance.shape, np.nan)
    lib.wm_square_array(_ptr(distance, float_p), _ptr(out, double_p), distance.size, grid)
    return out


def host_uncertainty(lib, distance: np.ndarray, sigma: float, grid: float = 0.0) -> np.ndarray:
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    out = np.full(distance.shape, np.nan)  # poisoned: every element must be written
    lib.wm_uncertainty_array(_ptr(distance, float_p), _ptr(out, double_p), distance.size, 1 / (2 * sigma**2), grid)
    return out


def host_weight(lib, labels, distance, table, factor, ignore_label, grid=0.0) -> np.ndarray:
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    table = np.ascontiguousarray(table, dtype=np.float64)
    out = np.full(distance.shape, -7.0, dtype=np.float32)
    lib.wm_weight_array(_ptr(labels, int64_p), _ptr(distance, float_p), _ptr(out, float_p), labels.size,
                        _ptr(table, double_p), table.size, factor, grid, ignore_label)
    return out


def cucim_distance(squares: np.ndarray) -> np.ndarray:
    """d as cuCIM returns it from an exact d² (its kernels: ``sqrt(static_cast<float>(sq_dist))``)."""
    return np.sqrt(squares.astype(np.float32))


distances = hnp.arrays(np.float32, st.integers(1, 200), elements=st.floats(0, 1e4, width=32))


@given(distance=distances, sigma=st.floats(0.05, 50.0))
def test_host_uncertainty_is_the_float64_formula(host_kernels, distance, sigma) -> None:
    """δ of the float32 d given, in double: the float64 formula to its last bits (no grid: d·d as it is)."""
    expected = reference_uncertainty(distance, sigma)
    np.testing.assert_allclose(host_uncertainty(host_kernels, distance, sigma), expected, rtol=1e-14, atol=1e-300)


def test_host_uncertainty_limits(host_kernels) -> None:
    out = host_uncertainty(host_kernels, np.array([0.0, np.inf, 1e-3], np.float32), 1.0)
    assert out[0] == 0.0 and out[1] == 1.0
    # expm1 keeps precision next to the edge, where 1 - exp(-x) would cancel.
    assert out[2] == pytest.approx(float(np.float32(1e-3)) ** 2 / 2, rel=1e-6)
    for grid in (1.0, 2.0**-6):  # inf stays inf on a grid too: δ = 1, no NaN
        assert host_uncertainty(host_kernels, np.array([np.inf, 0.0], np.float32), 1.0, grid).tolist() == [1.0, 0.0]


@given(steps=hnp.arrays(np.int64, st.integers(1, 300), elements=st.integers(0, 2**21 - 1)),
       grid=st.sampled_from([1.0, 0.25, 2.0**-6, 2.0**-14, 4.0]))
def test_square_recovers_the_exact_square_from_cucims_rounded_distance(host_kernels, steps, grid) -> None:
    """d = RN(√(n·g)) (cuCIM's float32 square root) → wm_square gives n·g exactly, below 2²¹ steps."""
    squares = steps * grid
    got = host_square(host_kernels, cucim_distance(squares), grid)
    np.testing.assert_array_equal(got, squares)


def test_square_without_a_grid_and_beyond_the_snap_range_is_the_plain_square(host_kernels) -> None:
    d = np.array([np.sqrt(2.0), 2049.5, 3.3, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(host_square(host_kernels, d, 0.0), d.astype(np.float64) ** 2)
    far = cucim_distance(np.array([2.0**21 + 3, 2.0**23 + 5]))
    np.testing.assert_array_equal(host_square(host_kernels, far, 1.0), far.astype(np.float64) ** 2)


def test_square_snap_fixes_what_float32_squaring_gets_wrong(host_kernels) -> None:
    """The regression: d² taken as float32(d)² is not n for most n; the kernel's d² is."""
    steps = np.arange(1, 200_000, dtype=np.int64)
    d = cucim_distance(steps.astype(np.float64))
    assert (np.square(d) != steps).any()  # the old kernel's d*d in float
    np.testing.assert_array_equal(host_square(host_kernels, d, 1.0), steps)


@given(
    labels=hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(0, 5)),
    seed=st.integers(0, 10**6),
    sigma=st.floats(0.2, 20.0),
    ignore=st.sampled_from([-1, 0, 5]),
    grid=st.sampled_from([1.0, 2.0**-6]),
)
def test_host_weight_equals_the_numpy_path_bit_for_bit(host_kernels, labels, seed, sigma, ignore, grid) -> None:
    """The .cuh weight from cuCIM's d equals the numpy backend's weight from edt's d², bit for bit.

    Both get the same exact d² = n·g (the CPU as d², the kernel as cuCIM's rounded d): the CPU
    and the GPU path then compute the same float64 maths and round once.
    """
    from weightmaps.backend import _numpy_weights
    from weightmaps.engine import class_weight_table

    rng = np.random.default_rng(seed)
    squares = rng.integers(0, 40_000, labels.size) * grid
    distance = cucim_distance(squares)
    distance[rng.random(labels.size) < 0.1] = np.inf
    squares = np.where(np.isinf(distance), np.inf, squares)
    weights = {c: float(w) for c, w in enumerate(rng.uniform(0.1, 9.0, 6)) if c != ignore}
    weight_table = class_weight_table(weights, None if ignore < 0 else ignore)
    table, ignore_label = weight_table.values, weight_table.ignore
    factor = 1 / (2 * sigma**2)
    got = host_weight(host_kernels, labels, distance, table, factor, ignore_label, grid)
    via_numpy = _numpy_weights(labels, squares.astype(np.float32), table, factor, ignore_label, np.float32)
    np.testing.assert_array_equal(got, via_numpy)
    phi = np.array([0.0 if v == ignore else weights[v] for v in labels])
    exact = phi * -np.expm1(-squares * factor)
    np.testing.assert_array_equal(got, exact.astype(np.float32))  # rounded once from the exact weight


def test_host_weight_flags_labels_outside_the_table(host_kernels) -> None:
    out = host_weight(host_kernels, np.array([0, 3, -2]), np.ones(3, np.float32), np.ones(2), 0.5, -1)
    assert np.isfinite(out[0]) and np.isnan(out[1:]).all()


def test_nvcc_compiles_the_kernel_for_the_device(tmp_path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    source = tmp_path / "check.cu"
    source.write_text(
        '#include "weightmap.cuh"\n'
        "__global__ void weight(const long long* l, const float* d, const double* t, float* o, long long n) {\n"
        "  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;\n"
        "  if (i < n) o[i] = wm_weight(l[i], d[i], t, 4, 0.125, 1.0, -1);\n"
        "}\n"
    )
    result = subprocess.run(
        [nvcc, "-std=c++17", "-Werror", "all-warnings", "-arch=sm_80", "-I", str(KERNELS),
         "-c", str(source), "-o", str(tmp_path / "check.o")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr


def test_kernel_sources_are_found_and_read_lazily() -> None:
    import sys

    assert kernel_dir().joinpath("weightmap.cuh").is_file()
    assert "wm_weight" in kernel_source("weightmap.cuh")
    # Importing the package compiles nothing and does not import CuPy.
    code = "import weightmaps, sys; assert 'cupy' not in sys.modules and 'torch' not in sys.modules and 'click' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
