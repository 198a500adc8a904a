"""The README's Python examples run as written (the library part; the store and torch blocks
need files and are exercised by their own tests)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    first = blocks[0]
    assert "wm.weight_map" in first
    exec(compile(first, str(README), "exec"), {})


def test_readme_first_screen_has_the_two_commands() -> None:
    head = README.read_text(encoding="utf-8").split("## ", 1)[0]
    commands = re.findall(r"^bash (scripts/\S+)", head, flags=re.M)
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    root = README.parent
    assert all((root / c).is_file() for c in commands)
    assert "scripts/test.sh" in (root / ".ci" / "run").read_text()


def test_readme_unet_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    [unet] = [b for b in blocks if "wm.unet_weights" in b]
    exec(compile(unet, str(README), "exec"), {})
    assert (README.parent / "docs" / "unet-preview.png").is_file()
