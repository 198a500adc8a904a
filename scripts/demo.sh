#!/usr/bin/env bash
# The demo job on a fresh CPU machine: set up .venv, generate a small deterministic dataset of
# real-looking masks (3 classes, one of them rare) with images, compute its weight maps into a
# sharded zarr store, show the store, and draw a preview figure. Output: demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -e ".[plot]"
bin=.venv/bin
rm -rf demo-out
$bin/python -c "from weightmaps.sample_data import write_dataset; write_dataset('demo-out/data', n=256, shape=(256, 256), num_classes=3, seed=0)"
$bin/weightmaps stats demo-out/data/masks
$bin/weightmaps compute demo-out/data/masks --out demo-out/weights.zarr --sigma 3 --class-weights balanced --device cpu
$bin/weightmaps info demo-out/weights.zarr
$bin/weightmaps preview demo-out/data/masks/sample_00000.png --image demo-out/data/images/sample_00000.png \
  --sigma 3 --class-weights-from demo-out/weights.zarr --out demo-out/preview.png
# U-Net separation weights for instance masks of touching cells (16-bit TIFF, 0 = background).
$bin/python -c "
import numpy as np, tifffile, pathlib
from weightmaps.sample_data import make_instance_masks
out = pathlib.Path('demo-out/cells'); out.mkdir(parents=True)
for i, cells in enumerate(make_instance_masks(32, (256, 256), instances=60, seed=0)):
    tifffile.imwrite(out / f'cells_{i:02d}.tif', cells.astype(np.uint16))
"
$bin/weightmaps compute demo-out/cells --out demo-out/unet.zarr --map unet --w0 10 --sigma 5 --device cpu
$bin/weightmaps preview demo-out/cells/cells_00.tif --map unet --w0 10 --sigma 5 --out demo-out/unet-preview.png
echo "demo done: demo-out/weights.zarr and demo-out/unet.zarr (weight maps), demo-out/preview.png and unet-preview.png (figures)"
