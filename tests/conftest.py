"""Shared test helpers: an injectable clock, scraping a registry, and ground-truth checks."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter, build
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
    """The registry's samples as a scrape holds them. Read from the collectors: the text
    round trip is left to the tests of the exposition (tests/test_golden.py, promtool's
    lint, the fuzz tests), as parsing it took most of many tests' time."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


class MissingSeries(AssertionError):
    """A series a test reads is not in the exposition (which is not the same as 0)."""


def _series(name: str, labels: Iterable[tuple[str, str]]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}"


def _series_of(samples: Mapping[SampleKey, float], name: str) -> str:
    present = sorted(_series(name, key[1]) for key in samples if key[0] == name)
    if not present:
        return f"no {name} series at all"
    return f"{len(present)} {name} series: " + ", ".join(present)


def sample(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float:
    """The value of the one series with exactly these labels; if it is not there the test
    fails (MissingSeries, naming the series that are), rather than reading 0."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise MissingSeries(
            f"no series {_series(name, labels.items())}; {_series_of(samples, name)}"
        )
    return samples[key]


def assert_absent(samples: Mapping[SampleKey, float], name: str, **labels: str) -> None:
    """No series of `name` carries these labels (a gauge the exporter leaves out when it
    does not know the value, as opposed to one it exports as 0)."""
    found = select(samples, name, **labels)
    assert not found, (
        f"{_series(name, labels.items())} should be absent; {_series_of(samples, name)}"
    )


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
        if k[0].endswith(("_total", "_count", "_sum"))
        and not k[0].startswith(("neo_exporter_", "process_", "python_"))
    }


def truth_mismatches(samples: Mapping[SampleKey, float], truth: Any, account: str) -> list[str]:
    """Every exported business value compared with the fake's ground truth; [] if equal.

    A series the truth has and the exposition lacks is a mismatch (not a 0); a series the
    exposition has beyond the truth (a label set started at 0 for `increase()`) must be 0.
    """
    problems: list[str] = []

    def compare(what: str, got: Mapping[Any, float], want: Mapping[Any, float]) -> None:
        for key in sorted(set(want) | set(got), key=repr):
            if key not in got:
                problems.append(f"{what}{key}: missing from the exposition, truth {want[key]!r}")
                continue
            value, expected = got[key], want.get(key, 0.0)
            if not math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-9):
                problems.append(f"{what}{key}: exported {value!r}, truth {expected!r}")

    for field_name, metric in STREAM_TRUTH.items():
        got = {
            (dict(k)["model"], dict(k)["status"], dict(k)["byok"]): v
            for k, v in select(samples, metric, account=account).items()
        }
        compare(metric, got, getattr(truth, field_name))
    for field_name, (metric, label) in BY_LABEL_TRUTH.items():
        got_by = {dict(k)[label]: v for k, v in select(samples, metric, account=account).items()}
        compare(metric, got_by, getattr(truth, field_name))
    for field_name, (metric, label) in HISTOGRAM_TRUTH.items():
        expected_h = getattr(truth, field_name)
        for suffix, part in (("_count", 0), ("_sum", 1)):
            got_h = {
                dict(k)[label]: v
                for k, v in select(samples, metric + suffix, account=account).items()
            }
            want_h = {key: float(pair[part]) for key, pair in expected_h.items()}
            compare(metric + suffix, got_h, want_h)
    return problems


def assert_never_down(before: Mapping[SampleKey, float], after: Mapping[SampleKey, float]) -> None:
    """Every series of `before` (counters, filtered by the caller) is still in `after` at a
    value no lower: a counter that went missing is a failure, not a 0."""
    for key, value in before.items():
        series = _series(key[0], key[1])
        assert key in after, f"{series} was exported ({value}) and is now missing"
        assert after[key] >= value - 1e-9, f"{series} went down from {value} to {after[key]}"


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


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core, and one more for the fast loop (`-m "not e2e"`),
    whose tests spend much of their time waiting on promtool and loopback sockets (on 2
    cores: 53 s against 59 s). The e2e tests time real processes: one per core for them."""
    cores = os.cpu_count() or 1
    return cores + 1 if config.getoption("markexpr") == "not e2e" else cores


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its figures to the main process, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["figures"] = session.config.stash.get(FIGURES, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the main process: a worker's figures (see pytest_sessionfinish)."""
    figures = getattr(node, "workeroutput", {}).get("figures", [])
    node.config.stash.setdefault(FIGURES, []).extend(figures)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
