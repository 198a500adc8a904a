"""Writing a whole file so that no reader ever sees half of it (shards, markers, root metadata, locks)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def publish_bytes(path: Path, data: bytes | memoryview, *, exclusive: bool = False) -> bool:
    """Write ``data`` aside in ``path``'s folder, flush it to disk, then put it in place at once.

    A reader sees no file or a whole one, and a file in place survives a power loss. ``exclusive``:
    only if ``path`` does not exist yet (a hard link, which fails if it does), and return False
    when it did; otherwise replace it (a rename).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(aside, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(aside, path)
            return True
        try:
            os.link(aside, path)
        except FileExistsError:
            return False
        return True
    finally:
        aside.unlink(missing_ok=True)


def publish_json(path: Path, value: Any, *, exclusive: bool = False) -> bool:
    """:func:`publish_bytes` of ``value`` as JSON."""
    return publish_bytes(path, json.dumps(value).encode("utf-8"), exclusive=exclusive)
