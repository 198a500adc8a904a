"""The correctness check: a variant's maps against (a)'s, before anything of it is timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .runner import Variant

RTOL, ATOL = 1e-5, 0.0


def read_maps(variant: Variant, out: Path) -> dict[str, np.ndarray]:
    """The maps one run of ``variant`` wrote into ``out``, by sample id."""
    if variant.script:  # one .npy per mask, named by the mask's stem (= the store's sample id)
        return {p.stem: np.load(p) for p in sorted(out.glob("*.npy"))}
    from weightmaps.store import open_store

    store = open_store(out)
    if not store.complete:
        raise RuntimeError(f"({variant.key}) {out} is not complete")
    return {sample_id: np.asarray(store[sample_id]) for sample_id in store.ids}


def compare(reference: dict[str, np.ndarray], maps: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """(a)'s maps against another variant's: same ids, shapes, all finite, allclose."""
    result: dict[str, Any] = {"n_maps": len(maps), "rtol": RTOL, "atol": ATOL}
    problems = []
    if len(reference) != n or sorted(reference) != sorted(maps):
        problems.append(f"ids differ: (a) has {len(reference)}, this variant {len(maps)}, expected {n}")
    max_abs = max_rel = 0.0
    for sample_id in sorted(set(reference) & set(maps)):
        ref, got = reference[sample_id].astype(np.float64), maps[sample_id].astype(np.float64)
        if ref.shape != got.shape:
            problems.append(f"{sample_id}: shape {got.shape} != {ref.shape}")
            continue
        if not np.isfinite(got).all():
            problems.append(f"{sample_id}: {int((~np.isfinite(got)).sum())} non-finite values")
            continue
        diff = np.abs(got - ref)
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / np.maximum(np.abs(ref), 1e-30))[ref != 0].max(initial=0.0)))
        if not np.allclose(got, ref, rtol=RTOL, atol=ATOL):
            problems.append(f"{sample_id}: not allclose (max |diff| {diff.max():.3g})")
    result.update(max_abs_diff=max_abs, max_rel_diff=max_rel, ok=not problems, problems=problems[:10])
    return result
