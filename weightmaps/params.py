"""What a weight map is made with: one frozen value, written into every store and read back.

The pipeline builds a :class:`MapParams` once; the shards compute with it, the store records its
JSON and compares it on resume, and the Dataset, :class:`~weightmaps.torch.PixelWeights` and
``weightmaps info`` read it back from the store. New map kinds add their own fields here.

The JSON form is the one stores have always held (``params`` in the root attributes), so stores
written before this value existed read and resume as before; fields they lack take their defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from weightmaps.errors import WeightmapsError
from weightmaps.validation import check_unet_parameters

__all__ = ["INSTANCE_MODES", "MAP_KINDS", "UNET_FIELDS", "WEIGHT_KINDS", "MapParams"]

# The kinds of map a store can hold. "bressan": w = φ_c · δ (Bressan et al. 2021); "unet":
# w = w_c + w0 · exp(−(d1 + d2)² / 2σ²) between instances (Ronneberger et al. 2015, weightmaps.unet);
# "distance": d, the distance to the nearest edge (weights derived when loading); "sdf": one signed
# distance map per class (weightmaps.sdf), shape (num_classes, *mask).
MAP_KINDS = ("bressan", "unet", "distance", "sdf")
# The kinds whose maps are weights, made with a σ; the others hold distances and take no σ.
WEIGHT_KINDS = ("bressan", "unet")
# How a "unet" map finds its instances: the masks are instance masks ("as-is"), or the connected
# components of every class of a semantic mask ("connected").
INSTANCE_MODES = ("as-is", "connected")
# The fields only a "unet" map has (None on the others), and their defaults there.
UNET_FIELDS = {"w0": 10.0, "tolerance": 1e-4, "instances": "as-is"}


@dataclass(frozen=True)
class MapParams:
    """Everything besides the masks that determines a store's maps.

    Attributes
    ----------
    sigma : float or None
        Width of the edge uncertainty (of the separation term for ``"unet"``), in spacing
        units; None for the kinds that hold distances.
    class_weights : dict[int, float]
        φ per label.
    class_weights_origin : dict
        Where φ came from, as recorded: ``{"source": "scheme", "scheme": ..., "scheme_params":
        ...}``, ``{"source": "file", "path": ...}``, ``{"source": "store", "path": ...}`` or
        ``{"source": "explicit"}``.
    spacing : tuple of float or None
        Pixel spacing per array axis; None for unit spacing (``(1, 1)`` is stored as None:
        the maps are the same).
    connectivity, ignore_index, dtype
        As for :func:`weightmaps.weight_map`.
    label_map : dict[int, int] or None
        Labels replaced when decoding.
    num_classes : int or None
        The label range the inputs were checked against.
    skip_bad : bool
        Whether bad inputs were skipped (and listed in the store's report).
    max_weight : float or None
        The cap the class weights were clipped to (``--max-weight``), if any.
    float_labels : bool
        Whether float masks of whole numbers were read as labels (``--float-labels``).
    kind : str
        The map kind, one of :data:`MAP_KINDS`.
    w0, tolerance : float or None
        The separation term's height and accuracy of a ``"unet"`` map (see
        :func:`weightmaps.unet_weights`); None for the other kinds.
    instances : str or None
        Where a ``"unet"`` map's instances come from, one of :data:`INSTANCE_MODES`.

    Examples
    --------
    >>> p = MapParams(sigma=3.0, class_weights={0: 0.6, 1: 2.5}, spacing=(1.0, 1.0))
    >>> p.spacing is None, MapParams.from_json(p.to_json()) == p
    (True, True)
    """

    sigma: float | None
    class_weights: dict[int, float]
    class_weights_origin: dict[str, Any] = field(default_factory=lambda: {"source": "explicit"})
    spacing: tuple[float, ...] | None = None
    connectivity: int = 1
    ignore_index: int | None = None
    dtype: str = "float32"
    label_map: dict[int, int] | None = None
    num_classes: int | None = None
    skip_bad: bool = False
    max_weight: float | None = None
    float_labels: bool = False
    kind: str = "bressan"
    w0: float | None = None
    tolerance: float | None = None
    instances: str | None = None

    def __post_init__(self) -> None:
        # Normalised once, here, so that equal settings compare equal (a resume after
        # `--spacing 1,1` matches one without) and the JSON form is canonical.
        set_ = object.__setattr__
        if self.kind not in MAP_KINDS:
            raise WeightmapsError(f"map kind {self.kind!r} is not one of {MAP_KINDS}")
        if self.kind in WEIGHT_KINDS and self.sigma is None:
            raise WeightmapsError(f"a {self.kind!r} map needs sigma (--sigma)")
        if self.kind not in WEIGHT_KINDS and self.sigma is not None:
            raise WeightmapsError(f"sigma does not apply to map kind {self.kind!r}: it holds distances, not weights")
        if self.kind == "sdf" and self.num_classes is None:
            raise WeightmapsError("an 'sdf' map needs num_classes (--num-classes): one channel per class")
        if self.sigma is not None:
            set_(self, "sigma", float(self.sigma))
        set_(self, "class_weights", {int(k): float(v) for k, v in sorted(self.class_weights.items(), key=_label)})
        set_(self, "class_weights_origin", dict(self.class_weights_origin))
        if self.spacing is not None:
            spacing = tuple(float(s) for s in self.spacing)
            set_(self, "spacing", None if all(s == 1.0 for s in spacing) else spacing)
        set_(self, "connectivity", int(self.connectivity))
        if self.ignore_index is not None:
            set_(self, "ignore_index", int(self.ignore_index))
        set_(self, "dtype", str(self.dtype))
        if self.label_map is not None:
            set_(self, "label_map", {int(k): int(v) for k, v in sorted(self.label_map.items(), key=_label)} or None)
        if self.num_classes is not None:
            set_(self, "num_classes", int(self.num_classes))
        set_(self, "skip_bad", bool(self.skip_bad))
        if self.max_weight is not None:
            set_(self, "max_weight", float(self.max_weight))
        set_(self, "float_labels", bool(self.float_labels))
        self._normalise_kind_fields()

    def _normalise_kind_fields(self) -> None:
        set_ = object.__setattr__
        if self.kind != "unet":
            given = [name for name in UNET_FIELDS if getattr(self, name) is not None]
            if given:
                raise WeightmapsError(f"{', '.join(given)} apply to map kind 'unet', not {self.kind!r}")
            return
        for name, default in UNET_FIELDS.items():
            if getattr(self, name) is None:
                set_(self, name, default)
        w0, tolerance = check_unet_parameters(self.w0, self.tolerance)
        set_(self, "w0", w0)
        set_(self, "tolerance", tolerance)
        if self.instances not in INSTANCE_MODES:
            raise WeightmapsError(f"instances must be one of {INSTANCE_MODES}, got {self.instances!r}")

    def map_shape(self, mask_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the map of a mask of ``mask_shape``: a channel per class for ``"sdf"``."""
        return (int(self.num_classes), *mask_shape) if self.kind == "sdf" else tuple(mask_shape)  # type: ignore[arg-type]

    def mask_shape(self, map_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the mask a map of ``map_shape`` was made from."""
        return tuple(map_shape[1:]) if self.kind == "sdf" else tuple(map_shape)

    @property
    def allows_inf(self) -> bool:
        """Whether a map may hold +inf: the distance of a mask without an edge."""
        return self.kind == "distance"

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`weightmaps.weight_map` these parameters fix."""
        if self.kind != "bressan":
            raise WeightmapsError(f"a {self.kind!r} map is not made by weight_map (see weightmaps.maps)")
        return {
            "sigma": self.sigma,
            "class_weights": self.class_weights,
            "spacing": self.spacing,
            "ignore_index": self.ignore_index,
            "connectivity": self.connectivity,
            "dtype": self.dtype,
        }

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form a store records (the format stores have always used)."""
        record: dict[str, Any] = {
            "sigma": self.sigma,
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "connectivity": self.connectivity,
            "ignore_index": self.ignore_index,
            "dtype": self.dtype,
            "class_weights": {
                **self.class_weights_origin,
                "values": {str(k): v for k, v in self.class_weights.items()},
            },
            "label_map": {str(k): v for k, v in self.label_map.items()} if self.label_map else None,
            "num_classes": self.num_classes,
            "skip_bad": self.skip_bad,
        }
        # Fields added after the first stores are written only when set, so that those stores'
        # parameters read back equal to a run with the same settings.
        if self.max_weight is not None:
            record["max_weight"] = self.max_weight
        if self.float_labels:
            record["float_labels"] = True
        if self.kind != "bressan":
            record["kind"] = self.kind
        if self.kind == "unet":
            record.update({name: getattr(self, name) for name in UNET_FIELDS})
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> MapParams:
        """Read back what :meth:`to_json` wrote, including stores written before this class."""
        try:
            weights = dict(record.get("class_weights") or {})
            values = weights.pop("values", {})
            spacing = record.get("spacing")
            return cls(
                sigma=record.get("sigma"),
                class_weights={int(k): float(v) for k, v in values.items()},
                class_weights_origin=weights or {"source": "explicit"},
                spacing=tuple(spacing) if spacing is not None else None,
                connectivity=record.get("connectivity", 1),
                ignore_index=record.get("ignore_index"),
                dtype=record.get("dtype", "float32"),
                label_map=record.get("label_map"),
                num_classes=record.get("num_classes"),
                skip_bad=record.get("skip_bad", False),
                max_weight=record.get("max_weight"),
                float_labels=record.get("float_labels", False),
                kind=record.get("kind", "bressan"),
                **{name: record.get(name) for name in UNET_FIELDS},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightmapsError(f"store parameters are not readable ({type(exc).__name__}: {exc}): {dict(record)}") from None

    def differences(self, other: MapParams) -> list[str]:
        """What differs from ``other``, one line a field (``field: store has X, this run asks Y``)."""
        lines = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if not _same(mine, theirs):
                lines.append(f"{f.name}: store has {mine!r}, this run asks {theirs!r}")
        return lines


def _label(item: tuple[Any, Any]) -> int:
    return int(item[0])


def _same(a: Any, b: Any) -> bool:
    # Floats that went through JSON compare equal to themselves; NaN never appears (checked).
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)
