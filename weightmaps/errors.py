"""Every exception the library raises on purpose, in one place, to be caught by kind.

=======================  =====================================================  =========
exception                what happened                                           CLI exit
=======================  =====================================================  =========
``WeightmapsError``      bad input, bad parameters, a request this machine      2
                         cannot serve (the base of the next four)
``BadInputError``        the scan found bad input masks: ``.bad`` lists all      2
``StoreExistsError``     the output store exists and neither resume nor          2
                         overwrite was asked for
``StoreLockedError``     another run is writing the store (``.holder``: host,    2
                         pid, start time)
``ResumeMismatchError``  a resume was refused: this run differs from the         2
                         store (``.differences`` lists how)
``IncompleteRunError``   some shards failed, the others are written; the run     1
                         can be resumed (a ``RuntimeError``: not bad input)
=======================  =====================================================  =========

Messages name the offending file, sample, label or parameter; the attributes carry the same
facts for programs. The records they carry (:class:`BadSample`, :class:`ShardFailure`) are defined
here too, so that this module, imported by nearly every other, imports none of them.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BadInputError",
    "BadSample",
    "IncompleteRunError",
    "ResumeMismatchError",
    "SampleNotFoundError",
    "ShardFailure",
    "StoreExistsError",
    "StoreLockedError",
    "WeightmapsError",
]


@dataclass(frozen=True)
class BadSample:
    """One bad input: its sample id (or where it was named), its file (None in a zarr array), why."""

    id: str
    path: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.path if self.path is not None else self.id}: {self.reason}"


@dataclass(frozen=True)
class ShardFailure:
    """A shard that could not be computed: where it is, its samples, and why."""

    shard: int
    ids: tuple[str, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "ids": list(self.ids), "reason": self.reason}

    def __str__(self) -> str:
        shown = ", ".join(self.ids[:5]) + (f" and {len(self.ids) - 5} more" if len(self.ids) > 5 else "")
        return f"shard {self.shard} ({shown}): {self.reason}"


class WeightmapsError(ValueError):
    """Bad input, bad parameters, or a request this machine cannot serve.

    Subclasses ``ValueError`` so that callers who already catch ``ValueError`` keep working.
    Messages name the offending file, sample, label or parameter.
    """


class BadInputError(WeightmapsError):
    """The scan found bad inputs; ``bad`` lists every one of them (not just the first)."""

    def __init__(self, bad: Sequence[BadSample], total: int) -> None:
        self.bad = list(bad)
        self.total = total
        lines = "\n".join(f"  {b}" for b in self.bad)
        super().__init__(
            f"{len(self.bad)} of {total} input masks are bad:\n{lines}\n"
            "fix or remove them, or skip them with skip_bad=True (--skip-bad)"
        )

    def __reduce__(self) -> tuple[type[BadInputError], tuple[list[BadSample], int]]:
        return type(self), (self.bad, self.total)  # crosses process and Dask boundaries whole


class StoreExistsError(WeightmapsError):
    """The output path exists and the call asked neither to resume nor to overwrite it."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)

    def __reduce__(self) -> tuple[type[StoreExistsError], tuple[str, str]]:
        return type(self), (self.path, str(self))


class ResumeMismatchError(WeightmapsError):
    """A resume was refused because this run differs from the store; ``differences`` says how."""

    def __init__(self, path: str, differences: Sequence[str]) -> None:
        self.path = path
        self.differences = list(differences)
        super().__init__(
            f"cannot resume {path}: " + "; ".join(self.differences) + ". Use overwrite to start again."
        )

    def __reduce__(self) -> tuple[type[ResumeMismatchError], tuple[str, list[str]]]:
        return type(self), (self.path, self.differences)


class IncompleteRunError(RuntimeError):
    """Some shards failed; every other shard was written, the store is left incomplete.

    A ``RuntimeError`` (a failure of the run, exit status 1), not a :class:`WeightmapsError`
    (bad input, exit status 2).

    Attributes
    ----------
    store : str
        The store, ``complete: False``; its failed shards have no marker, so a resume
        (``--resume``) computes exactly them.
    failures : list of ShardFailure
    bad : list of BadSample
        Every sample of the failed shards, with its shard's reason.
    n_written : int
        Samples written by this run.
    """

    def __init__(
        self, store: str, failures: Sequence[ShardFailure], bad: Sequence[BadSample], n_written: int
    ) -> None:
        self.store = store
        self.failures = list(failures)
        self.bad = list(bad)
        self.n_written = n_written
        lines = "\n".join(f"  {f}" for f in self.failures)
        super().__init__(
            f"{len(self.failures)} shard(s) of {store} failed ({len(self.bad)} samples); "
            f"the other shards are written ({n_written} samples in this run):\n{lines}\n"
            "the store is incomplete: fix or remove the inputs named above (then start again), or "
            "complete it with --resume if the failure was transient"
        )

    def __reduce__(self) -> tuple[type[IncompleteRunError], tuple[str, list[ShardFailure], list[BadSample], int]]:
        return type(self), (self.store, self.failures, self.bad, self.n_written)


class StoreLockedError(WeightmapsError):
    """Another run holds the store's lock; ``holder`` is what its lock file says."""

    def __init__(self, store: str, lock: str, holder: dict[str, Any]) -> None:
        self.store, self.lock, self.holder = store, lock, holder
        where = "this host" if holder.get("host") == socket.gethostname() else f"host {holder.get('host')!r}"
        super().__init__(
            f"store {store!r} is being written by another run: pid {holder.get('pid')} on {where}, "
            f"started {holder.get('started')} (lock {lock}). Wait for it to finish; if that run is gone "
            "(another host, or the pid now belongs to something else), delete the lock file"
        )

    def __reduce__(self) -> tuple[type[StoreLockedError], tuple[str, str, dict[str, Any]]]:
        return type(self), (self.store, self.lock, self.holder)


class SampleNotFoundError(WeightmapsError, KeyError):
    """A sample id that is not in the store: a ``KeyError`` as a mapping's, and a WeightmapsError."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError would quote the message
