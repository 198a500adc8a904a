"""What the exact float32 maps cost on the CPU: before and after issue 20, side by side, one run.

    python benchmarks/precision.py --out benchmarks/results      # 1024² and 128³ masks, 5 repeats
    python benchmarks/precision.py --out /tmp/p --quick          # tiny, seconds (the tests run it)

Issue 20: the float32 maps were 2-10 ulp from the exact weight (σ-unit spacing rounded in the
transform, the exponent argument rounded twice, expm1f, a float32 φ, 1 − d in float32). Now the
transforms run on a grid where their float32 d² is exact and the rest is float64, rounded once
(weightmaps/precision.py). Each step is timed as it was ("before": the code of main before the
change, copied below) and as it is ("after"), interleaved, median of ``--repeats``, one core, on
the same masks (:mod:`weightmaps.sample_data`), with its max error in ulp against the float64
formula on scipy's float64 distances at σ 3 and σ 20:

- **weights**: the weight pass alone on the same d² (``Backend.apply_weights``, the CPU's block loop);
- **weight_map**: edges, distance transform and weights (``weightmaps.weight_map``, device cpu);
- **distance**: ``weightmaps.distance_to_edges``;
- **derived**: ``weightmaps.weight_from_distance`` from the float32 distances;
- **sdf**: ``weightmaps.signed_distance`` (error against ``one_hot2dist`` in float64).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SIGMAS = (3.0, 20.0)


# --- before: the float32 code as it was -------------------------------------------------------


def weights_before(labels: np.ndarray, squared: np.ndarray, table: np.ndarray, inv_two_sigma_sq: float) -> np.ndarray:
    """The CPU weight pass before issue 20: float32 throughout, blocks of 8192 pixels, in place."""
    weights = squared.reshape(-1)
    labels_flat = labels.reshape(-1)
    scale = np.float32(-inv_two_sigma_sq)
    phi = np.empty(min(8192, weights.size), dtype=np.float32)
    for start in range(0, weights.size, 8192):
        block = weights[start:start + 8192]
        phi_block = phi[: block.size]
        block *= scale
        np.expm1(block, out=block)
        np.take(table, labels_flat[start:start + 8192], out=phi_block, mode="clip")
        block *= phi_block
        np.negative(block, out=block)
    return squared


def weight_map_before(labels: np.ndarray, sigma: float, phi: dict[int, float], spacing: tuple[float, ...]) -> np.ndarray:
    """weight_map before: the transform in σ·√2 units scaled into [1, 2), the float32 weight pass."""
    import weightmaps as wm
    from weightmaps import transforms
    from weightmaps.precision import sigma_units

    backend = wm.get_backend("cpu")
    units, factor = sigma_units(spacing, sigma)
    squared = transforms.edge_distance(backend, transforms.find_edges(labels, 1, False), units, False, squared=True)
    return weights_before(labels, squared, _table32(phi), factor)


def distance_before(labels: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """distance_to_edges before: the spacing scaled into [1, 2) by a power of two, edt's float32 d."""
    import math

    import weightmaps as wm
    from weightmaps import transforms

    k = math.frexp(max(spacing))[1] - 1
    scaled = tuple(math.ldexp(s, -k) for s in spacing)
    distance = transforms.edge_distance(wm.get_backend("cpu"), transforms.find_edges(labels, 1, False), scaled, False)
    distance *= np.float32(math.ldexp(1.0, k))
    return distance


def derived_before(distance: np.ndarray, labels: np.ndarray, sigma: float, phi: dict[int, float]) -> np.ndarray:
    """weight_from_distance before: φ from the float32 table, d²/(2σ²) in float64."""
    d = distance.astype(np.float64)
    return (_table32(phi)[labels].astype(np.float64) * -np.expm1(-(d * d) / (2.0 * sigma * sigma))).astype(np.float32)


def sdf_before(labels: np.ndarray, num_classes: int, spacing: tuple[float, ...]) -> np.ndarray:
    """signed_distance before: edt's d in the user's spacing, 1 − d in float32."""
    import weightmaps as wm
    from weightmaps import transforms

    backend = wm.get_backend("cpu")
    out = np.zeros((num_classes, *labels.shape), dtype=np.float32)
    present = [int(v) for v in np.unique(labels)]
    masks = [m for k in present for m in (labels == k, labels != k)]
    distance = transforms.edge_distance(backend, np.stack(masks), spacing, batch=True)
    for j, k in enumerate(present):
        inside = labels == k
        out[k] = np.where(inside, np.float32(1.0) - distance[2 * j + 1], distance[2 * j])
    return out


def one_hot2dist(labels: np.ndarray, num_classes: int, spacing: tuple[float, ...]) -> np.ndarray:
    """Kervadec et al.'s one_hot2dist in float64 (scipy's EDT, ``resolution`` = spacing): the exact sdf."""
    from scipy import ndimage

    out = np.zeros((num_classes, *labels.shape))
    for k in range(num_classes):
        inside = labels == k
        if inside.any() and not inside.all():
            out[k] = (ndimage.distance_transform_edt(~inside, sampling=spacing) * ~inside
                      - (ndimage.distance_transform_edt(inside, sampling=spacing) - 1) * inside)
    return out


def _table32(phi: dict[int, float]) -> np.ndarray:
    table = np.zeros(max(phi) + 1, dtype=np.float32)
    table[list(phi)] = list(phi.values())
    return table


# --- measuring ---------------------------------------------------------------------------------


def max_ulp(got: np.ndarray, exact: np.ndarray) -> float:
    """Largest |got − exact| in ulp of float32 at the exact value (0 where exact is 0 and got too)."""
    got, exact = np.asarray(got, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    zero = exact == 0
    if (got[zero] != 0).any():
        return float("inf")
    _, exponent = np.frexp(np.abs(exact[~zero]))
    return float((np.abs(got[~zero] - exact[~zero]) / np.ldexp(1.0, exponent - 24)).max())


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure_case(name: str, labels: np.ndarray, spacing: tuple[float, ...], repeats: int) -> list[dict[str, Any]]:
    from scipy import ndimage

    import weightmaps as wm
    from weightmaps import transforms
    from weightmaps.engine import class_weight_table
    from weightmaps.precision import sigma_units
    from weightmaps.precision import transform_units

    phi = {int(v): 0.5 + 0.73 * int(v) for v in np.unique(labels)}
    table64 = np.vectorize(lambda v: phi[int(v)], otypes=[float])(labels)
    edges = transforms.find_edges(labels, 1, False)
    exact_d = ndimage.distance_transform_edt(~edges, sampling=spacing)
    exact_w = {s: table64 * -np.expm1(-(exact_d**2) / (2 * s * s)) for s in SIGMAS}
    sigma = SIGMAS[0]
    cpu = wm.get_backend("cpu")
    units, scale = transform_units(spacing)
    factor = wm.precision.exponent_factor(scale, sigma)
    squared_after = transforms.edge_distance(cpu, edges, units, False, squared=True, exact=True)
    squared_before = transforms.edge_distance(cpu, edges, sigma_units(spacing, sigma)[0], False, squared=True)
    table = class_weight_table(phi, None)
    d32 = wm.distance_to_edges(labels, spacing=spacing, device="cpu")
    d32_before = distance_before(labels, spacing)
    steps: dict[str, dict[str, Callable[[], Any]]] = {
        "weights": {
            "before": lambda: weights_before(labels, squared_before.copy(), _table32(phi), sigma_units(spacing, sigma)[1]),
            "after": lambda: cpu.apply_weights(labels, squared_after.copy(), table.values, factor, -1, np.dtype(np.float32), 0.0),
        },
        "weight_map": {
            "before": lambda: weight_map_before(labels, sigma, phi, spacing),
            "after": lambda: wm.weight_map(labels, sigma=sigma, class_weights=phi, spacing=spacing, device="cpu"),
        },
        "distance": {
            "before": lambda: distance_before(labels, spacing),
            "after": lambda: wm.distance_to_edges(labels, spacing=spacing, device="cpu"),
        },
        "derived": {
            "before": lambda: derived_before(d32_before, labels, sigma, phi),
            "after": lambda: wm.weight_from_distance(d32, labels, sigma=sigma, class_weights=phi, spacing=spacing),
        },
    }
    if labels.ndim == 2:
        num_classes = int(labels.max()) + 1
        steps["sdf"] = {
            "before": lambda: sdf_before(labels, num_classes, spacing),
            "after": lambda: wm.signed_distance(labels, num_classes=num_classes, spacing=spacing, device="cpu"),
        }
    errors = {step: {"before": {}, "after": {}} for step in steps}
    for s in SIGMAS:
        errors["weights"]["before"][s] = errors["weight_map"]["before"][s] = max_ulp(
            weight_map_before(labels, s, phi, spacing), exact_w[s])
        errors["weights"]["after"][s] = errors["weight_map"]["after"][s] = max_ulp(
            wm.weight_map(labels, sigma=s, class_weights=phi, spacing=spacing, device="cpu"), exact_w[s])
        errors["distance"]["before"][s] = max_ulp(d32_before, exact_d)
        errors["distance"]["after"][s] = max_ulp(d32, exact_d)
        errors["derived"]["before"][s] = max_ulp(derived_before(d32_before, labels, s, phi), exact_w[s])
        errors["derived"]["after"][s] = max_ulp(
            wm.weight_from_distance(d32, labels, sigma=s, class_weights=phi, spacing=spacing), exact_w[s])
    if "sdf" in steps:
        reference = one_hot2dist(labels, num_classes, spacing)
        for s in SIGMAS:
            errors["sdf"]["before"][s] = max_ulp(sdf_before(labels, num_classes, spacing), reference)
            errors["sdf"]["after"][s] = max_ulp(
                wm.signed_distance(labels, num_classes=num_classes, spacing=spacing, device="cpu"), reference)
    rows = []
    for step, variants in steps.items():
        for f in variants.values():
            f()  # warm-up: imports, first-touch of the buffers
        seconds: dict[str, list[float]] = {"before": [], "after": []}
        for r in range(repeats):
            for variant in (("before", "after") if r % 2 == 0 else ("after", "before")):
                seconds[variant].append(timed(variants[variant]))
        median = {k: statistics.median(v) for k, v in seconds.items()}
        rows.append({"case": name, "step": step, "median_s": median, "seconds": seconds,
                     "after_over_before": median["after"] / median["before"],
                     "max_ulp": {k: {str(s): v for s, v in e.items()} for k, e in errors[step].items()}})
    return rows


def cases(quick: bool) -> list[tuple[str, np.ndarray, tuple[float, ...]]]:
    from weightmaps.sample_data import make_masks

    if quick:
        image, volume = make_masks(1, (96, 96), num_classes=4, seed=1)[0], make_masks(1, (12, 24, 24), seed=2)[0]
        return [("96², spacing 1", image, (1.0, 1.0)), ("96², spacing 0.8", image, (0.8, 0.8)),
                ("12×24², spacing (2, 0.7, 0.7)", volume, (2.0, 0.7, 0.7))]
    image = make_masks(1, (1024, 1024), num_classes=4, seed=1)[0]
    volume = make_masks(1, (128, 128, 128), num_classes=4, seed=2)[0]
    return [
        ("1024², spacing 1", image, (1.0, 1.0)),
        ("1024², spacing 0.8", image, (0.8, 0.8)),
        ("128³, spacing (3, 1, 1)", volume, (3.0, 1.0, 1.0)),
        ("128³, spacing (2, 0.7, 0.7)", volume, (2.0, 0.7, 0.7)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny masks, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"), "repeats": repeats, "sigmas": list(SIGMAS), "rows": [],
    }
    stem = f"precision-cpu-{report['date']}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, labels, spacing in cases(args.quick):
        for row in measure_case(name, labels, spacing, repeats):
            report["rows"].append(row)
            m, e = row["median_s"], row["max_ulp"]
            print(f"{name:30s} {row['step']:11s} before {m['before'] * 1e3:8.2f} ms  after {m['after'] * 1e3:8.2f} ms "
                  f"({row['after_over_before']:.2f}×)  max ulp σ 3/20: before {_ulps(e['before'])}, after "
                  f"{_ulps(e['after'])}", file=sys.stderr, flush=True)
        write_report(args.out, stem, report)
    print(write_report(args.out, stem, report))
    return 0


def _ulps(errors: dict[str, float]) -> str:
    return " / ".join(f"{errors[str(s)]:.2f}" for s in SIGMAS)


def write_report(out: Path, stem: str, report: dict[str, Any]) -> str:
    lines = ["| mask | step | before | after | after / before | max ulp before (σ 3 / 20) | max ulp after (σ 3 / 20) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["rows"]:
        m, e = row["median_s"], row["max_ulp"]
        lines.append(f"| {row['case']} | {row['step']} | {m['before'] * 1e3:.2f} ms | {m['after'] * 1e3:.2f} ms | "
                     f"{row['after_over_before']:.2f} | {_ulps(e['before'])} | {_ulps(e['after'])} |")
    text = "\n".join(lines) + "\n"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(
        f"# Exact float32 maps on the CPU, before and after issue 20: {report['machine']}, {report['date']}\n\n"
        f"One core, medians of {report['repeats']} interleaved runs; times at σ = 3; errors against the float64 "
        "formula on scipy's float64 distances (sdf: against `one_hot2dist`). `weights` is the weight pass alone "
        "on the same d²; `weight_map` edges + transform + weights; `derived` `weight_from_distance` from the "
        "float32 distance map.\n\n" + text
    )
    return text


if __name__ == "__main__":
    sys.exit(main())
