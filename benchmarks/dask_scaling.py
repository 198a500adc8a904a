"""Scaling of `weightmaps compute` on a Dask LocalCluster: 1 vs N worker processes (issue 6).

    python benchmarks/dask_scaling.py [--n 512] [--size 256] [--workers 1,2] [--repeats 3]

Each cluster is started once and warmed (imports on the workers), then the same dataset is
computed `--repeats` times into fresh stores; the median of the compute stage's masks/s is
printed next to the in-process pipeline's with the same number of processes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import distributed

    from weightmaps.distributed import compute_on_dask
    from weightmaps.pipeline import compute
    from weightmaps.sample_data import write_dataset

    work = Path(tempfile.mkdtemp(prefix="wm-dask-scaling-"))
    masks = write_dataset(work / "data", n=args.n, shape=(args.size, args.size), with_images=False) / "masks"
    options = dict(sigma=3.0, device="cpu")
    print(f"{args.n} masks of {args.size}², compute-stage masks/s, median of {args.repeats}")
    print("| workers | in-process | Dask LocalCluster |\n| ---: | ---: | ---: |")
    for n_workers in (int(w) for w in args.workers.split(",")):
        local = [compute(str(masks), work / f"p{n_workers}-{r}.zarr", workers=n_workers, **options).masks_per_second
                 for r in range(args.repeats)]
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            client.run(lambda: __import__("weightmaps.pipeline"))
            dask = [compute_on_dask(client, str(masks), work / f"d{n_workers}-{r}.zarr", **options).masks_per_second
                    for r in range(args.repeats)]
        print(f"| {n_workers} | {statistics.median(local):.1f} | {statistics.median(dask):.1f} |")


if __name__ == "__main__":
    main()
