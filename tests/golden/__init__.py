"""The golden exposition: a fixed snapshot with every family the collector emits, rendered.

`tests/test_golden.py` renders `SNAPSHOT` through the real collector and registry, in the
Prometheus text format and in OpenMetrics, and compares the result byte for byte with the
files committed beside this module; the sample lines in exporter/collector.py's docstrings
are checked against the same output. After an intended change to the exposition (a new
metric, a new HELP text), regenerate the files and review their diff:

    python -m tests.golden

The snapshot has two accounts, one with a name, models, a task title and an email in other
scripts and with quotes, a backslash and a newline to escape; histograms; and `_created`
samples. The running Python's version (a label of `neo_exporter_build_info`) is written as
PYTHON_VERSION, so that the files do not depend on the machine.

Helpers only, no tests.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter import catalogue as m
from exporter.collector import NeoCollector
from exporter.counting import (
    CounterValue,
    Counts,
    Culprit,
    HistogramValue,
    RecentSpend,
    TaskWindow,
    TopTask,
)
from exporter.models import CreditBalance, MemberSpend, SpendingCap, UsageSummary
from exporter.snapshot import (
    AccountInfo,
    AccountSnapshot,
    AuditResult,
    BudgetValue,
    EndpointHealth,
    Snapshot,
    SnapshotStore,
)

HERE = Path(__file__).resolve().parent
TEXT_FILE = HERE / "exposition.txt"
OPENMETRICS_FILE = HERE / "exposition.openmetrics.txt"
REGENERATE = "python -m tests.golden"

T0 = 1_760_000_000.0  # shown as 1.76e+09, as in the collector's docstrings
UNICODE_ACCOUNT = "équipe-東京"
# Every character the text formats escape (quote, backslash, newline), and other scripts.
ODD_MODEL = 'modèle-漢字 "β" \\ x\ny'
ODD_TITLE = "Reconnaissance — “quoted” \\ 🚀\nsecond line"

# Per stream label set (model, status, byok): the values of the stream counters, in the
# order of catalogue.STREAM_COUNTERS.
_STREAM_VALUES: dict[tuple[str, ...], tuple[float, ...]] = {
    ("gpt-5", "completed", "false"): (
        50, 12.5, 3.25, 0.75, 410, 620, 95, 1290.5, 870.25, 2210.4, 512.5, 405,
    ),
    ("claude-sonnet-4-5", "error", "true"): (
        3, 0.6, 0.42, 0.05, 12, 7, 2, 40.0, 11.5, 95.0, 9.5, 11,
    ),
}  # fmt: skip
_ODD_STREAM_VALUES = {
    (ODD_MODEL, "completed", "false"): (1, 0.35, 0.0, 0.0, 4, 2, 1, 8.5, 1.25, 12.0, 2.0, 3),
}


def _counter(value: float, created: float) -> CounterValue:
    return CounterValue(float(value), created)


def _stream_counters(
    values: dict[tuple[str, ...], tuple[float, ...]], created: float
) -> dict[tuple[str, tuple[str, ...]], CounterValue]:
    counters = {}
    for labels, numbers in values.items():
        for metric, number in zip(m.STREAM_COUNTERS, numbers, strict=True):
            counters[(metric.name, labels)] = _counter(number, created)
    return counters


def _histogram(
    bounds: tuple[float, ...], buckets: tuple[int, ...], total: float, created: float
) -> HistogramValue:
    return HistogramValue(bounds, buckets, total, sum(buckets), created)


DURATION_BOUNDS = (10.0, 30.0, 60.0, 120.0, 300.0)
TOOL_BOUNDS = (0.5, 1.0, 5.0, 30.0)
LATENCY_BOUNDS = (1.0, 2.0, 5.0)

ACME_COUNTS = Counts(
    counters={
        **_stream_counters(_STREAM_VALUES, T0),
        (m.AGENT_TRIGGERS_BY_AGENT.name, ("recon",)): _counter(80, T0),
        (m.AGENT_TRIGGERS_BY_AGENT.name, ("triage",)): _counter(17, T0 + 60),
        (m.TEAM_STREAMS.name, ("red",)): _counter(30, T0),
        (m.TEAM_CREDITS.name, ("red",)): _counter(8.5, T0),
        (m.TEAM_LLM_COST_USD.name, ("red",)): _counter(2.25, T0),
        (m.TEAM_PLATFORM_COST_USD.name, ("red",)): _counter(0.5, T0),
        (m.TEAM_STREAMS.name, ("unassigned",)): _counter(23, T0),
        (m.TEAM_CREDITS.name, ("unassigned",)): _counter(4.6, T0),
        (m.TEAM_LLM_COST_USD.name, ("unassigned",)): _counter(1.42, T0),
        (m.TEAM_PLATFORM_COST_USD.name, ("unassigned",)): _counter(0.3, T0),
        (m.TOOL_CALLS_BY_TOOL.name, ("nuclei",)): _counter(310, T0),
        (m.TOOL_CALLS_BY_TOOL.name, ("httpx",)): _counter(317, T0 + 60),
        (m.TOOL_TIME_BY_TOOL_SECONDS.name, ("nuclei",)): _counter(640.5, T0),
        (m.TOOL_TIME_BY_TOOL_SECONDS.name, ("httpx",)): _counter(241.25, T0 + 60),
        (m.REVISIONS.name, ("neo_credits", m.DIRECTION_UP)): _counter(12, T0 + 3600),
        (m.REVISIONS.name, ("neo_credits", m.DIRECTION_DOWN)): _counter(1, T0 + 7200),
        (m.REVISIONS.name, ("model", m.DIRECTION_CHANGED)): _counter(2, T0 + 7200),
        (m.REVISED_DOWN.name, ("neo_credits",)): _counter(0.35, T0 + 7200),
        (m.CHANGED_RECORDS.name, ()): _counter(3, T0 + 3600),
    },
    histograms={
        (m.STREAM_DURATION_SECONDS.name, ("gpt-5",)): _histogram(
            DURATION_BOUNDS, (5, 20, 16, 6, 2, 1), 2210.4, T0
        ),
        (m.STREAM_DURATION_SECONDS.name, ("claude-sonnet-4-5",)): _histogram(
            DURATION_BOUNDS, (0, 1, 1, 1, 0, 0), 95.0, T0 + 60
        ),
        (m.STREAM_STEP_LATENCY_SECONDS.name, ("gpt-5",)): _histogram(
            LATENCY_BOUNDS, (30, 15, 4, 1), 75.5, T0
        ),
        (m.STREAM_STEP_LATENCY_SECONDS.name, ("claude-sonnet-4-5",)): _histogram(
            LATENCY_BOUNDS, (1, 1, 1, 0), 6.5, T0 + 60
        ),
        (m.TOOL_CALL_DURATION_SECONDS.name, ("nuclei",)): _histogram(
            TOOL_BOUNDS, (100, 150, 50, 8, 2), 640.5, T0
        ),
        (m.TOOL_CALL_DURATION_SECONDS.name, ("httpx",)): _histogram(
            TOOL_BOUNDS, (290, 20, 7, 0, 0), 241.25, T0 + 60
        ),
    },
)

ODD_COUNTS = Counts(
    counters={
        **_stream_counters(_ODD_STREAM_VALUES, T0 + 0.25),
        (m.AGENT_TRIGGERS_BY_AGENT.name, ("分析",)): _counter(1, T0 + 0.25),
        (m.TOOL_CALLS_BY_TOOL.name, ('naïve "tool"',)): _counter(2, T0 + 0.25),
        (m.TOOL_TIME_BY_TOOL_SECONDS.name, ('naïve "tool"',)): _counter(1.25, T0 + 0.25),
    },
    histograms={
        (m.STREAM_DURATION_SECONDS.name, (ODD_MODEL,)): _histogram(
            DURATION_BOUNDS, (0, 1, 0, 0, 0, 0), 12.0, T0 + 0.25
        ),
        (m.STREAM_STEP_LATENCY_SECONDS.name, (ODD_MODEL,)): _histogram(
            LATENCY_BOUNDS, (1, 0, 0, 0), 0.5, T0 + 0.25
        ),
        (m.TOOL_CALL_DURATION_SECONDS.name, ('naïve "tool"',)): _histogram(
            TOOL_BOUNDS, (1, 1, 0, 0, 0), 1.25, T0 + 0.25
        ),
    },
)

_UP = EndpointHealth(True, T0, None)

ACME = AccountSnapshot(
    name="acme",
    counts=ACME_COUNTS,
    window_streams={"completed": 1843, "error": 21},
    tasks=TaskWindow({"completed": 388, "error": 12}, 904.2, 37.5, 8.25),
    endpoints={"streams": _UP, "tasks": _UP},
    last_poll_duration=1.25,
    seen_streams=1864,
    watermark=T0 - 30,
    first_poll_done=True,
    info=AccountInfo(
        summary=UsageSummary(
            credits=904.2,
            tasks_by_status={"completed": 388, "error": 12},
            byok_llm_cost=0.42,
            byok_neo_cost=0.05,
            byok_streams=3,
            byok_tasks=2,
            available_credits=22178.8,
            issued_credits=25000.0,
            credits_expire_at=1_764_547_200.0,
            last_credit_reset=1_759_276_800.0,
            credits_since_reset=2821.2,
            members=(
                MemberSpend("alice@example.com", 231.5, 97),
                MemberSpend("bob@example.com", 672.7, 303),
            ),
        ),
        cap=SpendingCap(limit=500.0, used=210.0, remaining=290.0),
        credits=CreditBalance(
            available=22178.8, issued=25000.0, used=2821.2, expires_at=1_764_547_200.0
        ),
        endpoints={"summary": _UP, "user": _UP, "credits": EndpointHealth(False, T0 - 600, "503")},
    ),
    top_tasks=(
        TopTask(1, "3f2c", "Recon", "", 41.2),
        TopTask(2, "9a01", "Nightly scan of example.com", "", 30.75),
    ),
    missing_rows={"streams": 0, "tasks": 0},
    # The spike's 15 minutes: one task and model behind most of it; the hour holds more.
    recent=(
        RecentSpend(
            "15m",
            900.0,
            credits=412.5,
            cost_usd=18.25,
            tasks_by_credits=(
                Culprit(("3f2c", "Recon"), 380.0, 0.0),
                Culprit(("9a01", "Nightly scan of example.com"), 32.5, 0.0),
            ),
            tasks_by_usd=(Culprit(("77b0", ""), 0.0, 18.25),),
            models_by_credits=(Culprit(("claude-sonnet-4-5",), 300.0, 0.0),),
            models_by_usd=(Culprit(("gpt-5",), 0.0, 18.25),),
            members_by_credits=(Culprit(("ana@example.com",), 290.0, 0.0),),
            members_by_usd=(Culprit(("bo@example.com",), 0.0, 18.25),),
        ),
        RecentSpend("1h", 3600.0, credits=530.0, cost_usd=20.0),
    ),
    budgets=(
        BudgetValue("acme-month", "credits", 100_000.0, 5210.35, 1_764_547_200.0, 1_767_225_600.0),
        BudgetValue("red-week", "usd", 500.0, 2.25, 1_764_547_200.0, 1_765_152_000.0),
    ),
    audit=AuditResult(
        at=T0,
        start=T0 - 90_000,
        end=T0 - 3600,
        neo_streams=1520,
        counted_streams=1520,
        neo_credits=5210.35,
        counted_credits=5210.35,
    ),
)

ODD = AccountSnapshot(
    name=UNICODE_ACCOUNT,
    counts=ODD_COUNTS,
    window_streams={"completed": 1},
    tasks=TaskWindow({"completed": 1}, 0.35, 0.0, 0.0),
    endpoints={"streams": _UP, "tasks": EndpointHealth(False, None, "timeout")},
    last_poll_duration=0.5,
    seen_streams=1,
    watermark=T0 + 0.25,
    first_poll_done=True,
    info=AccountInfo(
        summary=UsageSummary(
            credits=0.35,
            tasks_by_status={"completed": 1},
            members=(MemberSpend("zoë@例え.jp", 0.35, 1),),
        ),
    ),
    top_tasks=(TopTask(1, "c0ffee", ODD_TITLE, "zoë@例え.jp", 0.35),),
    recent=(
        RecentSpend(
            "15m",
            900.0,
            credits=0.35,
            tasks_by_credits=(Culprit(("c0ffee", ODD_TITLE), 0.35, 0.0),),
            members_by_credits=(Culprit(("zoë@例え.jp",), 0.35, 0.0),),
        ),
    ),
    catching_up=True,
    last_catch_up=T0 + 0.25,
    missing_rows={"streams": 2},
    audit=AuditResult(
        at=T0,
        start=T0 - 90_000,
        end=T0 - 3600,
        neo_streams=None,
        counted_streams=1,
        neo_credits=None,
        counted_credits=0.35,
    ),
)

SNAPSHOT = Snapshot(accounts=(ACME, ODD), state_bytes=1_843_200, window_seconds=2_592_000.0)


def store() -> SnapshotStore:
    """A store holding SNAPSHOT, filled as the pollers fill one."""
    held = SnapshotStore(tuple(a.name for a in SNAPSHOT.accounts), SNAPSHOT.window_seconds)
    for account in SNAPSHOT.accounts:
        held.update(account.name, lambda _, new=account: new, state_bytes=SNAPSHOT.state_bytes)
    assert held.get() == SNAPSHOT
    return held


def registry() -> CollectorRegistry:
    """The collector over SNAPSHOT, on a registry of its own."""
    registry = CollectorRegistry()
    registry.register(NeoCollector(store()))
    return registry


def machine_independent(text: str) -> str:
    """The exposition with the running Python's version written as PYTHON_VERSION."""
    running = re.escape(platform.python_version())
    return re.sub(f'python_version="{running}"', 'python_version="PYTHON_VERSION"', text)


def render() -> tuple[str, str]:
    """(Prometheus text, OpenMetrics) of SNAPSHOT, as the files hold them."""
    collected = registry()
    return (
        machine_independent(generate_latest(collected).decode()),
        machine_independent(generate_openmetrics(collected).decode()),
    )


def write() -> None:
    text, openmetrics = render()
    TEXT_FILE.write_text(text, encoding="utf-8")
    OPENMETRICS_FILE.write_text(openmetrics, encoding="utf-8")
