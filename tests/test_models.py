"""Row and page parsing: every value is counted right or rejected with a bounded reason."""

from __future__ import annotations

import math
from typing import Any

import pytest

from exporter.models import (
    MAX_LABEL_LENGTH,
    ROW_REASONS,
    PageError,
    RowError,
    format_timestamp,
    parse_page,
    parse_stream,
    parse_task,
    parse_timestamp,
)


def stream_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "stream_id": "2b1f0c8e-8d1a-4c47-9c43-3c7a0c1d2e3f",
        "task_id": "task_1",
        "created_at": "2026-11-25T05:00:00.250Z",
        "model": "gpt-5",
        "status": "completed",
        "is_byok": False,
        "neo_credits": 1.25,
        "llm_cost": 0,
        "neo_cost": 0,
        "step_count": 7,
        "tool_calls": 2,
        "agent_triggers": 3,
        "llm_time_ms": 1500,
        "tool_time_ms": 2500,
        "total_execution_ms": 4200,
        "avg_step_latency_ms": 600,
        "agent_breakdown": {"recon": 2, "exploit": 1},
        "tool_breakdown": {"nuclei": {"calls": 1, "duration_ms": 2000}},
        "tool_call_history": [
            {"tool_name": "nuclei", "duration_ms": 2000, "index": 0, "timestamp": 1},
            {"tool_name": "httpx", "duration_ms": 500, "index": 1, "timestamp": 2},
        ],
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


def test_full_row_is_converted_to_base_units() -> None:
    record = parse_stream(stream_row())
    assert record.created_ts == pytest.approx(parse_timestamp("2026-11-25T05:00:00Z") + 0.25)
    assert record.credits == 1.25
    assert (record.llm_time, record.tool_time, record.execution_time) == (1.5, 2.5, 4.2)
    assert record.step_latency == 0.6
    assert record.byok == "false"
    assert record.agent_breakdown == (("exploit", 1), ("recon", 2))
    assert record.tool_breakdown == (("nuclei", 1, 2.0),)
    assert record.tool_durations == (("nuclei", 2.0), ("httpx", 0.5))
    assert record.invalid_details == ()


def test_missing_optional_fields_count_as_zero_and_are_not_observed() -> None:
    row = stream_row(
        neo_credits=...,
        llm_cost=None,
        neo_cost=...,
        is_byok=...,
        total_execution_ms=...,
        avg_step_latency_ms=None,
        agent_breakdown=...,
        tool_breakdown=...,
        tool_call_history=...,
    )
    record = parse_stream(row)
    assert (record.credits, record.llm_cost, record.neo_cost) == (0.0, 0.0, 0.0)
    assert record.execution_time is None and record.step_latency is None
    assert record.byok == "unknown"
    assert record.tool_durations == ()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"stream_id": ...}, "missing_field"),
        ({"stream_id": 12}, "wrong_type"),
        ({"stream_id": ""}, "bad_value"),
        ({"task_id": None}, "missing_field"),
        ({"created_at": "yesterday"}, "bad_timestamp"),
        ({"created_at": 1700000000}, "wrong_type"),
        ({"model": ["gpt"]}, "wrong_type"),
        ({"status": ...}, "missing_field"),
        ({"is_byok": "yes"}, "wrong_type"),
        ({"neo_credits": -0.5}, "bad_value"),
        ({"neo_credits": math.inf}, "bad_value"),
        ({"neo_credits": math.nan}, "bad_value"),
        ({"llm_cost": "abc"}, "wrong_type"),
        ({"llm_cost": True}, "wrong_type"),
        ({"neo_cost": {"usd": 1}}, "wrong_type"),
        ({"step_count": 2.5}, "bad_value"),
        ({"tool_calls": ...}, "missing_field"),
        ({"agent_triggers": "many"}, "wrong_type"),
        ({"total_execution_ms": -1}, "bad_value"),
    ],
)
def test_bad_core_fields_reject_the_row_with_a_bounded_reason(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(RowError) as caught:
        parse_stream(stream_row(**changes))
    assert caught.value.reason == reason
    assert caught.value.reason in ROW_REASONS


@pytest.mark.parametrize("row", [None, [], "row", 3, True])
def test_a_row_that_is_not_an_object_is_rejected(row: object) -> None:
    with pytest.raises(RowError) as caught:
        parse_stream(row)
    assert caught.value.reason == "not_an_object"


def test_numeric_strings_and_integral_floats_are_accepted() -> None:
    record = parse_stream(stream_row(neo_credits="0.125", step_count=4.0))
    assert record.credits == 0.125
    assert record.steps == 4


def test_bad_detail_entries_are_dropped_but_the_money_is_kept() -> None:
    row = stream_row(
        agent_breakdown={"recon": "two", "exploit": 1},
        tool_breakdown=["nuclei"],
        tool_call_history=[{"tool_name": "nuclei"}, {"tool_name": "httpx", "duration_ms": 10}],
    )
    record = parse_stream(row)
    assert record.credits == 1.25
    assert record.agent_breakdown == (("exploit", 1),)
    assert record.tool_breakdown == ()
    assert record.tool_durations == (("httpx", 0.01),)
    assert set(record.invalid_details) == {
        "agent_breakdown",
        "tool_breakdown",
        "tool_call_history",
    }


def test_label_values_are_bounded_and_status_is_normalised() -> None:
    record = parse_stream(stream_row(model="x" * 1000, status=" Completed ", is_byok=True))
    assert len(record.model) == MAX_LABEL_LENGTH
    assert record.status == "completed"
    assert record.byok == "true"
    assert parse_stream(stream_row(model="  ")).model == "unknown"


def test_unusual_label_characters_are_kept_verbatim() -> None:
    model = 'claude "sonnet" \\ 4.5 \u00e9\u6f22'
    assert parse_stream(stream_row(model=model)).model == model


def test_fingerprint_changes_with_any_counted_value_only() -> None:
    base = parse_stream(stream_row()).fingerprint()
    assert parse_stream(stream_row(task_title="renamed")).fingerprint() == base
    assert parse_stream(stream_row(neo_credits=1.26)).fingerprint() != base
    assert parse_stream(stream_row(status="error")).fingerprint() != base


def test_timestamps_round_trip_and_naive_ones_are_utc() -> None:
    ts = parse_timestamp("2026-01-02T03:04:05.678Z")
    assert format_timestamp(ts) == "2026-01-02T03:04:05.678Z"
    assert parse_timestamp("2026-01-02T03:04:05") == parse_timestamp("2026-01-02T03:04:05+00:00")
    assert parse_timestamp("2026-01-02T05:04:05+02:00") == parse_timestamp("2026-01-02T03:04:05Z")


def test_task_rows_parse_with_stream_count() -> None:
    task = parse_task(stream_row(stream_id=..., stream_count=3, status="error"))
    assert (task.task_id, task.status, task.stream_count, task.credits) == (
        "task_1",
        "error",
        3,
        1.25,
    )


@pytest.mark.parametrize(
    "body",
    [
        [],
        "nope",
        {"data": "oops", "has_more": False},
        {"data": [], "has_more": "no"},
        {"data": []},
        {"data": [], "has_more": False, "total": -1},
        {"data": [], "has_more": False, "total": "3"},
    ],
)
def test_malformed_pages_are_refused(body: object) -> None:
    with pytest.raises(PageError):
        parse_page(body)


def test_a_well_formed_page_keeps_its_rows_untouched() -> None:
    page = parse_page({"data": [1, {"a": 2}], "has_more": True, "total": 9})
    assert page.rows == [1, {"a": 2}]
    assert page.has_more is True
    assert page.total == 9
    assert parse_page({"data": [], "has_more": False}).total is None
