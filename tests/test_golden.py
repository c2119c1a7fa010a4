"""The whole exposition of a fixed snapshot against files committed in the repository.

tests/golden/ holds the snapshot (every family the collector emits, Unicode and escaped
label values, histograms, `_created` samples) and its exposition in the Prometheus text
format and in OpenMetrics. A change to what /metrics shows fails here with a diff; when the
change is intended, regenerate the files with `python -m tests.golden` and commit them with
it. The sample lines in exporter/collector.py's docstrings are lines of this output.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric as Family
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exporter import catalogue, collector
from exporter.snapshot import Snapshot
from tests import golden
from tests.processes import assert_promtool_lint_clean, require_tool


def assert_same(rendered: str, committed: Path) -> None:
    expected = committed.read_text(encoding="utf-8")
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                f"{committed.name} (committed)",
                f"{committed.name} (rendered now)",
            )
        )
        raise AssertionError(
            f"the exposition differs from {committed.name}; if the change is intended, "
            f"run `{golden.REGENERATE}` and commit the files:\n{diff}"
        )


def test_the_text_exposition_of_the_fixed_snapshot_is_the_committed_file() -> None:
    text, _ = golden.render()
    assert_same(text, golden.TEXT_FILE)


def test_the_openmetrics_exposition_of_the_fixed_snapshot_is_the_committed_file() -> None:
    _, openmetrics = golden.render()
    assert_same(openmetrics, golden.OPENMETRICS_FILE)


def test_the_golden_files_hold_every_family_with_unicode_histograms_and_created() -> None:
    text = golden.TEXT_FILE.read_text(encoding="utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    om_families = {f.name: f for f in parse_om(golden.OPENMETRICS_FILE.read_text("utf-8"))}
    for metric in catalogue.COLLECTED:
        name = metric.name.removesuffix("_total")
        assert families[name].samples, f"{metric.name} has no sample in {golden.TEXT_FILE.name}"
        assert om_families[name].samples, metric.name
        assert families[name].type == om_families[name].type == metric.type, metric.name
    # OpenMetrics carries `_created` inside the family, for histograms too.
    for metric in catalogue.HISTOGRAMS + catalogue.STREAM_COUNTERS:
        samples = om_families[metric.name.removesuffix("_total")].samples
        created = {s.labels["account"] for s in samples if s.name.endswith("_created")}
        assert created == {"acme", golden.UNICODE_ACCOUNT}, metric.name
    # The odd label values round-trip through both parsers, escapes and all.
    for parsed in (families, om_families):
        models = {s.labels.get("model") for s in parsed["neo_credits"].samples}
        titles = {s.labels.get("task_title") for s in parsed["neo_top_task_credits"].samples}
        assert golden.ODD_MODEL in models
        assert golden.ODD_TITLE in titles


def test_the_golden_text_passes_promtool_check_metrics() -> None:
    assert_promtool_lint_clean(
        require_tool("promtool"), golden.TEXT_FILE.read_text(encoding="utf-8")
    )


# --- the collector's docstrings -------------------------------------------------------------

SAMPLE_LINE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+$")


def family_functions() -> list[tuple[str, object]]:
    """The collector's functions that turn a snapshot into families."""
    return [
        (name, function)
        for name, function in inspect.getmembers(collector, inspect.isfunction)
        if function.__module__ == collector.__name__
        and list(inspect.signature(function).parameters) == ["snapshot"]
        and inspect.signature(function).parameters["snapshot"].annotation in (Snapshot, "Snapshot")
    ]


def docstring_samples(function: object) -> list[str]:
    doc = inspect.getdoc(function) or ""
    return [line.strip() for line in doc.splitlines() if SAMPLE_LINE.match(line.strip())]


class _Families(Collector):
    def __init__(self, families: Iterable[Family]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Family]:
        yield from self._families


def own_lines(function: object) -> set[str]:
    """The lines of the golden snapshot's exposition that `function` alone renders."""
    registry = CollectorRegistry()
    registry.register(_Families(function(golden.SNAPSHOT)))  # type: ignore[operator]
    return set(golden.machine_independent(generate_latest(registry).decode()).splitlines())


def test_the_check_reads_every_collector_function_and_its_samples() -> None:
    names = [name for name, _ in family_functions()]
    assert {"stream_counters", "histograms", "health", "audit"} <= set(names)
    for name, function in family_functions():
        assert docstring_samples(function), f"{name}'s docstring shows no sample exposition"


def test_each_sample_line_in_the_collectors_docstrings_is_a_line_of_the_golden_output() -> None:
    """Verbatim: names, label order, escaping and the format of each value as rendered.

    Each line must come from the function whose docstring shows it, and be in the committed
    file; the running Python's version is PYTHON_VERSION in both.
    """
    golden_lines = set(golden.TEXT_FILE.read_text(encoding="utf-8").splitlines())
    wrong = []
    for name, function in family_functions():
        own = own_lines(function)
        assert own <= golden_lines, f"{name} renders lines that are not in the golden file"
        for line in docstring_samples(function):
            normalised = re.sub(r'python_version="[^"]*"', 'python_version="PYTHON_VERSION"', line)
            if normalised not in own:
                wrong.append(f"{name}: {line}")
    assert not wrong, "docstring samples that the collector does not render:\n" + "\n".join(wrong)
