"""The API client's edge cases, with `responses` standing in for the network."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
import requests
import responses

from exporter.client import (
    ApiError,
    AuthError,
    Listing,
    NeoClient,
    PageProgress,
    Stopped,
    _retry_after,
    decode_json,
)
from exporter.config import AccountConfig, HttpConfig, Secret
from exporter.models import Page, decode_page, format_timestamp, parse_timestamp
from tests.processes import free_port

BASE = "https://neo.test"
STREAMS = f"{BASE}/api/v1/usage/streams"
TOKEN = "secret-token-value-1234"


@dataclass
class Clock:
    """Monotonic time that only moves when the client waits: no real sleeping."""

    now: float = 0.0
    waits: list[float] = field(default_factory=list)
    stop_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def monotonic(self) -> float:
        with self.lock:
            return self.now

    def wait(self, seconds: float) -> bool:
        with self.lock:
            if seconds > 0:  # wait(0) is the client asking "are we stopping?", not a wait
                self.waits.append(seconds)
                self.now += seconds
            return self.stop_after is not None and len(self.waits) >= self.stop_after


def make_client(
    clock: Clock, *, auth_header: str = "bearer", **http: Any
) -> tuple[NeoClient, list[tuple[str, str]], list[tuple[str, str]]]:
    requests_seen: list[tuple[str, str]] = []
    retries: list[tuple[str, str]] = []
    account = AccountConfig(
        name="acme", base_url=BASE, token=Secret(TOKEN), auth_header=auth_header
    )
    config = replace(HttpConfig(), **http)
    client = NeoClient(
        account,
        config,
        wait=clock.wait,
        monotonic=clock.monotonic,
        rng=random.Random(1),
        on_request=lambda e, c: requests_seen.append((e, c)),
        on_retry=lambda e, r: retries.append((e, r)),
    )
    return client, requests_seen, retries


DAY_START, DAY_END = 1_795_000_000.0, 1_795_086_400.0


def read(
    client: NeoClient,
    *,
    found: Callable[[float, float], int] | None = None,
    start: float = DAY_START,
    end: float = DAY_END,
    on_progress: Callable[[PageProgress], None] | None = None,
) -> tuple[list[Page], Listing]:
    """Every page of a streams read, rows decoded; by default the caller "holds" every
    distinct row seen."""
    listing = client.listing(
        "/api/v1/usage/streams", "streams", start, end, on_progress=on_progress
    )
    held: set[str] = set()
    pages = []
    for p in listing.pages(found or (lambda a, b: len(held))):
        rows = [msgspec.json.decode(row) if isinstance(row, msgspec.Raw) else row for row in p.rows]
        pages.append(Page(rows, p.has_more, p.total))
        held.update(json.dumps(row, sort_keys=True) for row in rows)
    return pages, listing


def page(rows: list[Any], has_more: bool, total: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": rows, "has_more": has_more}
    if total is not None:
        body["total"] = total
    return body


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def test_bearer_token_is_sent_in_the_authorization_header(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, json=page([], False, 0))
    client, _, _ = make_client(Clock())
    client.get_json("/api/v1/usage/streams", {}, "streams")
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "X-Api-Key" not in mocked.calls[0].request.headers


def test_api_key_is_sent_in_x_api_key_when_configured(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, json=page([], False, 0))
    client, _, _ = make_client(Clock(), auth_header="x-api-key")
    client.get_json("/api/v1/usage/streams", {}, "streams")
    assert mocked.calls[0].request.headers["X-Api-Key"] == TOKEN
    assert "Authorization" not in mocked.calls[0].request.headers


def test_429_waits_for_retry_after_then_succeeds(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, status=429, headers={"Retry-After": "7"})
    mocked.get(STREAMS, json=page([{"x": 1}], False, 1))
    clock = Clock()
    client, seen, retries = make_client(clock)
    body = client.get_json("/api/v1/usage/streams", {}, "streams")
    assert body == page([{"x": 1}], False, 1)
    assert clock.waits and clock.waits[0] >= 7.0
    assert seen == [("streams", "429"), ("streams", "200")]
    assert retries == [("streams", "429")]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_with_growing_backoff(mocked: responses.RequestsMock, status: int) -> None:
    for _ in range(3):
        mocked.get(STREAMS, status=status)
    mocked.get(STREAMS, json=page([], False, 0))
    clock = Clock()
    client, _, retries = make_client(clock, backoff_base=1.0, backoff_max=30.0)
    client.get_json("/api/v1/usage/streams", {}, "streams")
    assert [r for _, r in retries] == ["5xx"] * 3
    # Full jitter within [cap/2, cap] of an exponential cap: 1, 2, 4.
    for attempt, waited in enumerate(clock.waits):
        assert 2**attempt / 2 <= waited <= 2**attempt


def test_connection_errors_and_timeouts_are_retried(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, body=requests.ConnectionError("reset by peer"))
    mocked.get(STREAMS, body=requests.ReadTimeout("slow"))
    mocked.get(STREAMS, json=page([], False, 0))
    client, seen, retries = make_client(Clock())
    client.get_json("/api/v1/usage/streams", {}, "streams")
    assert [c for _, c in seen] == ["connection_error", "timeout", "200"]
    assert [r for _, r in retries] == ["connection_error", "timeout"]


def test_a_malformed_page_is_retried_never_returned(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, body="<html>gateway</html>")
    mocked.get(STREAMS, json={"data": "oops"})
    mocked.get(STREAMS, json=page([{"ok": 1}], False, 1))
    client, _, retries = make_client(Clock())
    pages, _ = read(client)
    assert [p.rows for p in pages] == [[{"ok": 1}]]
    assert [r for _, r in retries] == ["invalid_body", "invalid_body"]


def test_retries_stop_at_max_retries_with_a_clear_error(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, status=503)
    client, seen, _ = make_client(Clock(), max_retries=2)
    with pytest.raises(ApiError, match="gave up after 3 attempts"):
        client.get_json("/api/v1/usage/streams", {}, "streams")
    assert len(seen) == 3


def test_the_retry_budget_bounds_retries_across_a_whole_read(
    mocked: responses.RequestsMock,
) -> None:
    mocked.get(STREAMS, status=500)
    client, seen, _ = make_client(Clock(), max_retries=10, retry_budget=3)
    with pytest.raises(ApiError):
        read(client)
    assert len(seen) == 4  # one try plus the three retries the budget allows


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "rejected the token"), (403, "team admin's or a solo user's")]
)
def test_auth_failures_are_not_retried_and_say_what_to_fix(
    mocked: responses.RequestsMock, status: int, hint: str
) -> None:
    mocked.get(STREAMS, status=status, body=f"denied {TOKEN}")
    client, seen, _ = make_client(Clock())
    with pytest.raises(AuthError) as caught:
        client.get_json("/api/v1/usage/streams", {}, "streams")
    assert hint in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(seen) == 1


def test_other_4xx_are_not_retried(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, status=404)
    client, seen, _ = make_client(Clock())
    with pytest.raises(ApiError, match="HTTP 404"):
        client.get_json("/api/v1/usage/streams", {}, "streams")
    assert len(seen) == 1


def test_redirects_are_not_followed_so_the_token_stays_home(
    mocked: responses.RequestsMock,
) -> None:
    mocked.get(STREAMS, status=302, headers={"Location": "https://elsewhere.test/steal"})
    mocked.get("https://elsewhere.test/steal", json=page([], False, 0))
    client, _, _ = make_client(Clock())
    with pytest.raises(ApiError, match="HTTP 302"):
        client.get_json("/api/v1/usage/streams", {}, "streams")
    assert [c.request.url for c in mocked.calls] == [STREAMS]


def test_stop_during_a_backoff_ends_the_request(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, status=503)
    client, seen, _ = make_client(Clock(stop_after=1))
    with pytest.raises(Stopped):
        client.get_json("/api/v1/usage/streams", {}, "streams")
    assert len(seen) == 1


def test_a_stop_while_paging_ends_the_read_before_the_next_request(
    mocked: responses.RequestsMock,
) -> None:
    clock = Clock()
    serve = _paged_callback(list(range(100)), limit=5)

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        if len(mocked.calls) == 1:  # the second page is being served: the process stops
            clock.stop_after = 0
        result: tuple[int, dict[str, str], str] = serve(request)
        return result

    mocked.add_callback(responses.GET, STREAMS, callback=callback)
    client, seen, _ = make_client(clock, page_size=5, concurrency=1)
    with pytest.raises(Stopped):
        read(client)
    assert len(seen) == 2  # of 20 pages: none asked for after the stop


def _paged_callback(rows: list[int], *, limit: int, extra_after: int | None = None) -> Any:
    """A list endpoint over `rows`; `extra_after` appends rows once that offset is read."""
    data = list(rows)

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        query = parse_qs(urlsplit(request.url).query)
        offset, size = int(query["offset"][0]), int(query["limit"][0])
        assert size == limit
        chunk = data[offset : offset + size]
        if extra_after is not None and offset == extra_after:
            data.extend(range(len(data), len(data) + 3))
        body = page([{"n": n} for n in chunk], offset + size < len(data), len(data))
        return 200, {}, json.dumps(body)

    return callback


def test_paging_reads_every_offset_once_with_to_pinned(mocked: responses.RequestsMock) -> None:
    mocked.add_callback(responses.GET, STREAMS, callback=_paged_callback(list(range(23)), limit=5))
    client, _, _ = make_client(Clock(), page_size=5, concurrency=3)
    progress: list[PageProgress] = []
    pages, listing = read(client, on_progress=progress.append)
    assert sorted(row["n"] for p in pages for row in p.rows) == list(range(23))
    queries = [parse_qs(urlsplit(c.request.url).query) for c in mocked.calls]
    assert sorted(int(q["offset"][0]) for q in queries) == [0, 5, 10, 15, 20]
    assert {q["to"][0] for q in queries} == {format_timestamp(DAY_END)}
    assert {q["from"][0] for q in queries} == {format_timestamp(DAY_START)}
    assert progress[-1] == PageProgress(5, 5, 23, 23)
    assert listing.outcome is not None and listing.outcome.complete


def test_paging_follows_has_more_when_rows_arrive_meanwhile(
    mocked: responses.RequestsMock,
) -> None:
    mocked.add_callback(
        responses.GET, STREAMS, callback=_paged_callback(list(range(10)), limit=5, extra_after=5)
    )
    client, _, _ = make_client(Clock(), page_size=5, concurrency=1)
    pages, _ = read(client)
    assert sorted(row["n"] for p in pages for row in p.rows) == list(range(13))


def test_paging_stops_at_the_page_cap(mocked: responses.RequestsMock) -> None:
    mocked.add_callback(responses.GET, STREAMS, callback=_paged_callback(list(range(50)), limit=5))
    client, seen, _ = make_client(Clock(), page_size=5, max_pages=4)
    with pytest.raises(ApiError, match="max_pages=4"):
        read(client)
    assert len(seen) == 1


def test_endless_has_more_without_total_hits_the_page_cap(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, json=page([{"n": 1}], True))
    client, seen, _ = make_client(Clock(), page_size=1, max_pages=6)
    with pytest.raises(ApiError, match="max_pages"):
        read(client)
    assert len(seen) == 6


def test_a_429_pauses_every_concurrent_worker(mocked: responses.RequestsMock) -> None:
    state = {"throttled": False}
    lock = threading.Lock()

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        offset = int(parse_qs(urlsplit(request.url).query)["offset"][0])
        with lock:
            if offset == 10 and not state["throttled"]:
                state["throttled"] = True
                return 429, {"Retry-After": "30"}, "{}"
        rows = [{"n": n} for n in range(offset, offset + 5)]
        return 200, {}, json.dumps(page(rows, offset < 20, 25))

    mocked.add_callback(responses.GET, STREAMS, callback=callback)
    clock = Clock()
    client, _, retries = make_client(clock, page_size=5, concurrency=4)
    pages, _ = read(client)
    assert len(pages) == 5
    assert retries == [("streams", "429")]
    assert clock.now >= 30.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("12", 12.0),
        ("-3", 0.0),
        ("99999", 600.0),
        ("soon", None),
        ("Wed, 25 Nov 2026 06:00:10 GMT", 10.0),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    now = 1795586400.0  # 2026-11-25T06:00:00Z
    assert _retry_after(header, now) == expected


def test_bodies_msgspec_refuses_fall_back_to_the_standard_library() -> None:
    # NaN and huge integers are valid for json.loads; the row checks repair them later,
    # instead of the whole page failing to decode.
    body = b'{"data": [{"neo_credits": NaN, "step_count": 100000000000000000000}], ' + (
        b'"has_more": false}'
    )
    row = decode_page(body).rows[0]
    assert isinstance(row, dict)
    assert math.isnan(row["neo_credits"])
    assert row["step_count"] == 10**20
    assert math.isnan(decode_json(b'{"x": NaN}')["x"])  # type: ignore[index]


def test_broken_json_is_still_an_error() -> None:
    with pytest.raises(ValueError):
        decode_page(b'{"data": [')
    with pytest.raises(ValueError):
        decode_json(b'{"data": [')


def test_rows_arriving_mid_read_are_not_lost_between_pages_fetched_out_of_order(
    mocked: responses.RequestsMock,
) -> None:
    # Newest first: three late rows land at the head after page 10 was served but before
    # page 5, so rows 7..9 slide from page 5's span into page 10's, already read.
    api = TimedApi([DAY_START + 60.0 * (20 - n) for n in range(20)])
    page_10_served = threading.Event()
    inserted = threading.Event()

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        offset = int(parse_qs(urlsplit(request.url).query)["offset"][0])
        # Only the first request for offset 5, whenever it arrives relative to page 10.
        if offset == 5 and not inserted.is_set():
            assert page_10_served.wait(5.0)
            with api.lock:
                api.times.extend(DAY_START + 3600.0 + n for n in range(3))
            inserted.set()
        answer = api.callback(request)
        if offset == 10:
            page_10_served.set()
        return answer

    mocked.add_callback(responses.GET, STREAMS, callback=callback)
    client, seen, _ = make_client(Clock(), page_size=5, concurrency=3)
    got, listing = read_timed(client, api, DAY_START, DAY_END)
    assert got == set(range(23))
    assert len(seen) > 5  # the missing rows were looked for, not trusted
    assert listing.outcome is not None and listing.outcome.complete


def test_reads_side_by_side_share_the_accounts_request_slots(
    mocked: responses.RequestsMock,
) -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most at once

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.005)  # long enough for the other requests to pile up
        with lock:
            in_flight[0] -= 1
        offset = int(parse_qs(urlsplit(request.url).query)["offset"][0])
        rows = [{"n": n} for n in range(offset, offset + 5)]
        return 200, {}, json.dumps(page(rows, offset < 25, 30))

    mocked.add_callback(responses.GET, STREAMS, callback=callback)
    client, _, _ = make_client(Clock(), page_size=5, concurrency=2)
    other = threading.Thread(target=lambda: read(client))
    other.start()
    assert len(read(client)[0]) == 6
    other.join(10)
    assert in_flight[1] == 2  # two reads, each with workers to spare, never more than 2


@dataclass
class TimedApi:
    """A list endpoint over timed rows that honours from/to (both inclusive), newest first.

    `cap` caps every page whatever `limit` asks; with `shuffle_ties`, rows of equal time come
    in a fresh order at each request; `hidden` rows are counted in `total` but never served.
    """

    times: list[float]
    cap: int | None = None
    shuffle_ties: bool = False
    hidden: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        low, high = parse_timestamp(query["from"]), parse_timestamp(query["to"])
        offset, limit = int(query["offset"]), int(query["limit"])
        rows = [(t, n) for n, t in enumerate(self.times) if low <= t <= high]
        with self.lock:
            keys = {n: self.rng.random() if self.shuffle_ties else 0.0 for _, n in rows}
        rows.sort(key=lambda tn: (-tn[0], keys[tn[1]], tn[1]))
        size = min(limit, self.cap or limit)
        chunk = rows[offset : offset + size]
        body = page(
            [{"n": n, "created_at": format_timestamp(t)} for t, n in chunk],
            offset + size < len(rows),
        )
        body["total"] = len(rows) + (self.hidden if rows else 0)
        return 200, {}, json.dumps(body)

    def held(self, rows: set[int]) -> Callable[[float, float], int]:
        return lambda a, b: sum(1 for n in rows if a <= self.times[n] <= b)


def read_timed(
    client: NeoClient, api: TimedApi, start: float, end: float
) -> tuple[set[int], Listing]:
    listing = client.listing("/api/v1/usage/streams", "streams", start, end)
    got: set[int] = set()
    for p in listing.pages(api.held(got)):
        got.update(msgspec.json.decode(row)["n"] for row in p.rows)  # type: ignore[arg-type]
    return got, listing


def test_a_server_that_caps_its_pages_is_paged_by_what_it_returns(
    mocked: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    api = TimedApi([DAY_START + 60.0 * i for i in range(47)], cap=4)
    mocked.add_callback(responses.GET, STREAMS, callback=api.callback)
    client, _, _ = make_client(Clock(), page_size=10, concurrency=3)
    got, listing = read_timed(client, api, DAY_START, DAY_END)
    assert got == set(range(47))
    offsets = sorted(
        int(parse_qs(urlsplit(c.request.url).query)["offset"][0]) for c in mocked.calls
    )
    assert offsets == list(range(0, 47, 4))  # by the 4 rows each page held, never skipping
    assert listing.outcome is not None and listing.outcome.complete
    assert caplog.text.count("pages of 4 rows while 10 were asked for") == 1
    read_timed(client, api, DAY_START, DAY_END)  # the cap is known now: said once
    assert caplog.text.count("pages of 4 rows while 10 were asked for") == 1


def test_ties_returned_in_any_order_are_found_by_reading_where_pages_meet(
    mocked: responses.RequestsMock,
) -> None:
    # 120 rows on 30 whole seconds, 4 to a second: offset paging over ties in a fresh order
    # at each request misses some and repeats others.
    times = [DAY_START + float(i // 4) for i in range(120)]
    api = TimedApi(times, shuffle_ties=True)
    mocked.add_callback(responses.GET, STREAMS, callback=api.callback)
    client, _, _ = make_client(Clock(), page_size=10, concurrency=2)
    naive: set[int] = set()
    for offset in range(0, 120, 10):
        request = requests.get(
            STREAMS,
            params={
                "from": format_timestamp(DAY_START),
                "to": format_timestamp(DAY_END),
                "limit": "10",
                "offset": str(offset),
            },
            timeout=5,
        )
        naive.update(row["n"] for row in request.json()["data"])
    assert len(naive) < 120  # what the exporter got before this read was made complete
    got, listing = read_timed(client, api, DAY_START, DAY_END)
    assert got == set(range(120))
    outcome = listing.outcome
    assert outcome is not None and outcome.complete
    assert (outcome.reported, outcome.found) == (120, 120)
    assert 0 < outcome.repair_requests <= 60


def test_a_dense_burst_of_ties_completes_for_about_one_request_per_page_boundary(
    mocked: responses.RequestsMock,
) -> None:
    # Scans that cron starts at the same second: 32 rows in each of 40 seconds, amid 60 rows
    # spread over the day, served in a fresh order of ties at each request. Halving the
    # day's clock time spent its whole budget on hours that hold no rows.
    burst = DAY_START + 43_200.0
    times = [DAY_START + 1_440.0 * i for i in range(60)]
    times += [burst + float(second) for second in range(40) for _ in range(32)]
    api = TimedApi(times, shuffle_ties=True)
    mocked.add_callback(responses.GET, STREAMS, callback=api.callback)
    client, _, _ = make_client(Clock(), page_size=100, concurrency=2)
    got, listing = read_timed(client, api, DAY_START, DAY_END)
    assert got == set(range(len(times)))
    outcome = listing.outcome
    assert outcome is not None and outcome.complete
    pages = math.ceil(len(times) / 100)
    assert 0 < outcome.repair_requests <= pages - 1  # a request per seam, no more


def test_a_read_short_of_the_apis_total_within_its_budget_says_how_short(
    mocked: responses.RequestsMock,
) -> None:
    api = TimedApi([DAY_START + 60.0 * i for i in range(30)], hidden=2)
    mocked.add_callback(responses.GET, STREAMS, callback=api.callback)
    client, _, _ = make_client(Clock(), page_size=10)
    got, listing = read_timed(client, api, DAY_START, DAY_END)
    assert got == set(range(30))
    outcome = listing.outcome
    assert outcome is not None and not outcome.complete
    assert (outcome.reported, outcome.found) == (32, 30)
    assert outcome.repair_requests <= 16  # the budget: bounded however the API behaves


# --- what a failed connection says ----------------------------------------------------------


def _real_client(base_url: str) -> tuple[NeoClient, list[tuple[str, str]]]:
    """A client on the real network stack: no retries, so each test makes one attempt."""
    seen: list[tuple[str, str]] = []
    account = AccountConfig(
        name="acme", base_url=base_url, token=Secret(TOKEN), auth_header="bearer"
    )
    http = HttpConfig(max_retries=0, connect_timeout=2.0, read_timeout=2.0)
    client = NeoClient(
        account, http, wait=lambda s: False, on_request=lambda e, c: seen.append((e, c))
    )
    return client, seen


def test_a_refused_connection_names_the_host_and_port_and_counts_as_connection_refused() -> None:
    port = free_port()
    client, seen = _real_client(f"http://127.0.0.1:{port}")
    with pytest.raises(ApiError) as caught:
        client.get_json("/api/v1/user", {"token": TOKEN}, "user")
    message = str(caught.value)
    assert (
        message == f"user: gave up after 1 attempt (last: connection refused by 127.0.0.1:{port}); "
        "check base_url (or NEO_API_URL)"
    )
    assert seen == [("user", "connection_refused")]
    assert TOKEN not in message


def test_a_failed_dns_lookup_names_the_host_and_counts_as_dns_error() -> None:
    client, seen = _real_client("https://neo-exporter-test.invalid")
    with pytest.raises(ApiError) as caught:
        client.get_json("/api/v1/user", {}, "user")
    message = str(caught.value)
    assert message.startswith(
        "user: gave up after 1 attempt (last: DNS lookup of neo-exporter-test.invalid failed ("
    ), message
    assert message.endswith("); check base_url (or NEO_API_URL)"), message
    assert seen == [("user", "dns_error")]


def test_an_untrusted_certificate_counts_as_tls_error_and_says_why(tmp_path: Any) -> None:
    import http.server
    import ssl

    from tests.tls_helpers import make_pki

    pki = make_pki(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        client, seen = _real_client(f"https://127.0.0.1:{port}")  # the test CA is not trusted
        with pytest.raises(ApiError) as caught:
            client.get_json("/api/v1/user", {}, "user")
    finally:
        server.shutdown()
        server.server_close()
    message = str(caught.value)
    assert message.startswith(
        f"user: gave up after 1 attempt (last: TLS certificate of 127.0.0.1:{port} could not "
        "be verified ("
    ), message
    assert seen == [("user", "tls_error")]


def test_several_attempts_are_counted_in_the_plural(mocked: responses.RequestsMock) -> None:
    mocked.get(STREAMS, status=503)
    client, _, _ = make_client(Clock(), max_retries=2)
    with pytest.raises(
        ApiError, match=r"gave up after 3 attempts \(last: HTTP 503 from neo.test:443\)"
    ):
        client.get_json("/api/v1/usage/streams", {}, "streams")
