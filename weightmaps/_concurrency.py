"""Small concurrency helpers shared by the scan (threads) and the shard runners (processes)."""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def default_threads(workers: int | None) -> int:
    """Decode threads: twice the workers (or cores), at least 2, at most 16."""
    return max(2, min(16, 2 * (workers or os.cpu_count() or 1)))


def bounded_map(
    pool: cf.Executor, fn: Callable[..., Any], items: Iterable[Any], window: int
) -> Iterator[tuple[Any, cf.Future[Any]]]:
    """(item, finished future) pairs, in completion order, with at most ``window`` submitted."""
    pending: dict[cf.Future[Any], Any] = {}
    iterator = iter(items)
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            try:
                item = next(iterator)
            except StopIteration:
                exhausted = True
                break
            pending[pool.submit(fn, item)] = item
        if not pending:
            return
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in done:
            yield pending.pop(future), future
