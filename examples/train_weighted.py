"""Train a small U-Net with and without weight maps: the experiment of Bressan et al. (2021), small.

The dataset has the two problems the paper names:

- a minority class of interest: class 2 covers a few % of the pixels
  (``weightmaps.sample_data.make_masks(..., minority=True)``);
- label noise along object edges: every object of a *training* mask is grown or shrunk by 1-3
  pixels (a random, seeded morphological dilation or erosion per connected object), as careless
  annotators do. The images are drawn from the clean masks, and the test set keeps clean labels.

Both runs use the same data, the same initial weights, the same batch order and the same number of
steps; they differ only in the loss: plain cross-entropy, or the pixel-weighted cross-entropy of
Eq. 3 with ``w = phi_c * (1 - exp(-d^2 / 2 sigma^2))`` precomputed by :func:`weightmaps.compute`
into a store and read back by :class:`weightmaps.torch.WeightMapDataset` in DataLoader workers.

Run::

    python examples/train_weighted.py                  # full size, a few minutes on 2 CPU cores
    python examples/train_weighted.py --size 48 --n-train 16 --epochs 2   # seconds

It prints a Markdown table (pixel accuracy and IoU of the class of interest on the clean test set)
and writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASS_OF_INTEREST = 2
NUM_CLASSES = 3


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def perturb_edges(mask: np.ndarray, rng: np.random.Generator, max_px: int = 3) -> np.ndarray:
    """Label noise along object edges: dilate or erode each connected object by 1..max_px pixels.

    Objects (connected components of each non-background class) are visited in random order. A
    dilation paints the object's label over its grown ring (over background or a neighbour); an
    erosion gives the stripped ring to the background. An erosion never deletes an object: the
    radius is reduced until something is left.
    """
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    objects = []
    for label in range(1, int(mask.max()) + 1):
        components, n = ndimage.label(mask == label, structure=cross)
        objects += [(label, components == k) for k in range(1, n + 1)]
    noisy = mask.copy()
    for j in rng.permutation(len(objects)):
        label, region = objects[j]
        radius = int(rng.integers(1, max_px + 1))
        if rng.random() < 0.5:
            noisy[ndimage.binary_dilation(region, cross, iterations=radius)] = label
        else:
            for r in range(radius, 0, -1):
                kept = ndimage.binary_erosion(region, cross, iterations=r)
                if kept.any():
                    break
            noisy[region & ~kept & (noisy == label)] = 0
    return noisy


def make_data(size: int, n_train: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    from weightmaps.sample_data import make_images, make_masks

    masks = make_masks(n_train + n_test, (size, size), num_classes=NUM_CLASSES, seed=seed,
                       minority=True)
    images = make_images(masks, seed=seed)
    rng = np.random.default_rng(seed + 1)
    noisy = np.stack([perturb_edges(m, rng) for m in masks[:n_train]])
    return {
        "train_images": images[:n_train], "train_masks": noisy, "train_clean": masks[:n_train],
        "test_images": images[n_train:], "test_masks": masks[n_train:],
    }


def write_pngs(folder: Path, arrays: np.ndarray) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"s{i:05d}" for i in range(len(arrays))]
    for sid, a in zip(ids, arrays):
        Image.fromarray(a).save(folder / f"{sid}.png")
    return ids


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def make_unet(in_ch: int, num_classes: int, base: int):
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
            nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        """Two poolings, skip connections, ~40k parameters at base=8."""

        def __init__(self) -> None:
            super().__init__()
            b = base
            self.enc1, self.enc2, self.mid = block(in_ch, b), block(b, 2 * b), block(2 * b, 4 * b)
            self.up2 = nn.ConvTranspose2d(4 * b, 2 * b, 2, stride=2)
            self.dec2 = block(4 * b, 2 * b)
            self.up1 = nn.ConvTranspose2d(2 * b, b, 2, stride=2)
            self.dec1 = block(2 * b, b)
            self.head = nn.Conv2d(b, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.enc1(x)
            e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
            m = self.mid(nn.functional.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
            return self.head(d1)

    return UNet()


# --------------------------------------------------------------------------------------------
# Train / evaluate
# --------------------------------------------------------------------------------------------


def train(loader: Any, *, weighted: bool, seed: int, epochs: int, lr: float, base: int,
          boundary_step: float | None = None) -> Any:
    """One run; ``boundary_step``: cross-entropy blended with the boundary loss (the "sdf" of the batches)."""
    import torch
    import torch.nn.functional as F

    from weightmaps.torch import boundary_loss, boundary_weight, weighted_cross_entropy

    torch.manual_seed(seed)  # same initial weights for both runs
    model = make_unet(3, NUM_CLASSES, base)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loader.generator.manual_seed(seed)  # same batch order for both runs
    model.train()
    for epoch in range(epochs):
        for batch in loader:
            logits = model(batch["image"])
            if weighted:
                loss = weighted_cross_entropy(logits, batch["mask"], batch["weight"])
            else:
                loss = F.cross_entropy(logits, batch["mask"])
            if boundary_step is not None:
                # Kervadec et al.: the region loss first, weight moved to the boundary term per epoch.
                alpha = boundary_weight(epoch, step=boundary_step)
                foreground = list(range(1, NUM_CLASSES))
                loss = (1 - alpha) * loss + alpha * boundary_loss(logits.softmax(1), batch["sdf"], classes=foreground)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def evaluate(model: Any, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    import torch

    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1))).float() / 255
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 16]).argmax(1) for i in range(0, len(x), 16)]).numpy()
    truth = masks.astype(np.int64)
    ious = {}
    for c in range(NUM_CLASSES):
        inter = np.logical_and(pred == c, truth == c).sum()
        union = np.logical_or(pred == c, truth == c).sum()
        ious[c] = float(inter / union) if union else float("nan")
    return {
        "pixel_accuracy": float((pred == truth).mean()),
        "iou_class_of_interest": ious[CLASS_OF_INTEREST],
        "mean_iou": float(np.nanmean(list(ious.values()))),
        **{f"iou_class_{c}": v for c, v in ious.items()},
    }


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--n-train", type=int, default=160, help="training images")
    p.add_argument("--n-test", type=int, default=64, help="test images (clean labels)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (one-cycle Adam)")
    p.add_argument("--base", type=int, default=8, help="channels of the first U-Net level")
    p.add_argument("--sigma", type=float, default=3.0, help="sigma of the edge uncertainty (px)")
    p.add_argument("--class-weights", default="balanced", help="scheme for phi_c")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--boundary", action="store_true",
                   help="compare cross-entropy with cross-entropy + boundary loss (a --map sdf store) instead")
    p.add_argument("--boundary-step", type=float, default=0.03,
                   help="per-epoch rise of the boundary loss's weight (Kervadec et al.: 0.01 over hundreds of epochs)")
    p.add_argument("--out", type=Path, default=Path("weighted-run"), help="output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    import weightmaps
    from weightmaps.pipeline import compute
    from weightmaps.torch import WeightMapDataset

    args = parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    data = make_data(args.size, args.n_train, args.n_test, args.seed)
    root = args.out / "data"
    write_pngs(root / "train" / "images", data["train_images"])
    write_pngs(root / "train" / "masks", data["train_masks"])
    store = args.out / "weights.zarr"
    result = compute(str(root / "train" / "masks"), str(store), sigma=args.sigma,
                     class_weights=args.class_weights, overwrite=True, device="cpu",
                     workers=min(2, os.cpu_count() or 1))
    t_data = time.perf_counter() - t0

    if args.boundary:  # signed distance maps instead of weights, computed once
        store = args.out / "sdf.zarr"
        compute(str(root / "train" / "masks"), str(store), kind="sdf", num_classes=NUM_CLASSES, overwrite=True,
                device="cpu", workers=min(2, os.cpu_count() or 1))
    ds = WeightMapDataset(str(root / "train" / "images"), str(root / "train" / "masks"), str(store))
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        generator=torch.Generator())
    train_masks = data["train_masks"]
    noise = float((train_masks != data["train_clean"]).mean())
    share = float((data["test_masks"] == CLASS_OF_INTEREST).mean())

    rows = []
    runs: tuple[tuple[str, bool, float | None], ...] = (
        (("cross-entropy (baseline)", False, None), ("cross-entropy + boundary loss", False, args.boundary_step))
        if args.boundary else (("cross-entropy (baseline)", False, None), ("weighted cross-entropy", True, None))
    )
    for name, weighted, boundary_step in runs:
        t = time.perf_counter()
        model = train(loader, weighted=weighted, seed=args.seed, epochs=args.epochs, lr=args.lr,
                      base=args.base, boundary_step=boundary_step)
        metrics = evaluate(model, data["test_images"], data["test_masks"])
        rows.append({"loss": name, **metrics, "train_seconds": time.perf_counter() - t})
    n_params = sum(p.numel() for p in make_unet(3, NUM_CLASSES, args.base).parameters())

    report = {
        "rows": rows,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "dataset": {
            "class_of_interest": CLASS_OF_INTEREST,
            "class_of_interest_pixel_share_test": share,
            "train_pixels_with_noisy_label": noise,
            "class_weights": {str(k): v for k, v in result.class_weights.items()},
        },
        "model_parameters": n_params,
        "seconds": {"data_and_weights": t_data, "total": time.perf_counter() - t0},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "weightmaps": weightmaps.__version__},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print(markdown_table(report))
    return report


def markdown_table(report: dict[str, Any]) -> str:
    d, c = report["dataset"], report["config"]
    lines = [
        f"{c['n_train']} training images {c['size']}x{c['size']} "
        f"({100 * d['train_pixels_with_noisy_label']:.1f} % of training pixels mislabelled at edges), "
        f"{c['n_test']} clean test images; class of interest {d['class_of_interest']} = "
        f"{100 * d['class_of_interest_pixel_share_test']:.1f} % of test pixels; "
        f"{report['model_parameters']} parameters, {c['epochs']} epochs, sigma {c['sigma']}, "
        f"{report['seconds']['total']:.0f} s in total.",
        "",
        "| loss | pixel accuracy | IoU class of interest | mean IoU |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['loss']} | {r['pixel_accuracy']:.4f} | {r['iou_class_of_interest']:.4f} "
                     f"| {r['mean_iou']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
