"""The package's shape: imports follow the data flow, and the wheel holds no test double."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"

# Each module may import only modules of a lower layer (docs/architecture.md).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("periods",),
    ("catalogue", "config"),
    ("models", "webconfig"),
    ("client", "counting"),
    ("state", "snapshot"),
    ("instrumentation", "collector", "server"),
    ("poller", "account_info"),
    ("history", "demo", "report"),
    ("app", "signals"),
    ("cli",),
    ("__main__",),
)
LAYER = {module: depth for depth, modules in enumerate(LAYERS) for module in modules}


def _imports(path: Path) -> set[str]:
    """The package's modules that a module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "exporter":
                found.update(alias.name for alias in node.names if alias.name in LAYER)
            elif node.module.startswith("exporter."):
                found.add(node.module.split(".")[1])
    return found


def test_every_module_has_a_layer() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules - set(LAYER) == set(), "a new module: give it a layer here and in the docs"


def test_imports_only_go_down_the_data_flow() -> None:
    upward = [
        f"{path.stem} imports {imported}"
        for path in sorted(PACKAGE.glob("*.py"))
        if path.stem in LAYER
        for imported in sorted(_imports(path))
        if LAYER[imported] >= LAYER[path.stem]
    ]
    assert upward == []
