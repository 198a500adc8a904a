"""The variants (a)–(e) and running one, end to end, as the subprocess a user would start.

Each run is a fresh interpreter (the ``weightmaps`` CLI, or ``python benchmarks/plain_*.py``), so
its time includes the start-up and the imports, as a user sees them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

BENCHMARKS = Path(__file__).resolve().parents[1]  # where the plain scripts are
SIGMA = 3.0

T = TypeVar("T")


@dataclass(frozen=True)
class Size:
    """One generated dataset (``weightmaps.sample_data``): ``n`` masks of ``shape``, as ``fmt`` files."""

    key: str
    n: int
    shape: tuple[int, ...]
    num_classes: int
    fmt: str  # mask file format
    spacing: tuple[float, ...] | None = None
    seed: int = 0
    objects: tuple[int, int] = (3, 8)  # common objects per mask (sample_data.make_masks)

    @property
    def label(self) -> str:
        """How tables name it, e.g. ``512 × 256² (4 classes, png)``."""
        side = self.shape[-1]
        power = "³" if len(self.shape) == 3 and len(set(self.shape)) == 1 else "²"
        dims = f"{side}{power}" if len(set(self.shape)) == 1 else "×".join(map(str, self.shape))
        kind = "binary" if self.num_classes == 2 else f"{self.num_classes} classes"
        if self.objects != (3, 8):
            kind += f", {self.objects[0]}-{self.objects[1] - 1} objects"
        extra = f", spacing {self.spacing}" if self.spacing else ""
        return f"{self.n} × {dims} ({kind}, {self.fmt}{extra})"


@dataclass(frozen=True)
class Variant:
    """One way to turn the masks into maps: a plain script in ``benchmarks/``, or the weightmaps CLI."""

    key: str
    name: str
    gpu: bool
    script: str | None = None  # a plain script in benchmarks/, else the weightmaps CLI
    device: str | None = None  # the CLI's --device
    extra: tuple[str, ...] = ()  # further CLI arguments


VARIANTS = (
    Variant("a", "plain scipy script", gpu=False, script="plain_scipy.py"),
    Variant("b", "weightmaps --device scipy", gpu=False, device="scipy"),
    Variant("c", "weightmaps --device cpu", gpu=False, device="cpu"),
    Variant("d", "weightmaps --device cuda", gpu=True, device="cuda"),
    Variant("e", "plain cuCIM/CuPy loop", gpu=True, script="plain_cucim.py"),
)


def weightmaps_command() -> tuple[list[str], str]:
    """How to call the CLI: the installed ``weightmaps`` script beside this Python, else ``-c``."""
    script = shutil.which("weightmaps", path=str(Path(sys.executable).parent))
    if script:
        return [script], script
    return [sys.executable, "-c", "import sys; from weightmaps.cli import main; sys.exit(main())"], (
        f"{sys.executable} -c 'from weightmaps.cli import main; main()'"
    )


def variant_command(variant: Variant, masks: Path, out: Path, size: Size, sigma: float) -> list[str]:
    """The command line of one run of ``variant``: ``masks`` in, maps into ``out``."""
    spacing = ["--spacing", ",".join(f"{s:g}" for s in size.spacing)] if size.spacing else []
    if variant.script:
        return [sys.executable, str(BENCHMARKS / variant.script), str(masks), str(out), "--sigma", f"{sigma:g}",
                *spacing]
    cli, _ = weightmaps_command()
    return [*cli, "-q", "compute", str(masks), "--out", str(out), "--sigma", f"{sigma:g}",
            "--device", str(variant.device), "--no-progress", "--json", *spacing, *variant.extra]


def run_variant(variant: Variant, masks: Path, out: Path, size: Size, sigma: float,
                timeout: float | None = None) -> tuple[float, dict[str, Any]]:
    """Wall-clock seconds of one end-to-end run, and what the program reported on stdout."""
    cmd = variant_command(variant, masks, out, size, sigma)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"({variant.key}) {variant.name} failed with exit status {proc.returncode}:\n"
            f"  {' '.join(cmd)}\n{proc.stderr[-3000:]}"
        )
    lines = proc.stdout.strip()
    try:  # the plain scripts print one JSON line last; the CLI prints a JSON document
        reported = json.loads(lines) if variant.device else json.loads(lines.splitlines()[-1])
    except (ValueError, IndexError):
        reported = {"stdout": lines[-2000:]}
    return seconds, reported


def rotated(items: Sequence[T], k: int) -> list[T]:
    """``items`` started at ``k`` (mod its length): the order of repeat ``k`` of interleaved runs.

    Rotating the order every repeat (a b c, b c a, c a b) makes a drift of a shared machine hit
    every variant alike.
    """
    k %= len(items)
    return [*items[k:], *items[:k]]
