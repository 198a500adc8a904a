"""Decoded masks kept between the scan and the compute pass, so that a run decodes each mask once.

The scan must decode every mask before any store exists (validation, class counts, shapes), and
the compute pass needs the same labels again. Decoding is most of the CPU work a GPU leaves to the
host (a 256² PNG: ~0.3 ms to decode against ~0.02 ms to write or read its raw bytes; 2-core VM),
so the scan's workers write what they decoded, raw, into a spool folder of the run (one file per
scan chunk), and each shard reads its masks back from there, with the digests the scan took of
them. What a shard reads is then exactly what the scan validated and counted.

A spool lives in the temporary folder (``TMPDIR``), takes at most half its free space and a
quarter of the machine's memory (its pages sit in the page cache), and holds the first masks of a
dataset too large for that (the rest are decoded again, as without a spool). The driver removes
it at the end of the run; one left by a killed run (its folder names the driver's pid) is removed
by the next run that starts a spool. A file that is gone or short when a shard reads it is not an
error: that mask is decoded from its source again.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import IO, NamedTuple

import numpy as np

__all__ = ["Spool", "SpoolChunk", "SpoolEntry"]

_PREFIX = "weightmaps-spool-"
_FOLDER = re.compile(rf"^{_PREFIX}(\d+)-")
# Of the temporary folder's free space, and of the machine's memory, what a spool may take.
_DISK_SHARE = 0.5
_MEMORY_SHARE = 0.25


class SpoolEntry(NamedTuple):
    """Where one decoded mask lies in the spool, and the digest the scan took of it."""

    file: str  # the chunk file's name in the spool folder
    offset: int
    dtype: str
    shape: tuple[int, ...]
    digest: str  # readers.mask_digest of the labels


@dataclass(frozen=True)
class Spool:
    """A run's spool folder (picklable: its path and which samples it holds).

    Samples at source positions below ``limit`` are spooled by the scan; the others are not.
    """

    root: str
    limit: int

    @classmethod
    def create(cls, n_samples: int, bytes_per_sample: int, where: str | None = None) -> Spool | None:
        """A new spool for ``n_samples`` masks of about ``bytes_per_sample`` each (the first one's),
        or None when not even one fits."""
        base = Path(where or tempfile.gettempdir())
        _remove_orphans(base)
        try:
            free = shutil.disk_usage(base).free
        except OSError:
            return None
        budget = min(_DISK_SHARE * free, _MEMORY_SHARE * _memory_bytes())
        limit = min(n_samples, int(budget // max(1, bytes_per_sample)))
        if limit < 1:
            return None
        try:
            root = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)
        except OSError:
            return None
        return cls(root, limit)

    def holds(self, index: int) -> bool:
        return index < self.limit

    @contextlib.contextmanager
    def chunk(self, first: int) -> Iterator[SpoolChunk]:
        """A writer for the masks of one scan chunk (its first sample's position names the file):
        ``add(labels, digest)`` appends one and returns its :class:`SpoolEntry`, or None where
        the disk refused (that mask is then decoded again by its shard)."""
        name = f"{first}.bin"
        path = os.path.join(self.root, name)
        try:
            f: IO[bytes] | None = open(path, "wb")
        except OSError:
            f = None
        writer = SpoolChunk(name, f)
        try:
            yield writer
        finally:
            writer.close()

    def read(self, entry: SpoolEntry) -> np.ndarray | None:
        """The mask of ``entry``, or None when its file is gone or short (decode it again)."""
        labels = np.empty(entry.shape, dtype=np.dtype(entry.dtype))
        try:
            with open(os.path.join(self.root, entry.file), "rb", buffering=0) as f:
                f.seek(entry.offset)
                got = f.readinto(labels.data)
        except OSError:
            return None
        return labels if got == labels.nbytes else None

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class SpoolChunk:
    """The file of one scan chunk, being written (see :meth:`Spool.chunk`)."""

    def __init__(self, name: str, f: IO[bytes] | None) -> None:
        self.name, self.f, self.offset = name, f, 0

    def add(self, labels: np.ndarray, digest: str) -> SpoolEntry | None:
        if self.f is None:
            return None
        data = np.ascontiguousarray(labels)
        try:
            self.f.write(data.data)
        except OSError:  # a full disk: nothing more goes into this chunk's file
            self.close()
            return None
        entry = SpoolEntry(self.name, self.offset, data.dtype.str, tuple(int(n) for n in data.shape), digest)
        self.offset += data.nbytes
        return entry

    def close(self) -> None:
        if self.f is not None:
            with contextlib.suppress(OSError):
                self.f.close()
            self.f = None


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError, AttributeError):
        return 1 << 62  # unknown: the disk's share decides


def _remove_orphans(base: Path) -> None:
    """Spools of runs whose driver is gone (killed before it could remove its own)."""
    try:
        folders = [p for p in base.iterdir() if p.name.startswith(_PREFIX)]
    except OSError:
        return
    for folder in folders:
        match = _FOLDER.match(folder.name)
        if match is None or _alive(int(match.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not ours to judge
        return True
    return True
