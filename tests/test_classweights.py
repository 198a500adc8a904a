"""Class counts and the class-weight schemes, each checked against its published formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import weightmaps as wm

count_maps = st.dictionaries(st.integers(0, 300), st.integers(1, 10**7), min_size=1, max_size=8)


def test_counts_over_masks_exclude_the_ignore_label() -> None:
    masks = [np.array([[0, 0, 1], [255, 1, 1]], np.uint8), np.array([[2, 2], [0, 255]], np.uint8)]
    assert wm.class_counts(masks, ignore_index=255) == {0: 3, 1: 3, 2: 2}
    assert wm.class_counts(masks) == {0: 3, 1: 3, 2: 2, 255: 2}


def test_counts_of_large_label_values_and_3d() -> None:
    mask = np.array([[[5_000_000, 0], [0, 0]]], np.int64)
    assert wm.count_labels(mask) == {0: 3, 5_000_000: 1}


def test_counts_reject_bad_masks() -> None:
    with pytest.raises(wm.WeightmapsError, match="integer"):
        wm.count_labels(np.zeros((2, 2)))
    with pytest.raises(wm.WeightmapsError, match="-3"):
        wm.count_labels(np.array([[-3, 1]]))


@given(counts=count_maps)
def test_balanced_is_the_papers_equation_5(counts) -> None:
    weights = wm.class_weights(counts, "balanced")
    m, c = sum(counts.values()), len(counts)
    assert weights.keys() == counts.keys()
    for label, n in counts.items():
        assert weights[label] == pytest.approx(m / (c * n), rel=1e-12)
    # The balanced weights make every class carry the same total weight.
    totals = [weights[k] * n for k, n in counts.items()]
    assert max(totals) == pytest.approx(min(totals), rel=1e-9)


def test_balanced_equals_sklearn_compute_class_weight() -> None:
    # sklearn: n_samples / (n_classes * np.bincount(y)), written out for y = [0]*6 + [1]*3 + [4]*1.
    assert wm.class_weights({0: 6, 1: 3, 4: 1}) == pytest.approx({0: 10 / 18, 1: 10 / 9, 4: 10 / 3})


def test_median_frequency() -> None:
    weights = wm.class_weights({0: 70, 1: 20, 2: 10}, "median")
    assert weights == pytest.approx({0: 0.2 / 0.7, 1: 1.0, 2: 2.0})


def test_median_frequency_over_the_images_holding_each_class() -> None:
    # Eigen & Fergus: f_c = pixels of c / pixels of the images in which c occurs.
    masks = [np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)]
    masks[1][:2, :2] = 1  # class 1: 4 pixels, only in mask 1 (16 pixels); class 0: 28 of 32
    counts = wm.class_counts(masks)
    image_pixels = wm.classweights.class_image_pixels(masks)
    assert image_pixels == {0: 32, 1: 16}
    freqs = {0: 28 / 32, 1: 4 / 16}
    median = (freqs[0] + freqs[1]) / 2
    assert wm.class_weights(counts, "median", image_pixels=image_pixels) == pytest.approx(
        {0: median / freqs[0], 1: median / freqs[1]})
    with pytest.raises(wm.WeightmapsError, match=r"no entry for label\(s\) \[1\]"):
        wm.class_weights(counts, "median", image_pixels={0: 32})


def test_enet_log_weights() -> None:
    weights = wm.class_weights({0: 90, 1: 10}, "log")
    assert weights == pytest.approx({0: 1 / math.log(1.02 + 0.9), 1: 1 / math.log(1.02 + 0.1)})
    assert wm.class_weights({0: 90, 1: 10}, "log", c=1.5)[1] == pytest.approx(1 / math.log(1.6))


def test_effective_number_of_samples() -> None:
    counts = {0: 1000, 1: 10}
    beta = 0.99
    raw = {k: (1 - beta) / (1 - beta**n) for k, n in counts.items()}
    scale = 2 / sum(raw.values())
    assert wm.class_weights(counts, "effective", beta=beta) == pytest.approx({k: v * scale for k, v in raw.items()})
    # beta = 0 means every class weighs the same.
    assert wm.class_weights(counts, "effective", beta=0.0) == pytest.approx({0: 1.0, 1: 1.0})


@given(counts=count_maps, scheme=st.sampled_from(["balanced", "median", "log", "effective"]))
def test_rarer_classes_never_weigh_less(counts, scheme) -> None:
    weights = wm.class_weights(counts, scheme)
    ordered = sorted(counts, key=counts.get)
    values = [weights[k] for k in ordered]
    assert all(a >= b * (1 - 1e-12) for a, b in zip(values, values[1:]))
    assert all(math.isfinite(v) and v > 0 for v in values)


def test_none_and_explicit_mapping() -> None:
    assert wm.class_weights({0: 5, 3: 1}, "none") == {0: 1.0, 3: 1.0}
    assert wm.class_weights({}, {"2": "0.5", 1: 3}) == {1: 3.0, 2: 0.5}


def test_zero_counts_are_left_out() -> None:
    assert wm.class_weights({0: 10, 1: 0, 2: 10}) == {0: 1.0, 2: 1.0}


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (({0: 1}, "inverse"), {}, "unknown class-weight scheme 'inverse'"),
        (({0: 0, 1: 0},), {}, "no class has a pixel"),
        (({0: -4},), {}, "label 0"),
        (({0: 1}, "effective"), {"beta": 1.0}, "beta"),
        (({0: 1}, "log"), {"c": 0.5}, "c must be > 1"),
        (({0: 1}, "balanced"), {"gamma": 2}, "gamma"),
        (({0: 1}, {0: float("inf")}), {}, "finite"),
        (({0: 1}, {}), {}, "empty"),
    ],
)
def test_bad_class_weight_requests(args, kwargs, message) -> None:
    with pytest.raises(wm.WeightmapsError, match=message):
        wm.class_weights(*args, **kwargs)
