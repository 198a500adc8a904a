"""Where every map lives in a store: one flat array of all maps, cut into shards (pure arithmetic).

A store holds its maps end to end in one flat array of their dtype, cut into shards of
``shard_elements`` (about 16 MiB), each shard one file and the unit of work: exactly one task writes
it. Maps of the same shape are laid out next to each other (so a task's masks batch well on a GPU),
packed into a shard while they fit, and never cross into a shard another task writes: a map that
does not fit the rest of a shard starts the next one, and a map larger than a shard takes as many
whole shards as it needs, alone. So the layout costs the same whatever the mix of shapes; the index
(an offset and a shape per sample) is all a reader needs to find a map, and one map read is one
contiguous read.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from weightmaps.errors import WeightmapsError

__all__ = [
    "CHUNK_ELEMENTS",
    "MAX_MAP_NDIM",
    "MAX_SAMPLES_PER_SHARD",
    "SHARD_TARGET_BYTES",
    "Layout",
    "ShardTask",
    "plan_layout",
    "summarize_shapes",
    "tasks_of",
]

# Uncompressed bytes per shard. Small enough that a modest dataset still splits into many shards
# (the unit of parallel work: 512 maps of 256² make 8) and that a shard in flight costs little
# memory; large enough that 100,000 maps of 256² are ~1,600 files, not 100,000.
SHARD_TARGET_BYTES = 16 * 2**20
# Maps per shard at most: a shard's marker and task stay small whatever the map size.
MAX_SAMPLES_PER_SHARD = 1024
# The flat array's chunk (what one read decodes, 256 KiB of float32); shards hold whole chunks.
CHUNK_ELEMENTS = 1 << 16
# A map is 2-D or 3-D, with a channel axis in front for maps of several channels.
MAX_MAP_NDIM = 4


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: the maps of one shard (or of the whole shards one large map spans).

    ``sample_indices`` are store positions (indices into the store's ids) in layout order, with
    each map's ``shapes`` and element ``offsets`` in the flat array; the task writes elements
    ``[start, stop)`` and nothing else. Picklable, a few numbers per map.
    """

    shard: int
    n_shards: int
    sample_indices: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.sample_indices)

    @property
    def start(self) -> int:
        return self.offsets[0]

    @property
    def stop(self) -> int:
        return self.offsets[-1] + math.prod(self.shapes[-1])


@dataclass(frozen=True)
class Layout:
    """A store's layout: each sample's offset in the flat array, and the shards' size."""

    offsets: np.ndarray  # int64 (N,), by store position
    shard_elements: int
    length: int  # elements of the flat array: the end of the last map, rounded up to a chunk

    @property
    def n_shards(self) -> int:
        return math.ceil(self.length / self.shard_elements) if self.length else 0


def _round_up(n: int, multiple: int) -> int:
    return multiple * math.ceil(n / multiple)


def _checked_shapes(shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    checked = []
    for i, given in enumerate(shapes):
        shape = tuple(int(n) for n in given)
        if not 2 <= len(shape) <= MAX_MAP_NDIM or min(shape) < 1:
            raise WeightmapsError(f"sample {i}: map shape {shape} is not a 2-D or 3-D map shape (channels first)")
        checked.append(shape)
    return checked


def plan_layout(
    shapes: Sequence[Sequence[int]], dtype: str, samples_per_shard: int | None = None
) -> Layout:
    """Lay out maps of ``shapes`` (by store position): same shapes together, no map crossing a shard.

    ``samples_per_shard`` caps the maps of a shard (default :data:`MAX_SAMPLES_PER_SHARD`).

    Examples
    --------
    >>> layout = plan_layout([(2, 3), (4, 4), (2, 3)], "float32")
    >>> layout.offsets.tolist(), layout.n_shards
    ([0, 12, 6], 1)
    >>> plan_layout([(2, 3)] * 3, "float32", samples_per_shard=2).offsets.tolist()
    [0, 6, 4194304]
    """
    checked = _checked_shapes(shapes)
    itemsize = np.dtype(dtype).itemsize
    shard = max(CHUNK_ELEMENTS, SHARD_TARGET_BYTES // itemsize // CHUNK_ELEMENTS * CHUNK_ELEMENTS)
    cap = min(int(samples_per_shard), MAX_SAMPLES_PER_SHARD) if samples_per_shard else MAX_SAMPLES_PER_SHARD
    if cap < 1:
        raise WeightmapsError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    first_seen: dict[tuple[int, ...], int] = {}
    for shape in checked:
        first_seen.setdefault(shape, len(first_seen))
    order = sorted(range(len(checked)), key=lambda i: (first_seen[checked[i]], i))
    offsets = np.zeros(len(checked), dtype=np.int64)
    current, used, count, end = 0, 0, 0, 0
    for i in order:
        n = math.prod(checked[i])
        if n > shard:  # a large map: whole shards of its own, starting at a shard boundary
            if used:
                current += 1
            offsets[i] = current * shard
            current += math.ceil(n / shard)
            used = count = 0
            end = offsets[i] + n
            continue
        if used + n > shard or count >= cap:
            current, used, count = current + 1, 0, 0
        offsets[i] = current * shard + used
        used, count = used + n, count + 1
        end = offsets[i] + n
    return Layout(offsets, shard, _round_up(int(end), CHUNK_ELEMENTS))


def tasks_of(offsets: np.ndarray, shapes: Sequence[Sequence[int]], shard_elements: int) -> list[ShardTask]:
    """The tasks of a layout, in shard order: the maps that start in each shard, together."""
    by_shard: dict[int, list[int]] = {}
    for i in np.argsort(offsets, kind="stable").tolist():
        by_shard.setdefault(int(offsets[i]) // shard_elements, []).append(i)
    tasks = []
    for shard, members in sorted(by_shard.items()):
        member_shapes = tuple(tuple(int(n) for n in shapes[i]) for i in members)
        end = int(offsets[members[-1]]) + math.prod(member_shapes[-1])
        tasks.append(ShardTask(
            shard=shard,
            n_shards=max(1, math.ceil(end / shard_elements) - shard),
            sample_indices=tuple(members),
            shapes=member_shapes,
            offsets=tuple(int(offsets[i]) for i in members),
        ))
    return tasks


def summarize_shapes(shapes: Sequence[Sequence[int]], most_common: int = 5) -> dict[str, object]:
    """What ``info`` and a dry run say about a set of map shapes, whatever their number.

    Examples
    --------
    >>> summary = summarize_shapes([(4, 6), (4, 6), (8, 2)])
    >>> summary["distinct"], summary["min"], summary["max"], summary["most_common"][0]
    (2, [4, 2], [8, 6], {'shape': [4, 6], 'n_samples': 2})
    """
    counts = Counter(tuple(int(n) for n in s) for s in shapes)
    summary: dict[str, object] = {"n_samples": len(shapes), "distinct": len(counts)}
    by_ndim = Counter(len(s) for s in counts)
    if len(by_ndim) == 1 and counts:
        rows = np.array([s for s in shapes], dtype=np.int64)
        summary.update(
            min=rows.min(axis=0).tolist(), median=np.median(rows, axis=0).tolist(), max=rows.max(axis=0).tolist()
        )
    summary["most_common"] = [{"shape": list(s), "n_samples": n} for s, n in counts.most_common(most_common)]
    return summary
