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
from weightmaps._kernels import kernel_dir, kernel_source

HERE = Path(__file__).parent
KERNELS = HERE.parent / "kernels"
float_p = ctypes.POINTER(ctypes.c_float)
int64_p = ctypes.POINTER(ctypes.c_longlong)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is required to test kernels/*.cuh on the host")
    library = tmp_path_factory.mktemp("kernels") / "libweightmap_host.so"
    subprocess.run(
        [compiler, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         "-I", str(KERNELS), str(HERE / "kernel_host.cpp"), "-o", str(library)],
        check=True, capture_output=True, text=True,
    )
    lib = ctypes.CDLL(str(library))
    lib.wm_uncertainty_array.argtypes = [float_p, float_p, ctypes.c_longlong, ctypes.c_float]
    lib.wm_weight_array.argtypes = [int64_p, float_p, float_p, ctypes.c_longlong, float_p,
                                    ctypes.c_longlong, ctypes.c_float, ctypes.c_longlong]
    return lib


def _ptr(array: np.ndarray, kind):
    return array.ctypes.data_as(kind)


def host_uncertainty(lib, distance: np.ndarray, sigma: float) -> np.ndarray:
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    out = np.full_like(distance, np.nan)  # poisoned: every element must be written
    lib.wm_uncertainty_array(_ptr(distance, float_p), _ptr(out, float_p), distance.size, 1 / (2 * sigma**2))
    return out


def host_weight(lib, labels, distance, table, sigma, ignore_label) -> np.ndarray:
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    table = np.ascontiguousarray(table, dtype=np.float32)
    out = np.full(distance.shape, -7.0, dtype=np.float32)
    lib.wm_weight_array(_ptr(labels, int64_p), _ptr(distance, float_p), _ptr(out, float_p), labels.size,
                        _ptr(table, float_p), table.size, 1 / (2 * sigma**2), ignore_label)
    return out


distances = hnp.arrays(np.float32, st.integers(1, 200), elements=st.floats(0, 1e4, width=32))


@given(distance=distances, sigma=st.floats(0.05, 50.0))
def test_host_uncertainty_matches_float64_formula(host_kernels, distance, sigma) -> None:
    expected = reference_uncertainty(distance, sigma)
    np.testing.assert_allclose(host_uncertainty(host_kernels, distance, sigma), expected, rtol=2e-6, atol=1e-30)


def test_host_uncertainty_limits(host_kernels) -> None:
    out = host_uncertainty(host_kernels, np.array([0.0, np.inf, 1e-3], np.float32), 1.0)
    assert out[0] == 0.0 and out[1] == 1.0
    # expm1 keeps precision next to the edge, where 1 - exp(-x) would round to 0 or one ulp.
    assert out[2] == pytest.approx(0.5e-6, rel=1e-5)


@given(
    labels=hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(0, 5)),
    seed=st.integers(0, 10**6),
    sigma=st.floats(0.2, 20.0),
    ignore=st.sampled_from([-1, 0, 5]),
)
def test_host_weight_matches_the_numpy_path(host_kernels, labels, seed, sigma, ignore) -> None:
    """The .cuh weight equals the numpy backend's weight (the CPU path) on the same inputs."""
    from weightmaps.backend import _numpy_weights
    from weightmaps.engine import class_weight_table

    rng = np.random.default_rng(seed)
    distance = rng.uniform(0, 30, labels.size).astype(np.float32)
    distance[rng.random(labels.size) < 0.1] = np.inf
    weights = {c: float(w) for c, w in enumerate(rng.uniform(0.1, 9.0, 6)) if c != ignore}
    weight_table = class_weight_table(weights, None if ignore < 0 else ignore)
    table, ignore_label = weight_table.values, weight_table.ignore
    got = host_weight(host_kernels, labels, distance, table, sigma, ignore_label)
    # The CPU backend takes d² (what the edt package returns); the kernel takes d and squares it.
    squared = np.square(distance.astype(np.float64)).astype(np.float32)
    via_numpy = _numpy_weights(labels, squared, table, 1 / (2 * sigma**2), ignore_label, np.float32)
    np.testing.assert_allclose(got, via_numpy, rtol=2e-6, atol=1e-30)
    expected = np.array([0.0 if v == ignore else weights[v] for v in labels]) * reference_uncertainty(distance, sigma)
    np.testing.assert_allclose(got, expected, rtol=3e-6, atol=1e-30)


def test_host_weight_flags_labels_outside_the_table(host_kernels) -> None:
    out = host_weight(host_kernels, np.array([0, 3, -2]), np.ones(3, np.float32), np.ones(2, np.float32), 1.0, -1)
    assert np.isfinite(out[0]) and np.isnan(out[1:]).all()


def test_nvcc_compiles_the_kernel_for_the_device(tmp_path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    source = tmp_path / "check.cu"
    source.write_text(
        '#include "weightmap.cuh"\n'
        "__global__ void weight(const long long* l, const float* d, const float* t, float* o, long long n) {\n"
        "  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;\n"
        "  if (i < n) o[i] = wm_weight(l[i], d[i], t, 4, 0.125f, -1);\n"
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
