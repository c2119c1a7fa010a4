"""The package's shape: imports follow the data flow, and the wheel holds no test double."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"
DOC = PACKAGE.parent / "docs" / "architecture.md"

# Each module may import only modules of a lower layer (docs/architecture.md).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("api", "periods"),
    ("catalogue", "config"),
    ("models", "webconfig"),
    ("client", "counting"),
    ("state", "snapshot", "openmetrics_file"),
    ("instrumentation", "collector", "status_page", "read_failure", "audit"),
    ("server",),
    ("poller", "account_info"),
    ("history", "demo", "report"),
    ("app", "signals"),
    ("cli",),
    ("__main__",),
)
LAYER = {module: depth for depth, modules in enumerate(LAYERS) for module in modules}


def _imports(path: Path) -> set[str]:
    """The package's modules that a module imports, by `from ... import` or plain `import`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("exporter.")
            )
        elif isinstance(node, ast.ImportFrom) and node.module:
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


def test_plain_imports_are_read_as_well_as_from_imports(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        "import exporter.state\nimport exporter.client as c\nimport os\n"
        "from exporter import catalogue\nfrom exporter.models import parse_stream\n"
    )
    assert _imports(module) == {"state", "client", "catalogue", "models"}


def test_the_architecture_doc_lists_the_same_layers_and_modules() -> None:
    text = DOC.read_text()
    layers = text[text.index("Imports only go down") : text.index("## Each module's one job")]
    listed = tuple(
        tuple(re.findall(r"`([a-z_]+)`", line))
        for line in re.findall(r"^\d+\. (.+)$", layers, re.MULTILINE)
    )
    assert listed == LAYERS
    tabled = set(re.findall(r"^\| `([a-z_]+)\.py` \|", text, re.MULTILINE))
    assert tabled == set(LAYER) - {"__main__"}, "docs/architecture.md: each module's one job"
