"""Writing a small JSON file so that no reader ever sees half of it (markers, root metadata, locks)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def publish_json(path: Path, value: Any, *, exclusive: bool = False) -> bool:
    """Write ``value`` aside in ``path``'s folder, flush it to disk, then put it in place at once.

    A reader sees no file or a whole one. ``exclusive``: only if ``path`` does not exist yet (a hard
    link, which fails if it does), and return False when it did; otherwise replace it (a rename).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(aside, "w", encoding="utf-8") as f:
            json.dump(value, f)
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
