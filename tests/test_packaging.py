"""The built wheel carries the CUDA sources, and the package finds them once installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The slow tier (tests/conftest.py): wheel builds.
pytestmark = pytest.mark.slow


def test_wheel_contains_the_kernel_sources(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = tmp_path.glob("weightmaps-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for source in (ROOT / "kernels").glob("*.cuh"):
        assert f"weightmaps/kernels/{source.name}" in names
    assert "weightmaps/py.typed" in names

    # Installed on its own (no checkout beside it), the loader reads the packaged copy.
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    code = (
        "from weightmaps.kernel_sources import kernel_dir, kernel_source; "
        "print(kernel_dir()); assert 'wm_weight' in kernel_source('weightmap.cuh')"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert str(target / "weightmaps" / "kernels") in out.stdout
