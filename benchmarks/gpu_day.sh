#!/usr/bin/env bash
# Everything a GPU day needs, as ONE command on the lent machine (see ../shared/gpu/README.md):
#
#   here, once:   ../shared/gpu/fetch-wheels.sh          # cuCIM, zarr, edt ... into .whl/
#   device tool:  run(command="bash benchmarks/gpu_day.sh", carry=[".whl"])
#
# It installs the carried wheels, records the card and versions, runs the GPU tests, then the
# benchmark at every size (CPU baseline (a) in the same run; a stage pass with device syncs per
# stage, per-sample and stacked-batch transforms side by side). Everything lands in $OUT (the
# device tool brings it back): commit the .json/.md under benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-day-out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import cupy, cucim, zarr, edt, numpy; print('cupy', cupy.__version__, 'cucim', cucim.__version__, 'zarr', zarr.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$out/gpu.txt"
python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log"
python3 benchmarks/run.py --out "$out" 2>&1 | tail -n 200 > "$out/bench.log"
tail -n 40 "$out/bench.log"
