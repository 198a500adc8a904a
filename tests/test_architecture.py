"""The layering ARCHITECTURE.md draws, enforced: every import of the package, read from its source.

A module imports only from rows below its own; inside a subpackage its modules form a DAG. Every
import counts — at module level, inside a function (a lazy import is still a dependency) and under
``TYPE_CHECKING`` (an annotation that needs a higher module means the code is in the wrong place).
The facade ``weightmaps/__init__.py`` re-exports from below; nothing in the package imports it but
the CLI. A new module needs a row here and a place in ARCHITECTURE.md's picture.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "weightmaps"
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"

# Bottom up. The names are weightmaps' top-level modules and subpackages; "weightmaps" is the facade.
LAYERS: list[set[str]] = [
    {"errors", "version"},
    {"arrays", "precision", "cuda_plan", "shard_codec", "atomic_files", "concurrency", "kernel_sources", "sample_data"},
    {"validation", "layout", "location", "spool", "worker_pool"},
    {"params", "backend", "remote_files", "lock"},
    {"transforms", "readers"},
    {"engine", "sources", "store"},
    {"unet", "sdf", "classweights"},
    {"maps", "stats"},
    {"shards"},
    {"pipeline"},
    {"weightmaps", "torch", "distributed", "monai"},
    {"cli"},
    {"__main__"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every weightmaps module ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                # `from weightmaps import engine` imports the module; `from x import name`, x.
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _unit(module: str) -> str:
    """The row entry a module belongs to: its top-level module or subpackage under weightmaps."""
    parts = module.split(".")
    return "weightmaps" if len(parts) == 1 else parts[1]


def _row(unit: str) -> int:
    rows = [i for i, layer in enumerate(LAYERS) if unit in layer]
    assert len(rows) == 1, f"weightmaps.{unit} needs exactly one row in LAYERS (tests/test_architecture.py)"
    return rows[0]


def test_every_module_has_a_row() -> None:
    units = {_unit(m) for m in _modules()}
    listed = set().union(*LAYERS)
    assert units - listed == set(), "modules without a row in LAYERS"
    assert listed - units == set(), "rows naming modules that are gone"


def test_imports_only_go_down() -> None:
    upward = []
    for module, imported in sorted(_graph().items()):
        for target in sorted(imported):
            a, b = _unit(module), _unit(target)
            if a != b and _row(b) >= _row(a):
                upward.append(f"{module} -> {target} (row {_row(a)} -> row {_row(b)})")
    assert upward == [], "imports that go up or sideways:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_errors_import_nothing_of_the_package() -> None:
    assert _graph()["weightmaps.errors"] == set()


def test_the_picture_names_every_module() -> None:
    text = ARCHITECTURE.read_text()
    picture = text.split("```", 2)[1]  # the first code block is the picture
    words = set(re.findall(r"[a-z_][a-z0-9_]*", picture))
    missing = sorted(u for u in set().union(*LAYERS) - {"weightmaps", "__main__"} if u not in words)
    assert missing == [], f"ARCHITECTURE.md's picture does not name {missing}"


def test_every_module_is_at_most_600_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 600}
    assert long == {}, f"modules over 600 lines: {long}"
