"""MapParams: one value from the pipeline to the store and back, and its JSON as stores hold it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightmaps.errors import WeightmapsError
from weightmaps.params import MapParams

weights = st.dictionaries(st.integers(0, 300), st.floats(0.01, 1e3, allow_nan=False), min_size=1, max_size=6)
params = st.builds(
    MapParams,
    sigma=st.floats(0.1, 50, allow_nan=False),
    class_weights=weights,
    spacing=st.one_of(st.none(), st.tuples(st.floats(0.1, 5), st.floats(0.1, 5))),
    connectivity=st.integers(1, 2),
    ignore_index=st.one_of(st.none(), st.integers(0, 255)),
    dtype=st.sampled_from(["float32", "float16"]),
    label_map=st.one_of(st.none(), st.dictionaries(st.integers(0, 255), st.integers(0, 9), min_size=1, max_size=3)),
    num_classes=st.one_of(st.none(), st.integers(2, 300)),
    skip_bad=st.booleans(),
)


@given(p=params)
def test_json_roundtrip_through_a_real_json_document(p: MapParams) -> None:
    assert MapParams.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_the_json_is_the_format_stores_have_always_held() -> None:
    """Stores written before MapParams existed hold exactly these keys: they read and resume alike."""
    record = MapParams(sigma=2.0, class_weights={1: 3.0, 0: 0.5}, spacing=(3.0, 1.0, 1.0), ignore_index=255,
                       class_weights_origin={"source": "scheme", "scheme": "balanced", "scheme_params": {}}).to_json()
    assert record == {
        "sigma": 2.0, "spacing": [3.0, 1.0, 1.0], "connectivity": 1, "ignore_index": 255, "dtype": "float32",
        "class_weights": {"source": "scheme", "scheme": "balanced", "scheme_params": {}, "values": {"0": 0.5, "1": 3.0}},
        "label_map": None, "num_classes": None, "skip_bad": False,
    }


def test_equivalent_settings_are_equal() -> None:
    a = MapParams(sigma=2, class_weights={1: 3, 0: 1}, spacing=(1, 1), label_map={255: 1})
    b = MapParams(sigma=2.0, class_weights={0: 1.0, 1: 3.0}, spacing=None, label_map={255: 1})
    assert a == b and a.differences(b) == []
    c = MapParams(sigma=2.5, class_weights={0: 1.0, 1: 3.0}, dtype="float16", label_map={255: 1})
    assert b.differences(c) == ["sigma: store has 2.0, this run asks 2.5", "dtype: store has 'float32', this run asks 'float16'"]


def test_engine_kwargs_are_what_weight_map_takes() -> None:
    import numpy as np

    import weightmaps as wm

    p = MapParams(sigma=1.5, class_weights={0: 1.0, 1: 4.0}, ignore_index=7)
    labels = np.array([[0, 0, 1, 1, 7]])
    np.testing.assert_array_equal(
        wm.weight_map(labels, **p.engine_kwargs(), device="scipy"),
        wm.weight_map(labels, sigma=1.5, class_weights={0: 1.0, 1: 4.0}, ignore_index=7, device="scipy"),
    )


def test_unreadable_or_unknown_parameters_are_errors() -> None:
    with pytest.raises(WeightmapsError, match="not readable"):
        MapParams.from_json({"spacing": None})
    with pytest.raises(WeightmapsError, match="map kind 'nope'"):
        MapParams(sigma=1.0, class_weights={0: 1.0}, kind="nope")
