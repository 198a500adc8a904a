#!/usr/bin/env bash
# The GPU day as ONE command on the lent machine (see ../shared/gpu/README.md), and its rehearsal.
#
#   here, once:   ../shared/gpu/fetch-wheels.sh pyyaml==6.0.3 packaging==25.0 typing_extensions==4.15.0
#   device tool:  run(command="bash benchmarks/gpu_day.sh", carry=[".whl"], timeout_s=330)
#   here or CI:   bash benchmarks/gpu_day.sh --rehearse
#
# Phases, each under its own `timeout` and never past the day's TOTAL seconds (so the command
# cannot overrun 5 minutes): install the carried wheels; card and versions; the GPU tests;
# per-sample vs stacked transforms (benchmarks/gpu_transforms.py); the benchmark
# (benchmarks/gpu_day.py: (a) and (e) on a subset, (d), and the host's CPU baselines (f) weightmaps
# --device cpu and (g) plain scipy on a Pool, both on every core, at 1024², 256², 4096², 3-D, steady
# state and start-up apart, (d)'s GPU busy share from nvidia-smi); the U-Net map against its scipy
# loop (benchmarks/unet.py). Results land in $OUT
# as they come (the device tool brings back 8 files at most; these are 7): gpu.txt (this log),
# gpu-tests.log, transforms.json, unet-cuda-<date>.json, bench.json / bench.md (rewritten after
# every size), bench.log. A phase that fails or times out is logged and the next one runs; the exit status
# says whether every phase passed.
#
# GPU_DAY_SKIP=gpu-tests,transforms,unet leaves those phases out (a rerun that needs only the bench).
#
# --rehearse runs every phase on the CPU (--device cpu, tiny sizes, a temporary $OUT) in a fresh
# virtual environment holding only packages the GPU machine has (minus CuPy and torch) and those
# of the carried wheels, with the project on PYTHONPATH as there: a missing import, a wrong path
# or a phase over its limit shows here, not on the GPU. tests/test_gpu_day.py runs it in CI.
set -uo pipefail
cd "$(dirname "$0")/.."
TOTAL=${GPU_DAY_TOTAL_S:-285}
# The packages of the carried wheels (../shared/gpu/fetch-wheels.sh and the three extras above),
# which the rehearsal takes from the package index under the GPU machine's Python, 3.12.
WHEEL_PACKAGES="zarr==3.4.2 numcodecs==0.17.1 donfig==0.8.1.post1 google-crc32c==1.9.0 msgspec edt==3.1.2 pyyaml packaging typing_extensions"
# What the GPU machine's image has that this project may use (not CuPy, torch: no GPU here).
DEVICE_PACKAGES="numpy scipy pillow tifffile click tqdm pytest hypothesis"

rehearse=0
[[ "${1:-}" == "--rehearse" ]] && rehearse=1
started=$SECONDS
if (( rehearse )); then
  out=${OUT:-$(mktemp -d)}
  device=cpu
  sizes_flag=--tiny
else
  out=${OUT:-gpu-day-out}
  device=cuda
  sizes_flag=
fi
mkdir -p "$out"
log="$out/gpu.txt"
failed=0
export PYTHONUNBUFFERED=1

left() { echo $(( TOTAL - (SECONDS - started) )); }

# phase NAME LIMIT LOGFILE CMD...: CMD under `timeout` (never past TOTAL), its output appended to
# LOGFILE as it comes; how it ended goes to gpu.txt.
phase() {
  local name=$1 limit=$2 file=$3 rc t0=$SECONDS
  shift 3
  if [[ ",${GPU_DAY_SKIP:-}," == *",$name,"* ]]; then
    echo "== $name: skipped (GPU_DAY_SKIP)" | tee -a "$log"
    return
  fi
  (( limit > $(left) )) && limit=$(left)
  if (( limit < 5 )); then
    echo "== $name: skipped, $(left) s of the day left" | tee -a "$log"
    failed=1
    return
  fi
  echo "== $name (limit $limit s; $(left) s of the day left)" | tee -a "$log"
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$file"
  rc=${PIPESTATUS[0]}
  (( rc != 0 )) && failed=1
  echo "== $name: exit $rc after $(( SECONDS - t0 )) s$( (( rc == 124 || rc == 137 )) && echo ' (TIMED OUT)')" | tee -a "$log"
}

# The GPU machine's Python (3.12) here, also where pyenv has it but has not put it on PATH.
python312() {
  local candidate
  for candidate in "$(command -v python3.12)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [[ -x "$candidate" ]] && "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if (( rehearse )); then
  venv=$(mktemp -d)/venv
  trap 'rm -rf "$(dirname "$venv")"' EXIT
  python=$venv/bin/python
  base=$(python312) || { base=python3; WHEEL_PACKAGES="zarr>=3.1.3 edt"; }
  echo "rehearsal: $("$base" --version) in $venv, $DEVICE_PACKAGES $WHEEL_PACKAGES" | tee -a "$log"
  phase install 150 "$log" bash -c "'$base' -m venv '$venv' && '$python' -m pip install -q $DEVICE_PACKAGES $WHEEL_PACKAGES"
  export PYTHONPATH=$PWD
else
  python=python3
  phase install 90 "$log" "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
fi

imports="import numpy, scipy, zarr, edt, tifffile, PIL, click, weightmaps; print('numpy', numpy.__version__, 'zarr', zarr.__version__)"
if (( ! rehearse )); then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
  imports="$imports; import cupy, cucim; print('cupy', cupy.__version__, 'cucim', cucim.__version__)"
fi
phase versions 60 "$log" "$python" -c "$imports"
phase gpu-tests 100 "$out/gpu-tests.log" "$python" -m pytest -q -m gpu tests -p no:cacheprovider
phase transforms 45 "$log" "$python" benchmarks/gpu_transforms.py --out "$out/transforms.json" --device "$device" $sizes_flag
# U-Net map (issue 13): the per-instance scipy loop on one mask against --map unet on the device.
if (( rehearse )); then unet_flags=--quick; else unet_flags="--configs 1024:300 --masks 16 --loop-masks 1 --repeats 1"; fi
# shellcheck disable=SC2086
phase unet 40 "$log" "$python" benchmarks/unet.py --out "$out" --device "$device" --json-only $unet_flags
# The benchmark stops starting runs 20 s before its limit, so it ends by writing its report.
budget=$(( $(left) - 25 ))
# GPU_DAY_BENCH_ARGS: more arguments for gpu_day.py, e.g. "--sizes 1024,256 --more-workers 24".
# shellcheck disable=SC2086
phase bench $(( budget + 20 )) "$out/bench.log" "$python" benchmarks/gpu_day.py --out "$out" --device "$device" \
  --budget-s "$budget" $sizes_flag ${GPU_DAY_BENCH_ARGS:-}
echo "== gpu day: $(( SECONDS - started )) s, $( (( failed )) && echo 'some phase FAILED' || echo 'every phase passed'); files in $out" | tee -a "$log"
ls "$out" | tee -a "$log"
exit $failed
