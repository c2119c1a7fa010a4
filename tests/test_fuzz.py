"""Hostile input, property-based: any JSON in any field of a row, any text in a label value.

A row is counted with exactly the values it carries, or rejected with one of the fixed
reasons; nothing else ever escapes the parser, the state or a poll. Any label value renders
an exposition that parses back to the same value (prometheus_client's parsers, promtool).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from exporter.app import build
from exporter.collector import NeoCollector
from exporter.config import LabelLimits, config_from_mapping
from exporter.counting import STEP_LATENCY, STREAM_DURATION, TOOL_CALL_DURATION
from exporter.models import (
    MAX_LABEL_LENGTH,
    ROW_REASONS,
    RowError,
    StreamRecord,
    clean_label,
    format_timestamp,
    parse_stream,
    parse_task,
)
from exporter.snapshot import SnapshotStore
from exporter.state import State
from tests.conftest import ManualClock, parse_exposition, scrape, select
from tests.fakeneo import STREAMS_PATH, FakeNeo, FakeNeoServer
from tests.processes import assert_promtool_lint_clean, require_tool

T0 = 1_795_000_000.0
DAY = 86400.0
BASE_ROW: dict[str, Any] = {
    "stream_id": "7d0c2a52-9f55-4a43-8c43-2b6a3c5e0f11",
    "task_id": "task-1",
    "created_at": "2026-11-18T10:00:00.123Z",
    "model": "claude-sonnet-4-5",
    "status": "completed",
    "is_byok": True,
    "neo_credits": 1.25,
    "llm_cost": 0.5,
    "neo_cost": 0.1,
    "step_count": 4,
    "tool_calls": 3,
    "agent_triggers": 2,
    "llm_time_ms": 1200,
    "tool_time_ms": 800,
    "total_execution_ms": 2500,
    "avg_step_latency_ms": 300,
    "agent_breakdown": {"planner": 2},
    "tool_breakdown": {"httpx": {"calls": 3, "duration_ms": 800}},
    "tool_call_history": [{"tool_name": "httpx", "duration_ms": 800, "index": 0}],
}
FIELDS = [*BASE_ROW, "email", "task_title", "error_message", "stream_count", "unknown_extra"]

# Text as JSON can carry it: every code point, lone surrogates included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
NASTY = (
    "",
    " ",
    '"quoted"',
    "back\\slash",
    "new\nline",
    "tab\tcr\r",
    "\\n literally",
    "日本語のモデル",
    "emoji 🚀🔥",
    "\u0000nul",
    "\ud800lone surrogate",
    "\u2028line separator",
    "{braces}=,",
    "x" * 5000,
    "le",
    "# HELP",
)
NASTY_TEXT = st.sampled_from(NASTY)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: JSON integers have no size limit
    | st.floats()  # json.loads takes NaN and Infinity
    | st.floats(min_value=0, max_value=1e15)
    | ANY_TEXT
    | NASTY_TEXT
    | st.sampled_from(["12.5", "-1", "1e400", "2026-11-18T10:00:00Z", "not a date"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


def expected_number(value: object) -> float | None:
    """What the parser must make of a numeric field: the number, or None (absent)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number) or number < 0 or number > 1e12:
        return None
    return number


def expected_label(value: object) -> str:
    if isinstance(value, str) and clean_label(value) != "unknown":
        return clean_label(value)
    return "unknown"


def check_record(field: str, value: object, record: StreamRecord) -> None:
    """The record carries exactly what the row said in `field`, or that field repaired."""
    if field in ("neo_credits", "llm_cost", "neo_cost"):
        attr = {"neo_credits": "credits", "llm_cost": "llm_cost", "neo_cost": "neo_cost"}[field]
        assert getattr(record, attr) == (expected_number(value) or 0.0)
    elif field in ("step_count", "tool_calls", "agent_triggers"):
        number = expected_number(value)
        whole = number is not None and number.is_integer()
        assert getattr(record, {"step_count": "steps"}.get(field, field)) == (
            int(number) if whole and number is not None else None
        )
    elif field == "stream_id":
        assert record.stream_id == value
    elif field == "model":
        assert record.model == expected_label(value)
    elif field == "status":
        assert record.status == expected_label(value).lower()
    elif field == "is_byok":
        strings = {"true": "true", "false": "false"}
        text = value.strip().lower() if isinstance(value, str) else None
        expected = {True: "true", False: "false"}.get(value) if isinstance(value, bool) else None  # type: ignore[arg-type]
        assert record.byok == (expected or strings.get(text or "", "unknown"))
    elif field == "total_execution_ms":
        number = expected_number(value)
        assert record.execution_time == (None if number is None else number / 1000)
    # Money is never lost over another field.
    if field not in ("neo_credits",):
        assert record.credits == BASE_ROW["neo_credits"]
    # Every label value the record carries can be stored and exposed.
    labels = [record.model, record.status]
    labels += [name for name, _ in record.agent_breakdown]
    labels += [name for name, _, _ in record.tool_usage]
    labels += [name for name, _ in record.tool_durations]
    for label in labels:
        label.encode("utf-8")
        assert 0 < len(label) <= MAX_LABEL_LENGTH


@given(st.sampled_from(FIELDS), JSON_VALUES)
@settings(max_examples=400, deadline=None)
def test_any_json_value_in_any_field_is_counted_as_sent_or_rejected_with_a_reason(
    field: str, value: object
) -> None:
    row = {**BASE_ROW, field: value}
    try:
        record = parse_stream(row)
    except RowError as error:
        # Only a stream without a usable id or time is not counted.
        assert field in ("stream_id", "created_at")
        assert error.reason in ROW_REASONS
        assert error.detail
        return
    check_record(field, value, record)


@given(JSON_VALUES)
@settings(max_examples=150, deadline=None)
def test_any_json_value_as_a_whole_row_is_a_record_or_a_row_error(row: object) -> None:
    for parse in (parse_stream, parse_task):
        try:
            parse(row)
        except RowError as error:
            assert error.reason in ROW_REASONS


def new_state() -> State:
    return State(
        ":memory:",
        bounds={
            TOOL_CALL_DURATION: (0.1, 1.0, 10.0),
            STREAM_DURATION: (1.0, 60.0),
            STEP_LATENCY: (0.5, 5.0),
        },
        limits=LabelLimits(model=1000, status=1000, tool=1000, agent=1000),
    )


def exposition_of(state: State) -> CollectorRegistry:
    store = SnapshotStore(("acme",), 86400.0)
    store.update("acme", lambda a: replace(a, counts=state.counts("acme")))
    registry = CollectorRegistry()
    registry.register(NeoCollector(store))
    return registry


LABEL_TEXT = ANY_TEXT | NASTY_TEXT | st.text(min_size=100, max_size=400)


@given(st.lists(st.tuples(LABEL_TEXT, LABEL_TEXT, LABEL_TEXT), min_size=1, max_size=3))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_label_value_renders_an_exposition_that_parses_back_to_it(
    names: list[tuple[str, str, str]],
) -> None:
    state = new_state()
    records = []
    for i, (model, tool, agent) in enumerate(names):
        row = {
            **BASE_ROW,
            "stream_id": f"s{i}",
            "model": model,
            "agent_breakdown": {agent: 1},
            "tool_breakdown": {tool: {"calls": 1, "duration_ms": 10}},
            "tool_call_history": [{"tool_name": tool, "duration_ms": 10}],
        }
        records.append(parse_stream(row))
    state.ingest("acme", records, T0)
    registry = exposition_of(state)
    text = generate_latest(registry).decode("utf-8")
    samples = parse_exposition(text)
    models = {dict(k).get("model") for k in select(samples, "neo_streams_total")}
    tools = {dict(k).get("tool") for k in select(samples, "neo_tool_calls_by_tool_total")}
    agents = {dict(k).get("agent") for k in select(samples, "neo_agent_triggers_by_agent_total")}
    assert {clean_label(m) for m, _, _ in names} <= models
    assert {clean_label(t) for _, t, _ in names} == tools
    assert {clean_label(a) for _, _, a in names} == agents
    assert sum(select(samples, "neo_streams_total").values()) == len(names)
    # The OpenMetrics rendering parses too, with the same values.
    families = parse_openmetrics(generate_openmetrics(registry).decode("utf-8"))
    om_tools = {
        s.labels["tool"]
        for f in families
        if f.name == "neo_tool_calls_by_tool"
        for s in f.samples
        if s.name == "neo_tool_calls_by_tool_total"
    }
    assert om_tools == tools


def test_promtool_accepts_an_exposition_full_of_hostile_label_values() -> None:
    tool = require_tool("promtool")
    state = new_state()
    records = [
        parse_stream(
            {
                **BASE_ROW,
                "stream_id": f"s{i}",
                "model": name,
                "status": name,
                "tool_breakdown": {name: {"calls": 1, "duration_ms": 10}},
                "tool_call_history": [{"tool_name": name, "duration_ms": 10}],
            }
        )
        for i, name in enumerate(NASTY)
    ]
    state.ingest("acme", records, T0)
    text = generate_latest(exposition_of(state)).decode("utf-8")
    assert "\\n" in text and '\\"' in text and "\\\\" in text  # escaped, not raw
    assert_promtool_lint_clean(tool, text)


# --- a whole poll, over HTTP, with hostile rows ----------------------------------------------

ROW_VALUES = st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, JSON_VALUES))
HOSTILE_ROWS = st.lists(
    st.one_of(
        JSON_VALUES,  # not even an object
        st.builds(lambda extra: {**BASE_ROW, **extra}, ROW_VALUES),
    ),
    min_size=1,
    max_size=12,
)


@given(HOSTILE_ROWS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_poll_over_hostile_rows_succeeds_and_counts_each_good_row_once(
    rows: list[object],
) -> None:
    clock = ManualClock(T0)
    neo = FakeNeo(seed=5, clock=clock)
    # Rows dated inside the window (or undated: the fake then files them at visible_at).
    neo.add_rows(rows, visible_at=T0 - 30, in_truth=False)
    first: dict[str, StreamRecord] = {}
    rejected = 0
    # A first start reads the window once (the lookback is its last slice): a bad row
    # counts once per read.
    for start in (T0 - DAY,):
        query = {"from": format_timestamp(start), "to": format_timestamp(T0), "limit": "200"}
        status, page = neo.handle("GET", STREAMS_PATH, query, "fake-admin-token")
        assert status == 200
        # What the API sends is JSON: what survives the round trip is what the exporter sees.
        served = json.loads(json.dumps(page["data"]))
        bad: set[str] = set()
        for row in served:
            try:
                record = parse_stream(row)
            except RowError:
                bad.add(repr(row))
                continue
            first.setdefault(record.stream_id, record)
        rejected += len(bad)
    with FakeNeoServer(neo) as server:
        config = config_from_mapping(
            {
                "accounts": [{"name": "acme", "base_url": server.url, "token": "fake-admin-token"}],
                "polling": {"window": "1d"},
                "http": {"page_size": 200},
                "state": {"path": ":memory:"},
            },
            {},
        )
        exporter = build(config, threading.Event(), clock)
        try:
            assert exporter.pollers[0].poll_streams()
            samples = scrape(exporter.registry)
        finally:
            exporter.close()
    assert sum(select(samples, "neo_streams_total", account="acme").values()) == len(first)
    credits = sum(select(samples, "neo_credits_total", account="acme").values())
    assert credits == pytest.approx(math.fsum(r.credits for r in first.values()), rel=1e-9)
    skipped = select(samples, "neo_exporter_skipped_records_total", account="acme")
    assert sum(skipped.values()) == rejected
