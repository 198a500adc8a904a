"""How busy the GPU was during a run: nvidia-smi's ``utilization.gpu`` sampled while it goes.

``utilization.gpu`` is the share of the last sample period (1/6 s to 1 s, by card) in which a
kernel ran. Sampled every 100 ms and integrated over the run, it gives the seconds the device
computed; divided by the pipeline's own compute-stage seconds, the GPU's busy share of that
stage (the device does nothing else in a run: the scan and the finalize are CPU work).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from types import TracebackType

_PERIOD_MS = 100


class GpuBusy:
    """A context manager sampling GPU 0's utilization; ``busy_seconds`` once left (None without nvidia-smi)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (perf_counter, utilization 0..1)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GpuBusy:
        if shutil.which("nvidia-smi") is None:
            return self
        self._proc = subprocess.Popen(
            ["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
             f"-lms={_PERIOD_MS}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.strip()) / 100.0))
            except ValueError:  # "[N/A]" on cards that do not report it
                continue

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._reader is not None:
            self._reader.join(timeout=5)

    @property
    def busy_seconds(self) -> float | None:
        """Seconds in which a kernel ran, over the samples taken (None if none were)."""
        if not self.samples:
            return None
        # Each sample covers the time since the one before (nvidia-smi may fall behind its period).
        times = [self.samples[0][0] - _PERIOD_MS / 1000.0] + [t for t, _ in self.samples]
        return sum(share * (times[i + 1] - times[i]) for i, (_, share) in enumerate(self.samples))
