"""One shard written by zarr against the same shard assembled by ``weightmaps.shard_codec``, side by side.

    python benchmarks/shard_write.py                  # 16 MiB shards of 256² and 1024² maps, 7 repeats
    python benchmarks/shard_write.py --repeats 3 --quick

Both write the same 16 MiB shard of real weight maps (``weightmaps.sample_data`` masks, σ 3) into
an array made as ``weightmaps.store.create_store`` makes ``maps`` (64 Ki-element chunks, zstd 1,
NaN fill): zarr by assigning the shard's slice, the encoder by assembling its bytes and writing
the file (one write, flushed, as the store does). The files are compared byte for byte first.
zarr runs with one codec thread, as in the pipeline's worker processes (one per core). Medians of
interleaved repeats; ratios measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from weightmaps import weight_map
from weightmaps.layout import CHUNK_ELEMENTS, SHARD_TARGET_BYTES
from weightmaps.sample_data import make_masks
from weightmaps.shard_codec import ShardEncoder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="64² and 128² maps: checks the script")
    args = parser.parse_args()
    zarr.config.set({"threading.max_workers": 1})  # as weightmaps.worker_pool's workers run it
    shard = SHARD_TARGET_BYTES // 4
    sides = (64, 128) if args.quick else (256, 1024)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for side in sides:
            n = shard // (side * side)
            masks = make_masks(n, (side, side), num_classes=4, seed=0)
            flat = np.concatenate([weight_map(m, sigma=3.0, class_weights={0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0},
                                              device="cpu").ravel() for m in masks])
            path = Path(work) / f"maps-{side}"
            array = zarr.create_array(str(path), shape=(4 * shard,), chunks=(CHUNK_ELEMENTS,), shards=(shard,),
                                      dtype="float32", fill_value=np.nan, compressors=ZstdCodec(level=1))
            encoder = ShardEncoder.from_metadata(json.loads((path / "zarr.json").read_text()))
            assert encoder is not None

            def by_zarr(k: int) -> None:
                array[k * shard:k * shard + flat.size] = flat

            def by_encoder(k: int) -> None:
                data = encoder.encode(flat)
                assert data is not None
                target = path / encoder.key(k)
                target.parent.mkdir(exist_ok=True)
                with open(target, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())

            by_zarr(0)
            by_encoder(1)
            if (path / "c" / "0").read_bytes() != (path / "c" / "1").read_bytes():
                print("the encoder's shard differs from zarr's", file=sys.stderr)
                return 1
            times: dict[str, list[float]] = {"zarr": [], "encoder": []}
            for r in range(args.repeats):
                for name, write in ((("zarr", by_zarr), ("encoder", by_encoder))[::1 if r % 2 else -1]):
                    start = time.perf_counter()
                    write(2 + r % 2)
                    times[name].append(time.perf_counter() - start)
            zarr_s, encoder_s = statistics.median(times["zarr"]), statistics.median(times["encoder"])
            rows.append((side, n, zarr_s, encoder_s))
    print("| maps | per shard | zarr ms | encoder ms | × | zarr ms/map | encoder ms/map |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for side, n, zarr_s, encoder_s in rows:
        print(f"| {side}² | {n} | {zarr_s * 1e3:.1f} | {encoder_s * 1e3:.1f} | {zarr_s / encoder_s:.2f} | "
              f"{zarr_s / n * 1e3:.3f} | {encoder_s / n * 1e3:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
