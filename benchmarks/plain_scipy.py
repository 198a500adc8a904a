"""Baseline (a): the weight-map script a user would write with numpy + scipy, one image at a time.

    python benchmarks/plain_scipy.py MASK_DIR OUT_DIR --sigma 3 [--spacing 3,1,1]

Reads every mask (PNG with Pillow; TIFF with tifffile; .npy with numpy), counts the classes over
the dataset (first pass), then per mask (second pass): label edges with scipy's grey dilation /
erosion, ``scipy.ndimage.distance_transform_edt`` to the nearest edge, and
w = φ_c · (1 − exp(−d² / 2σ²)) in float64, saved as ``OUT_DIR/<name>.npy`` (float32, like the
store). φ is "balanced": φ_c = pixels / (classes · pixels of class c), the weightmaps default.

Edges are the weightmaps definition: a pixel whose face neighbour (4 in 2-D, 6 in 3-D) has another
label; the array border is no edge (``mode="reflect"`` repeats the border pixel, which has its own
label). The only instrumentation is ``stage(...)`` accumulating seconds per step; they are printed
as one JSON line on stdout at the end, for the benchmark runner.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

SECONDS: dict[str, float] = {}


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    SECONDS[name] = SECONDS.get(name, 0.0) + time.perf_counter() - start


def read(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


def edges_of(labels: np.ndarray) -> np.ndarray:
    cross = ndimage.generate_binary_structure(labels.ndim, 1)
    return (ndimage.grey_dilation(labels, footprint=cross) != labels) | (
        ndimage.grey_erosion(labels, footprint=cross) != labels
    )


def distance_of(edges: np.ndarray, spacing: list[float] | None) -> np.ndarray:
    if edges.any():
        return ndimage.distance_transform_edt(~edges, sampling=spacing)
    return np.full(edges.shape, np.inf)  # one label only: no edge anywhere, so delta = 1


def balanced_phi(counts: np.ndarray) -> np.ndarray:
    present = np.flatnonzero(counts)
    phi = np.zeros(counts.size)
    phi[present] = counts.sum() / (present.size * counts[present])
    return phi


def add_counts(counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    found = np.bincount(labels.ravel())
    if found.size > counts.size:
        counts = np.pad(counts, (0, found.size - counts.size))
    counts[: found.size] += found
    return counts


def steady(n: int, pass1_start: float, pass2_start: float, first_done: float | None, end: float) -> dict:
    """Seconds per mask once started: pass 1 per mask, plus pass 2 per mask after the first one
    (which carries the first calls' set-up), for the runner's steady-state rates."""
    if n < 2 or first_done is None:
        return {}
    per_mask = (pass2_start - pass1_start) / n + (end - first_done) / (n - 1)
    return {"steady_s_per_mask": per_mask, "first_mask_s": first_done - pass2_start}


def mask_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".tif", ".tiff", ".npy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("masks", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--spacing", default=None, help="pixel size per axis, e.g. 3,1,1")
    args = parser.parse_args()
    spacing = [float(s) for s in args.spacing.split(",")] if args.spacing else None
    paths = mask_paths(args.masks)
    args.out.mkdir(parents=True, exist_ok=True)

    pass1_start = time.perf_counter()
    # Pass 1: class pixel counts over the dataset -> balanced class weights.
    counts = np.zeros(256, dtype=np.int64)
    for path in paths:
        with stage("read"):
            labels = read(path)
        with stage("count"):
            counts = add_counts(counts, labels)
    phi = balanced_phi(counts)

    pass2_start = time.perf_counter()
    first_done = None
    # Pass 2: one weight map per mask.
    for path in paths:
        with stage("read"):
            labels = read(path)
        with stage("edges"):
            edges = edges_of(labels)
        with stage("distance"):
            d = distance_of(edges, spacing)
        with stage("weights"):
            w = phi[labels] * (1.0 - np.exp(-(d**2) / (2.0 * args.sigma**2)))
        with stage("write"):
            np.save(args.out / f"{path.stem}.npy", w.astype(np.float32))
        first_done = first_done or time.perf_counter()
    end = time.perf_counter()
    print(json.dumps({"n": len(paths), "seconds": SECONDS, **steady(len(paths), pass1_start, pass2_start, first_done, end)}))


if __name__ == "__main__":
    main()
