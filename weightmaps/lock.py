"""One run writes a store at a time: an exclusive lock file beside the store, held for the whole run.

Two runs on the same output once interleaved their shards (a store said "complete, σ 2" while most
maps were σ 5) or deleted each other's half-made directory. A run now creates
``<parent>/.<store name>.weightmaps-lock`` before it creates, overwrites or resumes the store, and
removes it when it ends, however it ends. The file is created whole in one step (written aside,
then hard-linked into place, which fails if it exists) and names its holder: host, pid, start time.

A lock left by a process of this host that is gone (killed, power cut) is taken over; a live
holder, or one on another host (whose liveness cannot be checked from here), is refused with a
message naming it. The lock lives beside the store, not in it, so that ``overwrite`` can delete the
store while holding it.

The lock is named after the real store, not after the path as given: symbolic links resolved
(:meth:`Location.canonical`). Two runs once locked ``alias/w.zarr`` (a link) and ``real/w.zarr``
apart, and one resumed the store the other was overwriting: it ended complete, claiming σ 2, with
most maps σ 5. The store itself is created, overwritten (renamed aside in the real folder) and
resumed at that same real path (:mod:`weightmaps.store`), so the lock and the rename agree.

A store in object storage gets the same lock as an object beside it, created with a conditional
PUT (``If-None-Match: *``: of two runs, exactly one creates it). A stale lock of this host is taken
over by deleting and creating it again; two runs doing that at the same instant could both think
they won, a window of milliseconds after a killed run that a local rename closes and S3 cannot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from weightmaps.atomic_files import publish_json
from weightmaps.errors import StoreLockedError, WeightmapsError
from weightmaps.location import Location

__all__ = ["lock_path", "store_lock"]

log = logging.getLogger("weightmaps")


def lock_path(store: str | os.PathLike[str]) -> Path:
    """Where the lock of a local ``store`` lives: a hidden file beside the real store (links resolved)."""
    path = Location.of(store).canonical().path
    return path.parent / f".{path.name}.weightmaps-lock"


@contextlib.contextmanager
def store_lock(
    store: str | os.PathLike[str] | Location, storage_options: Mapping[str, Any] | None = None
) -> Iterator[Path | str]:
    """Hold the store's lock for the ``with`` block; refuses with :class:`StoreLockedError`.

    Yields the lock file's Path, or its URL for a store in object storage.

    Examples
    --------
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "w.zarr")
    >>> with store_lock(out) as lock:
    ...     lock.exists()
    True
    >>> lock.exists()
    False
    """
    location = Location.of(store, storage_options).canonical()  # the real store: one lock whatever its alias
    if not location.is_local:
        with _remote_lock(location) as url:
            yield url
        return
    lock = lock_path(location.path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    _acquire(lock, str(location.path))
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _holder(store: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "store": store,
    }


@contextlib.contextmanager
def _remote_lock(store: Location) -> Iterator[str]:
    parent_url, name = store.parent_and_name()
    if not parent_url.partition("://")[2]:  # the lock lives beside the store, in its folder
        raise WeightmapsError(f"{store.url}: a store needs a name under its bucket (e.g. s3://bucket/train.zarr)")
    parent = Location(parent_url, store.options)
    lock_name = f".{name}.weightmaps-lock"
    url = f"{parent_url}/{lock_name}"
    me = {**_holder(store.url), "uid": uuid.uuid4().hex}
    for _ in range(3):
        if parent.publish_json(lock_name, me, exclusive=True):  # a conditional PUT: one run wins
            break
        holder = parent.read_json(lock_name)
        if holder is None:
            continue  # released in between
        if not isinstance(holder, dict):
            holder = {"host": "?", "pid": "?", "started": "?", "unreadable": True}
        if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
            parent.delete(lock_name)  # a killed run of this host: take it over
            continue
        raise StoreLockedError(store.url, url, holder)
    else:
        raise StoreLockedError(store.url, url, parent.read_json(lock_name) or {})
    try:
        yield url
    finally:
        # Only our own lock: never delete one another run created after a take-over race. A
        # bucket that stopped answering must not hide why the run ended: say so, and go on.
        try:
            holder = parent.read_json(lock_name)
            if isinstance(holder, dict) and holder.get("uid") == me["uid"]:
                parent.delete(lock_name)
        except WeightmapsError as exc:
            log.warning("could not remove the lock %s (%s); delete it before the next run", url, exc)


def _acquire(lock: Path, store: str) -> None:
    me = _holder(store)
    for _ in range(3):  # a stale lock taken over, or one released while looking at it: try again
        if publish_json(lock, me, exclusive=True):  # created whole, or not at all
            return
        holder = _read(lock)
        if holder is None:
            continue  # released in between
        if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
            _take_over(lock, holder)
            continue
        raise StoreLockedError(store, str(lock), holder)
    raise StoreLockedError(store, str(lock), _read(lock) or {})


def _read(lock: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"host": "?", "pid": "?", "started": "?", "unreadable": True}
    return holder if isinstance(holder, dict) else {"host": "?", "pid": "?", "started": "?"}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # not ours to judge: keep refusing
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _take_over(lock: Path, stale_holder: dict[str, Any]) -> None:
    # Renaming is atomic: of two runs taking over the same stale lock, one renames it and the
    # other finds it gone; both then race for a fresh one through publish_json, which one wins.
    aside = lock.with_name(f"{lock.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    if _read(aside) != stale_holder:
        # Between our look and our rename another run took the stale lock over: that was its
        # fresh lock. Put it back (unless a third run got in first) and let the loop look again.
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
    aside.unlink(missing_ok=True)
