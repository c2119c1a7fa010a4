"""The tests' own layout: shared helpers live in helper modules, never in test modules.

Helpers are in conftest.py (fixtures, the clock, reading an exposition), processes.py (real
processes and tools), repo_files.py (the shipped rules, dashboards, docs and charts),
records.py (rows and states built in memory) and tls_helpers.py. A test module that imports
another runs the other's module-level code and makes its helpers hard to find; this fails
the run if one does, wherever the import is written.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def is_test_module(module: str) -> bool:
    return module.rpartition(".")[2].startswith("test_")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in the tree, function-level ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
            # `from tests import test_x` and `from . import test_x` name the module here.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def imports_of_test_modules(source: str) -> list[str]:
    return [
        f"line {line}: {module}"
        for line, module in imported_modules(ast.parse(source))
        if is_test_module(module)
    ]


def test_no_module_under_tests_imports_a_test_module() -> None:
    offenders = {
        path.name: found
        for path in sorted(TESTS.glob("*.py"))
        if (found := imports_of_test_modules(path.read_text()))
    }
    assert offenders == {}, "move shared helpers into a helper module (see this module's doc)"


def test_the_check_sees_every_way_of_importing_a_test_module() -> None:
    source = """
from tests.test_state import record
import tests.test_rules
from tests import test_dashboards
from . import test_deploy
from .test_process import ENV

def later():
    from tests.test_history import make
"""
    assert len(imports_of_test_modules(source)) == 6
    helpers = "from tests.conftest import sample\nfrom tests.processes import ENV\nimport pytest\n"
    assert imports_of_test_modules(helpers) == []


SKIPS = ("skip", "skipif", "importorskip")


def skips_in(source: str, allowed_in: str | None = None) -> list[str]:
    """`pytest.skip(...)`, `pytest.importorskip(...)`, `@pytest.mark.skip(if)`: each a way to
    pass a test that did not run; those inside the function `allowed_in` are left out."""
    tree = ast.parse(source)
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == allowed_in:
            allowed = set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in SKIPS and node.lineno not in allowed
    ]


def test_every_skip_goes_through_the_one_path_that_ci_turns_into_a_failure() -> None:
    """processes.unavailable skips, or fails under NEO_EXPORTER_REQUIRE_TOOLS as CI runs."""
    offenders = {
        str(path.relative_to(TESTS)): found
        for path in sorted(TESTS.rglob("*.py"))
        if (
            found := skips_in(
                path.read_text(), "unavailable" if path.name == "processes.py" else None
            )
        )
    }
    assert offenders == {}, "call tests.processes.unavailable instead"
    (only,) = skips_in((TESTS / "processes.py").read_text())
    assert only.endswith(": pytest.skip")


def test_the_skip_check_sees_every_way_of_skipping() -> None:
    source = """
import pytest
from tests.processes import unavailable

@pytest.mark.skipif(True, reason="x")
def test_a():
    pytest.skip("y")

yaml = pytest.importorskip("yaml")

@pytest.mark.skip
def test_b():
    unavailable("z")
"""
    assert len(skips_in(source)) == 4
