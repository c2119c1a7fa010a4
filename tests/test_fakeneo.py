"""The fake Neo API over real HTTP: paging, filters, auth, visibility, aggregates, truth, faults."""

from __future__ import annotations

import logging
import math
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ManualClock
from tests.fakeneo import ODD_KINDS, FakeNeo, FakeNeoServer
from tests.fakeneo.cli import _fake_of, _parse_args
from tests.processes import fake_api

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
HOUR = 3600.0
DAY = 86400.0
ADMIN = "fake-admin-token"
MEMBER = "fake-member-token"
STREAMS = "/api/v1/usage/streams"
TASKS = "/api/v1/usage/tasks"
SUMMARY = "/api/v1/usage/summary"
ROOT = Path(__file__).resolve().parent.parent
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def iso(ts: float) -> str:
    """Epoch seconds to the API's ISO 8601 form (UTC, milliseconds)."""
    whole = math.floor(ts)
    ms = round((ts - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


class Api:
    """A requests session against the fake, as a team admin unless told otherwise."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {ADMIN}"

    def get(self, path: str, /, **params: Any) -> requests.Response:
        """GET with query params; `timeout` is the client read timeout, not a query param."""
        timeout = float(params.pop("timeout", 10.0))
        return self.session.get(self.url + path, params=params, timeout=timeout)

    def ok(self, path: str, /, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def all_pages(self, path: str, /, **params: Any) -> list[dict[str, Any]]:
        """Every row, page after page (200 a page unless limit says otherwise)."""
        params.setdefault("limit", 200)
        rows: list[dict[str, Any]] = []
        totals = set()
        while True:
            page = self.ok(path, offset=len(rows), **params)
            rows.extend(page["data"])
            totals.add(page["total"])
            if not page["has_more"]:
                break
            assert len(rows) < 100_000, "paging never ends"
        assert totals == {len(rows)}
        return rows


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def neo(clock: ManualClock) -> FakeNeo:
    return FakeNeo(seed=5, clock=clock)


@pytest.fixture
def server(neo: FakeNeo) -> Iterator[FakeNeoServer]:
    with FakeNeoServer(neo) as running:
        yield running


@pytest.fixture
def api(server: FakeNeoServer) -> Iterator[Api]:
    client = Api(server.url)
    yield client
    client.session.close()


def row(stream_id: str, created: float, **fields: Any) -> dict[str, Any]:
    """A well-formed hand-made stream row; fields override the defaults."""
    base: dict[str, Any] = {
        "stream_id": stream_id,
        "task_id": f"task-{stream_id}",
        "task_title": "hand made",
        "email": "alice@example.com",
        "created_at": iso(created),
        "model": "m1",
        "status": "completed",
        "is_byok": False,
        "neo_credits": 0.0,
        "llm_cost": 0.0,
        "neo_cost": 0.0,
        "step_count": 0,
        "tool_calls": 0,
        "agent_triggers": 0,
        "llm_time_ms": 0,
        "tool_time_ms": 0,
        "total_execution_ms": 0,
        "avg_step_latency_ms": None,
        "error_message": None,
        "stream_count": 1,
        "agent_breakdown": {},
        "tool_breakdown": {},
        "tool_call_history": [],
    }
    return {**base, **fields}


def call(tool: str, duration_ms: int, index: int) -> dict[str, Any]:
    return {"tool_name": tool, "duration_ms": duration_ms, "index": index, "timestamp": 0}


# --- paging and parameters -----------------------------------------------------------------


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [200, 7])
def test_paging_visits_every_visible_stream_exactly_once(
    clock: ManualClock, order: str, limit: int
) -> None:
    neo = FakeNeo(seed=2, clock=clock, order=order)
    rows = neo.generate(537, T0 - DAY, T0, late_fraction=0.0)
    with FakeNeoServer(neo) as server:
        served = Api(server.url).all_pages(STREAMS, limit=limit, to=iso(T0))
    ids = [r["stream_id"] for r in served]
    assert len(ids) == len(set(ids)) == 537
    assert set(ids) == {r["stream_id"] for r in rows}
    created = [r["created_at"] for r in served]
    assert created == sorted(created, reverse=order == "desc")


def test_sort_by_cost_puts_the_most_expensive_first(neo: FakeNeo, api: Api) -> None:
    neo.generate(120, T0 - DAY, T0, late_fraction=0.0)
    served = api.all_pages(STREAMS, sort="cost")
    costs = [r["neo_credits"] + r["llm_cost"] for r in served]
    assert costs == sorted(costs, reverse=True)
    assert len(served) == 120


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"limit": "1.5"},
        {"offset": "-1"},
        {"offset": "x"},
        {"sort": "price"},
        {"is_byok": "maybe"},
        {"from": "yesterday"},
        {"to": "2026-13-40"},
    ],
)
def test_bad_list_parameters_are_rejected_with_400(api: Api, params: dict[str, str]) -> None:
    response = api.get(STREAMS, **params)
    assert response.status_code == 400
    assert "error" in response.json()


def test_limit_defaults_to_50_and_offset_past_the_end_is_an_empty_last_page(
    neo: FakeNeo, api: Api
) -> None:
    neo.generate(80, T0 - DAY, T0, late_fraction=0.0)
    first = api.ok(STREAMS)
    assert (len(first["data"]), first["has_more"], first["total"]) == (50, True, 80)
    assert len(api.ok(STREAMS, limit=200)["data"]) == 80
    past = api.ok(STREAMS, offset=500)
    assert (past["data"], past["has_more"], past["total"]) == ([], False, 80)
    assert api.ok(STREAMS, unknown="ignored")["total"] == 80


def test_each_filter_selects_exactly_the_matching_streams(neo: FakeNeo, api: Api) -> None:
    rows = neo.generate(300, T0 - DAY, T0, late_fraction=0.0)
    sample = rows[17]
    for name in ("status", "model", "email", "task_id", "stream_id"):
        served = api.all_pages(STREAMS, **{name: sample[name]})
        expected = {r["stream_id"] for r in rows if r[name] == sample[name]}
        assert {r["stream_id"] for r in served} == expected, name
    for flag in (True, False):
        served = api.all_pages(STREAMS, is_byok=str(flag).lower())
        assert {r["stream_id"] for r in served} == {
            r["stream_id"] for r in rows if r["is_byok"] is flag
        }


def test_from_is_inclusive_and_to_is_inclusive_unless_configured(clock: ManualClock) -> None:
    hand_made = [row(f"s{i}", T0 - 10 + i) for i in range(5)]  # created T0-10 .. T0-6
    for to_inclusive, expected in ((True, {"s1", "s2", "s3"}), (False, {"s1", "s2"})):
        neo = FakeNeo(clock=clock, to_inclusive=to_inclusive)
        neo.add_rows(hand_made, visible_at=T0 - 1)
        with FakeNeoServer(neo) as server:
            api = Api(server.url)
            served = api.all_pages(STREAMS, **{"from": iso(T0 - 9), "to": iso(T0 - 7)})
            assert {r["stream_id"] for r in served} == expected
            # Offsets in the timestamp are understood too.
            shifted = api.all_pages(STREAMS, **{"from": "2026-11-18T13:06:31+02:00"})
            assert {r["stream_id"] for r in shifted} == {"s1", "s2", "s3", "s4"}


# --- auth ------------------------------------------------------------------------------------


def test_a_missing_or_unknown_token_is_401(server: FakeNeoServer) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-Api-Key": "nope"}):
        response = requests.get(server.url + STREAMS, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized"}


def test_the_token_is_accepted_as_bearer_or_x_api_key_and_never_logged(
    neo: FakeNeo, server: FakeNeoServer
) -> None:
    neo.generate(5, T0 - HOUR, T0, late_fraction=0.0)
    for headers in ({"Authorization": f"Bearer {ADMIN}"}, {"X-Api-Key": ADMIN}):
        response = requests.get(server.url + STREAMS, headers=headers, timeout=5)
        assert response.status_code == 200
        assert response.json()["total"] == 5
    requests.get(server.url + STREAMS, timeout=5)
    assert [(r.auth, r.status) for r in neo.requests_log] == [
        ("bearer", 200),
        ("x-api-key", 200),
        ("none", 401),
    ]
    assert ADMIN not in repr(neo.requests_log)


def test_a_member_token_is_403_on_usage_and_billing_but_reads_the_user(
    server: FakeNeoServer,
) -> None:
    headers = {"X-Api-Key": MEMBER}
    for path in (STREAMS, TASKS, SUMMARY, f"{TASKS}/abc", "/api/v1/billing/credits"):
        assert requests.get(server.url + path, headers=headers, timeout=5).status_code == 403
    user = requests.get(server.url + "/api/v1/user", headers=headers, timeout=5)
    assert user.status_code == 200
    assert user.json()["email"] == "member@example.com"


# --- visibility ------------------------------------------------------------------------------


def test_a_stream_is_served_only_once_its_execution_has_ended(
    neo: FakeNeo, api: Api, clock: ManualClock
) -> None:
    rows = neo.generate(200, T0 - HOUR, T0, late_fraction=1.0, max_late=2 * HOUR)
    seen_at_start = {r["stream_id"] for r in api.all_pages(STREAMS)}
    assert len(seen_at_start) < 200
    seen = seen_at_start
    for _ in range(4):
        clock.advance(HOUR / 2)
        now_seen = {r["stream_id"] for r in api.all_pages(STREAMS)}
        assert seen <= now_seen
        seen = now_seen
    assert seen == {r["stream_id"] for r in rows}
    for served in api.all_pages(STREAMS):  # none is shown before its execution ended
        created = datetime.fromisoformat(served["created_at"]).timestamp()
        assert created + served["total_execution_ms"] / 1000 <= clock()


def test_rows_not_picked_as_late_are_all_visible_at_the_end_of_their_span(
    neo: FakeNeo, api: Api, clock: ManualClock
) -> None:
    neo.generate(100, T0 - HOUR, T0, late_fraction=0.0)
    neo.generate(20, T0, T0 + 60, late_fraction=0.0)  # a span shorter than most streams
    assert api.ok(STREAMS)["total"] == 100
    clock.advance(60)
    assert api.ok(STREAMS)["total"] == 120


def test_rows_added_for_later_are_hidden_everywhere_until_then(
    neo: FakeNeo, api: Api, clock: ManualClock
) -> None:
    neo.add_rows([row("later", T0 - 60, neo_credits=1.5)], visible_at=T0 + 30)
    assert api.ok(STREAMS)["total"] == 0
    assert api.ok(TASKS)["total"] == 0
    assert api.ok(SUMMARY)["total_neo_credits"] == 0
    assert neo.truth().streams == {}
    clock.advance(30)
    assert [r["stream_id"] for r in api.ok(STREAMS)["data"]] == ["later"]
    assert api.ok(SUMMARY)["total_neo_credits"] == 1.5
    assert sum(neo.truth().streams.values()) == 1


# --- generated data -------------------------------------------------------------------------


def test_generated_rows_are_realistic_and_internally_consistent(neo: FakeNeo) -> None:
    rows = neo.generate(3000, T0 - 7 * DAY, T0)
    statuses: dict[str, int] = defaultdict(int)
    for r in rows:
        statuses[r["status"]] += 1
        assert ISO_MS.match(r["created_at"])
        assert r["stream_count"] == 1
        assert len(r["tool_call_history"]) == r["tool_calls"]
        assert [c["index"] for c in r["tool_call_history"]] == list(range(r["tool_calls"]))
        by_tool: dict[str, list[int]] = defaultdict(list)
        for c in r["tool_call_history"]:
            by_tool[c["tool_name"]].append(c["duration_ms"])
        assert r["tool_breakdown"] == {
            t: {"calls": len(d), "duration_ms": sum(d)} for t, d in by_tool.items()
        }
        assert r["tool_time_ms"] == sum(sum(d) for d in by_tool.values())
        assert sum(r["agent_breakdown"].values()) == r["agent_triggers"] > 0
        assert r["llm_time_ms"] + r["tool_time_ms"] <= r["total_execution_ms"]
        stamps = [c["timestamp"] for c in r["tool_call_history"]]
        assert stamps == sorted(stamps)
        assert (r["error_message"] is not None) == (r["status"] in ("error", "failed"))
        if r["is_byok"]:
            assert r["neo_credits"] == 0 and r["llm_cost"] > 0
            assert r["neo_cost"] == round(r["llm_cost"] * 0.2, 6)
        else:
            assert 0.05 <= r["neo_credits"] <= 3.0 and r["llm_cost"] == r["neo_cost"] == 0
    share = {s: n / len(rows) for s, n in statuses.items()}
    assert 0.75 < share["completed"] < 0.85 and set(share) == {
        "completed",
        "error",
        "failed",
        "aborted",
        "blocked",
    }
    assert 0.2 < sum(r["is_byok"] for r in rows) / len(rows) < 0.4
    assert 0.02 < sum(r["avg_step_latency_ms"] is None for r in rows) / len(rows) < 0.08
    assert len({r["model"] for r in rows}) == 5
    assert len({r["email"] for r in rows}) == 8
    assert len({c["tool_name"] for r in rows for c in r["tool_call_history"]}) == 10
    per_task: dict[str, int] = defaultdict(int)
    for r in rows:
        per_task[r["task_id"]] += 1
    assert set(per_task.values()) == {1, 2, 3, 4}


def test_the_same_seed_gives_the_same_rows(clock: ManualClock) -> None:
    def rows(seed: int) -> list[dict[str, Any]]:
        neo = FakeNeo(seed=seed, clock=clock)
        neo.generate(50, T0 - DAY, T0)
        return neo.generate(50, T0 - HOUR, T0) + neo.spike(3)

    assert rows(9) == rows(9)
    assert rows(9) != rows(10)


def test_live_traffic_depends_only_on_the_seed_and_the_clock() -> None:
    often, once = ManualClock(T0), ManualClock(T0)
    fakes = [FakeNeo(seed=4, clock=c) for c in (often, once)]
    for fake in fakes:
        fake.start_live(rate_per_hour=600, history=HOUR, history_count=100)
    start = sum(fakes[0].truth().streams.values())
    for _ in range(40):  # one asked every minute, the other only at the end
        often.advance(60)
        fakes[0].handle("GET", STREAMS, {}, ADMIN)
    once.advance(40 * 60)
    pages = [
        fake.handle("GET", STREAMS, {"limit": "200", "offset": str(o)}, ADMIN)[1]["data"]
        for fake in fakes
        for o in range(0, 2000, 200)
    ]
    assert pages[:10] == pages[10:]
    assert fakes[0].truth() == fakes[1].truth()
    # About 400 new streams in 40 minutes, and the half-hour burst (T0+1400) among them.
    assert 300 < sum(fakes[0].truth().streams.values()) - start < 550
    burst = [r for page in pages[:10] for r in page if r["neo_credits"] > 3.0]  # 3.0 is the cap
    assert burst
    assert all(iso(T0 + 1400) <= r["created_at"] < iso(T0 + 1460) for r in burst)


def test_a_spike_adds_expensive_streams_visible_at_once(neo: FakeNeo, api: Api) -> None:
    normal = neo.generate(200, T0 - DAY, T0 - HOUR, late_fraction=0.0)
    spiked = neo.spike(30, multiplier=50.0)
    assert all(r["created_at"] == iso(T0) for r in spiked)
    served = {r["stream_id"] for r in api.all_pages(STREAMS, **{"from": iso(T0)})}
    assert served == {r["stream_id"] for r in spiked}

    def mean_cost(rows: list[dict[str, Any]]) -> float:
        return math.fsum(r["neo_credits"] + r["llm_cost"] for r in rows) / len(rows)

    assert mean_cost(spiked) > 10 * mean_cost(normal)


def test_replace_row_changes_the_served_row_and_the_truth(neo: FakeNeo, api: Api) -> None:
    rows = neo.generate(10, T0 - HOUR, T0, late_fraction=0.0)
    target = next(r for r in rows if not r["is_byok"])
    before = sum(neo.truth().credits.values())
    neo.replace_row(target["stream_id"], neo_credits=999.0)
    served = api.ok(STREAMS, stream_id=target["stream_id"])["data"]
    assert served == [{**target, "neo_credits": 999.0}]
    after = sum(neo.truth().credits.values())
    assert after == pytest.approx(before - target["neo_credits"] + 999.0)
    with pytest.raises(KeyError):
        neo.replace_row("no-such-stream", neo_credits=1.0)


# --- tasks, summary, user, credits ----------------------------------------------------------


def test_a_task_is_the_sum_of_its_streams(neo: FakeNeo, api: Api) -> None:
    neo.generate(300, T0 - DAY, T0, late_fraction=0.0)
    streams = api.all_pages(STREAMS, sort="created_at")
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in sorted(streams, key=lambda s: s["created_at"]):
        by_task[s["task_id"]].append(s)
    tasks = api.all_pages(TASKS)
    assert {t["task_id"] for t in tasks} == set(by_task)
    for task in tasks:
        parts = by_task[task["task_id"]]
        assert "stream_id" not in task
        assert task["stream_count"] == len(parts)
        assert task["created_at"] == parts[0]["created_at"]
        assert task["status"] == parts[-1]["status"]
        assert task["model"] == parts[0]["model"]
        for name in ("step_count", "tool_calls", "agent_triggers", "total_execution_ms"):
            assert task[name] == sum(p[name] for p in parts), name
        for name in ("neo_credits", "llm_cost", "neo_cost"):
            assert task[name] == pytest.approx(math.fsum(p[name] for p in parts)), name
        assert len(task["tool_call_history"]) == task["tool_calls"]
        assert sum(v["calls"] for v in task["tool_breakdown"].values()) == task["tool_calls"]
        assert sum(task["agent_breakdown"].values()) == task["agent_triggers"]
    one = tasks[3]
    assert api.ok(f"{TASKS}/{one['task_id']}") == one
    assert api.get(f"{TASKS}/no-such-task").status_code == 404


def test_task_filters_use_the_latest_status_and_search_matches_id_or_email(
    neo: FakeNeo, api: Api
) -> None:
    neo.generate(300, T0 - DAY, T0, late_fraction=0.0)
    tasks = api.all_pages(TASKS)
    for status in ("completed", "error"):
        assert api.all_pages(TASKS, status=status) == [t for t in tasks if t["status"] == status]
    assert api.all_pages(TASKS, search="ALICE@") == [
        t for t in tasks if t["email"] == "alice@example.com"
    ]
    prefix = tasks[0]["task_id"][:13]
    assert api.all_pages(TASKS, search=prefix) == [
        t for t in tasks if t["task_id"].startswith(prefix)
    ]


def test_summary_totals_equal_the_streams(neo: FakeNeo, api: Api) -> None:
    neo.generate(400, T0 - 3 * DAY, T0, late_fraction=0.0)
    span = {"from": iso(T0 - 2 * DAY), "to": iso(T0)}
    streams = api.all_pages(STREAMS, **span)
    summary = api.ok(SUMMARY, group_by="day", **span)
    task_ids = {s["task_id"] for s in streams}
    assert summary["total_neo_credits"] == pytest.approx(
        math.fsum(s["neo_credits"] for s in streams)
    )
    assert summary["total_tasks"] == len(task_ids) == sum(summary["by_status"].values())
    for name, field in (
        ("total_steps", "step_count"),
        ("total_tool_calls", "tool_calls"),
        ("total_agent_triggers", "agent_triggers"),
        ("total_execution_ms", "total_execution_ms"),
    ):
        assert summary[name] == sum(s[field] for s in streams), name
    byok = [s for s in streams if s["is_byok"]]
    assert summary["byok"]["total_streams"] == len(byok)
    assert summary["byok"]["total_llm_cost"] == pytest.approx(sum(s["llm_cost"] for s in byok))
    assert summary["byok"]["total_neo_cost"] == pytest.approx(sum(s["neo_cost"] for s in byok))
    for model, usage in summary["by_model"].items():
        mine = [s for s in streams if s["model"] == model]
        assert usage["neo_credits"] == pytest.approx(sum(s["neo_credits"] for s in mine))
        assert usage["tasks"] == len({s["task_id"] for s in mine})
    by_email = [e["neo_credits"] for e in summary["by_email"]]
    assert by_email == sorted(by_email, reverse=True)
    assert sum(p["tasks"] for p in summary["by_period"]) == summary["total_tasks"]
    assert math.fsum(p["neo_credits"] for p in summary["by_period"]) == pytest.approx(
        summary["total_neo_credits"]
    )
    assert [p["date"] for p in summary["by_period"]] == ["2026-11-16", "2026-11-17", "2026-11-18"]
    assert "by_period" not in api.ok(SUMMARY)
    assert api.get(SUMMARY, group_by="year").status_code == 400


def test_user_and_billing_credits_agree_with_the_streams(neo: FakeNeo, api: Api) -> None:
    neo.generate(300, T0 - 30 * DAY, T0, late_fraction=0.0)
    since_reset = api.all_pages(STREAMS, **{"from": "2026-11-01T00:00:00Z"})
    used = math.fsum(s["neo_credits"] for s in since_reset)
    credits = api.ok("/api/v1/billing/credits")
    assert credits["used_credits"] == pytest.approx(used)
    assert credits["available_credits"] == pytest.approx(credits["issued_credits"] - used)
    assert credits["is_expired"] is False
    summary = api.ok(SUMMARY)
    assert summary["total_available_neo_credits"] == credits["available_credits"]
    assert summary["last_credit_reset"] == "2026-11-01T00:00:00.000Z"
    assert summary["neo_credits_expires_at"] == credits["expires_at"] == "2026-12-01T00:00:00.000Z"
    assert summary["total_neo_credits_post_reset"] == pytest.approx(used)
    user = api.ok("/api/v1/user")
    byok_spend = math.fsum(s["llm_cost"] + s["neo_cost"] for s in since_reset if s["is_byok"])
    assert user["neo_cost_rate"] == 0.2
    assert user["cap"]["used"] == pytest.approx(byok_spend)
    assert user["cap"]["remaining"] == pytest.approx(500.0 - byok_spend)
    with FakeNeoServer(FakeNeo(cap=None)) as uncapped:
        assert Api(uncapped.url).ok("/api/v1/user")["cap"] is None


# --- ground truth ----------------------------------------------------------------------------


def test_truth_equals_a_hand_computed_sum(neo: FakeNeo) -> None:
    a = row(
        "a",
        T0 - 50,
        neo_credits=0.5,
        step_count=3,
        tool_calls=2,
        agent_triggers=1,
        llm_time_ms=1500,
        tool_time_ms=700,
        total_execution_ms=2500,
        avg_step_latency_ms=833,
        agent_breakdown={"planner": 1},
        tool_breakdown={"httpx": {"calls": 2, "duration_ms": 700}},
        tool_call_history=[call("httpx", 300, 0), call("httpx", 400, 1)],
    )
    b = row(
        "b",
        T0 - 40,
        neo_credits=0.25,
        step_count=2,
        tool_calls=1,
        agent_triggers=2,
        llm_time_ms=1000,
        tool_time_ms=250,
        total_execution_ms=1500,
        agent_breakdown={"planner": 1, "recon": 1},
        tool_breakdown={"nuclei": {"calls": 1, "duration_ms": 250}},
        tool_call_history=[call("nuclei", 250, 0)],
    )
    c = row(
        "c",
        T0 - 30,
        model="m2",
        status="error",
        is_byok=True,
        llm_cost=0.1,
        neo_cost=0.02,
        step_count=1,
        agent_triggers=1,
        llm_time_ms=500,
        total_execution_ms=600,
        avg_step_latency_ms=600,
        agent_breakdown={"reporter": 1},
        error_message="boom",
    )
    neo.add_rows([a, b, c], visible_at=T0 - 10)
    neo.add_rows([row("early", T0 - 500, neo_credits=7.0)], visible_at=T0 - 10)
    # Money that is negative or not a number is absent: the rows count, with no credits.
    odd_money = [
        row("negative", T0 - 20, neo_credits=-1.0),
        row("text", T0 - 20, neo_credits="lots"),
    ]
    # Rows an exporter cannot count: no stream_id, not an object.
    neo.add_rows([*odd_money, row("", T0 - 20, neo_credits=1.0), "not a row"], visible_at=T0 - 10)
    neo.add_rows([row("excluded", T0 - 20, neo_credits=3.0)], visible_at=T0 - 10, in_truth=False)
    neo.add_rows([row("not-yet", T0 - 20, neo_credits=5.0)], visible_at=T0 + 10)

    truth = neo.truth(T0 - 100, T0)
    m1, m2 = ("m1", "completed", "false"), ("m2", "error", "true")
    assert truth.streams == {m1: 4, m2: 1}
    assert truth.credits == pytest.approx({m1: 0.75, m2: 0.0})
    assert truth.llm_cost == pytest.approx({m1: 0.0, m2: 0.1})
    assert truth.neo_cost == pytest.approx({m1: 0.0, m2: 0.02})
    assert truth.steps == {m1: 5, m2: 1}
    assert truth.tool_calls == {m1: 3, m2: 0}
    assert truth.agent_triggers == {m1: 3, m2: 1}
    assert truth.llm_time_seconds == pytest.approx({m1: 2.5, m2: 0.5})
    assert truth.tool_time_seconds == pytest.approx({m1: 0.95, m2: 0.0})
    assert truth.execution_time_seconds == pytest.approx({m1: 4.0, m2: 0.6})
    assert truth.agent_triggers_by_agent == {"planner": 2, "recon": 1, "reporter": 1}
    assert truth.tool_calls_by_tool == {"httpx": 2, "nuclei": 1}
    assert truth.tool_time_by_tool_seconds == pytest.approx({"httpx": 0.7, "nuclei": 0.25})
    assert truth.tool_call_history == {"httpx": (2, pytest.approx(0.7)), "nuclei": (1, 0.25)}
    assert truth.stream_duration == {"m1": (4, 4.0), "m2": (1, 0.6)}
    assert truth.step_latency == {"m1": (1, 0.833), "m2": (1, 0.6)}
    # Without a span, the early row counts too; the others never do.
    assert neo.truth().streams == {m1: 5, m2: 1}
    assert neo.truth(now=T0 + 10).streams == {m1: 6, m2: 1}


def test_truth_of_generated_rows_equals_the_sums_of_the_served_rows(neo: FakeNeo, api: Api) -> None:
    neo.generate(500, T0 - 2 * DAY, T0)
    span = (T0 - DAY, T0)
    served = api.all_pages(STREAMS, **{"from": iso(span[0]), "to": iso(span[1])})
    truth = neo.truth(*span)
    credits: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    durations: dict[str, list[float]] = defaultdict(list)
    for s in served:
        credits[(s["model"], s["status"], str(s["is_byok"]).lower())].append(s["neo_credits"])
        durations[s["model"]].append(s["total_execution_ms"] / 1000)
    assert truth.streams == {k: len(v) for k, v in credits.items()}
    assert truth.credits == {k: math.fsum(v) for k, v in credits.items()}
    assert truth.stream_duration == {k: (len(v), math.fsum(v)) for k, v in durations.items()}
    calls = sum(len(s["tool_call_history"]) for s in served)
    assert sum(n for n, _ in truth.tool_call_history.values()) == calls


# --- faults ------------------------------------------------------------------------------------


def test_a_status_fault_answers_that_status_with_retry_after_then_recovers(
    neo: FakeNeo, api: Api
) -> None:
    neo.inject("status", status=429, retry_after=7, count=2)
    for _ in range(2):
        response = api.get(STREAMS)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert "error" in response.json()
    assert api.get(STREAMS).status_code == 200
    assert [r.status for r in neo.requests_log] == [429, 429, 200]


def test_a_reset_fault_closes_the_connection_without_a_response(neo: FakeNeo, api: Api) -> None:
    neo.inject("reset")
    with pytest.raises(requests.ConnectionError):
        api.get(STREAMS)
    assert api.get(STREAMS).status_code == 200
    assert [r.status for r in neo.requests_log] == [0, 200]


def test_a_timeout_fault_answers_after_the_client_gave_up(neo: FakeNeo, api: Api) -> None:
    neo.inject("timeout", delay=1.0)
    with pytest.raises(requests.Timeout):
        api.get(STREAMS, timeout=0.2)
    assert api.get(STREAMS).status_code == 200


def test_a_slow_body_fault_spreads_the_body_over_the_delay(neo: FakeNeo, api: Api) -> None:
    neo.generate(50, T0 - HOUR, T0, late_fraction=0.0)
    neo.inject("slow_body", delay=0.5)
    started = time.monotonic()
    response = api.get(STREAMS)
    assert time.monotonic() - started >= 0.45
    assert response.json()["total"] == 50


def test_a_truncated_fault_sends_less_than_it_announced(neo: FakeNeo, api: Api) -> None:
    neo.generate(20, T0 - HOUR, T0, late_fraction=0.0)
    neo.inject("truncated")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        api.get(STREAMS)
    assert api.get(STREAMS).status_code == 200


def test_a_non_json_fault_answers_200_with_html(neo: FakeNeo, api: Api) -> None:
    neo.inject("non_json")
    response = api.get(STREAMS)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


def test_a_bad_shape_fault_answers_json_of_the_wrong_shape(neo: FakeNeo, api: Api) -> None:
    neo.inject("bad_shape")
    assert api.ok(STREAMS) == {"data": "oops"}


def test_an_endless_fault_keeps_has_more_true_and_repeats_rows(neo: FakeNeo, api: Api) -> None:
    neo.generate(30, T0 - HOUR, T0, late_fraction=0.0)
    neo.inject("endless", count=5)
    ids: list[str] = []
    for offset in range(0, 50, 10):
        page = api.ok(STREAMS, limit=10, offset=offset)
        assert page["has_more"] is True
        ids.extend(r["stream_id"] for r in page["data"])
    assert len(ids) == 50 and len(set(ids)) == 30
    assert api.ok(STREAMS, limit=10, offset=50)["has_more"] is False


def test_a_wrong_total_fault_reports_a_total_far_off(neo: FakeNeo, api: Api) -> None:
    neo.generate(30, T0 - HOUR, T0, late_fraction=0.0)
    neo.inject("wrong_total")
    page = api.ok(STREAMS, limit=200)
    assert len(page["data"]) == 30 and page["total"] >= 1000
    assert api.ok(STREAMS)["total"] == 30


def test_faults_match_by_path_prefix_and_are_used_in_order(neo: FakeNeo, api: Api) -> None:
    neo.inject("status", status=500, path=TASKS)
    neo.inject("status", status=502, path="/api/v1/usage")
    neo.inject("status", status=503, path="/api/v1/usage")
    assert api.get(STREAMS).status_code == 502  # the tasks fault does not match streams
    assert api.get(f"{TASKS}/abc").status_code == 500
    assert api.get(SUMMARY).status_code == 503
    assert api.get(STREAMS).status_code == 200
    neo.inject("status", count=3)
    neo.clear_faults()
    assert api.get(STREAMS).status_code == 200
    with pytest.raises(ValueError):
        neo.inject("gremlins")


# --- control endpoints, concurrency, the process ----------------------------------------------


def test_control_endpoints_drive_the_fake_from_another_process(
    neo: FakeNeo, server: FakeNeoServer, api: Api
) -> None:
    control = requests.Session()
    base = server.url + "/_fake"
    neo.generate(40, T0 - HOUR, T0, late_fraction=0.0)
    assert control.post(f"{base}/faults", json={"status": 503, "count": 1}).ok
    assert api.get(STREAMS).status_code == 503
    assert control.post(f"{base}/faults", json={"kind": "bad_shape", "path": TASKS}).ok
    assert api.ok(TASKS) == {"data": "oops"}
    assert control.post(f"{base}/faults", json={"kind": "nope"}).status_code == 400
    assert control.post(f"{base}/faults", json={"kind": "status", "colour": 1}).status_code == 400

    assert control.post(f"{base}/rows", json=[row("posted", T0 - 5, neo_credits=2.0)]).ok
    assert api.ok(STREAMS, stream_id="posted")["total"] == 1
    spike = control.post(f"{base}/spike", json={"count": 5, "multiplier": 30}).json()
    assert spike["added"] == 5

    truth = control.get(f"{base}/truth", params={"from": iso(T0 - HOUR), "to": iso(T0)}).json()
    assert truth == neo.truth(T0 - HOUR, T0).to_json()
    assert sum(n for *_, n in truth["streams"]) == 40 + 1 + 5
    logged = control.get(f"{base}/requests").json()
    assert [r["status"] for r in logged] == [503, 200, 200]
    assert all(r["auth"] == "bearer" for r in logged)
    assert ADMIN not in str(logged)
    assert control.delete(f"{base}/requests").ok
    assert control.get(f"{base}/requests").json() == []
    assert control.get(f"{base}/nothing").status_code == 404


def test_many_concurrent_clients_and_hangups_leave_no_tracebacks(
    neo: FakeNeo,
    server: FakeNeoServer,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    neo.generate(400, T0 - DAY, T0, late_fraction=0.0)
    neo.inject("timeout", delay=0.5, count=4, path=SUMMARY)  # answered after the client left
    neo.inject("slow_body", delay=0.5, count=4, path="/api/v1/user")  # the client resets midway
    host, port = server.url.removeprefix("http://").split(":")
    totals: list[int] = []

    def reader() -> None:
        with requests.Session() as session:
            session.headers["X-Api-Key"] = ADMIN
            for i in range(10):
                params = {"limit": 50, "offset": i * 7}
                response = session.get(server.url + STREAMS, params=params, timeout=10)
                totals.append(response.json()["total"])

    def hang_up(request: str, read: bool, reset: bool) -> None:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(request.encode())
            if read:
                raw.recv(100)
            if reset:  # close with a TCP reset rather than a FIN
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def quitter() -> None:
        with pytest.raises(requests.Timeout):
            requests.get(server.url + SUMMARY, headers={"X-Api-Key": ADMIN}, timeout=0.2)
        full = f"GET {{}} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}\r\n\r\n"
        hang_up(full.format(STREAMS), read=False, reset=False)
        hang_up("GET /api", read=False, reset=True)
        hang_up(full.format(STREAMS), read=True, reset=True)  # while kept alive
        hang_up(full.format("/api/v1/user"), read=True, reset=True)  # mid-body

    threads = [threading.Thread(target=reader) for _ in range(12)]
    threads += [threading.Thread(target=quitter) for _ in range(4)]
    with caplog.at_level(logging.ERROR, logger="tests.fakeneo"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        time.sleep(0.7)  # the late answers are written to closed connections
    assert totals == [400] * 12 * 10
    assert caplog.records == []
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


ALL_SHARES = {"tie_seconds": True, "odd_fields": 0.034, "revise": 0.1, "hide": 0.02}


@pytest.mark.parametrize("switches", [{}, ALL_SHARES], ids=["default", "switches"])
def test_paging_20000_streams_costs_the_fake_little(
    clock: ManualClock, switches: dict[str, Any]
) -> None:
    neo = FakeNeo(seed=1, clock=clock, **switches)
    assert neo.populate(20_000, T0 - 7 * DAY, T0, late_fraction=0.0) == 20_000
    # CPU time of this process: other processes on the machine (a parallel test run) do not
    # count against it, as they would against the wall clock.
    started = time.process_time()
    seen = 0
    for offset in range(0, 20_000, 200):
        status, page = neo.handle(
            "GET", STREAMS, {"limit": "200", "offset": str(offset), "to": iso(T0)}, ADMIN
        )
        assert status == 200
        seen += len(page["data"])
    elapsed = time.process_time() - started
    assert seen == sum(neo.truth(listed_only=True).streams.values()) > 19_000
    assert elapsed < 5.0  # about 1 s of CPU; quadratic paging would take minutes


FAKE_ARGS = ("--seed", "2", "--streams", "60", "--history", "2h", "--late-fraction", "0")


@pytest.mark.e2e
def test_python_m_tests_fakeneo_prints_its_url_and_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeneo", "--listen", "127.0.0.1:0", *FAKE_ARGS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=20)
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        response = requests.get(
            match[1] + STREAMS, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5
        )
        assert response.status_code == 200
        assert response.json()["total"] == 60
        truth = requests.get(match[1] + "/_fake/truth", timeout=5).json()
        assert sum(n for *_, n in truth["streams"]) == 60
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    _, err = proc.communicate(timeout=5)
    assert code == 0
    assert "Traceback" not in err


# --- switches for what the docs leave open ----------------------------------------------------

WHOLE_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def walk(
    api: Api, path: str, /, step: int | None = None, **params: Any
) -> tuple[list[dict[str, Any]], set[int]]:
    """Every page until has_more is false, and the totals they gave. The next offset adds
    `step` (naive paging by limit) or, by default, the rows the page held."""
    params.setdefault("limit", 200)
    rows: list[dict[str, Any]] = []
    totals: set[int] = set()
    offset = 0
    while True:
        page = api.ok(path, offset=offset, **params)
        rows.extend(page["data"])
        totals.add(page["total"])
        if not page["has_more"]:
            return rows, totals
        offset += len(page["data"]) if step is None else step
        assert offset < 100_000, "paging never ends"


def measured(value: Any) -> float:
    """A served count, timing or amount as the repair rules read it (0 when not measured)."""
    if value is None or isinstance(value, bool):
        return 0.0
    number = float(value)
    return number if number >= 0 else 0.0


@pytest.mark.parametrize("path", [STREAMS, TASKS])
def test_a_page_cap_serves_at_most_n_rows_whatever_limit_asks(
    clock: ManualClock, path: str
) -> None:
    neo = FakeNeo(seed=5, clock=clock, page_cap=7)
    neo.generate(100, T0 - DAY, T0, late_fraction=0.0)
    key = "stream_id" if path == STREAMS else "task_id"
    with FakeNeoServer(neo) as server:
        api = Api(server.url)
        first = api.ok(path, limit=200)
        total = first["total"]
        assert (len(first["data"]), first["has_more"]) == (7, True)
        assert len(api.ok(path, limit=3)["data"]) == 3  # a smaller limit is still obeyed
        # has_more is true while rows remain past offset + the rows served.
        assert api.ok(path, limit=200, offset=total - 8)["has_more"] is True
        last = api.ok(path, limit=200, offset=total - 7)
        assert (len(last["data"]), last["has_more"], last["total"]) == (7, False, total)
        rows, totals = walk(api, path)  # the next offset adds the rows that came back
        assert totals == {total}
        assert len(rows) == len({r[key] for r in rows}) == total
        naive, _ = walk(api, path, step=20, limit=20)  # the next offset adds limit
        assert len({r[key] for r in naive}) == len(naive) < total
    assert sum(neo.truth().streams.values()) == 100


def test_odd_fields_come_in_every_odd_form_and_keep_the_money(clock: ManualClock) -> None:
    odd = FakeNeo(seed=5, clock=clock, odd_fields=0.25)
    plain = FakeNeo(seed=5, clock=clock)
    odd.generate(400, T0 - DAY, T0, late_fraction=0.0)
    expected = {r["stream_id"]: r for r in plain.generate(400, T0 - DAY, T0, late_fraction=0.0)}
    with FakeNeoServer(odd) as server:
        api = Api(server.url)
        served = api.all_pages(STREAMS)
        tasks = api.all_pages(TASKS)
    kinds: Counter[str] = Counter()
    odd_rows = 0
    for r in served:
        want = expected[r["stream_id"]]
        for name in ("neo_credits", "llm_cost", "neo_cost"):  # money keeps its value
            assert float(r[name]) == want[name]
            assert isinstance(r[name], float) or r[name] == repr(want[name])
        if r == want:
            continue
        odd_rows += 1
        for name in ("model", "status", "step_count", "tool_calls", "agent_triggers", "is_byok"):
            if r[name] is None:
                kinds[f"{name}_null"] += 1
        if isinstance(r["is_byok"], str):
            kinds["is_byok_string"] += 1
            assert r["is_byok"] == str(want["is_byok"]).lower()
        if isinstance(r["neo_credits"], str):
            kinds["numeric_strings"] += 1
            assert r["llm_time_ms"] in (str(want["llm_time_ms"]), -1)
        for name, kind in (
            ("avg_step_latency_ms", "avg_step_latency_unmeasured"),
            ("total_execution_ms", "total_execution_unmeasured"),
            ("llm_time_ms", "llm_time_unmeasured"),
            ("tool_time_ms", "tool_time_unmeasured"),
        ):
            if r[name] == -1:
                kinds[kind] += 1
        if any(set(usage) == {"count", "time_ms"} for usage in r["tool_breakdown"].values()):
            kinds["tool_breakdown_keys"] += 1
        if "tool_call_history" not in r:
            kinds["no_tool_call_history"] += 1
        assert (r["stream_id"], r["created_at"], r["task_id"]) == (
            want["stream_id"],
            want["created_at"],
            want["task_id"],
        )
    assert set(kinds) == set(ODD_KINDS), kinds
    assert 0.15 < odd_rows / 400 < 0.35

    # The truth counts every row, with the money of the same seed without the switch...
    truth, plain_truth = odd.truth(), plain.truth()
    assert sum(truth.streams.values()) == 400
    for name in ("credits", "llm_cost", "neo_cost"):
        assert math.fsum(getattr(truth, name).values()) == pytest.approx(
            math.fsum(getattr(plain_truth, name).values()), rel=1e-12
        )
    assert {"unknown"} <= {k[0] for k in truth.streams} & {k[1] for k in truth.streams}
    assert {"true", "false", "unknown"} == {k[2] for k in truth.streams}
    # ... and each count or timing as the repair rules read what was served.
    for name, field, divisor in (
        ("steps", "step_count", 1),
        ("tool_calls", "tool_calls", 1),
        ("agent_triggers", "agent_triggers", 1),
        ("llm_time_seconds", "llm_time_ms", 1000),
        ("tool_time_seconds", "tool_time_ms", 1000),
        ("execution_time_seconds", "total_execution_ms", 1000),
    ):
        got = math.fsum(getattr(truth, name).values())
        assert got == pytest.approx(math.fsum(measured(r[field]) for r in served) / divisor)
        assert got < math.fsum(getattr(plain_truth, name).values()), name
    latency = [
        (float(r["avg_step_latency_ms"]), float(r["step_count"]))
        for r in served
        if measured(r["avg_step_latency_ms"]) or r["avg_step_latency_ms"] in (0, "0")
        if r["step_count"] is not None
    ]
    assert math.fsum(truth.step_latency_steps.values()) == math.fsum(s for _, s in latency)
    assert math.fsum(truth.step_latency_seconds.values()) == pytest.approx(
        math.fsum(a * s / 1000 for a, s in latency)
    )
    per_tool = 0
    for r in served:
        if r.get("tool_call_history"):
            per_tool += len(r["tool_call_history"])
        else:
            per_tool += sum(u.get("calls", 0) for u in r["tool_breakdown"].values())
    assert sum(truth.tool_calls_by_tool.values()) == per_tool

    # Task rows carry the oddities of their streams; their sums read strings as numbers.
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in sorted(served, key=lambda s: s["created_at"]):
        by_task[s["task_id"]].append(s)
    for task in tasks:
        parts = by_task[task["task_id"]]
        assert (task["model"], task["is_byok"]) == (parts[0]["model"], parts[0]["is_byok"])
        assert task["status"] == parts[-1]["status"]
        for name in ("neo_credits", "step_count", "total_execution_ms"):
            assert float(task[name]) == pytest.approx(math.fsum(measured(p[name]) for p in parts))
            assert isinstance(task[name], str) == any(isinstance(p[name], str) for p in parts)


def test_the_truth_follows_the_repair_rules(neo: FakeNeo) -> None:
    a = row(
        "a",
        T0 - 50,
        model=None,
        status="COMPLETED",
        is_byok="true",
        neo_credits="0.5",
        step_count="3",
        tool_calls=None,
        agent_triggers=1,
        llm_time_ms=-1,
        tool_time_ms="700",
        total_execution_ms=2500,
        avg_step_latency_ms="100",
        agent_breakdown={"planner": 1, "recon": -1},
        # History wins over a breakdown whose inner keys are not the guessed ones.
        tool_breakdown={"httpx": {"count": 2, "time_ms": 700}},
        tool_call_history=[call("httpx", 300, 0), call("httpx", 400, 1)],
    )
    b = row(
        "b",
        T0 - 40,
        status=None,
        is_byok=None,
        llm_cost=0.25,
        neo_cost="0.05",
        step_count=None,
        tool_calls=1,
        agent_triggers="2",
        avg_step_latency_ms=200,
        total_execution_ms=-1,
        agent_breakdown={"planner": "2"},
        # No history: the breakdown entries with calls and duration_ms count, the other not.
        tool_breakdown={
            "nuclei": {"calls": 1, "duration_ms": 250},
            "dnsx": {"count": 1, "time_ms": 9},
        },
        tool_call_history=[],
    )
    c = {"stream_id": "c", "created_at": iso(T0 - 30), "neo_credits": 1.0}  # only what counts
    # Money that is not a number or negative is absent for that field: the rows count.
    odd_money = [row("e", T0 - 30, neo_credits="lots"), row("f", T0 - 30, llm_cost=-0.5)]
    uncountable = [
        {"stream_id": "d", "created_at": "yesterday", "neo_credits": 5.0},
        {"created_at": iso(T0 - 30), "neo_credits": 5.0},
    ]
    neo.add_rows([a, b, c, *odd_money, *uncountable], visible_at=T0 - 10)
    truth = neo.truth(T0 - 100, T0)
    ka, kb, kc, kd = (
        ("unknown", "completed", "true"),
        ("m1", "unknown", "unknown"),
        ("unknown", "unknown", "unknown"),
        ("m1", "completed", "false"),
    )
    assert truth.streams == {ka: 1, kb: 1, kc: 1, kd: 2}
    assert truth.credits == {ka: 0.5, kb: 0.0, kc: 1.0, kd: 0.0}
    assert truth.llm_cost == {ka: 0.0, kb: 0.25, kc: 0.0, kd: 0.0}
    assert truth.neo_cost == {ka: 0.0, kb: 0.05, kc: 0.0, kd: 0.0}
    assert truth.steps == {ka: 3, kb: 0, kc: 0, kd: 0}
    assert truth.tool_calls == {ka: 0, kb: 1, kc: 0, kd: 0}
    assert truth.agent_triggers == {ka: 1, kb: 2, kc: 0, kd: 0}
    assert truth.llm_time_seconds == {ka: 0.0, kb: 0.0, kc: 0.0, kd: 0.0}
    assert truth.tool_time_seconds == {ka: 0.7, kb: 0.0, kc: 0.0, kd: 0.0}
    assert truth.execution_time_seconds == {ka: 2.5, kb: 0.0, kc: 0.0, kd: 0.0}
    assert truth.step_latency_seconds == {ka: pytest.approx(0.3), kb: 0.0, kc: 0.0, kd: 0.0}
    assert truth.step_latency_steps == {ka: 3, kb: 0, kc: 0, kd: 0}
    assert truth.agent_triggers_by_agent == {"planner": 3}
    assert truth.tool_calls_by_tool == {"httpx": 2, "nuclei": 1}
    assert truth.tool_time_by_tool_seconds == {"httpx": 0.7, "nuclei": 0.25}
    assert truth.tool_call_history == {"httpx": (2, pytest.approx(0.7))}
    assert truth.stream_duration == {"unknown": (1, 2.5), "m1": (2, 0.0)}
    assert truth.step_latency == {"unknown": (1, 0.1), "m1": (1, 0.2)}
    as_json = truth.to_json()
    assert ["unknown", "completed", "true", pytest.approx(0.3)] in as_json["step_latency_seconds"]
    assert ["unknown", "completed", "true", 3] in as_json["step_latency_steps"]
    assert neo.truth(T0 - 100, T0 - 60).to_json()["step_latency_steps"] == []


def test_a_revised_stream_is_served_lower_first_then_final_after_revise_after(
    clock: ManualClock,
) -> None:
    after = 2 * HOUR
    neo = FakeNeo(seed=5, clock=clock, revise=0.4, revise_after=after)
    plain = FakeNeo(seed=5, clock=clock)
    neo.generate(150, T0 - HOUR, T0, late_fraction=0.0)
    plain.generate(150, T0 - HOUR, T0, late_fraction=0.0)
    with FakeNeoServer(neo) as server:
        api = Api(server.url)
        first = {r["stream_id"]: r for r in api.all_pages(STREAMS)}
        first_tasks = api.all_pages(TASKS)
        first_summary = api.ok(SUMMARY)
        truth_first = neo.truth()
        clock.advance(after)
        final = {r["stream_id"]: r for r in api.all_pages(STREAMS)}
        final_tasks = api.all_pages(TASKS)
        final_summary = api.ok(SUMMARY)
    revised = [i for i in first if first[i] != final[i]]
    assert 0.3 < len(revised) / 150 < 0.5
    for stream_id in revised:
        before, now = first[stream_id], final[stream_id]
        for name in ("stream_id", "task_id", "created_at", "model", "status", "is_byok"):
            assert before[name] == now[name], name
        assert now["neo_credits"] + now["llm_cost"] > before["neo_credits"] + before["llm_cost"]
        assert now["neo_cost"] >= before["neo_cost"]
        assert now["step_count"] > before["step_count"]
        assert now["tool_calls"] == before["tool_calls"] + 1
        assert now["tool_call_history"][:-1] == before["tool_call_history"]
        assert now["tool_time_ms"] == (
            before["tool_time_ms"] + now["tool_call_history"][-1]["duration_ms"]
        )
        for name in ("llm_time_ms", "total_execution_ms", "avg_step_latency_ms"):
            assert before[name] == now[name], name
    # The truth follows the version served: first the lower one, then the final one, which is
    # what the same seed has without the switch.
    assert math.fsum(truth_first.credits.values()) == pytest.approx(
        math.fsum(r["neo_credits"] for r in first.values())
    )
    assert truth_first == neo.truth(now=T0)
    assert neo.truth() == plain.truth()
    assert math.fsum(neo.truth().credits.values()) > math.fsum(truth_first.credits.values())
    assert sum(neo.truth().tool_calls.values()) == sum(truth_first.tool_calls.values()) + len(
        revised
    )
    # Tasks and the summary serve the version of the moment too.
    for tasks, streams in ((first_tasks, first), (final_tasks, final)):
        for task in tasks:
            parts = [s for s in streams.values() if s["task_id"] == task["task_id"]]
            assert task["neo_credits"] == pytest.approx(math.fsum(p["neo_credits"] for p in parts))
            assert task["tool_calls"] == sum(p["tool_calls"] for p in parts)
    for summary, streams in ((first_summary, first), (final_summary, final)):
        assert summary["total_neo_credits"] == pytest.approx(
            math.fsum(s["neo_credits"] for s in streams.values())
        )
    # The switch is revise_after after the stream became visible (when its execution ended).
    one = final[revised[0]]
    visible = (
        datetime.fromisoformat(one["created_at"]).timestamp() + one["total_execution_ms"] / 1000
    )
    steps_at = {t: neo.truth(now=t).steps for t in (visible + after - 0.001, visible + after)}
    lower, higher = steps_at.values()
    assert sum(higher.values()) - sum(lower.values()) == (
        one["step_count"] - first[revised[0]]["step_count"]
    )


def test_tied_times_come_at_whole_seconds_in_bursts_and_in_a_fresh_order_each_request(
    clock: ManualClock,
) -> None:
    neo = FakeNeo(seed=5, clock=clock, tie_seconds=True)
    held = neo.generate(1000, T0 - DAY, T0, late_fraction=0.0)
    plain = FakeNeo(seed=5, clock=clock).generate(1000, T0 - DAY, T0, late_fraction=0.0)
    # Only the times differ from the same seed without the switch.
    assert sorted((r["stream_id"], r["neo_credits"], r["llm_cost"]) for r in held) == sorted(
        (r["stream_id"], r["neo_credits"], r["llm_cost"]) for r in plain
    )
    per_second = Counter(r["created_at"] for r in held)
    assert all(WHOLE_SECOND.match(at) for at in per_second)
    assert sum(n for n in per_second.values() if n >= 2) >= len(held) / 3
    assert max(per_second.values()) >= 5
    busiest, size = per_second.most_common(1)[0]
    with FakeNeoServer(neo) as server:
        api = Api(server.url)
        # The same page twice: the same rows, in another order.
        orders = [
            tuple(
                r["stream_id"] for r in api.ok(STREAMS, **{"from": busiest, "to": busiest})["data"]
            )
            for _ in range(4)
        ]
        assert all(len(o) == size and set(o) == set(orders[0]) for o in orders)
        assert len(set(orders)) > 1
        # Filters and sorting use the truncated time.
        second = datetime.fromisoformat(busiest).timestamp()
        assert api.ok(STREAMS, **{"from": iso(second + 0.5), "to": iso(second + 0.9)})["total"] == 0
        assert api.ok(STREAMS, **{"from": iso(second), "to": iso(second + 0.9)})["total"] == size
        assert sum(neo.truth(second, second).streams.values()) == size
        assert neo.truth(second + 0.5, second + 0.9).streams == {}
        page = api.ok(STREAMS, limit=200)["data"]
        assert [r["created_at"] for r in page] == sorted(
            (r["created_at"] for r in page), reverse=True
        )
        # Naive offset paging misses some streams (and repeats others) across page edges.
        naive, totals = walk(api, STREAMS, step=5, limit=5)
        assert totals == {1000} == {sum(neo.truth().streams.values())}
        assert len(naive) == 1000
        assert len({r["stream_id"] for r in naive}) < 1000
        # Tasks: their first stream's truncated time, ties shuffled as well.
        tasks = api.all_pages(TASKS)
        task_seconds = Counter(t["created_at"] for t in tasks)
        assert all(WHOLE_SECOND.match(at) for at in task_seconds)
        tied, count = task_seconds.most_common(1)[0]
        assert count >= 5
        task_orders = {
            tuple(t["task_id"] for t in api.ok(TASKS, **{"from": tied, "to": tied})["data"])
            for _ in range(4)
        }
        assert len(task_orders) > 1
        naive_tasks, _ = walk(api, TASKS, step=5, limit=5)
        assert len({t["task_id"] for t in naive_tasks}) < len(tasks)


def test_dense_ties_add_a_task_a_stream_in_each_second_of_the_burst_in_any_order(
    clock: ManualClock,
) -> None:
    neo = FakeNeo(seed=5, clock=clock, tie_seconds=True)
    start = math.floor(T0 - HOUR)
    assert neo.dense_ties(32, 40, at=start) == 1280
    with FakeNeoServer(neo) as server:
        api = Api(server.url)
        tasks = api.all_pages(TASKS)
        per_second = Counter(t["created_at"] for t in tasks)
        assert sorted(per_second.values()) == [32] * 40
        assert min(per_second) == iso(start).replace(".000", "")
        first = per_second.most_common(1)[0][0]
        orders = {
            tuple(t["task_id"] for t in api.ok(TASKS, **{"from": first, "to": first})["data"])
            for _ in range(4)
        }
        assert len(orders) > 1  # shuffled per request
    assert sum(neo.truth().streams.values()) == 1280


def test_tie_orders_are_reproducible_from_the_seed(clock: ManualClock) -> None:
    def pages() -> list[tuple[str, ...]]:
        neo = FakeNeo(seed=8, clock=clock, tie_seconds=True)
        neo.generate(300, T0 - HOUR, T0, late_fraction=0.0)
        return [
            tuple(
                r.get("stream_id", r["task_id"])
                for r in neo.handle("GET", path, {"limit": "7", "offset": str(o)}, ADMIN)[1]["data"]
            )
            for path in (STREAMS, TASKS)
            for o in range(0, 300, 7)
        ]

    first = pages()
    assert first == pages()
    assert len({i for page in first[:43] for i in page}) < 300  # ties were shuffled


def test_oldest_first_applies_to_streams_and_tasks(clock: ManualClock) -> None:
    neo = FakeNeo(seed=5, clock=clock, order="asc")
    neo.generate(200, T0 - DAY, T0, late_fraction=0.0)
    with FakeNeoServer(neo) as server:
        api = Api(server.url)
        for path in (STREAMS, TASKS):
            created = [r["created_at"] for r in api.all_pages(path)]
            assert created == sorted(created) and created[0] < created[-1], path
        costs = [r["neo_credits"] + r["llm_cost"] for r in api.all_pages(STREAMS, sort="cost")]
        assert costs == sorted(costs)


def test_from_and_to_can_each_be_exclusive(clock: ManualClock) -> None:
    hand_made = [row(f"s{i}", T0 - 10 + i) for i in range(5)]  # created T0-10 .. T0-6
    for from_inclusive, to_inclusive, expected in (
        (False, True, {"s2", "s3"}),
        (False, False, {"s2"}),
    ):
        neo = FakeNeo(clock=clock, from_inclusive=from_inclusive, to_inclusive=to_inclusive)
        neo.add_rows(hand_made, visible_at=T0 - 1)
        with FakeNeoServer(neo) as server:
            api = Api(server.url)
            span = {"from": iso(T0 - 9), "to": iso(T0 - 7)}
            assert {r["stream_id"] for r in api.all_pages(STREAMS, **span)} == expected
            assert {r["task_id"] for r in api.all_pages(TASKS, **span)} == {
                f"task-{s}" for s in expected
            }


def test_hidden_streams_count_in_totals_and_the_summary_but_are_never_listed(
    clock: ManualClock,
) -> None:
    neo = FakeNeo(seed=5, clock=clock, hide=0.1)
    held = neo.generate(400, T0 - 2 * DAY, T0, late_fraction=0.0)
    span = {"from": iso(T0 - DAY), "to": iso(T0)}
    in_span = [r for r in held if r["created_at"] >= span["from"]]
    with FakeNeoServer(neo) as server:
        api = Api(server.url)
        listed, totals = walk(api, STREAMS, limit=50, **span)
        summary = api.ok(SUMMARY, **span)
        one = api.ok(STREAMS, limit=1, **span)
        tasks = api.all_pages(TASKS)
        all_listed, _ = walk(api, STREAMS)
        control = requests.Session()
        books_json = control.get(f"{server.url}/_fake/truth", params=span).json()
        listed_json = control.get(
            f"{server.url}/_fake/truth", params={**span, "listed_only": "1"}
        ).json()
    hidden = len(in_span) - len(listed)
    assert 0 < hidden < 0.2 * len(in_span)
    assert totals == {one["total"]} == {len(in_span)}  # total counts the hidden ones
    assert len({r["stream_id"] for r in listed}) == len(listed)
    books = neo.truth(T0 - DAY, T0)
    only_listed = neo.truth(T0 - DAY, T0, listed_only=True)
    assert sum(books.streams.values()) == len(in_span)
    assert sum(only_listed.streams.values()) == len(listed)
    listed_credits = math.fsum(r["neo_credits"] for r in listed)
    assert summary["total_neo_credits"] == pytest.approx(math.fsum(books.credits.values()))
    assert summary["total_neo_credits"] > listed_credits
    assert math.fsum(only_listed.credits.values()) == pytest.approx(listed_credits)
    # The listed-only truth is the truth of exactly the rows paging got.
    copy = FakeNeo(clock=clock)
    copy.add_rows(listed, visible_at=T0)
    assert copy.truth() == only_listed
    assert books_json == books.to_json() and listed_json == only_listed.to_json()
    # A task's sums leave its hidden streams out; a task with none listed is not listed.
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in all_listed:
        by_task[s["task_id"]].append(s)
    assert {t["task_id"] for t in tasks} == set(by_task) < {r["task_id"] for r in held}
    for task in tasks:
        parts = by_task[task["task_id"]]
        assert task["stream_count"] == len(parts)
        assert task["neo_credits"] == pytest.approx(math.fsum(p["neo_credits"] for p in parts))


def test_all_switches_together_are_deterministic_from_the_seed(clock: ManualClock) -> None:
    switches: dict[str, Any] = {
        "page_cap": 9,
        "tie_seconds": True,
        "odd_fields": 0.1,
        "revise": 0.2,
        "revise_after": 60.0,
        "hide": 0.05,
        "order": "asc",
    }

    def run() -> tuple[list[Any], Any, Any]:
        neo = FakeNeo(seed=3, clock=clock, **switches)
        neo.generate(500, T0 - DAY, T0, late_fraction=0.1)
        answers = [
            neo.handle("GET", path, {"limit": "50", "offset": str(offset)}, ADMIN)
            for path in (STREAMS, TASKS, SUMMARY)
            for offset in (0, 9, 18)
        ]
        return answers, neo.truth(), neo.truth(listed_only=True)

    first = run()
    assert first == run()
    answers, books, listed = first
    page = answers[0][1]
    # Hidden rows count in the total; the late tenth shows up after T0.
    assert len(page["data"]) == 9 and page["has_more"]
    assert page["total"] == sum(books.streams.values()) < 500
    assert sum(books.streams.values()) > sum(listed.streams.values())


def test_the_command_line_reaches_every_switch() -> None:
    args = _parse_args(
        [
            "--page-cap",
            "25",
            "--odd-fields",
            "0.034",
            "--revise",
            "0.1",
            "--revise-after",
            "5s",
            "--ties",
            "--hide",
            "0.02",
            "--order",
            "asc",
            "--from-exclusive",
            "--to-exclusive",
        ]
    )
    neo = _fake_of(args)
    assert (args.page_cap, args.odd_fields, args.revise, args.revise_after, args.hide) == (
        25,
        0.034,
        0.1,
        5.0,
        0.02,
    )
    assert args.ties and neo.order == "asc" and not neo.to_inclusive
    assert (neo._page_cap, neo._ties, neo._odd_fields, neo._revise, neo._hide) == (
        25,
        True,
        0.034,
        0.1,
        0.02,
    )
    assert (neo._revise_after_us, neo._from_inclusive) == (5_000_000, False)
    defaults = _fake_of(_parse_args([]))
    assert (defaults._page_cap, defaults._ties, defaults._odd_fields) == (None, False, 0.0)
    assert (defaults._revise, defaults._hide, defaults.order) == (0.0, 0.0, "desc")
    assert defaults.to_inclusive and defaults._from_inclusive
    for bad in (["--page-cap", "0"], ["--odd-fields", "1.5"], ["--hide", "x"]):
        with pytest.raises(SystemExit):
            _parse_args(bad)
    helped = subprocess.run(
        [sys.executable, "-m", "tests.fakeneo", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for flag in (
        "--page-cap",
        "--odd-fields",
        "--revise",
        "--revise-after",
        "--ties",
        "--hide",
        "--order",
        "--from-exclusive",
        "--to-exclusive",
    ):
        assert flag in helped.stdout, flag


@pytest.mark.e2e
def test_the_process_serves_the_switches_and_the_truth_of_a_period() -> None:
    switches = ("--page-cap", "7", "--ties", "--hide", "0.3", "--odd-fields", "0.2")
    with fake_api(*FAKE_ARGS, *switches) as (_, url):
        headers = {"Authorization": f"Bearer {ADMIN}"}
        page = requests.get(url + STREAMS, params={"limit": 200}, headers=headers, timeout=5)
        body = page.json()
        assert (len(body["data"]), body["has_more"], body["total"]) == (7, True, 60)
        assert all(WHOLE_SECOND.match(r["created_at"]) for r in body["data"])
        books = requests.get(url + "/_fake/truth", timeout=5).json()
        listed = requests.get(url + "/_fake/truth", params={"listed_only": "1"}, timeout=5).json()
        assert sum(n for *_, n in books["streams"]) == 60
        assert 0 < sum(n for *_, n in listed["streams"]) < 60
        assert "step_latency_seconds" in books and "step_latency_steps" in books
        now = time.time()
        period = {"from": iso(now - 3 * HOUR), "to": iso(now - HOUR)}
        older = requests.get(url + "/_fake/truth", params=period, timeout=5).json()
        assert 0 < sum(n for *_, n in older["streams"]) < 60


def test_help_names_the_accepted_tokens_and_each_default() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tests.fakeneo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(result.stdout.split())
    assert "fake-admin-token" in text
    assert "fake-member-token" in text
    assert "(default: 1000)" in text  # --streams


def test_emails_switch_serves_its_addresses_null_for_none_and_a_truth_per_address() -> None:
    emails = [("zoë@exämple.org", 2.0), ("bo@example.com", 1.0), ("", 1.0)]
    neo = FakeNeo(seed=4, clock=lambda: 2_000_000.0, emails=emails)
    rows = neo.generate(300, 1_900_000.0, 1_999_000.0, late_fraction=0.0)
    assert {row["email"] for row in rows} == {"zoë@exämple.org", "bo@example.com", None}
    by_email = neo.truth_by_email()
    assert set(by_email) == {"zoë@exämple.org", "bo@example.com", None}
    whole = neo.truth()
    for field in ("streams", "credits", "llm_cost"):
        parts = math.fsum(v for t in by_email.values() for v in getattr(t, field).values())
        assert math.isclose(parts, math.fsum(getattr(whole, field).values()), rel_tol=1e-12)
