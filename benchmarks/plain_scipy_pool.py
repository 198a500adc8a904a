"""Baseline (g): the plain scipy script (a) on a ``multiprocessing.Pool`` of every core.

    python benchmarks/plain_scipy_pool.py MASK_DIR OUT_DIR --sigma 3 [--spacing 3,1,1] [--processes N]

What a user with a many-core machine writes next: (a)'s two passes (class counts, then one map per
mask saved as ``OUT_DIR/<name>.npy``), each mapped over a pool of ``os.cpu_count()`` processes,
with (a)'s own per-mask functions. The pool is started (every worker running) before the clock
of the passes starts: ``startup_s`` is its start, ``steady_s_per_mask`` both passes per mask, as
one JSON line on stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from functools import partial
from pathlib import Path

import numpy as np

from plain_scipy import add_counts, balanced_phi, distance_of, edges_of, mask_paths, read


def count_one(path: Path) -> np.ndarray:
    return add_counts(np.zeros(256, dtype=np.int64), read(path))


def weight_one(path: Path, phi: np.ndarray, sigma: float, spacing: list[float] | None, out: Path) -> None:
    labels = read(path)
    d = distance_of(edges_of(labels), spacing)
    w = phi[labels] * (1.0 - np.exp(-(d**2) / (2.0 * sigma**2)))
    np.save(out / f"{path.stem}.npy", w.astype(np.float32))


def _started(_: int) -> int:
    time.sleep(0.05)  # long enough that every worker takes one
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("masks", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--spacing", default=None, help="pixel size per axis, e.g. 3,1,1")
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    args = parser.parse_args()
    spacing = [float(s) for s in args.spacing.split(",")] if args.spacing else None
    paths = mask_paths(args.masks)
    args.out.mkdir(parents=True, exist_ok=True)
    chunk = max(1, len(paths) // (4 * args.processes))

    start = time.perf_counter()
    with multiprocessing.Pool(args.processes) as pool:
        pool.map(_started, range(args.processes), chunksize=1)
        pass1_start = time.perf_counter()
        counts = np.zeros(256, dtype=np.int64)
        for found in pool.imap_unordered(count_one, paths, chunksize=chunk):
            counts[: found.size] += found
        phi = balanced_phi(counts)
        pass2_start = time.perf_counter()
        for _ in pool.imap_unordered(partial(weight_one, phi=phi, sigma=args.sigma, spacing=spacing, out=args.out),
                                     paths, chunksize=chunk):
            pass
        end = time.perf_counter()
    print(json.dumps({
        "n": len(paths), "processes": args.processes,
        "seconds": {"startup": pass1_start - start, "pass1": pass2_start - pass1_start, "pass2": end - pass2_start},
        "startup_s": pass1_start - start,
        "steady_s_per_mask": (end - pass1_start) / len(paths) if paths else None,
    }))


if __name__ == "__main__":
    main()
