"""What the numbers were measured on: CPU, memory, GPU, versions, and the tag that names the files."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NO_GPU = "not measured (no GPU)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
        if out:
            return out.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no CuPy, no driver, no device
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores (all and usable), memory, GPU name and whether weightmaps' CUDA backend works."""
    from weightmaps.backend import cuda_unavailable_reason

    cuda_reason = cuda_unavailable_reason()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_gib": _memory_gib(),
        "gpu": _gpu_name() or "none",
        "cuda_backend": "available" if cuda_reason is None else cuda_reason,
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def gpu_unmeasured_reason(machine: dict[str, Any]) -> str | None:
    """Why GPU variants are not measured on ``machine`` (a :func:`machine_info`), or None: they are."""
    if machine["cuda_backend"] == "available":
        return None
    if machine["gpu"] == "none":
        return NO_GPU
    return f"not measured (CUDA backend unavailable: {machine['cuda_backend']})"


def versions() -> dict[str, str]:
    """Python, the libraries that do the work, weightmaps, CuPy / cuCIM when present, the git commit."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "edt", "zarr", "pillow", "tifffile", "weightmaps"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    for module in ("cupy", "cucim"):  # their distributions are named per CUDA version
        try:
            found[module] = __import__(module).__version__
        except Exception:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit:
            found["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def card_tag(gpu: str) -> str:
    """``cpu`` without a GPU, else a short name of the card: ``h100``, ``h200``, ``a100``, ..."""
    if gpu == "none":
        return "cpu"
    model = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", gpu)
    return (model.group(1) if model else re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")).lower()
