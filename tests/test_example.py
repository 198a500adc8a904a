"""examples/train_weighted.py runs end to end at a reduced size (the full size is run by hand)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_weighted.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_weighted", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_perturb_edges_changes_only_edges_and_keeps_objects():
    import numpy as np
    from scipy import ndimage

    example = _load_example()
    mask = np.zeros((40, 40), np.uint8)
    mask[5:20, 5:20] = 1
    mask[25:29, 25:29] = 2  # small: an erosion by 3 would delete it
    for seed in range(6):
        noisy = example.perturb_edges(mask, np.random.default_rng(seed))
        changed = noisy != mask
        assert changed.any()
        # every change lies within 3 px of an edge of the clean mask
        edges = (ndimage.grey_dilation(mask, size=3) != mask) | (ndimage.grey_erosion(mask, size=3) != mask)
        assert (ndimage.distance_transform_edt(~edges)[changed] <= 3).all()
        assert (noisy == 2).any() and (noisy == 1).any()


def test_example_runs_end_to_end_small(tmp_path, capsys):
    example = _load_example()
    report = example.main(["--size", "48", "--n-train", "16", "--n-test", "8", "--epochs", "2",
                           "--workers", "2", "--seed", "3", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report["rows"]))
    assert [r["loss"] for r in saved["rows"]] == ["cross-entropy (baseline)", "weighted cross-entropy"]
    for row in saved["rows"]:
        for key in ("pixel_accuracy", "iou_class_of_interest"):
            assert isinstance(row[key], float) and not math.isnan(row[key]) and 0.0 <= row[key] <= 1.0
    out = capsys.readouterr().out
    assert "| loss | pixel accuracy | IoU class of interest |" in out
    assert (tmp_path / "weights.zarr").is_dir()


def test_example_boundary_loss_variant_runs(tmp_path, capsys):
    example = _load_example()
    report = example.main(["--size", "48", "--n-train", "16", "--n-test", "8", "--epochs", "2", "--workers", "0",
                           "--seed", "1", "--boundary", "--boundary-step", "0.4", "--out", str(tmp_path)])
    assert [r["loss"] for r in report["rows"]] == ["cross-entropy (baseline)", "cross-entropy + boundary loss"]
    assert (tmp_path / "sdf.zarr").is_dir()
    for row in report["rows"]:
        assert 0.0 <= row["pixel_accuracy"] <= 1.0
