"""Masks/s with the store (and the masks) in object storage, against the same run on local disk.

    python benchmarks/object_storage.py --out benchmarks/results          # 512 × 256², medians of 3
    python benchmarks/object_storage.py --out /tmp/o --n 32 --repeats 1   # seconds

The S3 server is moto's stand-alone server on 127.0.0.1 (the one the tests start), so what is
measured is weightmaps' own cost of speaking S3 (HTTP requests, one PUT per shard and marker,
listings), not a network: a real bucket adds its latency and bandwidth on top. Variants, each a
whole ``weightmaps.compute`` run (CPU, all cores, PNG masks), in turn, ``--repeats`` times:

    (disk)   local masks → local store
    (s3 out) local masks → store in the bucket
    (s3 all) masks in the bucket → store in the bucket
    (s3 all +N ms) the same through a proxy that holds every request N ms (``--latency-ms``,
             default 20): a real bucket's round trip, which is what overlapping requests hide

Reported: median seconds and masks/s, and each ratio to (disk); maps are checked equal to (disk)'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project, and the tests' S3 server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="0 leaves the proxy variant out")
    args = parser.parse_args()

    import numpy as np

    import weightmaps as wm
    from tests.s3server import LatencyProxy, S3Server
    from weightmaps.sample_data import write_dataset
    from wmbench.machine import machine_info, versions

    server = S3Server().start()
    proxy = LatencyProxy(server.endpoint, args.latency_ms / 1000) if args.latency_ms > 0 else None
    work = Path(tempfile.mkdtemp(prefix="weightmaps-s3-bench-"))
    try:
        root = write_dataset(work / "data", n=args.n, shape=(args.side, args.side), num_classes=4, seed=1,
                             with_images=False)
        fs = server.filesystem()
        bucket = server.new_bucket()
        fs.put(str(root / "masks"), f"{bucket}/masks", recursive=True)
        opts = server.storage_options
        slow = {**opts, "endpoint_url": proxy.endpoint} if proxy else opts
        variants = {
            "disk": (str(root / "masks"), lambda r: str(work / f"disk-{r}.zarr"), opts),
            "s3 out": (str(root / "masks"), lambda r: f"s3://{bucket}/out-{r}.zarr", opts),
            "s3 all": (f"s3://{bucket}/masks/", lambda r: f"s3://{bucket}/all-{r}.zarr", opts),
        }
        if proxy:
            variants[f"s3 all +{args.latency_ms:g} ms"] = (
                f"s3://{bucket}/masks/", lambda r: f"s3://{bucket}/slow-{r}.zarr", slow)
        seconds: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.repeats):
            for name, (inputs, out, options) in variants.items():
                start = time.perf_counter()
                wm.compute(inputs, out(r), sigma=3.0, device="cpu", storage_options=options)
                seconds[name].append(time.perf_counter() - start)
                print(f"run {r + 1}/{args.repeats} ({name}): {seconds[name][-1]:.2f} s", file=sys.stderr)
        reference = wm.open_store(variants["disk"][1](0))
        equal = {}
        for name, (_, out, _) in variants.items():
            store = wm.open_store(out(0), opts)
            equal[name] = all(np.array_equal(store[i], reference[i]) for i in reference.ids)
        median = {k: statistics.median(v) for k, v in seconds.items()}
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "versions": versions(),
            "n": args.n, "side": args.side, "repeats": args.repeats, "latency_ms": args.latency_ms,
            "seconds": seconds,
            "median_s": median, "masks_per_s": {k: args.n / v for k, v in median.items()},
            "ratio_to_disk": {k: median["disk"] / v for k, v in median.items()}, "maps_equal_to_disk": equal,
        }
    finally:
        if proxy:
            proxy.stop()
        server.stop()
    tag = f"object-storage-cpu-{report['date']}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    machine = report["machine"]
    lines = [
        f"# Object storage: masks/s to a local S3 server vs local disk ({report['date']})", "",
        f"- machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gib')} GiB; "
        f"S3: moto's stand-alone server on 127.0.0.1 (no network in between)",
        f"- {args.n} PNG masks {args.side}², 4 classes, `weightmaps.compute(device='cpu')` on all cores, "
        f"σ 3; median of {args.repeats}, variants in turn", "",
        "| variant | median s | masks/s | × disk | maps equal to disk |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name in variants:
        lines.append(f"| {name} | {median[name]:.2f} | {args.n / median[name]:.0f} | "
                     f"{report['ratio_to_disk'][name]:.2f} | {'yes' if equal[name] else 'NO'} |")
    (args.out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(equal.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
