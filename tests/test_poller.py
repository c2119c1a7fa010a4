"""The poller against the fake Neo API over real HTTP: counters equal the ground truth."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import generate_latest

from exporter import poller as poller_module
from exporter.app import Exporter
from exporter.client import PageProgress
from exporter.config import Config, config_from_mapping
from exporter.models import format_timestamp
from exporter.poller import ProgressLog, incremental_span
from exporter.snapshot import ReadProgress
from tests.conftest import ManualClock, assert_absent, sample, scrape, select, truth_mismatches
from tests.fakeneo import FakeNeo, FakeNeoServer

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


def test_a_restart_resumes_from_the_watermark_reads_the_downtime_and_says_it_caught_up(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.db")
    neo.generate(200, T0 - DAY, T0, late_fraction=0.0)
    first = make_exporter(make_config(fake.url, state))
    assert poll(first)
    # A first start's counters appear whole: no catch-up of published counters.
    catch_up = "neo_exporter_last_catch_up_timestamp_seconds"
    assert sample(scrape(first.registry), catch_up, account="acme") == 0
    first.close()
    # Three hours of downtime with new streams, then a restart on the same state file.
    neo.generate(150, T0, T0 + 3 * 3600, late_fraction=0.0)
    clock.advance(3 * 3600 + 60)
    second = make_exporter(make_config(fake.url, state, reconcile_interval="1d"))
    # Counters of the earlier life are served before any read.
    assert sum(select(scrape(second.registry), "neo_streams_total").values()) == 200
    neo.clear_log()
    assert poll(second)
    samples = scrape(second.registry)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    # It read from the watermark, not the whole window...
    froms = {entry.query.get("from") for entry in neo.requests_log}
    assert froms == {format_timestamp(T0)}
    # ...and said when the backlog went into the counters, for the spend alerts.
    caught_up = sample(samples, "neo_exporter_last_catch_up_timestamp_seconds", account="acme")
    assert caught_up == clock()
    assert sample(samples, "neo_exporter_catching_up", account="acme") == 0
    # A read of the lookback after that is not a catch-up: the time stays.
    clock.advance(60)
    neo.generate(5, clock() - 50, clock() - 10, late_fraction=0.0)
    assert poll(second)
    assert sample(scrape(second.registry), "neo_exporter_last_catch_up_timestamp_seconds",
                  account="acme") == caught_up  # fmt: skip


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


def test_only_rows_without_an_id_or_a_time_are_skipped_and_odd_fields_are_repaired(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    good = neo.generate(50, T0 - 3600, T0 - 120, late_fraction=0.0)
    template = dict(good[0])
    unusable = [
        {**template, "stream_id": None},
        {**template, "stream_id": "bad-2", "created_at": "not a date"},
        "not an object",
    ]
    neo.add_rows(unusable, visible_at=T0 - 60, in_truth=False)
    odd = [
        {**template, "stream_id": "odd-1", "neo_credits": -1, "model": None},
        {**template, "stream_id": "odd-2", "step_count": None, "is_byok": "true"},
    ]
    neo.add_rows(odd, visible_at=T0 - 60, in_truth=False)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    samples = scrape(exporter.registry)
    truth = neo.truth()
    streams = sum(select(samples, "neo_streams_total", account="acme").values())
    credits = sum(select(samples, "neo_credits_total", account="acme").values())
    assert streams == sum(truth.streams.values()) + 2
    # odd-1's credits were negative: absent; odd-2's are counted in full.
    assert credits == pytest.approx(sum(truth.credits.values()) + template["neo_credits"])
    byok = str(template["is_byok"]).lower()
    assert sample(samples, "neo_streams_total", account="acme", model="unknown",
                  status=template["status"], byok=byok) == 1  # fmt: skip
    skipped = {
        dict(k)["reason"]: v
        for k, v in select(
            samples, "neo_exporter_skipped_records_total", account="acme", endpoint="streams"
        ).items()
    }
    # Counted once per read that returned them, however often a read fetched them: the
    # first start reads the window once (the lookback is its last slice).
    reads = sum(
        sample(samples, "neo_exporter_polls_total", account="acme", kind=kind, result="success")
        for kind in ("incremental", "reconcile")
    )
    assert reads == 1
    assert skipped == {
        "missing_field": reads,
        "bad_timestamp": reads,
        "not_an_object": reads,
        "bad_value": 0,
        "wrong_type": 0,
    }
    repaired = {
        dict(k)["field"]: v
        for k, v in select(
            samples, "neo_exporter_repaired_fields_total", account="acme", endpoint="streams"
        ).items()
        if v
    }
    assert repaired == {"neo_credits": 1, "model": 1, "step_count": 1, "is_byok": 1}


def test_a_row_revised_after_counting_converges_to_the_new_figures(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    rows = neo.generate(40, T0 - 3600, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    before = sum(select(scrape(exporter.registry), "neo_credits_total").values())
    row = rows[0]
    neo.replace_row(row["stream_id"], neo_credits=row["neo_credits"] + 2.0)
    clock.advance(60)
    assert poll(exporter)
    samples = scrape(exporter.registry)
    assert sum(select(samples, "neo_credits_total").values()) == pytest.approx(before + 2.0)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    assert sample(samples, "neo_exporter_changed_records_total", account="acme") == 1
    assert (
        sample(
            samples,
            "neo_exporter_revisions_total",
            account="acme",
            field="neo_credits",
            direction="up",
        )
        == 1
    )


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
    # The window's count (1 row) and its 600 rows in pages of 50: the lookback is its end.
    assert len(streams) == 1 + 12
    assert tasks and tasks[0] < streams[-1]  # not one read after the other
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(T0 - 2 * DAY, T0), "acme") == []
    task_ids = {r["task_id"] for r in rows}
    assert sum(select(samples, "neo_window_tasks", account="acme").values()) == len(task_ids)


@pytest.mark.parametrize("first_read", ["once", "first_poll"])
def test_a_first_start_and_once_fetch_each_stream_page_of_the_window_once(
    first_read: str, neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    neo.generate(600, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    poller = exporter.pollers[0]
    neo.clear_log()
    assert poller.poll_once() if first_read == "once" else poller.poll_both()
    pages = [
        (r.query["from"], r.query["to"], int(r.query["offset"]))
        for r in neo.requests_log
        if r.path.endswith("/streams") and r.query.get("limit") != "1"
    ]
    assert len(pages) == len(set(pages)), "a stream page was fetched twice"
    assert {(start, end) for start, end, _ in pages} == {
        (format_timestamp(T0 - 2 * DAY), format_timestamp(T0))
    }  # one read: the window's, whose end is the lookback
    assert sorted(offset for *_, offset in pages) == list(range(0, 600, 50))  # 600 rows, once
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    # Later polls are as before: the lookback, read from where the window's read ended.
    neo.clear_log()
    assert poller.poll_streams()
    assert sweep_froms(neo) == [format_timestamp(T0 - 3600)]


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


def test_the_incremental_read_spans_the_lookback_or_back_to_an_older_watermark() -> None:
    polling = make_config("http://127.0.0.1:1").polling
    first = incremental_span(T0, polling, None)
    assert (first.start, first.end, first.catching_up) == (T0 - polling.lookback, T0, False)
    steady = incremental_span(T0, polling, T0 - 60)
    assert (steady.start, steady.catching_up) == (T0 - polling.lookback, False)
    after_downtime = incremental_span(T0, polling, T0 - 5 * 3600)
    assert (after_downtime.start, after_downtime.catching_up) == (T0 - 5 * 3600, True)
    assert after_downtime.covers_gap
    too_long = incremental_span(T0, polling, T0 - 9 * DAY)
    assert (too_long.start, too_long.covers_gap) == (T0 - polling.window, False)


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


def test_counters_are_published_only_once_the_first_window_read_is_complete(
    neo: FakeNeo,
    fake: FakeNeoServer,
    make_exporter: Any,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    neo.generate(300, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    poller = exporter.pollers[0]
    # Slices of 100 rows: one slice per poll when the next poll is already due.
    monkeypatch.setattr(poller_module, "SLICE_ROWS", 100)
    assert poller.poll_streams(until=clock())
    samples = scrape(exporter.registry)
    assert_absent(samples, "neo_streams_total")
    assert sample(samples, "neo_exporter_catching_up", account="acme") == 1
    for _ in range(2):  # three slices read, none published yet
        assert poller.poll_streams(until=clock())
    assert_absent(scrape(exporter.registry), "neo_streams_total")
    assert poller.poll_streams()
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    assert sample(samples, "neo_exporter_catching_up", account="acme") == 0
    # The first window's counters appear whole: not a catch-up of live counters.
    assert sample(samples, "neo_exporter_last_catch_up_timestamp_seconds", account="acme") == 0


def failing_slice(neo: FakeNeo, start: str, times: int) -> list[int]:
    """Make the fake answer 500 to the first `times` streams reads whose `from` is `start`."""
    handle = neo.handle
    failures = [0]

    def wrapped(method: str, path: str, query: Any, token: Any, **kw: Any) -> tuple[int, Any]:
        if (
            path.endswith("/streams")
            and query.get("from") == start
            and query.get("limit") != "1"
            and failures[0] < times
        ):
            failures[0] += 1
            return 500, {"error": "deep trouble"}
        return handle(method, path, query, token, **kw)

    neo.handle = wrapped  # type: ignore[method-assign]
    return failures


def sweep_froms(neo: FakeNeo) -> list[str]:
    return [
        r.query["from"]
        for r in neo.requests_log
        if r.path.endswith("/streams") and r.query.get("limit") != "1"
    ]


def test_a_failing_window_read_resumes_at_its_slice_while_the_lookback_reads_go_on(
    neo: FakeNeo,
    fake: FakeNeoServer,
    make_exporter: Any,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poller_module, "SLICE_ROWS", 100)  # 6 slices of the 600 rows
    neo.generate(600, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url, http={"max_retries": 0}))
    poller = exporter.pollers[0]
    third = format_timestamp(T0 - 2 * DAY + 2 * (2 * DAY / 6))
    failures = failing_slice(neo, third, times=2)
    assert not poller.poll_streams()
    first_poll = sweep_froms(neo)
    # A first start reads the window alone, from its oldest end (the lookback is its last).
    assert first_poll[0] == format_timestamp(T0 - 2 * DAY) and first_poll[-1] == third
    assert format_timestamp(T0 - 3600) not in first_poll
    for poll_number in (2, 3):
        neo.clear_log()
        clock.advance(60)
        assert poller.poll_streams() is (poll_number == 3)
        froms = sweep_froms(neo)
        # What came after the first sweep's end is read every time (the sweep reads the
        # rest), then the window from the failed slice on.
        assert froms[0] == format_timestamp(T0)
        assert froms[1] == third
        assert format_timestamp(T0 - 2 * DAY) not in froms
    assert failures == [2]
    samples = scrape(exporter.registry)
    assert truth_mismatches(samples, neo.truth(), "acme") == []
    assert sample(samples, "neo_exporter_polls_total", account="acme", kind="incremental",
                  result="success") == 2  # fmt: skip


def test_a_slice_that_keeps_failing_is_skipped_and_counted_incomplete(
    neo: FakeNeo,
    fake: FakeNeoServer,
    make_exporter: Any,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poller_module, "SLICE_ROWS", 100)
    neo.generate(600, T0 - 2 * DAY, T0 - 2 * 3600, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url, http={"max_retries": 0}))
    poller = exporter.pollers[0]
    failing_slice(neo, format_timestamp(T0 - 2 * DAY), times=1000)
    # Three polls at one instant, so that the window (and its first slice) stays put.
    results = [poller.poll_streams() for _ in range(3)]
    assert results == [False, False, True]
    samples = scrape(exporter.registry)
    # The window was read but for its first slice, and the counters went live.
    assert sample(samples, "neo_exporter_incomplete_reads_total", account="acme",
                  endpoint="streams") == 1  # fmt: skip
    counted = sum(select(samples, "neo_streams_total", account="acme").values())
    assert 400 < counted < 600


def test_the_audit_reads_zero_drift_when_every_row_was_counted(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    neo.generate(400, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    result = exporter.pollers[0].audit()
    assert result is not None
    samples = scrape(exporter.registry)
    assert sample(samples, "neo_exporter_audit_streams_missing", account="acme") == 0
    assert sample(samples, "neo_exporter_audit_credits_drift", account="acme") == pytest.approx(
        0.0, abs=1e-9
    )
    in_period = neo.truth(result.start, result.end)
    assert sample(samples, "neo_exporter_audit_neo_streams", account="acme") == sum(
        in_period.streams.values()
    )
    assert sample(samples, "neo_exporter_audit_last_timestamp_seconds", account="acme") == T0


def test_the_audit_shows_rows_that_appeared_after_the_reads_had_passed_them(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    neo.generate(300, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    # Five streams of the day before show up now: later than the lookback reaches.
    late = neo.generate(5, T0 - DAY - 600, T0 - DAY, late_fraction=0.0)
    clock.advance(60)
    assert poll(exporter)
    exporter.pollers[0].audit()
    samples = scrape(exporter.registry)
    assert sample(samples, "neo_exporter_audit_streams_missing", account="acme") == 5
    late_credits = sum(row["neo_credits"] for row in late)
    assert sample(samples, "neo_exporter_audit_credits_drift", account="acme") == pytest.approx(
        late_credits
    )


def test_an_audit_whose_token_may_not_read_the_summary_compares_streams_only(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    neo.generate(200, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    handle = neo.handle

    def no_summary(method: str, path: str, query: Any, token: Any, **kw: Any) -> tuple[int, Any]:
        if path.endswith("/usage/summary"):
            return 403, {"error": "forbidden"}
        return handle(method, path, query, token, **kw)

    neo.handle = no_summary  # type: ignore[method-assign]
    exporter = make_exporter(make_config(fake.url))
    assert poll(exporter)
    result = exporter.pollers[0].audit()
    assert result is not None and result.neo_credits is None
    samples = scrape(exporter.registry)
    assert sample(samples, "neo_exporter_audit_streams_missing", account="acme") == 0
    assert_absent(samples, "neo_exporter_audit_credits_drift")  # left out, not 0
    assert_absent(samples, "neo_exporter_audit_neo_credits")


# --- recent spend: by when the streams ended ---------------------------------------------


def ended_within(rows: list[dict[str, Any]], now: float, seconds: float) -> list[dict[str, Any]]:
    """The fake's rows whose stream ended after now - seconds (those still running by their
    own clock count as ending now)."""
    from exporter.models import parse_timestamp

    def ended(row: dict[str, Any]) -> float:
        return parse_timestamp(row["created_at"]) + float(row["total_execution_ms"]) / 1000

    return [row for row in rows if now - seconds < ended(row)]


def by_task(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["task_id"]] = totals.get(row["task_id"], 0.0) + float(row["neo_credits"])
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def test_recent_spend_counts_streams_by_when_they_ended_and_names_the_top_tasks(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    rows = neo.generate(800, T0 - 3 * 3600, T0 - 1, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    assert exporter.pollers[0].poll_once()
    samples = scrape(exporter.registry)
    for window, seconds in (("15m", 900.0), ("1h", 3600.0)):
        recent = ended_within(rows, T0, seconds)
        assert recent, f"no stream ended in the last {window}: the test shows nothing"
        want = sum(float(r["neo_credits"]) for r in recent)
        got = sample(samples, "neo_recent_credits", account="acme", window=window)
        assert got == pytest.approx(want, rel=1e-12)
        tops = sorted(
            (int(dict(key)["rank"]), dict(key)["task_id"], value)
            for key, value in select(
                samples, "neo_recent_top_task_credits", account="acme", window=window
            ).items()
        )
        expected = by_task(recent)[:3]
        assert [(task, pytest.approx(credits)) for _, task, credits in tops] == [
            (task, pytest.approx(credits)) for task, credits in expected
        ]
        assert [rank for rank, *_ in tops] == list(range(1, len(expected) + 1))
        titles = {r["task_id"]: r.get("task_title", "") for r in recent}
        for key in select(samples, "neo_recent_top_task_credits", account="acme", window=window):
            labels = dict(key)
            assert labels["task_title"] == titles[labels["task_id"]]
    assert_absent(samples, "neo_recent_top_member_credits", account="acme")  # members off


def test_recent_spend_by_hour_is_the_credits_of_the_streams_ended_in_each_hour_of_a_week_at_most(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    from exporter.models import parse_timestamp

    rows = neo.generate(400, T0 - 9 * DAY, T0 - 1, late_fraction=0.0)
    rows += neo.generate(20, T0 - 3000, T0 - 1, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url, window="10d"))
    assert exporter.pollers[0].poll_once()
    hourly = exporter.store.account("acme").hourly
    # The status page's chart: a week, though the window is longer.
    since = clock() - 7 * DAY
    want: dict[float, float] = {}
    for row in rows:
        ended = parse_timestamp(row["created_at"]) + float(row["total_execution_ms"]) / 1000
        if ended > since:
            hour = ended // 3600 * 3600
            want[hour] = want.get(hour, 0.0) + float(row["neo_credits"])
    assert len(want) > 24, "too few hours with spend: the test shows little"
    assert [start for start, _ in hourly] == sorted(want)
    for start, credits in hourly:
        assert credits == pytest.approx(want[start], rel=1e-12)
    # The same streams as the recent-spend gauges: the hours that cover the last hour hold at
    # least its spend.
    recent = sample(scrape(exporter.registry), "neo_recent_credits", account="acme", window="1h")
    assert recent > 0, "no stream ended in the last hour: the test shows nothing"
    covering = (clock() - 3600) // 3600 * 3600
    assert sum(c for start, c in hourly if start >= covering) >= recent - 1e-9


def test_a_late_backlog_raises_the_counters_but_not_the_recent_spend(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock
) -> None:
    neo.generate(300, T0 - 2 * DAY, T0 - 3 * 3600, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url, lookback="6h", window="2d"))
    poller = exporter.pollers[0]
    assert poller.poll_once()
    before = scrape(exporter.registry)
    assert sample(before, "neo_recent_credits", account="acme", window="1h") == 0
    # Neo lists at once streams created 1.5 to 6 hours ago that ran at most an hour: they
    # ended at least half an hour ago.
    late = neo.generate(400, T0 - 6 * 3600, T0 - 1.5 * 3600, late_fraction=0.0)
    clock.advance(60)
    assert poller.poll_streams()
    after = scrape(exporter.registry)
    counted = sum(select(after, "neo_credits_total", account="acme").values())
    assert counted > sum(select(before, "neo_credits_total", account="acme").values())
    assert ended_within(late, clock(), 3600) == []  # none ended within the hour...
    assert sample(after, "neo_recent_credits", account="acme", window="1h") == 0  # ...so 0
    assert sample(after, "neo_recent_credits", account="acme", window="15m") == 0
    # A long stream that ends now, with its whole cost, is current spend.
    long_run = neo.spike(1, multiplier=50.0, at=clock() - 3000)
    neo.replace_row(long_run[0]["stream_id"], total_execution_ms=3_000_000)
    clock.advance(1)
    assert poller.poll_streams()
    now = scrape(exporter.registry)
    assert sample(now, "neo_recent_credits", account="acme", window="1h") == pytest.approx(
        float(long_run[0]["neo_credits"])
    )


def test_a_first_start_is_ready_as_soon_as_its_first_window_read_is_published(
    neo: FakeNeo,
    fake: FakeNeoServer,
    make_exporter: Any,
    clock: ManualClock,
    stop_event: threading.Event,
) -> None:
    neo.generate(200, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    exporter = make_exporter(make_config(fake.url))
    poller = exporter.pollers[0]
    # The clock never moves: readiness must not wait for the next poll's turn.
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not exporter.store.account("acme").counts.counters:
            assert time.monotonic() < deadline, "the first window read was never published"
            time.sleep(0.01)
        published = time.monotonic()
        while not exporter.store.get().ready:
            assert time.monotonic() - published < 1.0, "published, but not ready a second later"
            time.sleep(0.01)
    finally:
        stop_event.set()
        thread.join(10)
    assert truth_mismatches(scrape(exporter.registry), neo.truth(), "acme") == []
