"""HTTP client for one Neo account: auth, timeouts, retries, and concurrent paging.

Retries: connection errors, timeouts, 429 (honouring `Retry-After`), 5xx and bodies that
are not a valid page are retried with exponential backoff and full jitter, up to
`http.max_retries` per request and `http.retry_budget` per read. A 429 pauses every worker
of the account, not just the one that got it. 401/403/404 and other 4xx are not retried.

Paging (`Listing`): `from` and `to` are pinned for the whole read. Offsets advance by the
rows a page actually held: a first page shorter than asked while `has_more` is true means
the server caps its pages, and its size is adopted (and logged once per endpoint). The first
page gives `total`; the remaining offsets are fetched concurrently, and if the last page
still says `has_more` (rows arrived meanwhile) paging goes on until it does not.

A read is complete only when the caller holds at least as many rows of the span as the
API's `total` said (rows sliding between pages, ties in `created_at` returned in a different
order by each request, a smaller page somewhere can all make offset paging miss rows). Rows
go missing only where two pages meet, so when it holds fewer, each seam (from the last row
of a page to the first of the next, by `created_at`) is read again whole: one request for a
seam that fits in a page, a few passes in order for a longer one. If rows are still missing
(they slid further), the span is halved at the median of the row times seen, and each half
asked for again, one page each: a half that fits in one page is then read whole, a half
whose `total` the caller already holds is done, and the rest is halved again, until no row
is missing or the read's repair budget is spent; the outcome says which. Duplicates across
pages are expected; the caller drops them.

Concurrency: at most `http.concurrency` requests of one account are in flight at once,
whichever reads they belong to (the streams and tasks reads run side by side).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec
import requests
from urllib3.exceptions import NameResolutionError, ReadTimeoutError

from exporter import __version__
from exporter.config import AccountConfig, HttpConfig, format_duration
from exporter.models import Page, PageError, decode_page, format_timestamp, row_created_ts

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 600.0  # a server asking for more than this is treated as asking for this
# Bodies are read in chunks, so that a stop need not wait for the end of a slow one.
BODY_CHUNK = 64 * 1024

# `code` label values for requests that got no HTTP status (also their retry reasons).
CODE_TIMEOUT = "timeout"
CODE_DNS = "dns_error"
CODE_REFUSED = "connection_refused"
CODE_TLS = "tls_error"
CODE_CONNECTION = "connection_error"  # anything else: reset, truncated body, proxy, ...
UNREACHABLE = (CODE_DNS, CODE_REFUSED)  # no answer from the address: a wrong base_url, often
NO_STATUS_CODES = (CODE_TIMEOUT, CODE_DNS, CODE_REFUSED, CODE_TLS, CODE_CONNECTION)


class ApiError(RuntimeError):
    """A request that failed for good; the message is safe to log (it holds no secret)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ApiError):
    """401 or 403: retrying will not help, the token or its role must change."""


class Stopped(Exception):
    """The stop event was set while waiting."""


@dataclass(frozen=True, slots=True)
class PageProgress:
    pages_done: int
    pages_total: int | None
    rows_done: int
    rows_total: int | None


RequestHook = Callable[[str, str], None]  # (endpoint, code)
RetryHook = Callable[[str, str], None]  # (endpoint, reason)
RETRY_REASONS = ("429", "5xx", *NO_STATUS_CODES, "invalid_body")


class _Budget:
    """Retries left for one read, shared by its concurrent page fetches."""

    def __init__(self, retries: int) -> None:
        self._left = retries
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


class NeoClient:
    """One `requests.Session` per account; safe to use from several threads."""

    def __init__(
        self,
        account: AccountConfig,
        http: HttpConfig,
        *,
        wait: Callable[[float], bool],
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_request: RequestHook | None = None,
        on_retry: RetryHook | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """`wait(seconds)` sleeps and returns True if the exporter is stopping.

        `executor` fetches pages; a process with many accounts shares one (its owner shuts
        it down), else the client has its own.
        """
        self._base_url = account.base_url
        self._host = host_of(account.base_url)
        self._http = http
        self._wait = wait
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._on_request = on_request or (lambda endpoint, code: None)
        self._on_retry = on_retry or (lambda endpoint, reason: None)
        self._pause_until = 0.0
        self._pause_lock = threading.Lock()
        self._page_caps: dict[str, int] = {}  # endpoint -> the server's own page size
        # What the last failed attempt ran into, while retrying (for --once's progress).
        self.last_failure: str | None = None
        self._session = requests.Session()
        # Every request holds a slot while on the wire, so `concurrency` connections are all
        # the pool ever needs at once (a smaller pool would drop kept-alive connections).
        slots = max(http.concurrency, 1)
        self._in_flight = threading.BoundedSemaphore(slots)
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=slots)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        # The environment is read once, here, not at every request (requests' trust_env
        # scans it each time: a tenth of an idle poll's CPU): the proxy for this URL
        # (HTTPS_PROXY, NO_PROXY, ...) and a CA bundle. A ~/.netrc entry is never used: it
        # would replace the token's Authorization header.
        self._session.trust_env = False
        self._session.proxies.update(requests.utils.get_environ_proxies(account.base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self._session.verify = bundle
        self._session.headers["User-Agent"] = f"neo-exporter/{__version__}"
        self._session.headers["Accept"] = "application/json"
        token = account.token.reveal()
        if account.auth_header == "x-api-key":
            self._session.headers["X-Api-Key"] = token
        else:
            self._session.headers["Authorization"] = f"Bearer {token}"
        # Workers start on first use. Reads running side by side share them and the slots.
        self._owns_executor = executor is None
        self._executor = executor or page_executor(2 * slots)

    def close(self) -> None:
        # A fetch stuck in the network is not waited for: it commits nothing itself.
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    # --- one request ---------------------------------------------------------------------

    def get_json(
        self, path: str, params: Mapping[str, str], endpoint: str, *, budget: _Budget | None = None
    ) -> object:
        """GET a JSON body, retrying what is worth retrying."""
        return self._request(path, params, endpoint, budget or self.new_budget(), as_page=False)

    def new_budget(self) -> _Budget:
        return _Budget(self._http.retry_budget)

    def _request(
        self, path: str, params: Mapping[str, str], endpoint: str, budget: _Budget, *, as_page: bool
    ) -> object:
        url = self._base_url + path
        timeout = (self._http.connect_timeout, self._http.read_timeout)
        attempt = 0
        while True:
            if self._wait(0):  # a read of many small pages stops between them, not at its end
                raise Stopped
            self._wait_for_pause()
            retry_after: float | None = None
            try:
                response, content = self._get(url, params, timeout)
            except requests.RequestException as exc:
                reason, cause = describe_failure(exc, self._host, self._http)
                self._on_request(endpoint, reason)
                log.debug("%s: %s (%s); retrying if allowed", endpoint, cause, reason)
            else:
                status = response.status_code
                self._on_request(endpoint, str(status))
                if status == 200:
                    try:
                        return decode_page(content) if as_page else decode_json(content)
                    except (ValueError, PageError) as exc:
                        reason = "invalid_body"
                        cause = f"invalid response body from {self._host} ({exc})"
                        log.warning("%s: invalid response body (%s); retrying", endpoint, exc)
                elif status in (401, 403):
                    raise AuthError(_auth_message(status, endpoint, self._host), status=status)
                elif status == 429:
                    reason = "429"
                    cause = f"HTTP 429 (rate limited) from {self._host}"
                    retry_after = _retry_after(response.headers.get("Retry-After"), time.time())
                elif status >= 500:
                    reason = "5xx"
                    cause = f"HTTP {status} from {self._host}"
                else:
                    raise ApiError(
                        f"{endpoint}: HTTP {status} from {self._host}{path} (not retried)",
                        status=status,
                    )
            self.last_failure = cause
            if attempt >= self._http.max_retries or not budget.take():
                attempts = "1 attempt" if attempt == 0 else f"{attempt + 1} attempts"
                # No answer from that address at all: most often the address itself is wrong.
                where = "; check base_url (or NEO_API_URL)" if reason in UNREACHABLE else ""
                raise ApiError(f"{endpoint}: gave up after {attempts} (last: {cause}){where}")
            self._on_retry(endpoint, reason)
            delay = self._backoff(attempt)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if reason == "429":
                self._pause(delay)  # every worker of this account waits, not only this one
            elif self._wait(delay):
                raise Stopped
            attempt += 1

    def _get(
        self, url: str, params: Mapping[str, str], timeout: tuple[float, float]
    ) -> tuple[requests.Response, bytes]:
        """One GET and its whole body, holding one of the account's slots (not to decode)."""
        with self._in_flight:
            response = self._session.get(
                url, params=params, timeout=timeout, allow_redirects=False, stream=True
            )
            return response, self._read_body(response)

    def _read_body(self, response: requests.Response) -> bytes:
        """The whole body, checking for a stop between chunks; the connection is released."""
        try:
            chunks: list[bytes] = []
            for chunk in response.iter_content(BODY_CHUNK):
                if chunks and self._wait(0):  # wait(0): just "are we stopping?"
                    raise Stopped
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            response.close()

    def _backoff(self, attempt: int) -> float:
        cap = min(self._http.backoff_max, self._http.backoff_base * (2**attempt))
        return self._rng.uniform(cap / 2, cap)  # jitter, but never a busy retry

    def _pause(self, delay: float) -> None:
        with self._pause_lock:
            self._pause_until = max(self._pause_until, self._monotonic() + delay)
        self._wait_for_pause()

    def _wait_for_pause(self) -> None:
        while True:
            with self._pause_lock:
                left = self._pause_until - self._monotonic()
            if left <= 0:
                return
            if self._wait(left):
                raise Stopped

    # --- paging --------------------------------------------------------------------------

    def listing(
        self,
        path: str,
        endpoint: str,
        start: float,
        end: float,
        params: Mapping[str, str] | None = None,
        *,
        on_progress: Callable[[PageProgress], None] | None = None,
    ) -> Listing:
        """A read of a list endpoint over [start, end], both pinned for all its requests."""
        return Listing(self, path, endpoint, start, end, params or {}, on_progress)

    def count(
        self,
        path: str,
        endpoint: str,
        start: float,
        end: float,
        params: Mapping[str, str] | None = None,
    ) -> int | None:
        """The API's `total` of rows in [start, end], from one request for one row."""
        query = {
            **(params or {}),
            "from": format_timestamp(start),
            "to": format_timestamp(end),
            "limit": "1",
            "offset": "0",
        }
        page = self._request(path, query, endpoint, self.new_budget(), as_page=True)
        assert isinstance(page, Page)
        return page.total

    def page_size(self, endpoint: str) -> int:
        """Rows a page of this endpoint holds: asked for, or the server's cap once seen."""
        with self._pause_lock:
            return self._page_caps.get(endpoint, self._http.page_size)

    def _adopt_page_size(self, endpoint: str, rows: int) -> None:
        with self._pause_lock:
            known = self._page_caps.get(endpoint)
            self._page_caps[endpoint] = rows
        if known != rows:
            log.warning(
                "%s: the server returns pages of %d rows while %d were asked for; "
                "paging by %d from now on",
                endpoint,
                rows,
                self._http.page_size,
                rows,
            )

    def _fetch_all(self, fetch: Callable[[K], Page], keys: list[K]) -> Iterator[tuple[K, Page]]:
        """Fetch keys with bounded concurrency, yielding pages as they arrive."""
        pending: dict[Future[Page], K] = {}
        queued = list(reversed(keys))
        try:
            while True:
                # The pool runs at most `concurrency` requests at once; as many more are queued
                # or done and waiting, so fetching goes on while the caller counts a page.
                # Memory stays a few pages.
                while queued and len(pending) < 2 * self._http.concurrency:
                    key = queued.pop()
                    try:
                        pending[self._executor.submit(fetch, key)] = key
                    except RuntimeError:  # the process shut the shared pool: it is stopping
                        raise Stopped from None
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    key = pending.pop(future)
                    yield key, future.result()
        finally:
            for future in pending:
                future.cancel()
            # A fetch already running finishes on its own; its result is dropped.


K = TypeVar("K")
# A span this narrow (seconds) is not halved again: its rows share one instant.
MIN_SLICE = 0.001
# Passes in offset order over a span too narrow to halve, before it is left incomplete.
NARROW_PASSES = 3
# Requests a read may spend finding missing rows: a few times its own pages, at least this.
MIN_REPAIR_REQUESTS = 16
REPAIR_FACTOR = 4


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    """How a list read ended: complete, or how far from the API's own count it stayed."""

    complete: bool
    reported: int | None  # the API's `total` for the span (None: it sent none)
    found: int | None  # rows of the span the caller held at the end
    repair_requests: int  # requests spent on finding rows the pages missed


class Listing:
    """One read of a list endpoint over a pinned span; see the module docstring."""

    def __init__(
        self,
        client: NeoClient,
        path: str,
        endpoint: str,
        start: float,
        end: float,
        params: Mapping[str, str],
        on_progress: Callable[[PageProgress], None] | None,
    ) -> None:
        # Whole milliseconds: exactly what `from` and `to` say, so counts compare like for like.
        self.start = math.floor(start * 1000) / 1000
        self.end = math.floor(end * 1000) / 1000
        self._client = client
        self._http = client._http
        self._path = path
        self._endpoint = endpoint
        self._params = dict(params)
        self._progress = on_progress or (lambda p: None)
        self._budget = client.new_budget()
        self._pages_done = 0
        self._rows_done = 0
        self._pages_total: int | None = None
        self._rows_total: int | None = None
        # The main pass's pages by offset: the created_at of their first and last rows.
        self._edges: dict[int, tuple[float, float]] = {}
        self.outcome: ReadOutcome | None = None

    def pages(self, found: Callable[[float, float], int]) -> Iterator[Page]:
        """Every page of the read, then those of its repair; sets `outcome` at the end.

        `found(start, end)` counts the rows the caller holds with a time in [start, end]; it
        is called only between pages, after the caller has taken the pages yielded so far.
        """
        reported = yield from self._main_pass()
        if reported is None:
            self.outcome = ReadOutcome(True, None, None, 0)
            return
        held = found(self.start, self.end)
        if held >= reported:
            self.outcome = ReadOutcome(True, reported, held, 0)
            return
        log.info(
            "%s: the read of %s..%s holds %d of the %d rows the API counts; "
            "reading again where its pages meet",
            self._endpoint,
            self._params.get("from", self.start),
            self._params.get("to", self.end),
            held,
            reported,
        )
        budget = max(MIN_REPAIR_REQUESTS, REPAIR_FACTOR * self._pages_done)
        spent = yield from self._repair_seams(found, budget)
        if found(self.start, self.end) < reported:
            spent += yield from self._repair(found, budget - spent)
        # Complete only if nothing is missing now: a span read whole whose `total` still
        # counts rows it never lists (or rows without an id or a time) stays short.
        held = found(self.start, self.end)
        self.outcome = ReadOutcome(held >= reported, reported, held, spent)

    # --- the first pass: every offset ----------------------------------------------------

    def _fetch(self, span: tuple[float, float], offset: int, limit: int) -> Page:
        query = {
            **self._params,
            "from": format_timestamp(span[0]),
            "to": format_timestamp(span[1]),
            "limit": str(limit),
            "offset": str(offset),
        }
        page = self._client._request(self._path, query, self._endpoint, self._budget, as_page=True)
        assert isinstance(page, Page)
        return page

    def _done(self, page: Page) -> Page:
        self._pages_done += 1
        self._rows_done += len(page.rows)
        pages_total = max(self._pages_done, self._pages_total or 0)
        self._progress(
            PageProgress(self._pages_done, pages_total, self._rows_done, self._rows_total)
        )
        return page

    def _main_pass(self) -> Generator[Page, None, int | None]:
        span = (self.start, self.end)
        asked = self._http.page_size
        size = self._client.page_size(self._endpoint)
        first = self._fetch(span, 0, asked)
        if first.has_more and 0 < len(first.rows) != size:
            size = len(first.rows)  # the server pages by its own size: offsets follow it
            self._client._adopt_page_size(self._endpoint, size)
        reported = first.total
        self._rows_total = reported
        if reported is not None:
            self._pages_total = max(1, math.ceil(reported / size))
        self._note_edges(0, first)
        yield self._done(first)
        if not first.has_more:
            return reported
        last, next_offset = first, len(first.rows)
        if reported is not None and self._pages_total is not None and self._pages_total > 1:
            self._check_cap(self._pages_total)
            offsets = [size * i for i in range(1, self._pages_total)]
            fetch = lambda offset: self._fetch(span, offset, asked)  # noqa: E731
            for offset, page in self._client._fetch_all(fetch, offsets):
                reported = max(reported, page.total or 0)
                if offset == offsets[-1]:
                    last = page
                self._note_edges(offset, page)
                yield self._done(page)
            next_offset = offsets[-1] + len(last.rows)
        # Rows that arrived while paging push the end further out: follow has_more by what
        # each page held.
        while last.has_more and last.rows:
            self._check_cap(self._pages_done + 1)
            last = self._fetch(span, next_offset, asked)
            if reported is not None and last.total is not None:
                reported = max(reported, last.total)
            self._note_edges(next_offset, last)
            next_offset += len(last.rows)
            yield self._done(last)
        return reported

    def _note_edges(self, offset: int, page: Page) -> None:
        if page.rows:
            first, last = row_created_ts(page.rows[0]), row_created_ts(page.rows[-1])
            if first is not None and last is not None:
                self._edges[offset] = (first, last)

    def _check_cap(self, pages: int) -> None:
        if pages > self._http.max_pages:
            raise ApiError(
                f"{self._endpoint}: a read needs {pages} pages, more than "
                f"http.max_pages={self._http.max_pages}"
            )

    # --- the repair: where pages meet first, then halves of what still misses rows -------

    def _seams(self) -> list[tuple[float, float]]:
        """The spans where the main pass's pages meet, widened by a millisecond, merged.

        Offset paging loses or repeats rows only across a page's edge: a run of rows with
        the same created_at that two pages share (whose order each request may change), or
        rows that slid from one page to the next while the read went on. The rows at risk
        lie between the last row of one page and the first row of the next.
        """
        spans: list[tuple[float, float]] = []
        offsets = sorted(self._edges)
        for before, after in itertools.pairwise(offsets):
            last, first = self._edges[before][1], self._edges[after][0]
            low = max(self.start, min(last, first) - MIN_SLICE)
            high = min(self.end, max(last, first) + MIN_SLICE)
            if low < high:
                spans.append((low, high))
        merged: list[tuple[float, float]] = []
        for low, high in sorted(spans):
            if merged and low <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def _repair_seams(
        self, found: Callable[[float, float], int], budget: int
    ) -> Generator[Page, None, int]:
        """Read each seam whole (a page for most); the requests spent."""
        asked = self._http.page_size
        seams = self._seams()
        if len(seams) > budget:
            return 0  # too many to afford: the halving finds where rows are missing
        fetch = lambda span: self._fetch(span, 0, asked)  # noqa: E731
        spent = 0
        longer: list[tuple[tuple[float, float], int | None]] = []
        for span, page in self._client._fetch_all(fetch, seams):
            spent += 1
            yield self._done(page)
            if page.has_more:  # a seam of more rows than a page: page through it in order
                longer.append((span, page.total))
        for span, total in sorted(longer):
            if spent >= budget:
                break
            if total is None or found(*span) < total:
                spent += yield from self._in_order(span, found, asked)
        return spent

    def _repair(
        self, found: Callable[[float, float], int], budget: int
    ) -> Generator[Page, None, int]:
        """Read the halves of the span that miss rows, down to halves of one page; the
        requests spent. Whether anything is still missing is for the caller to count.

        A span is halved at the median of the row times the main pass saw in it, so that
        each half holds about as many rows, rather than at its clock middle (a burst of rows
        in one minute of a day would otherwise take a dozen halvings to reach)."""
        asked = self._http.page_size
        times = sorted({t for edge in self._edges.values() for t in edge})
        open_spans = _halves((self.start, self.end), times)
        spent = 0
        while open_spans:
            if spent + len(open_spans) > budget:
                log.warning(
                    "%s: %d part(s) of %s..%s still miss rows after %d repair requests; "
                    "the read is incomplete",
                    self._endpoint,
                    len(open_spans),
                    format_timestamp(self.start),
                    format_timestamp(self.end),
                    spent,
                )
                return spent
            fetch = lambda span: self._fetch(span, 0, asked)  # noqa: E731
            heads: list[tuple[tuple[float, float], Page]] = []
            for span, page in self._client._fetch_all(fetch, open_spans):
                spent += 1
                heads.append((span, page))
                yield self._done(page)
            narrow: list[tuple[float, float]] = []
            open_spans = []
            for span, page in sorted(heads, key=lambda head: head[0]):
                if not page.has_more:
                    continue  # read whole in one page: nothing more to be had from it
                if page.total is not None and found(*span) >= page.total:
                    continue
                if span[1] - span[0] <= MIN_SLICE:
                    narrow.append(span)
                else:
                    open_spans.extend(_halves(span, times))
            for span in narrow:
                spent += yield from self._in_order(span, found, asked)
        return spent

    def _in_order(
        self,
        span: tuple[float, float],
        found: Callable[[float, float], int],
        asked: int,
    ) -> Generator[Page, None, int]:
        """Page through a span too narrow to halve, a few times, until nothing is missing."""
        spent = 0
        for _ in range(NARROW_PASSES):
            offset, total = 0, None
            while True:
                page = self._fetch(span, offset, asked)
                spent += 1
                total = page.total
                yield self._done(page)
                if not page.has_more or not page.rows:
                    break
                offset += len(page.rows)
            if total is None or found(*span) >= total:
                break
        return spent


def _halves(span: tuple[float, float], times: Sequence[float] = ()) -> list[tuple[float, float]]:
    """Two spans that together cover `span`, split at a whole millisecond: at the median of
    the sorted `times` strictly inside it, or at its middle when none is."""
    start, end = span
    inside = times[bisect.bisect_right(times, start) : bisect.bisect_left(times, end)]
    middle = inside[len(inside) // 2] if inside else (start + end) / 2
    middle = math.floor(middle * 1000) / 1000
    if middle <= start:
        middle = start + MIN_SLICE / 2  # too narrow to split on a millisecond
    return [(start, middle), (middle, end)]


def decode_json(body: bytes) -> object:
    """A JSON body, by msgspec; the few it refuses (NaN, integers beyond 64 bits) go to the
    standard library, so the decoder never changes what is read."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return json.loads(body)


def page_executor(workers: int) -> ThreadPoolExecutor:
    """Threads that fetch the pages of reads (each request still holds its account's slot)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neo-page")


def host_of(base_url: str) -> str:
    """`host:port` of a base URL, as errors show it (the config allows no credentials in it)."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: urllib3 keeps the cause in `reason` or `args[0]`."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        reason = getattr(item, "reason", None)
        first = item.args[0] if item.args else None
        todo += [
            reason if isinstance(reason, BaseException) else None,
            first if isinstance(first, BaseException) else None,
            item.__cause__,
            item.__context__,
        ]
    return seen


def describe_failure(
    exc: requests.RequestException, host: str, http: HttpConfig
) -> tuple[str, str]:
    """(`code` label, what happened) of a request that got no HTTP status.

    The text names the host and the cause, never the URL's path or query, nor a proxy's
    address (it may hold credentials).
    """
    causes = _causes(exc)
    name = host.rpartition(":")[0].strip("[]")
    for cause in causes:
        if isinstance(cause, NameResolutionError | socket.gaierror):
            detail = next((c.strerror for c in causes if isinstance(c, socket.gaierror)), None)
            return CODE_DNS, f"DNS lookup of {name} failed ({detail or 'no address'})"
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or "not trusted"
            return CODE_TLS, f"TLS certificate of {host} could not be verified ({why})"
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            why = cause.reason or type(cause).__name__
            return CODE_TLS, f"TLS handshake with {host} failed ({why})"
    if isinstance(exc, requests.exceptions.SSLError):
        return CODE_TLS, f"TLS handshake with {host} failed"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return CODE_REFUSED, f"connection refused by {host}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return CODE_TIMEOUT, (
            f"no connection to {host} within http.connect_timeout "
            f"{format_duration(http.connect_timeout)}"
        )
    if isinstance(exc, requests.Timeout) or any(isinstance(c, ReadTimeoutError) for c in causes):
        # A timeout in the middle of a body: requests calls it a connection error.
        return CODE_TIMEOUT, (
            f"no response from {host} within http.read_timeout {format_duration(http.read_timeout)}"
        )
    if isinstance(exc, requests.exceptions.ProxyError):
        return CODE_CONNECTION, f"the proxy for {host} failed (see HTTPS_PROXY)"
    for cause in causes:
        if isinstance(cause, ConnectionResetError):
            return CODE_CONNECTION, f"connection to {host} reset"
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return CODE_CONNECTION, f"connection to {host} failed ({cause.strerror})"
    return CODE_CONNECTION, f"connection to {host} failed ({type(exc).__name__})"


def _auth_message(status: int, endpoint: str, host: str) -> str:
    if status == 401:
        return (
            f"{endpoint}: HTTP 401 from {host}: the API rejected the token; check the account's "
            "token and auth_header (bearer for a JWT, x-api-key for a neo_sk_ key)"
        )
    return (
        f"{endpoint}: HTTP 403 from {host}: this token may not read usage; only a team admin's "
        "or a solo user's token can (team members and viewers get 403)"
    )


def _retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
