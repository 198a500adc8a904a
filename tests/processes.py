"""Child processes the tests start: every one in its own process group, none outliving its test.

A test that starts ``weightmaps compute`` (with its forkserver and workers) and then fails or times
out (pytest-timeout) would otherwise leave the whole group running on the CI machine, writing into a
temporary folder, holding cores: :func:`process_group` kills what is left of it on the way out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any


@contextlib.contextmanager
def process_group(args: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """``Popen(args)`` as the leader of a new session; on leaving, SIGKILL to the group if it runs."""
    proc = subprocess.Popen(list(args), start_new_session=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)  # reaps it and closes its pipes
