"""Every parameter, at any value a user can type: the run ends with correct maps, or is refused
before any store exists (exit 2, a message naming the parameter and what it accepts).

Found by a hostile user: ``--tolerance 1e-310`` passed its check and failed every shard after the
store existed (1/tolerance overflows); ``--sigma 1e-200`` and ``--spacing 1e300`` leaked
``OverflowError: (34, 'Numerical result out of range')`` from a check; ``--ignore-index 1e20``-sized
integers leaked "Python int too large to convert to C long"; ``--map distance --spacing 1e-300``
wrote a complete store of zeros (below float32's normal range). Here hypothesis draws values
across every magnitude a double has, and the ints a C long does not hold, through the CLI.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.reference import brute_distance
from tests.test_cli import _restore_logging, run  # noqa: F401  (the CLI tests' autouse logging fixture)
from weightmaps.readers import read_mask
from weightmaps.sample_data import write_dataset
from weightmaps.store import open_store

# What a refusal must name: one of the parameters (as the CLI spells them) or the class weights.
NAMES = ("--sigma", "sigma", "--spacing", "spacing", "--tolerance", "tolerance", "--w0", "w0", "--ignore-index",
         "ignore_index", "--num-classes", "num_classes", "--max-weight", "max_weight", "class ", "--dtype")


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny PNG masks of 3 classes (small enough for the brute-force reference)."""
    return write_dataset(tmp_path_factory.mktemp("ranges"), n=2, shape=(12, 10), num_classes=3, seed=2,
                         with_images=False) / "masks"


def magnitudes(low: int = -324, high: int = 308) -> st.SearchStrategy[float]:
    """Positive doubles of any magnitude, subnormals included, and the values at the ends."""
    scaled = st.builds(lambda m, e: m * 10.0**e, st.floats(1.0, 9.99), st.integers(low, high))
    return st.one_of(scaled, st.sampled_from([5e-324, 1e-310, 2.2250738585072014e-308, 1.1754944e-38,
                                              6.103515625e-05, 1.0, 65504.0, 3.4e38, 1.7e308]))


def odd_floats() -> st.SearchStrategy[str]:
    return st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e999"])


def number(strategy: st.SearchStrategy[float]) -> st.SearchStrategy[str]:
    """A number as typed: half the time an everyday one (so that runs get computed and checked),
    else any magnitude, or a value no check should let through."""
    everyday = st.builds(lambda m, e: m * 10.0**e, st.floats(1.0, 9.99), st.integers(-2, 2))
    return st.one_of(everyday.map(repr), everyday.map(repr), strategy.map(repr), odd_floats())


huge_ints = st.one_of(st.integers(-3, 300), st.integers(0, 3),
                      st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**20]))


@st.composite
def parameters(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["bressan", "unet", "distance", "sdf"]))
    args = ["--map", kind, "--dtype", draw(st.sampled_from(["float32", "float16"]))]
    if kind in ("bressan", "unet"):
        args += ["--sigma", draw(number(magnitudes()))]
        args += ["--class-weights", draw(st.sampled_from(["balanced", "median", "log", "effective", "none"]))]
        if draw(st.booleans()):
            args += ["--max-weight", draw(number(magnitudes()))]
    if kind == "unet":
        args += ["--instances", "connected"]  # the masks are semantic; their components are the instances
        if draw(st.booleans()):
            args += ["--tolerance", draw(number(magnitudes(-330, 1)))]
        if draw(st.booleans()):
            args += ["--w0", draw(number(magnitudes()))]
    if draw(st.booleans()):
        values = draw(st.lists(number(magnitudes()), min_size=1, max_size=2))
        args += ["--spacing", ",".join(values)]
    if draw(st.booleans()):
        args += ["--ignore-index", str(draw(huge_ints))]
    if kind == "sdf" or draw(st.booleans()):
        args += ["--num-classes", str(draw(st.one_of(st.just(3), huge_ints)))]
    return {"kind": kind, "args": args}


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _spacing(args: list[str]) -> tuple[float, float]:
    text = _value(args, "--spacing")
    if text is None:
        return (1.0, 1.0)
    values = [float(v) for v in text.split(",")]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _brute_distance(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The exact distance in float64, computed in units of the largest spacing (no over/underflow)."""
    top = max(spacing)
    with np.errstate(over="ignore", under="ignore"):
        return brute_distance(mask, np.array(spacing) / top) * top


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=parameters())
def test_any_value_ends_correct_or_is_refused_before_the_store(masks: Path, tmp_path: Path,
                                                               drawn: dict[str, Any]) -> None:
    args = drawn["args"]
    out = tmp_path / f"{uuid.uuid4().hex}.zarr"
    code, _, err = run("compute", masks, "--out", out, "--device", "cpu", "--workers", "1", "--no-progress", *args)
    assert code in (0, 2), f"{args}: exit {code}: {err}"  # 1 is a crash: an exception leaked
    event(f"{drawn['kind']}: {'computed' if code == 0 else 'refused'}")  # --hypothesis-show-statistics
    if code == 2:
        assert not out.exists(), f"{args}: refused after the store was created: {err}"
        assert "Traceback" not in err and any(name in err for name in NAMES), f"{args}: {err}"
        return
    store = open_store(out)
    assert store.complete
    dtype = np.dtype(store.params.dtype)
    tiny = float(np.finfo(dtype).tiny)
    # float16 rounds the float32 map once: 2^-11 of it; float32 maps are a few ulp from exact.
    rel = 2.0**-11 + 1e-6 if dtype == np.float16 else 1e-5
    for path in sorted(masks.glob("*.png")):
        mask = read_mask(str(path))
        got = store[path.stem].astype(np.float64)
        assert not np.isnan(got).any(), args
        if drawn["kind"] == "sdf":
            assert np.isfinite(got).all(), args
            continue
        nonzero = got[got != 0]
        # What the README promises of every map: each nonzero value a normal number of its dtype
        # (where it holds its precision), none overflowed.
        assert (np.abs(nonzero) >= tiny).all(), (args, nonzero.min())
        if drawn["kind"] == "distance":
            expected = _brute_distance(mask, _spacing(args))
            assert np.isfinite(got).all()
            assert (np.abs(got - expected) <= rel * expected).all(), args
        elif drawn["kind"] == "bressan":
            sigma = float(_value(args, "--sigma"))  # type: ignore[arg-type]
            distance = _brute_distance(mask, _spacing(args))
            top = max(_spacing(args))
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # 0·inf where distance == 0
                ratio = np.where(distance == 0, 0.0, (distance / top) * (top / sigma))
                delta = -np.expm1(-(ratio * ratio) / 2.0)
            ignore = store.params.ignore_index
            phi = np.vectorize(lambda v: 0.0 if v == ignore else store.class_weights[int(v)], otypes=[float])(mask)
            expected = phi * delta
            assert (np.abs(got - expected) <= rel * expected + 1e-45).all(), args
        else:  # unet: w_c + separation, finite and within what its parameters allow
            w0 = store.params.w0 or 0.0
            assert np.isfinite(got).all() and got.min() >= 0
            # The bound, rounded to the store's dtype as every value is (float16: 10.1 is stored 10.1015625).
            rounding = 2.0**-11 if got.dtype == np.float16 else 1e-6
            assert got.max() <= (max(store.class_weights.values()) + w0) * (1 + rounding) + 1e-30, args
    assert math.isfinite(sum(store.class_weights.values()))


@pytest.mark.parametrize(("args", "named"), [
    (["--sigma", "1e-200"], None),  # computed: σ and spacing are computed in units of each other
    (["--sigma", "2", "--spacing", "1e300"], None),
    # σ·√2 overflowed to inf: 0 units, ZeroDivisionError in every shard (found by the dev profile)
    (["--map", "unet", "--sigma", "1.7e308", "--instances", "connected"], None),
    (["--sigma", "2", "--ignore-index", str(10**20)], "--ignore-index"),
    (["--sigma", "2", "--ignore-index", str(2**64 - 1)], None),
    (["--sigma", "2", "--num-classes", str(10**20)], "--num-classes"),
    (["--map", "sdf", "--num-classes", str(2**16 + 1)], "--num-classes"),
    (["--sigma", "2", "--label-map", f"1:{10**20}"], "label_map"),
    (["--sigma", "2", "--label-map", f"{2**63}:1"], "label_map"),
    (["--sigma", "2", "--label-map", f"-1:0,1:{2**63 - 1}"], None),
    (["--map", "unet", "--sigma", "2", "--tolerance", "1e-310"], "--tolerance"),
    (["--map", "unet", "--sigma", "2", "--tolerance", "1e-300"], None),
    (["--map", "distance", "--spacing", "1e-300"], "--spacing"),
    (["--map", "sdf", "--num-classes", "3", "--spacing", "1e300"], "--spacing"),
    (["--sigma", "2", "--max-weight", "1e-320"], "--max-weight"),
])
def test_each_reported_hole_ends_computed_or_refused_naming_its_parameter(
    masks: Path, tmp_path: Path, args: list[str], named: str | None
) -> None:
    out = tmp_path / "w.zarr"
    code, _, err = run("compute", masks, "--out", out, "--device", "cpu", "--workers", "1", "--no-progress", *args)
    if named is None:
        assert code == 0, err
        store = open_store(out)
        assert store.complete and all(not np.isnan(store[i]).any() for i in range(len(store)))
    else:
        assert code == 2 and named in err and "Traceback" not in err, err
        assert not out.exists()
