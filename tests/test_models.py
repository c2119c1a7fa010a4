"""Row and page parsing: every value is counted right or rejected with a bounded reason."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import models
from exporter.models import (
    MAX_LABEL_LENGTH,
    ROW_REASONS,
    PageError,
    RowError,
    StreamRecord,
    TaskRecord,
    decode_page,
    format_timestamp,
    parse_page,
    parse_stream,
    parse_task,
    parse_timestamp,
    row_digest,
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
    assert record.tool_durations == (("nuclei", 2.0), ("httpx", 0.5))
    assert record.repairs == ()


def test_per_tool_usage_comes_from_the_history_when_a_row_has_one() -> None:
    # The breakdown says one nuclei call; the documented history says nuclei and httpx.
    record = parse_stream(stream_row())
    assert record.tool_usage == (("httpx", 1, 0.5), ("nuclei", 1, 2.0))


def test_per_tool_usage_falls_back_to_breakdown_entries_with_the_expected_keys() -> None:
    record = parse_stream(
        stream_row(
            tool_call_history=...,
            tool_breakdown={
                "nuclei": {"calls": 2, "duration_ms": 3000},
                "httpx": {"count": 5, "time_ms": 100},  # keys we do not know: not a zero
            },
        )
    )
    assert record.tool_usage == (("nuclei", 2, 3.0),)
    assert record.repairs == ("tool_breakdown",)


def test_missing_optional_fields_count_as_zero_and_are_not_observed() -> None:
    row = stream_row(
        neo_credits=...,
        llm_cost=...,
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
    assert record.tool_durations == () and record.tool_usage == ()
    assert record.repairs == ()  # absent optional fields and a null latency are documented


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"stream_id": ...}, "missing_field"),
        ({"stream_id": None}, "missing_field"),
        ({"stream_id": 12}, "wrong_type"),
        ({"stream_id": ""}, "bad_value"),
        ({"created_at": ...}, "missing_field"),
        ({"created_at": "yesterday"}, "bad_timestamp"),
        ({"created_at": 1700000000}, "wrong_type"),
    ],
)
def test_only_a_row_without_an_id_or_a_time_is_rejected(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(RowError) as caught:
        parse_stream(stream_row(**changes))
    assert caught.value.reason == reason
    assert caught.value.reason in ROW_REASONS


@pytest.mark.parametrize(
    ("changes", "field", "check"),
    [
        ({"model": None}, "model", lambda r: r.model == "unknown"),
        ({"model": ["gpt"]}, "model", lambda r: r.model == "unknown"),
        ({"model": "  "}, "model", lambda r: r.model == "unknown"),
        ({"status": ...}, "status", lambda r: r.status == "unknown"),
        ({"status": None}, "status", lambda r: r.status == "unknown"),
        ({"is_byok": None}, "is_byok", lambda r: r.byok == "unknown"),
        ({"is_byok": "yes"}, "is_byok", lambda r: r.byok == "unknown"),
        ({"is_byok": 1}, "is_byok", lambda r: r.byok == "unknown"),
        ({"is_byok": "true"}, "is_byok", lambda r: r.byok == "true"),
        ({"is_byok": " FALSE "}, "is_byok", lambda r: r.byok == "false"),
        ({"neo_credits": "1.5"}, "neo_credits", lambda r: r.credits == 1.5),
        ({"neo_credits": -0.5}, "neo_credits", lambda r: r.credits == 0.0),
        ({"neo_credits": math.inf}, "neo_credits", lambda r: r.credits == 0.0),
        ({"neo_credits": math.nan}, "neo_credits", lambda r: r.credits == 0.0),
        ({"llm_cost": "abc"}, "llm_cost", lambda r: r.llm_cost == 0.0),
        ({"llm_cost": True}, "llm_cost", lambda r: r.llm_cost == 0.0),
        ({"neo_cost": {"usd": 1}}, "neo_cost", lambda r: r.neo_cost == 0.0),
        ({"neo_cost": None}, "neo_cost", lambda r: r.neo_cost == 0.0),
        ({"step_count": None}, "step_count", lambda r: r.steps is None),
        ({"step_count": 2.5}, "step_count", lambda r: r.steps is None),
        ({"step_count": "4"}, "step_count", lambda r: r.steps == 4),
        ({"tool_calls": -3}, "tool_calls", lambda r: r.tool_calls is None),
        ({"agent_triggers": "many"}, "agent_triggers", lambda r: r.agent_triggers is None),
        ({"llm_time_ms": -1}, "llm_time_ms", lambda r: r.llm_time is None),
        ({"tool_time_ms": "2500"}, "tool_time_ms", lambda r: r.tool_time == 2.5),
        ({"total_execution_ms": -1}, "total_execution_ms", lambda r: r.execution_time is None),
        ({"avg_step_latency_ms": -1}, "avg_step_latency_ms", lambda r: r.step_latency is None),
        ({"avg_step_latency_ms": "600"}, "avg_step_latency_ms", lambda r: r.step_latency == 0.6),
    ],
)
def test_an_odd_field_is_repaired_alone_and_the_money_is_kept(
    changes: dict[str, Any], field: str, check: Callable[[StreamRecord], bool]
) -> None:
    record = parse_stream(stream_row(**changes))
    assert check(record)
    assert record.repairs == (field,)
    if field not in ("neo_credits",):
        assert record.credits == 1.25  # the money of a row is never lost to another field


@pytest.mark.parametrize("row", [None, [], "row", 3, True])
def test_a_row_that_is_not_an_object_is_rejected(row: object) -> None:
    with pytest.raises(RowError) as caught:
        parse_stream(row)
    assert caught.value.reason == "not_an_object"


def test_integral_floats_are_counts_without_a_repair() -> None:
    record = parse_stream(stream_row(step_count=4.0))
    assert record.steps == 4
    assert record.repairs == ()


def test_bad_detail_entries_are_dropped_but_the_money_is_kept() -> None:
    row = stream_row(
        agent_breakdown={"recon": "two", "exploit": 1},
        tool_breakdown=["nuclei"],
        tool_call_history=[{"tool_name": "nuclei"}, {"tool_name": "httpx", "duration_ms": 10}],
    )
    record = parse_stream(row)
    assert record.credits == 1.25
    assert record.agent_breakdown == (("exploit", 1),)
    assert record.tool_durations == (("httpx", 0.01),)
    assert record.tool_usage == (("httpx", 1, 0.01),)
    # The history had a usable entry, so the broken breakdown was not needed (nor read).
    assert set(record.repairs) == {"agent_breakdown", "tool_call_history"}


def test_label_values_are_bounded_and_status_is_normalised() -> None:
    record = parse_stream(stream_row(model="x" * 1000, status=" Completed ", is_byok=True))
    assert len(record.model) == MAX_LABEL_LENGTH
    assert record.status == "completed"
    assert record.byok == "true"
    assert record.repairs == ()


def test_unusual_label_characters_are_kept_verbatim() -> None:
    model = 'claude "sonnet" \\ 4.5 \u00e9\u6f22'
    assert parse_stream(stream_row(model=model)).model == model


def test_the_fingerprint_is_the_rows_raw_bytes_so_any_change_changes_it() -> None:
    def fingerprint(row: dict[str, Any]) -> str:
        return parse_stream(raw(row)).fingerprint

    base = fingerprint(stream_row())
    assert fingerprint(stream_row()) == base == row_digest(raw(stream_row()))
    for changed in (
        stream_row(task_title="renamed"),
        stream_row(neo_credits=1.26),
        stream_row(status="error"),
    ):
        assert fingerprint(changed) != base
    # A decoded row (a page only the standard library could read) has a stable one too.
    assert parse_stream(stream_row()).fingerprint == parse_stream(stream_row()).fingerprint


def raw(row: object) -> msgspec.Raw:
    return msgspec.Raw(json.dumps(row).encode())


def outcome(parse: Callable[[object], object], row: object) -> object:
    """What parsing gives, with the fingerprint left out: a record, or the error's reason."""
    try:
        record = parse(row)
    except RowError as exc:
        return ("rejected", exc.reason)
    assert isinstance(record, StreamRecord | TaskRecord)
    return (
        msgspec.structs.replace(record, fingerprint="")
        if isinstance(record, StreamRecord)
        else record
    )


# Values the docs leave possible for a field, and a few they do not.
ODD_VALUES = st.sampled_from(
    [
        None,
        ...,
        -1,
        0,
        0.0,
        2.5,
        3,
        "3",
        "2.5",
        "x",
        "",
        " gpt ",
        "TRUE",
        True,
        False,
        10**20,
        1e13,
        [],
        {},
        {"a": 1},
        {"a": "2"},
        {"a": -1},
        [{"tool_name": "t"}],
        [{"tool_name": " t ", "duration_ms": 5}],
        [{"tool_name": "", "duration_ms": 5}],
        "2026-11-25T05:00:00Z",
        "2026-11-25 05:00:00",
        "\u00e9t\u00e9",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from([*sorted(stream_row()), "stream_count"]), ODD_VALUES, max_size=4
    )
)
def test_the_typed_decoder_and_the_general_path_agree_on_every_row(
    changes: dict[str, Any],
) -> None:
    row = stream_row(**changes)
    assert outcome(parse_stream, raw(row)) == outcome(parse_stream, row)
    task = stream_row(**{"stream_id": ..., "stream_count": 2, **changes})
    assert outcome(parse_task, raw(task)) == outcome(parse_task, task)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"tool_call_history": [], "tool_breakdown": {}},
        {"tool_call_history": [], "tool_breakdown": None},
        {"tool_call_history": [], "tool_breakdown": ...},  # ...: left out
    ],
    ids=["with tool calls", "without, breakdown empty", "without, breakdown null", "without"],
)
def test_a_documented_row_takes_the_typed_decoder(changes: dict[str, Any]) -> None:
    # The general path is the fallback; a row exactly as documented must not need it.
    row = stream_row(**changes)
    decoded = models._STREAM_DECODER.decode(raw(row))
    assert models._fast_stream(decoded, "f") == msgspec.structs.replace(
        parse_stream(row), fingerprint="f"
    )


def test_a_page_splits_into_raw_rows_that_parse_like_decoded_ones() -> None:
    body = json.dumps({"data": [stream_row()], "has_more": False, "total": 1}).encode()
    page = decode_page(body)
    assert (page.has_more, page.total, len(page.rows)) == (False, 1, 1)
    assert isinstance(page.rows[0], msgspec.Raw)
    assert outcome(parse_stream, page.rows[0]) == outcome(parse_stream, stream_row())


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


def test_task_rows_are_repaired_like_streams_and_need_only_an_id_and_a_time() -> None:
    task = parse_task(stream_row(stream_id=..., status=None, neo_credits="2.5", stream_count=None))
    assert (task.status, task.credits, task.stream_count) == ("unknown", 2.5, 1)
    assert set(task.repairs) == {"status", "neo_credits", "stream_count"}
    with pytest.raises(RowError):
        parse_task(stream_row(task_id=None))


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
    with pytest.raises(PageError):
        decode_page(json.dumps(body).encode())


def test_a_well_formed_page_keeps_its_rows_untouched() -> None:
    page = parse_page({"data": [1, {"a": 2}], "has_more": True, "total": 9})
    assert page.rows == [1, {"a": 2}]
    assert page.has_more is True
    assert page.total == 9
    assert parse_page({"data": [], "has_more": False}).total is None
