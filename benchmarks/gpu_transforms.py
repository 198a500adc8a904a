"""Distance transforms on the device: one call per sample against one stacked 3-D call.

    python3 benchmarks/gpu_transforms.py --out $OUT/transforms.json            # on the lent GPU
    python3 benchmarks/gpu_transforms.py --out /tmp/t.json --device cpu --tiny  # the rehearsal

The question it answers: is the stacking of ``weightmaps.cuda_plan.stack_groups`` (a batch of 2-D
masks as one 3-D cuCIM call, batch axis spaced out of reach) worth turning on, and how full must
the cube be? For each side S, on S masks of S × S already on the device (edges computed), it times
``transforms.edge_distance`` one sample at a time against ``transforms.stacked_distance`` for the full cube,
a quarter of it and an eighth (fills around ``cuda_plan.MIN_STACK_FILL``); and the fused weight
kernel alone on one 4096² map against the bytes it must move. Medians of ``--repeats`` after a warm-up, the device synchronised around each;
each stacked result is checked against the per-sample one first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: kernel compiles and the memory pool's first allocations stay out
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    import weightmaps as wm
    from weightmaps import transforms
    from weightmaps.sample_data import make_masks

    backend = wm.get_backend(args.device)
    xp = backend.xp
    sync = backend.synchronize
    if not backend.on_gpu:  # the CPU stands in with a roomy "device"
        backend = dataclasses.replace(backend, free_memory=lambda: 2**34)
    # edge_distance below runs one call per sample; the stacked calls are made directly.
    backend = dataclasses.replace(backend, stack_batches=False)
    spacing = (1.0, 1.0)
    rows = []
    for side in ((16, 32) if args.tiny else (64, 128, 256, 512)):
        masks = xp.asarray(make_masks(side, (side, side), num_classes=4, seed=side))
        edges = transforms.find_edges(masks, 1, True)
        per_sample = transforms.edge_distance(backend, edges, spacing, True, squared=False)
        row: dict[str, Any] = {"side": side}
        # Full cube, a quarter of it (a shard of 64 masks of 256²) and an eighth (below the plan's fill).
        for name, count in (("full", side), ("quarter", side // 4), ("eighth", side // 8)):
            part = edges[:count]
            everywhere = np.ones(count, bool)
            got = transforms.stacked_distance(backend, part, spacing, False, everywhere)
            np.testing.assert_allclose(wm.backend.to_numpy(got), wm.backend.to_numpy(per_sample[:count]), rtol=1e-6,
                                       err_msg=f"stacked ({name}) differs from per-sample at side {side}")
            loop_s = timed(lambda part=part: transforms.edge_distance(backend, part, spacing, True), sync, args.repeats)
            cube_s = timed(lambda part=part, everywhere=everywhere: transforms.stacked_distance(
                backend, part, spacing, False, everywhere), sync, args.repeats)
            row[name] = {"masks": count, "per_sample_s": loop_s, "stacked_s": cube_s, "speedup": loop_s / cube_s}
            print(f"side {side}, {name} cube ({count} masks): per sample {loop_s * 1e3:.2f} ms, stacked "
                  f"{cube_s * 1e3:.2f} ms ({loop_s / cube_s:.2f}x)", flush=True)
            del part, got
        rows.append(row)
        del masks, edges, per_sample

    # The fused weight kernel alone: reads labels (1 B) and d (4 B), writes w (4 B) per pixel.
    side = 512 if args.tiny else 4096
    labels = xp.asarray(make_masks(1, (side, side), num_classes=4, seed=1)[0])
    distance = transforms.edge_distance(backend, transforms.find_edges(labels, 1, False), (1.0, 1.0), False,
                                squared=backend.weights_from_squared)
    table = backend.asarray(np.array([0.5, 1.0, 2.0, 8.0], dtype=np.float32))
    weights_s = timed(lambda: backend.apply_weights(labels, distance.copy() if backend.weights_from_squared else distance,
                                                    table, 1 / 18, -1, np.dtype("float32")), sync, args.repeats)
    bytes_moved = labels.size * (1 + 4 + 4)
    kernel = {"side": side, "seconds": weights_s, "bytes": bytes_moved, "gb_per_s": bytes_moved / weights_s / 1e9}
    print(f"weights {side}²: {weights_s * 1e6:.0f} µs, {kernel['gb_per_s']:.0f} GB/s over the bytes it must move",
          flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": backend.name, "tiny": args.tiny, "repeats": args.repeats,
                                    "transforms": rows, "weight_kernel": kernel}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
