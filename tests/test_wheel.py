"""What the wheel ships: the exporter and the demo's small fake, never the tests' fake API."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parent.parent
# What only the tests' fake (tests/fakeneo) has: its control plane, fault kinds and truth.
TEST_DOUBLE = re.compile(
    r"/_fake/|FAULT_KINDS|\bclass Truth\b|\binject\(|^(from|import) tests\b", re.M
)


def wheel_modules() -> dict[str, str]:
    """The wheel's Python files (path: text), found as setuptools finds the packages."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = find_namespace_packages(str(ROOT), include=find["find"]["include"])
    files = {}
    for package in packages:
        folder = ROOT.joinpath(*package.split("."))
        for path in sorted(folder.glob("*.py")):
            files[path.relative_to(ROOT).as_posix()] = path.read_text()
    return files


def test_the_wheel_holds_the_demo_but_not_the_fault_injecting_fake() -> None:
    files = wheel_modules()
    assert "exporter/demo.py" in files and "exporter/cli.py" in files
    assert not [path for path in files if path.startswith("tests/")]
    carrying = {path: TEST_DOUBLE.findall(text) for path, text in files.items()}
    assert {path: found for path, found in carrying.items() if found} == {}


def test_only_the_demo_flag_imports_the_demo_and_only_when_it_runs() -> None:
    imports = r"(from exporter\.demo|from exporter import demo|import exporter\.demo)"
    modules = wheel_modules()
    importers = [path for path, text in modules.items() if re.search(rf"^\s*{imports}", text, re.M)]
    assert importers == ["exporter/app.py"]  # demo_config, which --demo calls
    at_top = [path for path, text in modules.items() if re.search(rf"^{imports}", text, re.M)]
    assert at_top == []  # imported inside demo_config: a normal start never loads it
