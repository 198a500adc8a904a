"""How the float32 distance transforms stay exact, and the weights are rounded once (issue 20).

The distance transforms (edt, cuCIM, scipy) return float32. Asked for d² on a grid whose spacing
is "short" (a float32 of at most :data:`SHORT_BITS` significant bits: 1, 0.5, 3, 3.125, ...),
their float32 arithmetic is exact: d² = Σ (Δᵢ·tᵢ)² is an integer multiple of a power of two
(:func:`square_grid`) below 2²⁴ of them. On any other grid (spacing 0.8 scaled into [1, 2) gave
1.6; σ·√2 units gave 0.2357 at σ 3) every product rounds, and the weight carried 2-10 ulp of
that rounding. So:

- :func:`transform_units` runs the transform in units of one of the spacing values (the one
  that makes the most of the others short): isotropic spacing of any value is the unit grid,
  and (2.5, 0.8, 0.8) becomes (3.125, 1, 1);
- the rest — the length of that unit, 1/(2σ²), exp, φ — is float64
  (:func:`exponent_factor`), rounded once to the output dtype.

cuCIM returns d, not d²: d = RN(√n) with n exact, so where n is small enough (:data:`SNAP_BELOW`
grid steps) RN(d²) in float64 is within a quarter grid step of n and rounding it to the grid
recovers n exactly (``kernels/weightmap.cuh``, ``wm_square``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

__all__ = ["SHORT_BITS", "SNAP_BELOW", "exponent_factor", "short", "sigma_units", "square_grid", "transform_units"]

# A short float32 has at most this many significant bits: its square is exact in float32, and
# so are the products Δ²·t² of the transforms for the distances where the weight is not 1 yet.
SHORT_BITS = 12
# d = RN32(√n) gives d² = n·(1 ± 2⁻²³): within 0.25 of n for n < 2²¹, so rounding d² to the
# nearest integer (in grid steps) is n. Beyond, d² is used as it is (relative error 2⁻²³).
SNAP_BELOW = float(2**21)
# Bounds of the float64 factor taking the transform's d² to d²/(2σ²): below the smallest normal
# double, inf·f would still be inf but 0·f and d²·f underflow alike (every weight rounds to 0 in
# float32 well before); above 1e300 every d² > 0 of a float32 transform already gives x > 1e250
# (δ = 1), and d² = 0 gives 0, never 0·inf = NaN.
_FACTOR_MIN = sys.float_info.min
# Transform units stay within 2^±21 (the spacing values are within 2^20 of each other, see
# validation.MAX_SPACING_RATIO): d² of a 2^31-pixel axis then stays far below float32's 3.4e38.
_UNIT_RANGE = 21
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FACTOR_MAX = 1e300


def short(value: float) -> float | None:
    """``value`` as a short float32 (:data:`SHORT_BITS` significant bits), if it is one to 2⁻⁴⁰; else None.

    The 2⁻⁴⁰ admits the float64 rounding of a ratio such as 0.3 / 0.8 (0.37499999999999994):
    16 orders below float32's resolution, far below anything a float32 map can show.

    Examples
    --------
    >>> short(3.125), short(0.3 / 0.8), short(0.8)
    (3.125, 0.375, None)
    """
    if not _FLOAT32_TINY <= value <= _FLOAT32_MAX:
        return None
    rounded = float(np.float32(value))
    if rounded == 0 or abs(rounded - value) > value * 2.0**-40:
        return None
    mantissa, _ = math.frexp(rounded)
    return rounded if (mantissa * 2**SHORT_BITS).is_integer() else None


def transform_units(spacing: Sequence[float]) -> tuple[tuple[float, ...], float]:
    """The spacing to run the distance transforms with, and its unit's length: ``spacing ≈ scale · units``.

    ``scale`` is 1 or one of the spacing values: the one that makes the most of the ratios
    short, then the most frequent, then the largest. Isotropic spacing gives the unit grid whatever its value.
    The ratios lie within the 2²⁰ that :func:`weightmaps.validation.check_spacing` allows, so the
    transforms' float32 never overflows, whatever the units (nanometres or light years).

    Examples
    --------
    >>> transform_units((0.8, 0.8))
    ((1.0, 1.0), 0.8)
    >>> transform_units((2.5, 0.8, 0.8))
    ((3.125, 1.0, 1.0), 0.8)
    >>> transform_units((3.0, 1.0, 1.0))
    ((3.0, 1.0, 1.0), 1.0)
    >>> transform_units((1.5, 0.7421875, 0.7421875))
    ((1.5, 0.7421875, 0.7421875), 1.0)
    """
    best: tuple[tuple[int, int, float], tuple[float, ...]] | None = None
    # 1 too: spacings that are short themselves, e.g. (1.5, 0.7421875, 0.7421875), a CT's slice
    # thickness and its 380 mm / 512 pixels, stay as they are.
    for candidate in sorted({*spacing, 1.0}):
        ratios = [s / candidate for s in spacing]
        if not all(2.0**-_UNIT_RANGE <= r <= 2.0**_UNIT_RANGE for r in ratios):
            continue  # 1 for spacings in nanometres or light years: the transform's float32 would overflow
        shorts = [short(r) for r in ratios]
        score = (sum(q is not None for q in shorts), list(spacing).count(candidate), candidate)
        units = tuple(r if q is None else q for q, r in zip(shorts, ratios, strict=True))
        if best is None or score > best[0]:
            best = (score, units)
    assert best is not None  # spacing has one value per axis
    return best[1], best[0][2]


def square_grid(units: Sequence[float]) -> float:
    """The power of two g such that a transform's d² on ``units`` is an exact multiple of g; 0 if none.

    Where d² < 2²⁴·g the float32 arithmetic of the transforms is exact on such a grid. 0 when a
    unit is not short: then nothing is exact and nothing may be rounded to a grid.

    Examples
    --------
    >>> square_grid((1.0, 1.0)), square_grid((3.125, 1.0, 1.0)), square_grid((1.6, 1.6))
    (1.0, 0.015625, 0.0)
    """
    bits = 0
    for unit in units:
        if short(unit) != unit:
            return 0.0
        fraction = 0
        while not math.ldexp(unit, fraction).is_integer():
            fraction += 1
        bits = max(bits, fraction)
    return math.ldexp(1.0, -2 * bits)


def exponent_factor(scale: float, sigma: float) -> float:
    """f = scale² / (2σ²) in float64, so that d²/(2σ²) = f · d² of the transform in its units.

    Kept within [smallest normal double, 1e300] (see the module's bounds): no σ and spacing the
    checks accept give inf or 0, so d² = 0 (an edge) gives δ = 0 and d² = inf (no edge) δ = 1.

    Examples
    --------
    >>> exponent_factor(1.0, 2.0), exponent_factor(1e300, 1e-300), exponent_factor(1e-300, 1e300) > 0
    (0.125, 1e+300, True)
    """
    with np.errstate(over="ignore", under="ignore"):  # clamped below
        ratio = np.float64(scale) / np.float64(sigma)
        factor = float(ratio * ratio * 0.5)
    return min(max(factor, _FACTOR_MIN), _FACTOR_MAX)


# Farther than this many σ·√2 from every edge a pixel has δ = 1 exactly in float32 (d²/2σ² > 17.5
# already rounds 1 - exp(-x) to 1), so a larger spacing can be clamped to it without changing one
# weight; it keeps the transforms' arithmetic finite for σ down to the smallest double.
_SATURATED = 2.0**20
# Nearer than this many σ·√2 per pixel step every exp(−u²) of a mask (u < 2⁻⁴⁰ across 2²⁰ steps) is 1
# in float64 already, so a smaller unit is raised to it without changing one weight: no σ the checks
# accept (up to 1.8e308 over spacing 1e-300) makes a unit 0.
_NEGLIGIBLE = 2.0**-60
# The smallest positive normal float32: the factor from d² to d²/(2σ²) never rounds to 0, so that
# an infinite distance (a sample without edges) still gives δ = 1, never 0·inf = NaN.
_TINY32 = float(np.finfo(np.float32).tiny)


def _power_of_two_scale(spacing: tuple[float, ...]) -> tuple[tuple[float, ...], int]:
    """``spacing / 2**k`` with its largest value in [1, 2), and ``k`` (for :func:`sigma_units`).

    The transforms compute in float32: in these units their arithmetic stays far from overflow
    and underflow whatever the user's units (nanometres, or 1e20 with σ 2e20), and scaling by a
    power of two back and forth is exact.
    """
    k = math.frexp(max(spacing))[1] - 1
    return tuple(math.ldexp(s, -k) for s in spacing), k


def sigma_units(spacing: tuple[float, ...], sigma: float) -> tuple[tuple[float, ...], float]:
    """The spacing to run the transform with, and the factor taking its d² to d²/(2σ²), in σ·√2 units.

    For the U-Net map (weightmaps.unet), whose promise is a tolerance of w0, not an ulp count;
    the paper's map, distances and δ run on :func:`transform_units` instead.

    Measured in units of σ·√2 (clamped at :data:`_SATURATED`, which changes no weight) and scaled
    by a power of two into [1, 2): no σ or spacing the checks accept can make the maths produce
    NaN (σ = 3e-20 once gave 0·inf on every edge pixel) or overflow.
    """
    # s / σ / √2, not s / (σ·√2): σ·√2 overflows to inf for σ > 1.27e308 (0 units, 0/0 later).
    units = tuple(min(max(s / sigma / math.sqrt(2.0), _NEGLIGIBLE), _SATURATED) for s in spacing)
    scaled, k = _power_of_two_scale(units)
    return scaled, max(math.ldexp(1.0, 2 * k), _TINY32)
