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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from weightmaps._files import publish_json
from weightmaps.errors import StoreLockedError

__all__ = ["lock_path", "store_lock"]


def lock_path(store: str | os.PathLike[str]) -> Path:
    """Where the lock of ``store`` lives: a hidden file beside it."""
    path = Path(store)
    return path.parent / f".{path.name}.weightmaps-lock"


@contextlib.contextmanager
def store_lock(store: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the store's lock for the ``with`` block; refuses with :class:`StoreLockedError`.

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
    lock = lock_path(store)
    lock.parent.mkdir(parents=True, exist_ok=True)
    _acquire(lock, str(store))
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _acquire(lock: Path, store: str) -> None:
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "store": store,
    }
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
