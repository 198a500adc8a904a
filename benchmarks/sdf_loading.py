"""Signed distance maps for the boundary loss: recomputed every epoch in the DataLoader, or loaded.

    python benchmarks/sdf_loading.py --out benchmarks/results          # 256², 1024², 8 × 128³
    python benchmarks/sdf_loading.py --out /tmp/s --quick              # tiny, seconds (the tests run it)

What boundary-loss users do today: a Dataset whose ``__getitem__`` reads the mask and runs
Kervadec et al.'s ``one_hot2dist`` (one scipy distance transform per class and side, float64)
every epoch. Against it: ``weightmaps compute --map sdf`` once, then ``WeightMapDataset`` serving
the stored ``sdf``. Both read the image and the mask too, through a ``DataLoader`` with
``--workers`` worker processes, batch size 1; samples/s over one epoch, median of ``--repeats``
epochs (the first epoch of each, with its worker start-up, included in the median like any other).
Also the one-time compute and the store's size on disk. 4 classes everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NUM_CLASSES = 4


class RecomputingDataset:
    """The per-epoch recipe: read image and mask, compute the signed maps with scipy in the worker."""

    def __init__(self, root: Path) -> None:
        self.masks = sorted((root / "masks").iterdir())
        self.images = {p.stem: p for p in (root / "images").iterdir()}

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        from weightmaps.readers import read_image, read_mask

        mask = read_mask(str(self.masks[i]))
        image = read_image(str(self.images[self.masks[i].stem]))
        return {"image": torch.from_numpy(np.asarray(image, dtype=np.float32)),
                "mask": torch.from_numpy(mask.astype(np.int64)),
                "sdf": torch.from_numpy(one_hot2dist(mask, NUM_CLASSES).astype(np.float32))}


def one_hot2dist(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Kervadec et al.'s one_hot2dist on the one-hot of ``labels`` (scipy, float64)."""
    from scipy import ndimage

    res = np.zeros((num_classes, *labels.shape))
    for k in range(num_classes):
        posmask = labels == k
        if posmask.any():
            negmask = ~posmask
            res[k] = (ndimage.distance_transform_edt(negmask) * negmask
                      - (ndimage.distance_transform_edt(posmask) - 1) * posmask)
    return res


def epoch_rate(dataset: Any, workers: int) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=1, num_workers=workers, persistent_workers=False)
    start = time.perf_counter()
    n = sum(1 for _ in loader)
    return n / (time.perf_counter() - start)


def measure(key: str, n: int, shape: tuple[int, ...], work: Path, repeats: int, workers: int) -> dict[str, Any]:
    import weightmaps as wm
    from weightmaps.sample_data import write_dataset
    from weightmaps.torch import WeightMapDataset

    root = write_dataset(work / key, n=n, shape=shape, num_classes=NUM_CLASSES, seed=1,
                         fmt="png" if len(shape) == 2 else "tif")
    store = work / key / "sdf.zarr"
    start = time.perf_counter()
    wm.compute(root / "masks", store, kind="sdf", num_classes=NUM_CLASSES, device="cpu")
    compute_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    loaded = WeightMapDataset(root / "images", root / "masks", store)
    recomputing = RecomputingDataset(root)
    rates: dict[str, list[float]] = {"recompute_scipy": [], "load_store": []}
    for _ in range(repeats):
        rates["recompute_scipy"].append(epoch_rate(recomputing, workers))
        rates["load_store"].append(epoch_rate(loaded, workers))
    median = {k: statistics.median(v) for k, v in rates.items()}
    shutil.rmtree(work / key)
    return {
        "key": key, "n": n, "shape": list(shape), "classes": NUM_CLASSES, "samples_per_s": rates,
        "median_samples_per_s": median, "load_x_recompute": median["load_store"] / median["recompute_scipy"],
        "compute_once_s": compute_s, "store_bytes": size,
        "mask_bytes_uncompressed": int(n * np.prod(shape)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = ([("64", 4, (64, 64)), ("3d", 2, (8, 16, 16))] if args.quick
             else [("256", 64, (256, 256)), ("1024", 16, (1024, 1024)), ("128^3", 8, (128, 128, 128))])
    repeats = 1 if args.quick else args.repeats
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"), "repeats": repeats, "workers": args.workers, "results": [],
    }
    stem = f"sdf-loading-cpu-{report['date']}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="weightmaps-sdf-"))
    try:
        for key, n, shape in sizes:
            result = measure(key, n, shape, work, repeats, args.workers)
            report["results"].append(result)
            m = result["median_samples_per_s"]
            print(f"{key}: recompute {m['recompute_scipy']:.1f}/s, load {m['load_store']:.1f}/s "
                  f"({result['load_x_recompute']:.1f}×), compute once {result['compute_once_s']:.1f} s, "
                  f"store {result['store_bytes'] / 2**20:.1f} MiB", file=sys.stderr, flush=True)
            write_report(args.out, stem, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(write_report(args.out, stem, report))
    return 0


def write_report(out: Path, stem: str, report: dict[str, Any]) -> str:
    lines = ["| masks | n | recompute per epoch (scipy) samples/s | load the sdf store samples/s | × | "
             "compute once s | store MiB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        m = r["median_samples_per_s"]
        lines.append(f"| {r['key']} | {r['n']} | {m['recompute_scipy']:.1f} | {m['load_store']:.1f} | "
                     f"{r['load_x_recompute']:.1f} | {r['compute_once_s']:.2f} | {r['store_bytes'] / 2**20:.1f} |")
    text = "\n".join(lines) + "\n"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(
        f"# Signed distance maps: recomputed per epoch vs loaded, {report['machine']}, {report['date']}\n\n"
        f"{NUM_CLASSES} classes; DataLoader with {report['workers']} workers, batch 1; samples/s over one epoch, "
        f"median of {report['repeats']}.\n\n{text}"
    )
    return text


if __name__ == "__main__":
    sys.exit(main())
