"""The fault suite: the fake API misbehaves in every way we know of, over real HTTP.

For each fault the exporter's counters end equal to the fake's ground truth, exactly; where
they cannot (a row changed after it was counted, a read that never ends), the case is
reported by a metric and a log line, and nothing is counted twice. Each case is small
(a few hundred rows, pages of 50) and bounded in time by tight timeouts and backoffs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter.app import build
from exporter.config import Config, config_from_mapping
from exporter.models import format_timestamp
from tests.conftest import (
    ManualClock,
    SampleKey,
    assert_never_down,
    sample,
    scrape,
    select,
    truth_mismatches,
)
from tests.fakeneo import INSERTED_PER_FAULT, FakeNeo, FakeNeoServer

DAY = 86400.0
T0 = 1_795_000_000.0
ROWS = 300


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def make_config(url: str, polling: dict[str, str] | None = None, **http: Any) -> Config:
    return config_from_mapping(
        {
            "accounts": [{"name": "acme", "base_url": url, "token": "fake-admin-token"}],
            "polling": {"interval": "1m", "lookback": "1h", "window": "2d", **(polling or {})},
            "http": {
                "backoff_base": "10ms",
                "backoff_max": "50ms",
                "page_size": 50,
                "max_retries": 8,
                "read_timeout": "300ms",
                "connect_timeout": "1s",
                **http,
            },
            "state": {"path": ":memory:"},
        },
        {},
    )


@dataclass
class Case:
    faults: list[dict[str, Any]]
    http: dict[str, Any] = field(default_factory=dict)
    retry_reason: str | None = None  # a retry of this reason must have been counted
    order: str = "desc"


CASES = {
    "429_burst_with_retry_after": Case(
        [{"kind": "status", "status": 429, "retry_after": 0.05, "count": 6}],
        retry_reason="429",
    ),
    "429_burst_with_http_date_retry_after": Case(
        [{"kind": "status", "status": 429, "retry_after": "Thu, 01 Jan 1970 00:00:00 GMT"}],
        retry_reason="429",
    ),
    "429_burst_without_retry_after": Case(
        [{"kind": "status", "status": 429, "count": 6}], retry_reason="429"
    ),
    "500": Case([{"kind": "status", "status": 500, "count": 3}], retry_reason="5xx"),
    "502": Case([{"kind": "status", "status": 502, "count": 3}], retry_reason="5xx"),
    "503_with_retry_after": Case(
        [{"kind": "status", "status": 503, "retry_after": 0, "count": 3}], retry_reason="5xx"
    ),
    "connection_reset": Case([{"kind": "reset", "count": 3}], retry_reason="connection_error"),
    "read_timeout": Case([{"kind": "timeout", "delay": 1.0, "count": 2}], retry_reason="timeout"),
    "slow_body_within_the_read_timeout": Case([{"kind": "slow_body", "delay": 0.5, "count": 3}]),
    "slow_body_past_the_read_timeout": Case(
        [{"kind": "slow_body", "delay": 5.0, "count": 1}], retry_reason="timeout"
    ),
    "truncated_body": Case([{"kind": "truncated", "count": 3}], retry_reason="connection_error"),
    "html_instead_of_json": Case([{"kind": "non_json", "count": 2}], retry_reason="invalid_body"),
    "json_of_the_wrong_shape": Case(
        [{"kind": "bad_shape", "count": 2}], retry_reason="invalid_body"
    ),
    "total_far_above_the_rows": Case([{"kind": "wrong_total", "count": 1}]),
    "total_below_the_rows": Case([{"kind": "short_total", "count": 1}]),
    "duplicate_rows_across_pages": Case([{"kind": "duplicates", "count": 100}]),
    "rows_inserted_while_paging_newest_first": Case([{"kind": "insert", "count": 3}]),
    "rows_inserted_while_paging_oldest_first": Case([{"kind": "insert", "count": 3}], order="asc"),
    "everything_at_once": Case(
        [
            {"kind": "status", "status": 429, "retry_after": 0, "count": 2},
            {"kind": "reset", "count": 1},
            {"kind": "duplicates", "count": 2},
            {"kind": "insert", "count": 2},
            {"kind": "truncated", "count": 1},
            {"kind": "status", "status": 502, "count": 1},
            {"kind": "short_total", "count": 1},
        ],
        http={"max_retries": 10},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_counters_equal_the_truth_whatever_the_api_does(
    name: str,
    clock: ManualClock,
    stop: threading.Event,
    figures: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    case = CASES[name]
    neo = FakeNeo(seed=17, clock=clock, order=case.order)
    neo.generate(ROWS, T0 - DAY, T0 - 60, late_fraction=0.0)
    with FakeNeoServer(neo) as fake:
        for fault in case.faults:
            neo.inject(**fault)
        exporter = build(make_config(fake.url, **case.http), stop, clock)
        try:
            started = time.monotonic()
            assert exporter.pollers[0].poll_streams()
            first = scrape(exporter.registry)
            # Later reads pick up what arrived during an earlier one; faults left over from
            # the first read hit the second, so a third one runs clean.
            for _ in range(2):
                clock.advance(60)
                assert exporter.pollers[0].poll_streams()
                neo.clear_faults()
            elapsed = time.monotonic() - started
            samples = scrape(exporter.registry)
        finally:
            exporter.close()
        truth = neo.truth()
    assert truth_mismatches(samples, truth, "acme") == []
    assert_never_above(first, samples)
    retries = select(samples, "neo_exporter_api_retries_total", account="acme")
    if case.retry_reason is not None:
        assert sample(samples, "neo_exporter_api_retries_total", account="acme",
                      endpoint="streams", reason=case.retry_reason) >= 1  # fmt: skip
    streams = sum(truth.streams.values())
    figures(
        f"fault {name}: exact ({streams:.0f} streams), "
        f"{sum(retries.values()):.0f} retries, {elapsed:.2f}s for three reads"
    )
    if "insert" in name:
        assert streams == ROWS + INSERTED_PER_FAULT * sum(
            f["count"] for f in case.faults if f["kind"] == "insert"
        )
    assert "Traceback" not in caplog.text


COUNTED = ("_total", "_count", "_sum")


def assert_never_above(before: dict[SampleKey, float], after: dict[SampleKey, float]) -> None:
    assert_never_down({k: v for k, v in before.items() if k[0].endswith(COUNTED)}, after)


def test_has_more_that_never_ends_fails_the_read_at_the_page_cap_and_counts_nothing_twice(
    clock: ManualClock,
    stop: threading.Event,
    figures: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    neo = FakeNeo(seed=18, clock=clock)
    neo.generate(ROWS, T0 - DAY, T0 - 60, late_fraction=0.0)
    with FakeNeoServer(neo) as fake:
        neo.inject("endless", count=1000)
        exporter = build(make_config(fake.url, max_pages=20), stop, clock)
        try:
            assert not exporter.pollers[0].poll_streams()
            during = scrape(exporter.registry)
            neo.clear_faults()
            clock.advance(60)
            assert exporter.pollers[0].poll_streams()
            after = scrape(exporter.registry)
        finally:
            exporter.close()
        truth = neo.truth()
    # Reported: a failed read, DOWN, and why in the log (a first start reads the window
    # alone: the lookback is its last slice).
    assert sample(during, "neo_exporter_polls_total", account="acme", kind="reconcile",
                  result="failure") == 1  # fmt: skip
    assert sample(during, "neo_up", account="acme", endpoint="streams") == 0
    assert "more than http.max_pages=20" in caplog.text
    # The rows it did get (it went round them several times) were each counted once.
    assert sum(select(during, "neo_streams_total").values()) <= ROWS
    assert truth_mismatches(after, truth, "acme") == []
    figures("fault endless_has_more: read failed at the 20-page cap, reported; then exact")


def test_a_row_revised_after_it_was_counted_converges_and_is_reported_once(
    clock: ManualClock, stop: threading.Event, figures: Any, caplog: pytest.LogCaptureFixture
) -> None:
    neo = FakeNeo(seed=19, clock=clock)
    rows = neo.generate(ROWS, T0 - DAY, T0 - 60, late_fraction=0.0)
    caplog.set_level(logging.INFO, logger="exporter.poller")
    with FakeNeoServer(neo) as fake:
        exporter = build(make_config(fake.url), stop, clock)
        try:
            assert exporter.pollers[0].poll_streams()
            for row in rows[-3:]:  # recent enough for the next incremental read
                neo.replace_row(row["stream_id"], neo_credits=float(row["neo_credits"]) + 100)
            clock.advance(60)
            assert exporter.pollers[0].poll_streams()
            clock.advance(60)
            assert exporter.pollers[0].poll_streams()  # seen revised again: not counted twice
            samples = scrape(exporter.registry)
        finally:
            exporter.close()
        truth = neo.truth()
    assert truth_mismatches(samples, truth, "acme") == []
    assert sample(samples, "neo_exporter_changed_records_total", account="acme") == 3
    assert "revised by the API, increases added" in caplog.text
    figures("fault revised_rows: 3 of 3 revisions added once, counters equal Neo's final figures")


def test_rows_dated_in_the_future_are_counted_once_when_their_time_comes(
    clock: ManualClock, stop: threading.Event, figures: Any
) -> None:
    neo = FakeNeo(seed=20, clock=clock)
    neo.generate(ROWS, T0 - DAY, T0 - 60, late_fraction=0.0)
    # The API's clock runs ten minutes ahead of ours: rows dated up to 10 min from "now".
    future = FakeNeo(seed=99, clock=clock).generate(20, T0 + 60, T0 + 600, late_fraction=0.0)
    neo.add_rows(future, visible_at=T0)  # served now, although dated later
    with FakeNeoServer(neo) as fake:
        exporter = build(make_config(fake.url), stop, clock)
        try:
            assert exporter.pollers[0].poll_streams()
            early = sum(select(scrape(exporter.registry), "neo_streams_total").values())
            for _ in range(15):  # fifteen minutes of one-minute reads
                clock.advance(60)
                assert exporter.pollers[0].poll_streams()
            samples = scrape(exporter.registry)
        finally:
            exporter.close()
        truth = neo.truth(now=T0 + 900)
    assert early == ROWS  # not before their date (the read's `to` is our clock)
    assert truth_mismatches(samples, truth, "acme") == []
    figures("fault future_dated_rows: 20 rows up to 10 min ahead counted once, when due")


def test_random_faults_over_many_reads_with_live_traffic_end_at_the_truth(
    clock: ManualClock, stop: threading.Event, figures: Any
) -> None:
    rng = random.Random(7)
    kinds = [
        {"kind": "status", "status": 429, "retry_after": 0},
        {"kind": "status", "status": 503},
        {"kind": "reset"},
        {"kind": "truncated"},
        {"kind": "non_json"},
        {"kind": "duplicates"},
        {"kind": "insert"},
        {"kind": "short_total"},
        {"kind": "wrong_total"},
        {"kind": "timeout", "delay": 0.5},
    ]
    neo = FakeNeo(seed=21, clock=clock)
    neo.generate(ROWS, T0 - DAY, T0 - 60, late_fraction=0.2, max_late=1800)
    failed = injected = 0
    with FakeNeoServer(neo) as fake:
        exporter = build(make_config(fake.url, retry_budget=30), stop, clock)
        previous: dict[SampleKey, float] = {}
        try:
            for _ in range(12):
                neo.generate(15, clock() - 60, clock(), late_fraction=0.2, max_late=600)
                for fault in rng.sample(kinds, 3):
                    neo.inject(**fault, count=rng.randint(1, 3))
                    injected += 1
                failed += not exporter.pollers[0].poll_streams()
                neo.clear_faults()
                now = scrape(exporter.registry)
                assert_never_above(previous, now)
                previous = now
                clock.advance(60)
            clock.advance(1800)  # every late row is visible by now
            assert exporter.pollers[0].poll_once()
            samples = scrape(exporter.registry)
        finally:
            exporter.close()
        truth = neo.truth()
    assert truth_mismatches(samples, truth, "acme") == []
    figures(
        f"fault random_mix: {injected} fault injections over 12 reads ({failed} reads failed "
        f"and were retried later), {sum(truth.streams.values()):.0f} streams, exact"
    )


def test_a_long_api_outage_is_caught_up_from_the_watermark(
    clock: ManualClock, stop: threading.Event, figures: Any, caplog: pytest.LogCaptureFixture
) -> None:
    neo = FakeNeo(seed=22, clock=clock)
    neo.generate(ROWS, T0 - DAY, T0 - 60, late_fraction=0.0)
    with FakeNeoServer(neo) as fake:
        config = make_config(fake.url, {"reconcile_interval": "1d"}, max_retries=1)
        exporter = build(config, stop, clock)
        try:
            assert exporter.pollers[0].poll_streams()
            neo.inject("status", status=503, count=10_000)
            outage = 6 * 3600.0  # longer than the lookback: only the watermark covers it
            neo.generate(120, T0, T0 + outage, late_fraction=0.0)
            for _ in range(6):
                clock.advance(outage / 6)
                assert not exporter.pollers[0].poll_streams()
            neo.clear_faults()
            neo.clear_log()
            clock.advance(60)
            with caplog.at_level(logging.INFO):
                assert exporter.pollers[0].poll_streams()
            samples = scrape(exporter.registry)
        finally:
            exporter.close()
        froms = {entry.query.get("from") for entry in neo.requests_log}
        truth = neo.truth()
    assert froms == {format_timestamp(T0)}  # from the last good read, not now - lookback
    assert truth_mismatches(samples, truth, "acme") == []
    figures("fault 6h_outage: 6 failed reads, then one read from the watermark, exact")
