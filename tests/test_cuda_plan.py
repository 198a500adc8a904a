"""The rules that keep cuCIM's padding in check, tested without a GPU.

cuCIM pads a 2-D image to a square and a 3-D array to a cube (see weightmaps/cuda_plan.py); the
plan decides before any call which batches may go as one stacked 3-D transform and which samples
must take the CPU transform. The engine's use of the plan runs here on the CPU backends, with a
``free_memory`` hook standing in for the device's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import weightmaps as wm
from weightmaps import transforms
from tests.test_engine import blobs
from weightmaps.cuda_plan import MAX_CUBE_SIDE, MIN_STACK_FILL, padded_side, stack_groups, transform_bytes, transform_limit

GIB = 2**30


def test_padded_side_rounds_every_axis_to_32_and_takes_the_largest() -> None:
    assert padded_side((256, 256)) == 256
    assert padded_side((100, 33)) == 128
    assert padded_side((4, 1024, 1024)) == 1024
    assert padded_side((17, 40, 33)) == 64
    assert padded_side((1, 1)) == 32


def test_transform_bytes_counts_the_padded_cube_not_the_input() -> None:
    # (4, 1024, 1024): a 1024³ cube of int32 coordinates, twice, plus the padded bool input.
    assert transform_bytes((4, 1024, 1024)) == 1024**3 * 9 + 4 * 4 * 1024**2
    # Above side 1024 the coordinates are int64.
    assert transform_bytes((1056, 8, 8)) == 1056**3 * 17 + 4 * 1056 * 64
    # 2-D: int16 pairs up to side 32768.
    assert transform_bytes((300, 1000)) == 1024**2 * 9 + 4 * 300 * 1000


def test_a_stack_of_a_few_large_masks_is_never_one_cube() -> None:
    # The cases: (4, 1024, 1024) would be 256x the work; (1, 4096, 4096) hundreds of GB.
    assert stack_groups(4, (1024, 1024), free_bytes=80 * GIB) == [(0, 4, False)]
    assert stack_groups(1, (4096, 4096), free_bytes=140 * GIB) == [(0, 1, False)]
    # Full cubes of small masks do stack; the short remainder goes one by one.
    assert stack_groups(550, (256, 256), free_bytes=80 * GIB) == [(0, 256, True), (256, 512, True), (512, 550, False)]
    # A remainder that fills a quarter of its cube stacks too (a shard of 64 masks of 256²).
    assert stack_groups(600, (256, 256), free_bytes=80 * GIB)[-1] == (512, 600, True)
    assert stack_groups(64, (256, 256), free_bytes=80 * GIB) == [(0, 64, True)]
    # Long thin masks fill too little of the cube: never stacked.
    assert stack_groups(512, (32, 512), free_bytes=80 * GIB) == [(0, 512, False)]
    # Not enough free memory for a 1024³ cube: one by one.
    assert stack_groups(2048, (1000, 1000), free_bytes=8 * GIB) == [(0, 2048, False)]


@given(
    n=st.integers(0, 3000),
    height=st.integers(1, 1100),
    width=st.integers(1, 1100),
    free_gib=st.floats(0.001, 200),
)
def test_stack_groups_cover_the_batch_and_stack_only_full_cubes(n: int, height: int, width: int, free_gib: float) -> None:
    free = int(free_gib * GIB)
    groups = stack_groups(n, (height, width), free)
    position = 0
    for start, stop, stacked in groups:
        assert start == position and stop > start
        position = stop
        if stacked:
            side = padded_side((stop - start, height, width))
            assert side <= 1024 and stop - start <= padded_side((height, width))
            assert (stop - start) * height * width / side**3 >= MIN_STACK_FILL
            assert transform_bytes((stop - start, height, width)) <= free / 2
    assert position == n
    # Neighbouring runs of single samples are merged.
    assert all(a[2] or b[2] for a, b in zip(groups, groups[1:]))


def test_transform_limit_names_the_shape_and_the_reason() -> None:
    assert transform_limit((128, 128, 128), free_bytes=GIB) is None
    assert transform_limit((1280, 64, 64), free_bytes=200 * GIB) is None
    assert "above its limit of 1280" in transform_limit((1281, 64, 64), free_bytes=200 * GIB)
    assert padded_side((1281, 64, 64)) ** 3 > 2**31 > MAX_CUBE_SIDE**3
    strip = transform_limit((256, 16384), free_bytes=GIB)
    assert strip is not None and "square of side 16384" in strip and "GiB" in strip
    assert transform_limit((256, 16384), free_bytes=16 * GIB) is None


def test_transform_limit_needs_2_or_3_axes() -> None:
    with pytest.raises(ValueError, match="2-D or 3-D"):
        padded_side((4, 4, 4, 4))


# --- the engine follows the plan (CPU backends standing in for the device) --------------------


def _limited(device: str, free: int, **options) -> wm.Backend:
    return dataclasses.replace(wm.get_backend(device), free_memory=lambda: free, **options)


def test_a_sample_beyond_the_limit_takes_the_cpu_transform(caplog: pytest.LogCaptureFixture) -> None:
    labels = blobs((48, 64), seed=5)
    tiny = _limited("scipy", free=10_000)  # no transform fits: every sample falls back to edt
    assert transform_limit(labels.shape, 10_000) is not None
    transforms._FALLBACK_LOGGED.discard(labels.shape)  # logged once per shape and process
    with caplog.at_level(logging.WARNING, logger="weightmaps"):
        got = wm.weight_map(labels, sigma=2.0, class_weights={0: 1.0, 1: 2.0, 2: 3.0}, device=tiny)
        again = wm.distance_to_edges(labels, device=tiny)
    want = wm.weight_map(labels, sigma=2.0, class_weights={0: 1.0, 1: 2.0, 2: 3.0}, device="scipy")
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(again, wm.distance_to_edges(labels, device="scipy"), rtol=1e-6)
    fallbacks = [r.getMessage() for r in caplog.records if "using the CPU transform" in r.getMessage()]
    assert len(fallbacks) == 1 and "(48, 64)" in fallbacks[0]  # one line, not one per call


def test_without_the_fallback_a_sample_beyond_the_limit_is_an_error() -> None:
    strict = _limited("scipy", free=10_000, cpu_fallback=False)
    with pytest.raises(wm.WeightmapsError, match=r"cuCIM pads \(48, 64\).*fallback is off"):
        wm.distance_to_edges(blobs((48, 64)), device=strict)
    # Within the limit nothing changes.
    roomy = _limited("scipy", free=GIB, cpu_fallback=False)
    np.testing.assert_array_equal(wm.distance_to_edges(blobs((48, 64)), device=roomy),
                                  wm.distance_to_edges(blobs((48, 64)), device="scipy"))


def test_backend_options_survive_pickling() -> None:
    backend = dataclasses.replace(wm.get_backend("cpu"), stack_batches=False, cpu_fallback=False)
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.name == "cpu" and not copy.stack_batches and not copy.cpu_fallback
    assert pickle.loads(pickle.dumps(wm.get_backend("scipy"))) is wm.get_backend("scipy")


def test_a_batch_mixes_stacked_groups_and_single_samples() -> None:
    # 40 samples of 24 x 30 (side 32): one full stacked group of 32, then 8 one by one.
    stack = np.stack([blobs((24, 30), seed=i) for i in range(40)])
    stack[35] = 1
    backend = _limited("cpu", free=GIB)
    assert [g[2] for g in stack_groups(40, (24, 30), GIB)] == [True, False]
    got = wm.distance_to_edges(stack, device=backend, batch=True)
    want = np.stack([wm.distance_to_edges(s, device="scipy") for s in stack])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert math.isinf(got[35].min())
