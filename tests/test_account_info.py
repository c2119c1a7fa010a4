"""Account-level gauges (summary, spending cap, credit balance), top tasks and per-member spend,
against the fake Neo API over real HTTP: values equal what the fake serves and its streams."""

from __future__ import annotations

import html
import json
import logging
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from exporter.api import CREDITS_PATH, SUMMARY_PATH, USER_PATH
from exporter.config import Config, ConfigError, MembersConfig, config_from_mapping
from exporter.counting import TopTasks
from exporter.models import (
    BodyError,
    clean_title,
    parse_cap,
    parse_credits,
    parse_summary,
    parse_task,
    parse_timestamp,
)
from exporter.status_page import landing_page
from tests.conftest import ManualClock, assert_absent, parse_exposition, sample, scrape, select
from tests.fakeneo import FakeNeo, FakeNeoServer
from tests.processes import ROOT, fake_api

DAY = 86400.0
T0 = 1_795_000_000.0  # 2026-11-18T07:06:40Z: the credit period began 2026-11-01
RESET = parse_timestamp("2026-11-01T00:00:00Z")
EXPIRY = parse_timestamp("2026-12-01T00:00:00Z")
WINDOW = 2 * DAY
ACCOUNT_METRICS = ("neo_account_", "neo_spending_cap_", "neo_billing_", "neo_member_")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def neo(clock: ManualClock) -> FakeNeo:
    fake = FakeNeo(seed=11, clock=clock)
    # Twenty days: the window (2 days) and the credit period so far (17 days) differ.
    fake.generate(500, T0 - 20 * DAY, T0, late_fraction=0.0)
    return fake


@pytest.fixture
def fake(neo: FakeNeo) -> Iterator[FakeNeoServer]:
    with FakeNeoServer(neo) as server:
        yield server


def make_config(
    url: str,
    token: str = "fake-admin-token",
    *,
    metrics: dict[str, Any] | None = None,
    **polling: str,
) -> Config:
    return config_from_mapping(
        {
            "accounts": [{"name": "acme", "base_url": url, "token": token}],
            "polling": {"window": "2d", **polling},
            "http": {"backoff_base": "10ms", "backoff_max": "50ms", "max_retries": 1},
            "metrics": metrics or {},
            "state": {"path": ":memory:"},
        },
        {},
    )


def api(neo: FakeNeo, path: str, token: str = "fake-admin-token", **query: str) -> Any:
    status, body = neo.handle("GET", path, query, token)
    assert status == 200, body
    return body


def window_tasks(neo: FakeNeo) -> list[dict[str, Any]]:
    """Every task of the window as the fake serves it."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = api(
            neo,
            "/api/v1/usage/tasks",
            **{"from": _iso(T0 - WINDOW), "to": _iso(T0), "limit": "200", "offset": str(offset)},
        )
        rows += page["data"]
        if not page["has_more"]:
            return rows
        offset += 200


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def account_series(samples: dict[Any, float]) -> dict[Any, float]:
    return {k: v for k, v in samples.items() if k[0].startswith(ACCOUNT_METRICS)}


# --- the summary, the cap and the balance -------------------------------------------------------


def test_summary_gauges_equal_the_fake_api_and_the_sum_of_its_streams(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    exporter = make_exporter(make_config(fake.url))
    assert exporter.info_pollers[0].poll_once()
    samples = scrape(exporter.registry)
    truth = neo.truth(T0 - WINDOW, T0)
    since_reset = neo.truth(RESET, T0)

    def close(name: str, want: float) -> None:
        got = sample(samples, name, account="acme")
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (name, got, want)

    close("neo_account_window_credits", math.fsum(truth.credits.values()))
    byok = [k for k in truth.streams if k[2] == "true"]
    close("neo_account_window_byok_llm_cost_usd", math.fsum(truth.llm_cost[k] for k in byok))
    close("neo_account_window_byok_platform_cost_usd", math.fsum(truth.neo_cost[k] for k in byok))
    close("neo_account_window_byok_streams", sum(truth.streams[k] for k in byok))
    close("neo_account_post_reset_credits", math.fsum(since_reset.credits.values()))
    served = api(neo, SUMMARY_PATH, **{"from": _iso(T0 - WINDOW), "to": _iso(T0)})
    assert served["by_status"]
    for status, count in served["by_status"].items():
        assert sample(samples, "neo_account_window_tasks", account="acme", status=status) == count
    assert sum(select(samples, "neo_account_window_tasks").values()) == served["total_tasks"]
    close("neo_account_window_byok_tasks", served["byok"]["total_tasks"])
    issued = 25_000.0
    close("neo_account_issued_credits", issued)
    close("neo_account_available_credits", issued - math.fsum(since_reset.credits.values()))
    close("neo_account_credits_expiry_timestamp_seconds", EXPIRY)
    close("neo_account_last_credit_reset_timestamp_seconds", RESET)
    # Two summary reads: the window and since the reset, so the two credit figures differ.
    assert sample(samples, "neo_account_window_credits", account="acme") < sample(
        samples, "neo_account_post_reset_credits", account="acme"
    )
    summary_reads = [r for r in neo.requests_log if r.path == SUMMARY_PATH]
    assert [r.query.get("from") for r in summary_reads] == [
        _iso(T0 - WINDOW),
        "2026-11-01T00:00:00.000Z",
    ]


def test_cap_and_balance_gauges_equal_the_user_and_credits_endpoints(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    exporter = make_exporter(make_config(fake.url))
    assert exporter.info_pollers[0].poll_once()
    samples = scrape(exporter.registry)
    cap = api(neo, USER_PATH)["cap"]
    balance = api(neo, CREDITS_PATH)
    assert cap["used"] > 0  # the fake's BYOK spend since the reset
    assert sample(samples, "neo_spending_cap_limit_usd", account="acme") == cap["limit"] == 500.0
    assert sample(samples, "neo_spending_cap_used_usd", account="acme") == cap["used"]
    assert sample(samples, "neo_spending_cap_remaining_usd", account="acme") == cap["remaining"]
    assert sample(samples, "neo_spending_cap_used_ratio", account="acme") == pytest.approx(
        cap["used"] / cap["limit"]
    )
    for metric, field in (
        ("neo_billing_available_credits", "available_credits"),
        ("neo_billing_issued_credits", "issued_credits"),
        ("neo_billing_used_credits", "used_credits"),
    ):
        assert sample(samples, metric, account="acme") == balance[field], metric
    # The balance agrees with the summary's, and with the streams since the reset.
    assert sample(samples, "neo_billing_used_credits", account="acme") == pytest.approx(
        sample(samples, "neo_account_post_reset_credits", account="acme")
    )
    assert sample(samples, "neo_billing_credits_expiry_timestamp_seconds", account="acme") == EXPIRY
    for endpoint in ("summary", "user", "credits"):
        assert sample(samples, "neo_up", account="acme", endpoint=endpoint) == 1
        assert (
            sample(
                samples,
                "neo_exporter_last_success_timestamp_seconds",
                account="acme",
                endpoint=endpoint,
            )
            == T0
        )


def test_no_cap_means_no_cap_series_at_all_not_zeros(
    clock: ManualClock, make_exporter: Any
) -> None:
    with FakeNeoServer(FakeNeo(seed=2, clock=clock, cap=None)) as uncapped:
        exporter = make_exporter(make_config(uncapped.url))
        assert exporter.info_pollers[0].poll_once()
        samples = scrape(exporter.registry)
    assert sample(samples, "neo_up", account="acme", endpoint="user") == 1
    assert [k for k in samples if k[0].startswith("neo_spending_cap_")] == []


def test_a_cap_that_goes_away_takes_its_series_with_it(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    exporter = make_exporter(make_config(fake.url))
    poller = exporter.info_pollers[0]
    assert poller.poll("user") == "success"
    assert select(scrape(exporter.registry), "neo_spending_cap_limit_usd")
    neo.set_cap(None)
    assert poller.poll("user") == "success"
    assert_absent(scrape(exporter.registry), "neo_spending_cap_limit_usd")


# --- 403, 404 and failures ----------------------------------------------------------------------


def test_a_non_admin_token_marks_summary_and_credits_unavailable_and_retries_them_rarely(
    neo: FakeNeo,
    fake: FakeNeoServer,
    make_exporter: Any,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(
        fake.url,
        "fake-member-token",
        summary_interval="1m",
        user_interval="1m",
        credits_interval="1m",
        unavailable_retry_interval="1h",
    )
    exporter = make_exporter(config)
    poller = exporter.info_pollers[0]
    caplog.set_level(logging.DEBUG, logger="exporter.account_info")
    assert poller.poll_due() == {
        "summary": "unavailable",
        "user": "success",
        "credits": "unavailable",
    }
    for _ in range(90):  # an hour and a half of one-minute ticks
        clock.advance(60)
        poller.poll_due()
    requests = [r.path for r in neo.requests_log]
    # Tried at start and once an hour later; the user endpoint every minute.
    assert requests.count(SUMMARY_PATH) == 2
    assert requests.count(CREDITS_PATH) == 2
    assert requests.count(USER_PATH) == 91
    warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "exporter.account_info"
    ]
    assert len(warnings) == 2  # once per endpoint, not at each retry
    assert all("unavailable" in r.getMessage() and "403" in r.getMessage() for r in warnings)
    samples = scrape(exporter.registry)
    assert sample(samples, "neo_up", account="acme", endpoint="summary") == 0
    assert sample(samples, "neo_up", account="acme", endpoint="user") == 1
    polls = {"account": "acme", "kind": "summary"}
    assert sample(samples, "neo_exporter_polls_total", **polls, result="unavailable") == 2
    assert sample(samples, "neo_exporter_polls_total", **polls, result="failure") == 0
    assert [k for k in samples if k[0].startswith(("neo_account_", "neo_billing_"))] == []
    page = landing_page(exporter.store.get(), clock())
    cells = endpoint_cells(page)
    unavailable = "UNAVAILABLE (HTTP 403: the token is not a team admin's), next try in 30m"
    assert cells["summary"] == ("unavailable", unavailable)
    assert cells["credits"] == ("unavailable", unavailable)
    assert cells["user"][0] == "up"
    # A 403 that the token cannot help is not a failing read: the page is not degraded by it.
    assert 'class="headline starting"' in page
    assert "fake-member-token" not in caplog.text + page


def test_no_billing_plan_404_is_unavailable_not_a_failure_and_recovers(
    neo: FakeNeo,
    fake: FakeNeoServer,
    make_exporter: Any,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = make_exporter(make_config(fake.url, unavailable_retry_interval="2h"))
    poller = exporter.info_pollers[0]
    caplog.set_level(logging.INFO, logger="exporter.account_info")
    assert poller.poll_once()
    assert select(scrape(exporter.registry), "neo_billing_available_credits")
    neo.inject("status", status=404, path=CREDITS_PATH, count=2)
    clock.advance(900)
    assert poller.poll_due() == {"summary": "success", "user": "success", "credits": "unavailable"}
    assert poller.poll_once()  # --once succeeds without a billing plan
    # What the endpoint said before the 404 is dropped, not left standing.
    assert_absent(scrape(exporter.registry), "neo_billing_available_credits")
    clock.advance(2 * 3600)
    assert poller.poll_due()["credits"] == "success"
    assert select(scrape(exporter.registry), "neo_billing_available_credits")
    assert "/api/v1/billing/credits is available again" in caplog.text
    assert endpoint_cells(landing_page(exporter.store.get(), clock()))["credits"][0] == "up"


def test_a_failing_endpoint_keeps_its_last_values_and_is_retried_at_its_interval(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    exporter = make_exporter(make_config(fake.url, user_interval="2m"))
    poller = exporter.info_pollers[0]
    assert poller.poll_once()
    before = sample(scrape(exporter.registry), "neo_spending_cap_used_usd", account="acme")
    neo.inject("status", status=503, path=USER_PATH, count=4)  # more than the retries
    clock.advance(120)
    assert poller.poll_due()["user"] == "failure"
    samples = scrape(exporter.registry)
    assert sample(samples, "neo_up", account="acme", endpoint="user") == 0
    assert sample(samples, "neo_spending_cap_used_usd", account="acme") == before
    page = landing_page(exporter.store.get(), clock())
    state, text = endpoint_cells(page)["user"]
    assert state == "down" and text.startswith("DOWN since ")
    assert 'class="headline degraded"' in page
    assert poller.next_due() == clock() + 120
    clock.advance(120)
    neo.clear_faults()
    assert poller.poll_due()["user"] == "success"


def test_a_malformed_summary_is_a_failure_and_optional_fields_may_be_missing() -> None:
    with pytest.raises(BodyError, match="total_neo_credits"):
        parse_summary({"by_status": {}}, status_limit=20)
    with pytest.raises(BodyError):
        parse_summary(["not", "an", "object"], status_limit=20)
    bare = parse_summary({"total_neo_credits": 3, "by_status": {"completed": 2}}, status_limit=20)
    assert (bare.credits, dict(bare.tasks_by_status)) == (3.0, {"completed": 2})
    assert bare.available_credits is None and bare.credits_expire_at is None
    odd = parse_summary(
        {"total_neo_credits": 1, "neo_credits_expires_at": "soon", "byok": "?"}, status_limit=20
    )
    assert odd.credits_expire_at is None and odd.byok_llm_cost is None
    assert parse_cap({"cap": None}) is None
    assert parse_cap({}) is None
    with pytest.raises(BodyError):
        parse_cap({"cap": {"limit": "lots"}})
    with pytest.raises(BodyError):
        parse_credits({"expires_at": "2026-12-01T00:00:00Z"})


def test_statuses_beyond_the_label_limit_are_summed_as_other() -> None:
    by_status = {"completed": 50, "error": 5, "failed": 4, "x1": 1, "x2": 2}
    summary = parse_summary({"total_neo_credits": 0, "by_status": by_status}, status_limit=3)
    assert dict(summary.tasks_by_status) == {"completed": 50, "error": 5, "failed": 4, "other": 3}
    assert sum(summary.tasks_by_status.values()) == sum(by_status.values())


# --- per-member spend: off by default -----------------------------------------------------------


def test_no_email_is_read_or_exposed_unless_members_are_enabled(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    assert make_config(fake.url).metrics.members == MembersConfig(enabled=False, limit=20)
    exporter = make_exporter(make_config(fake.url))
    assert exporter.pollers[0].poll_tasks()
    assert exporter.info_pollers[0].poll_once()
    text = generate_latest(exporter.registry).decode()
    assert api(neo, SUMMARY_PATH)["by_email"], "the fake does send emails"
    assert "@" not in text
    assert "neo_member_window_credits{" not in text
    info = exporter.store.get().accounts[0].info
    assert info.summary is not None and info.summary.members == ()
    top = select(parse_exposition(text), "neo_top_task_credits")
    assert top and all(dict(labels).get("email") == "" for labels in top)


def test_enabled_members_show_the_top_n_and_the_rest_as_other_summing_to_the_total(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    metrics = {"members": {"enabled": True, "limit": 3}}
    exporter = make_exporter(make_config(fake.url, metrics=metrics))
    assert exporter.pollers[0].poll_tasks()
    assert exporter.info_pollers[0].poll_once()
    samples = scrape(exporter.registry)
    credits = {dict(k)["email"]: v for k, v in select(samples, "neo_member_window_credits").items()}
    tasks = {dict(k)["email"]: v for k, v in select(samples, "neo_member_window_tasks").items()}
    by_email = api(neo, SUMMARY_PATH, **{"from": _iso(T0 - WINDOW), "to": _iso(T0)})["by_email"]
    assert len(by_email) > 3
    top3 = {e["email"]: e["neo_credits"] for e in by_email[:3]}
    assert {k: v for k, v in credits.items() if k != "other"} == top3
    assert credits["other"] == pytest.approx(math.fsum(e["neo_credits"] for e in by_email[3:]))
    assert math.fsum(credits.values()) == pytest.approx(
        sample(samples, "neo_account_window_credits", account="acme")
    )
    assert sum(tasks.values()) == sum(select(samples, "neo_account_window_tasks").values())
    emails = {row["task_id"]: row["email"] for row in window_tasks(neo)}
    for labels in select(samples, "neo_top_task_credits"):
        label = dict(labels)
        assert label["email"] == emails[label["task_id"]]


# --- top tasks ----------------------------------------------------------------------------------


def test_top_tasks_are_the_windows_most_expensive_tasks_in_rank_order(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    exporter = make_exporter(make_config(fake.url, metrics={"top_tasks": 5}))
    assert exporter.pollers[0].poll_tasks()
    samples = scrape(exporter.registry)
    got = {
        int(dict(k)["rank"]): (dict(k)["task_id"], dict(k)["task_title"], v)
        for k, v in select(samples, "neo_top_task_credits", account="acme").items()
    }
    tasks = sorted(window_tasks(neo), key=lambda t: (-t["neo_credits"], t["task_id"]))
    want = {
        rank: (t["task_id"], t["task_title"], t["neo_credits"])
        for rank, t in enumerate(tasks[:5], start=1)
    }
    assert got == want


def test_top_tasks_zero_turns_them_off(fake: FakeNeoServer, make_exporter: Any) -> None:
    exporter = make_exporter(make_config(fake.url, metrics={"top_tasks": 0}))
    assert exporter.pollers[0].poll_tasks()
    assert_absent(scrape(exporter.registry), "neo_top_task_credits")


def test_each_tasks_read_replaces_the_whole_top_set(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    exporter = make_exporter(make_config(fake.url, metrics={"top_tasks": 4}))
    assert exporter.pollers[0].poll_tasks()
    before = {dict(k)["task_id"] for k in select(scrape(exporter.registry), "neo_top_task_credits")}
    clock.advance(60)
    spike = neo.spike(2, multiplier=500.0)
    assert exporter.pollers[0].poll_tasks()
    after = {
        int(dict(k)["rank"]): dict(k)["task_id"]
        for k in select(scrape(exporter.registry), "neo_top_task_credits")
    }
    assert sorted(after) == [1, 2, 3, 4]  # still four series
    assert {after[1], after[2]} == {row["task_id"] for row in spike}
    assert len(before - set(after.values())) == 2  # two of the old set lost their series


def test_titles_are_sanitised_and_truncated_for_labels() -> None:
    assert clean_title("  Recon\tof\n\napp.example.com\x00 ") == "Recon of app.example.com"
    assert clean_title("\u200bzero\u202ewidth") == "zero width"  # format characters too
    long = clean_title("x" * 500)
    assert len(long) == 60 and long.endswith("\u2026")
    assert clean_title(None) == "" and clean_title(42) == ""


def test_ranking_keeps_n_rows_and_breaks_ties_by_task_id() -> None:
    top = TopTasks(3, emails=False)
    for i, credits in enumerate([5, 1, 5, 0, 9, 5, 2]):
        row = {
            "task_id": f"t{i}",
            "created_at": "2026-11-18T00:00:00Z",
            "model": "m",
            "status": "completed",
            "neo_credits": credits,
            "task_title": f"task {i}",
            "email": "a@example.com",
        }
        top.add(parse_task(row), row)
    ranked = top.ranked()
    assert [(t.rank, t.task_id, t.credits) for t in ranked] == [
        (1, "t4", 9.0),
        (2, "t0", 5.0),
        (3, "t2", 5.0),
    ]
    assert all(t.email == "" for t in ranked)


def test_a_task_repeated_by_paging_is_ranked_once() -> None:
    top = TopTasks(3, emails=False)
    for task_id, credits in [("a", 5), ("b", 4), ("a", 5), ("c", 1), ("b", 4)]:
        row = {
            "task_id": task_id,
            "created_at": "2026-11-18T00:00:00Z",
            "model": "m",
            "status": "completed",
            "neo_credits": credits,
        }
        top.add(parse_task(row), row)
    assert [(t.task_id, t.credits) for t in top.ranked()] == [("a", 5.0), ("b", 4.0), ("c", 1.0)]


# --- bounded series -----------------------------------------------------------------------------


def test_series_stay_bounded_with_10000_tasks_and_500_members(
    clock: ManualClock, make_exporter: Any
) -> None:
    metrics = {"members": {"enabled": True, "limit": 20}, "top_tasks": 10}

    def exposition(neo: FakeNeo) -> tuple[dict[Any, float], int]:
        with FakeNeoServer(neo) as server:
            exporter = make_exporter(make_config(server.url, metrics=metrics, window="7d"))
            assert exporter.pollers[0].poll_tasks()
            assert exporter.info_pollers[0].poll_once()
            text = generate_latest(exporter.registry)
        return parse_exposition(text.decode()), len(text)

    small = FakeNeo(seed=5, clock=clock, members=8)
    small.populate(100, T0 - 6 * DAY, T0, late_fraction=0.0)
    big = FakeNeo(seed=5, clock=clock, members=500)
    big.populate(19_000, T0 - 6 * DAY, T0, late_fraction=0.0)
    small_samples, small_bytes = exposition(small)
    big_samples, big_bytes = exposition(big)
    summary = api(big, SUMMARY_PATH)
    assert summary["total_tasks"] >= 10_000
    assert len(summary["by_email"]) > 450
    assert len(select(big_samples, "neo_top_task_credits")) == 10
    assert len(select(big_samples, "neo_member_window_credits")) == 21  # 20 and "other"
    assert len(select(big_samples, "neo_member_window_tasks")) == 21

    def per_family(samples: dict[Any, float]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, _ in samples:
            counts[name] = counts.get(name, 0) + 1
        return counts

    # A hundred times the tasks and sixty times the members: only the member families grow,
    # up to their limit, and the by-status ones, up to the status label limit (the small
    # fake has not seen every status yet).
    small_counts, big_counts = per_family(small_samples), per_family(big_samples)
    grown = {n for n, count in big_counts.items() if count > small_counts.get(n, 0)}
    by_status = {"neo_window_tasks", "neo_account_window_tasks"}
    assert grown <= {"neo_member_window_credits", "neo_member_window_tasks", *by_status}
    assert all(big_counts[name] <= 20 for name in by_status)
    print(
        f"\nseries: {len(small_samples)} with {api(small, SUMMARY_PATH)['total_tasks']} tasks, "
        f"{len(big_samples)} with {summary['total_tasks']} tasks and "
        f"{len(summary['by_email'])} members; exposition {small_bytes} and {big_bytes} bytes"
    )


# --- configuration ------------------------------------------------------------------------------


def minimal(**sections: Any) -> dict[str, Any]:
    return {"accounts": [{"name": "acme", "token": "tok-123456"}], **sections}


def test_account_config_defaults_and_environment_values() -> None:
    config = config_from_mapping(minimal(), {})
    assert config.metrics.top_tasks == 10
    assert config.metrics.members == MembersConfig(enabled=False, limit=20)
    polling = config.polling
    assert (polling.summary_interval, polling.user_interval, polling.credits_interval) == (
        300.0,
        300.0,
        900.0,
    )
    assert polling.unavailable_retry_interval == 6 * 3600.0
    env = config_from_mapping(
        minimal(metrics={"members": {"enabled": "${MEMBERS}", "limit": "${LIMIT}"}}),
        {"MEMBERS": "true", "LIMIT": "5"},
    )
    assert env.metrics.members == MembersConfig(enabled=True, limit=5)


@pytest.mark.parametrize(
    ("sections", "key", "fragment"),
    [
        ({"metrics": {"members": {"enabled": "yes"}}}, "metrics.members.enabled", "true or false"),
        ({"metrics": {"members": {"enabled": 1}}}, "metrics.members.enabled", "true or false"),
        ({"metrics": {"members": {"limit": 0}}}, "metrics.members.limit", "from 1 to 1000"),
        ({"metrics": {"members": {"emails": True}}}, "metrics.members.emails", "unknown key"),
        ({"metrics": {"top_tasks": 101}}, "metrics.top_tasks", "from 0 to 100"),
        ({"metrics": {"top_tasks": -1}}, "metrics.top_tasks", "from 0 to 100"),
        ({"polling": {"credits_interval": "0s"}}, "polling.credits_interval", "greater than 0"),
        (
            {"polling": {"unavailable_retry_interval": "soon"}},
            "polling.unavailable_retry_interval",
            "expected a duration",
        ),
    ],
)
def test_bad_account_settings_name_their_key(
    sections: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(minimal(**sections), {})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{key}: "), problem
    assert fragment in problem


# --- the real process ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_once_with_a_member_list_and_no_billing_plan_exits_0_with_member_gauges(
    tmp_path: Path,
) -> None:
    with fake_api("--seed", "8", "--streams", "300", "--members", "40", "--no-billing") as (
        _,
        url,
    ):
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "accounts": [{"name": "acme", "base_url": url, "token": "fake-admin-token"}],
                    "metrics": {"members": {"enabled": True, "limit": 5}, "top_tasks": 3},
                    "state": {"path": str(tmp_path / "state.db")},
                }
            )
        )
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "--once", "--config.file", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    samples = parse_exposition(result.stdout)
    assert len(select(samples, "neo_member_window_credits")) == 6
    assert len(select(samples, "neo_top_task_credits")) == 3
    assert sample(samples, "neo_up", account="acme", endpoint="credits") == 0
    assert_absent(samples, "neo_billing_available_credits")
    assert select(samples, "neo_spending_cap_limit_usd")
    assert "/api/v1/billing/credits is unavailable" in result.stderr


# --- the fake's options -------------------------------------------------------------------------


def test_fake_members_option_spreads_tasks_over_that_many_emails(clock: ManualClock) -> None:
    neo = FakeNeo(seed=4, clock=clock, members=50)
    neo.populate(2000, T0 - DAY, T0, late_fraction=0.0)
    by_email = api(neo, SUMMARY_PATH)["by_email"]
    emails = {item["email"] for item in by_email}
    assert 40 <= len(emails) <= 50
    assert all(e.startswith("member") and e.endswith("@example.com") for e in emails)
    assert sum(item["tasks"] for item in by_email) == api(neo, SUMMARY_PATH)["total_tasks"]


def test_fake_without_billing_answers_404_on_credits_only(clock: ManualClock) -> None:
    neo = FakeNeo(seed=4, clock=clock, billing=False)
    assert neo.handle("GET", CREDITS_PATH, {}, "fake-admin-token")[0] == 404
    assert neo.handle("GET", SUMMARY_PATH, {}, "fake-admin-token")[0] == 200
    assert neo.handle("GET", CREDITS_PATH, {}, "fake-member-token")[0] == 403


# --- dashboards ---------------------------------------------------------------------------------


def test_overview_has_balance_cap_top_tasks_and_member_panels() -> None:
    overview = json.loads((ROOT / "grafana" / "dashboards" / "neo-spend-overview.json").read_text())
    by_title = {panel["title"]: panel for panel in overview["panels"]}
    exprs = {
        title: " ".join(t["expr"] for t in p.get("targets", [])) for title, p in by_title.items()
    }
    assert "neo_billing_available_credits" in exprs["Credits left"]
    assert "neo_account_available_credits" in exprs["Credits left"]  # where billing is 404
    cap = by_title["Spending cap used"]
    assert cap["type"] == "gauge"
    steps = [s["value"] for s in cap["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 0.8, 0.95]  # the alerts' thresholds
    top = by_title["Top tasks by credits in the window"]
    assert top["type"] == "table"
    assert top["targets"][0]["format"] == "table"
    assert "neo_top_task_credits" in exprs["Top tasks by credits in the window"]
    assert "neo_member_window_credits" in exprs["Credits by member in the window"]
    assert "metrics.members.enabled" in by_title["Credits by member in the window"]["description"]


def endpoint_cells(page: str, account: str = "acme") -> dict[str, tuple[str, str]]:
    """The landing page's (CSS class, text) of each endpoint of an account, by endpoint."""
    row = re.search(rf"<tr><th>{account}</th>((?:<td[^>]*>.*?</td>){{5}})</tr>", page)
    assert row is not None, page
    cells = re.findall(r'<td(?: class="(\w+)")?>(.*?)</td>', row.group(1))
    names = ("streams", "tasks", "summary", "user", "credits")
    return {
        name: (css, html.unescape(text)) for name, (css, text) in zip(names, cells, strict=True)
    }
