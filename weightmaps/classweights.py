"""Class pixel counts over a set of masks, the class-balance weights φ derived from them, and
the weights of a run (:func:`resolve_class_weights`: a scheme, a file, a mapping or another store).

Every scheme maps counts ``n_c`` (ignore label excluded, classes with ``n_c = 0`` left out) to
one weight per class. ``m = Σ n_c`` is the number of counted pixels, ``C`` the number of
classes present, ``p_c = n_c / m`` the class frequency.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightmaps.arrays import LabelArray, array_module, to_numpy
from weightmaps.errors import WeightmapsError
from weightmaps.validation import check_labels

__all__ = [
    "SCHEMES",
    "add_counts",
    "add_image_pixels",
    "class_counts",
    "class_image_pixels",
    "class_weights",
    "count_labels",
    "resolve_class_weights",
]

# Beyond this many distinct label values a bincount table costs more than sorting.
_BINCOUNT_LIMIT = 1 << 20


def count_labels(labels: LabelArray, *, ignore_index: int | None = None) -> dict[int, int]:
    """Pixel count of every label present in one mask, the ignore label excluded.

    Parameters
    ----------
    labels : array (numpy or CuPy)
        Integer label array, any shape.
    ignore_index : int, optional
        Label left out of the counts.

    Returns
    -------
    dict[int, int]
        ``{label: count}`` for labels with a non-zero count, sorted by label.

    Examples
    --------
    >>> import numpy as np
    >>> count_labels(np.array([[0, 0, 1], [1, 1, 255]]), ignore_index=255)
    {0: 2, 1: 3}
    """
    xp = array_module(labels)
    check_labels(labels, ndims=None)
    flat = labels.ravel()
    high = int(flat.max())
    if high < _BINCOUNT_LIMIT:
        counts = xp.bincount(flat, minlength=0)
        values = xp.flatnonzero(counts)
        tallies = counts[values]
    else:
        values, tallies = xp.unique(flat, return_counts=True)
    result = {int(v): int(n) for v, n in zip(to_numpy(values), to_numpy(tallies), strict=True)}
    if ignore_index is not None:
        result.pop(int(ignore_index), None)
    return result


def class_counts(masks: Iterable[Any], *, ignore_index: int | None = None) -> dict[int, int]:
    """Sum of :func:`count_labels` over a set of masks (the training set).

    Examples
    --------
    >>> import numpy as np
    >>> class_counts([np.zeros((2, 2), np.uint8), np.ones((1, 3), np.uint8)])
    {0: 4, 1: 3}
    """
    total: dict[int, int] = {}
    for mask in masks:
        add_counts(total, count_labels(mask, ignore_index=ignore_index))
    return dict(sorted(total.items()))


def add_counts(total: dict[int, int], counts: Mapping[int, int]) -> None:
    """Add per-label pixel counts into ``total`` (the one merge of counts everywhere)."""
    for label, count in counts.items():
        total[label] = total.get(label, 0) + count


def add_image_pixels(image_pixels: dict[int, int], mask_counts: Mapping[int, int]) -> None:
    """Add one mask's contribution to :func:`class_image_pixels`: its pixels, to every class it holds."""
    pixels = sum(mask_counts.values())
    for label in mask_counts:
        image_pixels[label] = image_pixels.get(label, 0) + pixels


def class_image_pixels(masks: Iterable[Any], *, ignore_index: int | None = None) -> dict[int, int]:
    """Per class, the pixels of all the masks in which the class occurs (ignore label excluded).

    The denominator of Eigen & Fergus's class frequency for median-frequency balancing:
    ``f_c = n_c / class_image_pixels[c]``.

    Examples
    --------
    >>> import numpy as np
    >>> class_image_pixels([np.zeros((2, 2), np.uint8), np.array([[0, 1, 1]], np.uint8)])
    {0: 7, 1: 3}
    """
    image_pixels: dict[int, int] = {}
    for mask in masks:
        add_image_pixels(image_pixels, count_labels(mask, ignore_index=ignore_index))
    return dict(sorted(image_pixels.items()))


def _balanced(counts: dict[int, int]) -> dict[int, float]:
    # Bressan et al. 2021, Eq. 5: phi_c = m / (C n_c); sklearn's compute_class_weight("balanced").
    total, num_classes = sum(counts.values()), len(counts)
    return {c: total / (num_classes * n) for c, n in counts.items()}


def _median(counts: dict[int, int], *, image_pixels: Mapping[int, int] | None = None) -> dict[int, float]:
    # Median-frequency balancing (Eigen & Fergus 2015; SegNet): phi_c = median(f) / f_c, where
    # f_c = n_c / (pixels of the images in which c occurs). Without those per-class image pixels
    # (counts alone do not carry them) f_c = n_c / m, the dataset-wide frequency.
    if image_pixels is None:
        total = sum(counts.values())
        freqs = {c: n / total for c, n in counts.items()}
    else:
        missing = sorted(set(counts) - {int(k) for k in image_pixels})
        if missing:
            raise WeightmapsError(f"median scheme: image_pixels has no entry for label(s) {missing}")
        pixels = {int(k): v for k, v in image_pixels.items()}
        freqs = {c: n / pixels[c] for c, n in counts.items()}
    median = float(np.median(list(freqs.values())))
    return {c: median / f for c, f in freqs.items()}


def _log(counts: dict[int, int], *, c: float = 1.02) -> dict[int, float]:
    # ENet (Paszke et al. 2016): phi_c = 1 / ln(c + p_c), with c = 1.02 bounding the weights.
    if not c > 1.0:
        raise WeightmapsError(f"log scheme: c must be > 1 (ln(c + p) > 0), got {c}")
    total = sum(counts.values())
    return {k: 1.0 / math.log(c + n / total) for k, n in counts.items()}


def _effective(counts: dict[int, int], *, beta: float = 0.9999) -> dict[int, float]:
    # Cui et al. 2019, "Class-balanced loss based on effective number of samples":
    # phi_c ∝ (1 - beta) / (1 - beta^n_c), normalised so that sum(phi) = C.
    if not 0.0 <= beta < 1.0:
        raise WeightmapsError(f"effective scheme: beta must be in [0, 1), got {beta}")
    raw = {c: (1.0 - beta) / -math.expm1(n * math.log(beta)) if beta > 0 else 1.0
           for c, n in counts.items()}
    scale = len(raw) / sum(raw.values())
    return {c: w * scale for c, w in raw.items()}


def _none(counts: dict[int, int]) -> dict[int, float]:
    return {c: 1.0 for c in counts}


SCHEMES: dict[str, Callable[..., dict[int, float]]] = {
    "balanced": _balanced,
    "median": _median,
    "log": _log,
    "effective": _effective,
    "none": _none,
}


def class_weights(
    counts: Mapping[int, int] | Mapping[int, float],
    scheme: str | Mapping[int, float] = "balanced",
    **scheme_params: Any,
) -> dict[int, float]:
    """Class-balance weights φ_c from class pixel counts.

    Parameters
    ----------
    counts : mapping
        ``{label: pixel count}`` over the training set (e.g. from :func:`class_counts`).
        Classes with count 0 are left out: they never occur, so they need no weight.
    scheme : str or mapping
        ``"balanced"`` (Bressan et al. 2021, Eq. 5: ``m / (C n_c)``, equal to scikit-learn's
        ``compute_class_weight("balanced")``), ``"median"`` (median-frequency balancing,
        Eigen & Fergus 2015 / SegNet: ``median(f) / f_c`` with ``f_c = n_c / image_pixels[c]``,
        the pixels of the images in which c occurs, from :func:`class_image_pixels`; without
        ``image_pixels``, ``f_c = n_c / m``), ``"log"`` (ENet: ``1 / ln(c + p_c)``, ``c=1.02``),
        ``"effective"`` (Cui et al. 2019: ``(1 - β) / (1 - β^n_c)`` scaled to sum to C,
        ``beta=0.9999``), ``"none"`` (all 1), or an explicit ``{label: weight}`` mapping,
        returned as given (``counts`` is then ignored).
    **scheme_params
        ``c`` for ``"log"``, ``beta`` for ``"effective"``, ``image_pixels`` for ``"median"``.

    Returns
    -------
    dict[int, float]
        ``{label: weight}`` sorted by label.

    Examples
    --------
    >>> class_weights({0: 90, 1: 10})
    {0: 0.5555555555555556, 1: 5.0}
    >>> class_weights({0: 90, 1: 10}, "none")
    {0: 1.0, 1: 1.0}
    """
    if isinstance(scheme, Mapping):
        if scheme_params:
            raise WeightmapsError("explicit class weights take no scheme parameters")
        return _explicit_weights(scheme)
    if scheme not in SCHEMES:
        raise WeightmapsError(f"unknown class-weight scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    present = _checked_counts(counts)
    try:
        weights = SCHEMES[scheme](present, **scheme_params)
    except TypeError as exc:  # an unknown keyword for this scheme
        raise WeightmapsError(f"scheme {scheme!r}: {exc}") from None
    return dict(sorted(weights.items()))


def _checked_counts(counts: Mapping[Any, Any]) -> dict[int, float]:
    present: dict[int, float] = {}
    for label, count in counts.items():
        label_int, count_num = int(label), float(count)
        if not math.isfinite(count_num) or count_num < 0:
            raise WeightmapsError(f"class count of label {label_int} must be a finite number >= 0, got {count}")
        if count_num > 0:
            present[label_int] = count_num
    if not present:
        raise WeightmapsError("no class has a pixel: class counts are empty or all zero")
    return present


def _explicit_weights(mapping: Mapping[Any, Any]) -> dict[int, float]:
    weights: dict[int, float] = {}
    spelled: dict[int, Any] = {}
    for label, weight in mapping.items():
        if isinstance(label, bool) or isinstance(weight, bool):  # `true` is no label and no weight
            raise WeightmapsError(f"class weights must map integer labels to numbers, got {label!r}: {weight!r}")
        try:
            label_int, weight_num = int(label), float(weight)
        except (TypeError, ValueError):
            raise WeightmapsError(f"class weights must map integer labels to numbers, got {label!r}: {weight!r}") from None
        if label_int < 0:
            raise WeightmapsError(f"class weights: labels must be >= 0, got {label!r}")
        if label_int in weights:
            raise WeightmapsError(f"class weights: {spelled[label_int]!r} and {label!r} are the same label {label_int}")
        if not math.isfinite(weight_num) or weight_num < 0:
            raise WeightmapsError(f"class weight of label {label_int} must be finite and >= 0, got {weight}")
        weights[label_int] = weight_num
        spelled[label_int] = label
    if not weights:
        raise WeightmapsError("class weights are empty")
    if not any(weights.values()):
        raise WeightmapsError("every class weight is 0: every map would be 0")
    return dict(sorted(weights.items()))


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json.loads would keep the last silently)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise WeightmapsError(f"label {key!r} is given twice")
        seen[key] = value
    return seen


def resolve_class_weights(
    spec: str | os.PathLike[str] | Mapping[Any, Any] | None,
    counts: Mapping[int, int],
    *,
    scheme_params: Mapping[str, float] | None = None,
    class_weights_from: str | os.PathLike[str] | None = None,
    image_pixels: Mapping[int, int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[dict[int, float], dict[str, Any]]:
    """The class weights for a run, and a JSON-ready record of where they came from.

    ``spec`` is a scheme name (see :data:`weightmaps.classweights.SCHEMES`), a path to a JSON
    file ``{label: weight}``, or a mapping. ``class_weights_from`` (another store's path) takes
    the weights of that store, e.g. the training set's for a validation set; it replaces the
    default scheme but conflicts with any other ``spec``. Every label in ``counts`` must have
    a weight. ``image_pixels`` (from the scan) gives the ``"median"`` scheme Eigen & Fergus's
    per-class frequencies. ``storage_options``: where ``class_weights_from`` is a URL.

    Examples
    --------
    >>> resolve_class_weights("balanced", {0: 90, 1: 10})[0]
    {0: 0.5555555555555556, 1: 5.0}
    >>> resolve_class_weights({0: 1, 1: 3}, {0: 90, 1: 10})
    ({0: 1.0, 1: 3.0}, {'source': 'explicit'})
    """
    if class_weights_from is not None:
        if spec not in (None, "balanced"):
            raise WeightmapsError(
                f"give class weights either as {spec!r} or from the store {str(class_weights_from)!r}, not both"
            )
        from weightmaps.store import open_store  # here: zarr only for runs that read a store

        store = open_store(class_weights_from, storage_options)
        weights = {int(k): float(v) for k, v in store.class_weights.items()}
        record: dict[str, Any] = {"source": "store", "path": str(class_weights_from)}
    elif spec is None or (isinstance(spec, str) and spec in SCHEMES):
        scheme = spec or "balanced"
        params = dict(scheme_params or {})
        extra = {"image_pixels": image_pixels} if scheme == "median" and image_pixels is not None else {}
        weights = class_weights(counts, scheme, **params, **extra)
        record = {"source": "scheme", "scheme": scheme, "scheme_params": params}
    elif isinstance(spec, Mapping):
        weights = class_weights(counts, spec)
        record = {"source": "explicit"}
    else:
        path = Path(spec)
        if not path.is_file():
            raise WeightmapsError(
                f"class weights {str(spec)!r} are neither a scheme ({', '.join(SCHEMES)}) nor a JSON file"
            )
        try:
            loaded = json.loads(path.read_text(), object_pairs_hook=_object_without_duplicates)
            if not isinstance(loaded, dict):
                raise WeightmapsError("class weights JSON must be an object {label: weight}")
            weights = class_weights(counts, loaded)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightmapsError(f"{path}: cannot read class weights JSON: {exc}") from None
        except WeightmapsError as exc:
            raise WeightmapsError(f"{path}: {exc}") from None
        record = {"source": "file", "path": str(path)}
    if scheme_params and record["source"] != "scheme":
        raise WeightmapsError("scheme_params apply to a class-weight scheme only")
    missing = sorted(set(counts) - set(weights))
    if missing:
        where = record.get("path", "the given mapping")
        raise WeightmapsError(f"class weights from {where} have no weight for label(s) {missing} found in the masks")
    return weights, record
