"""The poller against the fake Neo API over real HTTP: counters equal the ground truth."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import generate_latest

from exporter.cli import Exporter
from exporter.client import PageProgress
from exporter.config import Config, config_from_mapping
from exporter.fakeapi import FakeNeo, FakeNeoServer
from exporter.models import format_timestamp
from exporter.poller import ProgressLog, plan_streams_read
from exporter.snapshot import ReadProgress
from tests.conftest import ManualClock, sample, scrape, select, truth_mismatches

DAY = 86400.0
T0 = 1_795_000_000.0  # a fixed "now" for the fake and the exporter


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def neo(clock: ManualClock) -> FakeNeo:
    return FakeNeo(seed=3, clock=clock)


@pytest.fixture
def fake(neo: FakeNeo) -> Iterator[FakeNeoServer]:
    with FakeNeoServer(neo) as server:
        yield server


def make_config(
    url: str, state: str = ":memory:", http: dict[str, Any] | None = None, **polling: str
) -> Config:
    return config_from_mapping(
        {
            "accounts": [{"name": "acme", "base_url": url, "token": "fake-admin-token"}],
            "polling": {
                "interval": "1m",
                "lookback": "1h",
                "window": "2d",
                "reconcile_interval": "6h",
                **polling,
            },
            "http": {
                "backoff_base": "10ms",
                "backoff_max": "50ms",
                "page_size": 50,
                **(http or {}),
            },
            "state": {"path": state},
        },
        {},
    )


def poll(exporter: Exporter) -> bool:
    return exporter.pollers[0].poll_streams()


def test_first_start_backfills_the_window_to_the_exact_truth(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    neo.generate(600, T0 - 2 * DAY, T0, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(T0 - 2 * DAY, T0), "acme") == []
    assert sum(select(samples, "neo_streams_total").values()) == 600


def test_rereading_overlapping_spans_never_counts_twice(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    neo.generate(300, T0 - DAY, T0, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    for _ in range(4):
        assert poll(exporter)
        clock.advance(60)
    assert exporter.pollers[0].poll_once()
    assert truth_mismatches(scrape(exporter.registry), neo.truth(), "acme") == []


def test_rows_that_appear_late_are_counted_by_the_lookback_or_the_reconcile(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    # Rows created over the last day, some becoming visible up to 3 hours later.
    neo.generate(400, T0 - DAY, T0, late_fraction=0.3, max_late=3 * 3600.0)
    # Rows older than the lookback when they appear are left to the reconcile.
    exporter = make_exporter(make_config(fake.url, reconcile_interval="90m"))
    assert poll(exporter)
    visible_at_start = neo.truth()
    for _ in range(4 * 60):  # four hours of one-minute polls
        clock.advance(60)
        assert poll(exporter)
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    assert sum(neo.truth().streams.values()) > sum(visible_at_start.streams.values())


def test_a_restart_resumes_from_the_watermark_and_reads_the_downtime(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.db")
    neo.generate(200, T0 - DAY, T0, late_fraction=0.0)
    first = make_exporter(make_config(fake.url, state))
    assert poll(first)
    first.close()
    # Three hours of downtime with new streams, then a restart on the same state file.
    neo.generate(150, T0, T0 + 3 * 3600, late_fraction=0.0)
    clock.advance(3 * 3600 + 60)
    second = make_exporter(make_config(fake.url, state, reconcile_interval="1d"))
    neo.clear_log()
    assert poll(second)
    assert truth_mismatches(scrape(second.registry), neo.truth(), "acme") == []
    # It read from the watermark, not the whole window.
    froms = {entry.query.get("from") for entry in neo.requests_log}
    assert froms == {format_timestamp(T0)}


def test_a_wrong_token_keeps_metrics_served_and_up_at_zero(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    neo.generate(20, T0 - 3600, T0, late_fraction=0.0)
    config = config_from_mapping(
        {
            "accounts": [{"name": "acme", "base_url": fake.url, "token": "wrong-secret-42"}],
            "state": {"path": ":memory:"},
        },
        {},
    )
    exporter = make_exporter(config)
    with caplog.at_level(logging.DEBUG):
        assert not exporter.pollers[0].poll_once()
    samples = scrape(exporter.registry)
    assert sample(samples, "neo_up", account="acme", endpoint="streams") == 0
    assert (
        sample(
            samples,
            "neo_exporter_api_requests_total",
            account="acme",
            endpoint="streams",
            code="401",
        )
        == 1
    )
    assert "rejected the token" in caplog.text
    assert "wrong-secret-42" not in caplog.text
    assert "wrong-secret-42" not in generate_latest(exporter.registry).decode()


def test_a_member_token_is_told_it_needs_an_admin(
    fake: FakeNeoServer, make_exporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_from_mapping(
        {
            "accounts": [{"name": "acme", "base_url": fake.url, "token": "fake-member-token"}],
            "state": {"path": ":memory:"},
        },
        {},
    )
    exporter = make_exporter(config)
    assert not exporter.pollers[0].poll_streams()
    assert "team admin" in caplog.text


def test_the_api_going_down_keeps_the_counters_and_recovers(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    neo.generate(100, T0 - DAY, T0, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    counted = scrape(exporter.registry)
    neo.inject("status", status=503, count=100)
    neo.generate(30, T0, T0 + 60, late_fraction=0.0)
    clock.advance(120)
    assert not poll(exporter)
    during = scrape(exporter.registry)
    assert sample(during, "neo_up", account="acme", endpoint="streams") == 0
    assert select(during, "neo_credits_total") == select(counted, "neo_credits_total")
    neo.clear_faults()
    clock.advance(60)
    assert poll(exporter)
    after = scrape(exporter.registry)
    assert sample(after, "neo_up", account="acme", endpoint="streams") == 1
    assert truth_mismatches(after, neo.truth(), "acme") == []


def test_retried_faults_do_not_change_the_counts(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    neo.generate(300, T0 - DAY, T0, late_fraction=0.0)
    neo.inject("status", status=429, retry_after=0, count=2)
    neo.inject("status", status=502, count=2)
    neo.inject("non_json", count=1)
    neo.inject("bad_shape", count=1)
    neo.inject("reset", count=1)
    # Seven faults in a row may all land on the first page: allow that many retries.
    exporter = make_exporter(make_config(fake.url, http={"max_retries": 8}))
    assert poll(exporter)
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    retries = select(samples, "neo_exporter_api_retries_total", account="acme")
    assert sum(retries.values()) == 7


def test_bad_rows_are_skipped_with_a_reason_and_the_rest_counted(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    good = neo.generate(50, T0 - 3600, T0 - 60, late_fraction=0.0)
    template = dict(good[0])
    bad = [
        {**template, "stream_id": "bad-1", "neo_credits": -1},
        {**template, "stream_id": "bad-2", "created_at": "not a date"},
        {**template, "stream_id": "bad-3", "step_count": None},
        "not an object",
    ]
    neo.add_rows(bad, visible_at=T0 - 60, in_truth=False)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    skipped = {
        dict(k)["reason"]: v
        for k, v in select(
            samples, "neo_exporter_skipped_records_total", account="acme", endpoint="streams"
        ).items()
    }
    assert skipped["bad_value"] == 1
    assert skipped["missing_field"] == 1
    assert skipped["bad_timestamp"] == 1
    assert skipped["not_an_object"] == 1


def test_a_row_changed_after_counting_is_reported_not_recounted(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    rows = neo.generate(40, T0 - 3600, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    before = select(scrape(exporter.registry), "neo_credits_total")
    neo.replace_row(rows[0]["stream_id"], neo_credits=999.0, is_byok=False)
    clock.advance(60)
    assert poll(exporter)
    samples = scrape(exporter.registry)
    assert select(samples, "neo_credits_total") == before
    assert sample(samples, "neo_exporter_changed_records_total", account="acme") == 1


def test_tasks_feed_window_gauges(neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any) -> None:
    rows = neo.generate(120, T0 - DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert exporter.pollers[0].poll_tasks()
    samples = scrape(exporter.registry)
    tasks = {r["task_id"] for r in rows}
    assert sum(select(samples, "neo_window_tasks", account="acme").values()) == len(tasks)
    credits = sum(float(r.get("neo_credits") or 0) for r in rows)
    assert sample(samples, "neo_window_credits", account="acme") == pytest.approx(credits)


def test_a_full_read_reads_streams_and_tasks_side_by_side_to_the_exact_truth(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    rows = neo.generate(600, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    fake.neo.clear_log()
    assert exporter.pollers[0].poll_once()
    paths = [r.path for r in fake.neo.requests_log]
    streams = [i for i, p in enumerate(paths) if p.endswith("/streams")]
    tasks = [i for i, p in enumerate(paths) if p.endswith("/tasks")]
    assert len(streams) == 12
    assert tasks and tasks[0] < streams[-1]  # not one read after the other
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(T0 - 2 * DAY, T0), "acme") == []
    task_ids = {r["task_id"] for r in rows}
    assert sum(select(samples, "neo_window_tasks", account="acme").values()) == len(task_ids)


def test_tasks_repeated_by_paging_count_once_in_the_window_gauges(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    rows = neo.generate(300, T0 - DAY, T0 - 60, late_fraction=0.0)
    tasks = {r["task_id"] for r in rows}
    credits = sum(float(r.get("neo_credits") or 0) for r in rows)
    exporter = make_exporter(make_config(fake.url))
    for _ in range(2):  # and the second read starts over, not on top of the first
        neo.inject("duplicates", count=3, path="/api/v1/usage/tasks")
        assert exporter.pollers[0].poll_tasks()
        samples = scrape(exporter.registry)
        assert sum(select(samples, "neo_window_tasks", account="acme").values()) == len(tasks)
        assert sample(samples, "neo_window_credits", account="acme") == pytest.approx(credits)


def test_a_tasks_read_that_fails_midway_leaves_nothing_to_the_next(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    neo.generate(300, T0 - DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url, http={"max_pages": 4}))
    neo.inject("endless", count=1000, path="/api/v1/usage/tasks")  # fails at the page cap
    assert not exporter.pollers[0].poll_tasks()
    neo.clear_faults()
    # The window moves past the older half of the tasks the failed read had already seen.
    clock.advance(1.5 * DAY)
    assert exporter.pollers[0].poll_tasks()
    in_window = requests.get(
        f"{fake.url}/api/v1/usage/tasks",
        params={
            "from": format_timestamp(clock() - 2 * DAY),
            "to": format_timestamp(clock()),
            "limit": "1",
        },
        headers={"Authorization": "Bearer fake-admin-token"},
        timeout=10,
    ).json()["total"]
    samples = scrape(exporter.registry)
    assert 0 < in_window < 300
    assert sum(select(samples, "neo_window_tasks", account="acme").values()) == in_window


def test_plan_reads_the_window_first_then_the_lookback() -> None:
    polling = make_config("http://127.0.0.1:1").polling
    first = plan_streams_read(T0, polling, None, None)
    assert (first.kind, first.start, first.end) == ("reconcile", T0 - polling.window, T0)
    steady = plan_streams_read(T0, polling, T0 - 60, T0 - 600)
    assert (steady.kind, steady.start) == ("incremental", T0 - polling.lookback)
    after_downtime = plan_streams_read(T0, polling, T0 - 5 * 3600, T0 - 600)
    assert after_downtime.start == T0 - 5 * 3600
    due = plan_streams_read(T0, polling, T0 - 60, T0 - polling.reconcile_interval)
    assert due.kind == "reconcile"


def test_a_long_read_logs_progress_with_an_estimate_of_the_time_left(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    published: list[ReadProgress | None] = []
    progress = ProgressLog("acme", "reconcile", clock, published.append)
    caplog.set_level(logging.INFO, logger="exporter.poller")
    clock.advance(1)
    progress(PageProgress(1, 10, 200, 2000))  # too soon for a log line
    clock.advance(5)
    progress(PageProgress(2, 10, 400, 2000))
    last = published[-1]
    assert last is not None
    assert (last.pages_done, last.rows_done, last.rows_total) == (2, 400, 2000)
    assert last.eta_seconds == pytest.approx(6 * 1600 / 400)
    lines = [r.getMessage() for r in caplog.records if "read:" in r.getMessage()]
    assert lines == ["account=acme reconcile read: pages 2/10, rows 400/2000, about 24s left"]
