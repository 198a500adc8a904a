"""Baseline (e): the per-image weight-map loop a user would write with CuPy + cuCIM (GPU only).

    python benchmarks/plain_cucim.py MASK_DIR OUT_DIR --sigma 3 [--spacing 3,1,1]

The same steps as ``plain_scipy.py`` (baseline (a)), line for line, with the array work on the GPU:
read on the CPU, copy to the GPU, edges with ``cupyx.scipy.ndimage`` grey dilation / erosion,
cuCIM's ``distance_transform_edt``, w = φ_c · (1 − exp(−d² / 2σ²)) in float64 on the GPU, copy
back, save ``OUT_DIR/<name>.npy`` (float32). One image at a time, default stream.

``stage(...)`` accumulates seconds per step; stages that touch the GPU synchronise the device
before stopping the clock, so each stage's time includes its kernels. The totals are printed as one
JSON line on stdout at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import cupy as cp
import numpy as np
from cucim.core.operations.morphology import distance_transform_edt
from cupyx.scipy import ndimage as cundimage
from scipy import ndimage

SECONDS: dict[str, float] = {}


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    cp.cuda.Device().synchronize()
    SECONDS[name] = SECONDS.get(name, 0.0) + time.perf_counter() - start


def read(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


def steady(n: int, pass1_start: float, pass2_start: float, first_done: float | None, end: float) -> dict:
    """Seconds per mask once started: pass 1 per mask, plus pass 2 per mask after the first one
    (which carries the first calls' set-up), for the runner's steady-state rates."""
    if n < 2 or first_done is None:
        return {}
    per_mask = (pass2_start - pass1_start) / n + (end - first_done) / (n - 1)
    return {"steady_s_per_mask": per_mask, "first_mask_s": first_done - pass2_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("masks", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--spacing", default=None, help="pixel size per axis, e.g. 3,1,1")
    args = parser.parse_args()
    spacing = [float(s) for s in args.spacing.split(",")] if args.spacing else None
    paths = sorted(p for p in args.masks.iterdir() if p.suffix in (".png", ".tif", ".tiff", ".npy"))
    args.out.mkdir(parents=True, exist_ok=True)

    pass1_start = time.perf_counter()
    # Pass 1: class pixel counts over the dataset -> balanced class weights (on the CPU, as in (a)).
    counts = np.zeros(256, dtype=np.int64)
    for path in paths:
        with stage("read"):
            labels = read(path)
        with stage("count"):
            found = np.bincount(labels.ravel())
            if found.size > counts.size:
                counts = np.pad(counts, (0, found.size - counts.size))
            counts[: found.size] += found
    present = np.flatnonzero(counts)
    phi_host = np.zeros(counts.size)
    phi_host[present] = counts.sum() / (present.size * counts[present])
    phi = cp.asarray(phi_host)

    pass2_start = time.perf_counter()
    first_done = None
    # Pass 2: one weight map per mask, on the GPU.
    for path in paths:
        with stage("read"):
            labels_host = read(path)
        with stage("upload"):
            labels = cp.asarray(labels_host)
        with stage("edges"):
            cross = ndimage.generate_binary_structure(labels.ndim, 1)
            edges = (cundimage.grey_dilation(labels, footprint=cross) != labels) | (
                cundimage.grey_erosion(labels, footprint=cross) != labels
            )
        with stage("distance"):
            if bool(edges.any()):
                d = distance_transform_edt(~edges, sampling=spacing).astype(cp.float64)
            else:  # one label only: no edge anywhere, so delta = 1
                d = cp.full(labels.shape, cp.inf)
        with stage("weights"):
            w = phi[labels] * (1.0 - cp.exp(-(d**2) / (2.0 * args.sigma**2)))
        with stage("download"):
            w_host = cp.asnumpy(w.astype(cp.float32))
        with stage("write"):
            np.save(args.out / f"{path.stem}.npy", w_host)
        first_done = first_done or time.perf_counter()
    end = time.perf_counter()
    print(json.dumps({"n": len(paths), "seconds": SECONDS, **steady(len(paths), pass1_start, pass2_start, first_done, end)}))


if __name__ == "__main__":
    main()
