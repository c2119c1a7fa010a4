"""Shared test helpers: an injectable clock, scraping a registry, and ground-truth checks."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import Exporter, build
from exporter.config import Config

SampleKey = tuple[str, frozenset[tuple[str, str]]]

# Truth field -> (metric, label names) for counters keyed like the fake's Truth dicts.
STREAM_TRUTH = {
    "streams": "neo_streams_total",
    "credits": "neo_credits_total",
    "llm_cost": "neo_llm_cost_usd_total",
    "neo_cost": "neo_platform_cost_usd_total",
    "steps": "neo_steps_total",
    "tool_calls": "neo_tool_calls_total",
    "agent_triggers": "neo_agent_triggers_total",
    "llm_time_seconds": "neo_llm_time_seconds_total",
    "tool_time_seconds": "neo_tool_time_seconds_total",
    "execution_time_seconds": "neo_execution_time_seconds_total",
    "step_latency_seconds": "neo_step_latency_seconds_total",
    "step_latency_steps": "neo_step_latency_steps_total",
}
BY_LABEL_TRUTH = {
    "agent_triggers_by_agent": ("neo_agent_triggers_by_agent_total", "agent"),
    "tool_calls_by_tool": ("neo_tool_calls_by_tool_total", "tool"),
    "tool_time_by_tool_seconds": ("neo_tool_time_by_tool_seconds_total", "tool"),
}
HISTOGRAM_TRUTH = {
    "tool_call_history": ("neo_tool_call_duration_seconds", "tool"),
    "stream_duration": ("neo_stream_duration_seconds", "model"),
    "step_latency": ("neo_stream_step_latency_seconds", "model"),
}


@dataclass
class ManualClock:
    """Wall-clock time that moves only when a test says so."""

    now: float
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def parse_exposition(text: str) -> dict[SampleKey, float]:
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(registry: CollectorRegistry) -> dict[SampleKey, float]:
    return parse_exposition(generate_latest(registry).decode())


def sample(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def select(
    samples: Mapping[SampleKey, float], name: str, **labels: str
) -> dict[frozenset[tuple[str, str]], float]:
    wanted = set(labels.items())
    return {k[1]: v for k, v in samples.items() if k[0] == name and wanted <= k[1]}


def counters_of(samples: dict[SampleKey, float]) -> dict[SampleKey, float]:
    """The durable Neo counters; the exporter's own process metrics restart from zero."""
    return {
        k: v
        for k, v in samples.items()
        if k[0].endswith(("_total", "_count", "_sum")) and not k[0].startswith("neo_exporter_")
    }


def truth_mismatches(samples: Mapping[SampleKey, float], truth: Any, account: str) -> list[str]:
    """Every exported business value compared with the fake's ground truth; [] if equal."""
    problems: list[str] = []

    def compare(what: str, got: float, want: float) -> None:
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"{what}: exported {got!r}, truth {want!r}")

    for field_name, metric in STREAM_TRUTH.items():
        expected: dict[tuple[str, ...], float] = getattr(truth, field_name)
        got = {
            (dict(k)["model"], dict(k)["status"], dict(k)["byok"]): v
            for k, v in select(samples, metric, account=account).items()
        }
        for key in set(expected) | set(got):
            compare(f"{metric}{key}", got.get(key, 0.0), expected.get(key, 0.0))
    for field_name, (metric, label) in BY_LABEL_TRUTH.items():
        expected_by = getattr(truth, field_name)
        got_by = {dict(k)[label]: v for k, v in select(samples, metric, account=account).items()}
        for key in set(expected_by) | set(got_by):
            compare(f"{metric}{{{key}}}", got_by.get(key, 0.0), expected_by.get(key, 0.0))
    for field_name, (metric, label) in HISTOGRAM_TRUTH.items():
        expected_h = getattr(truth, field_name)
        counts = {
            dict(k)[label]: v
            for k, v in select(samples, f"{metric}_count", account=account).items()
        }
        sums = {
            dict(k)[label]: v for k, v in select(samples, f"{metric}_sum", account=account).items()
        }
        for key in set(expected_h) | set(counts):
            want_count, want_sum = expected_h.get(key, (0, 0.0))
            compare(f"{metric}_count{{{key}}}", counts.get(key, 0.0), float(want_count))
            compare(f"{metric}_sum{{{key}}}", sums.get(key, 0.0), want_sum)
    return problems


# The default state.path, relative to the working directory: the repository root in tests.
STRAY_STATE = Path(__file__).resolve().parent.parent / "neo-exporter.db"


@pytest.fixture(autouse=True)
def no_state_file_left_in_the_repository() -> Iterator[None]:
    """Every test keeps its state in a temporary directory or in memory, never the root."""
    existed = STRAY_STATE.exists()
    yield
    if not existed and STRAY_STATE.exists():
        for leftover in STRAY_STATE.parent.glob(STRAY_STATE.name + "*"):
            leftover.unlink()
        pytest.fail(f"the test left {STRAY_STATE.name} in the repository root")


@pytest.fixture
def stop_event() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


# Figures measured by the reliability tests (docs/reliability.md quotes them), printed at the
# end of the run: `pytest -q` shows them under "reliability figures".
FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def make_exporter(clock: ManualClock, stop_event: threading.Event) -> Iterator[Any]:
    """Builds exporters on the test module's `clock` fixture; closes them afterwards."""
    made: list[Exporter] = []

    def make(config: Config) -> Exporter:
        exporter = build(config, stop_event, clock)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.close()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record one line of figures for the end-of-run summary."""
    lines = request.config.stash.setdefault(FIGURES, [])
    return lines.append


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
