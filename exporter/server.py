"""HTTP endpoints: `/metrics`, the landing page `/`, `/-/healthy` and `/-/ready`.

A threading server, so one slow scrape never holds up another; each request renders the
current snapshot and touches neither the API nor the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import html
import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import AlertThresholds, Config, format_duration
from exporter.snapshot import (
    ACCOUNT_ENDPOINTS,
    AccountSnapshot,
    AuditResult,
    EndpointHealth,
    Snapshot,
    SnapshotStore,
)
from exporter.state import StateHealth
from exporter.webconfig import HANDSHAKE_TIMEOUT, BasicAuth, TLSWrapper, WebConfigFile

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 512  # connections the kernel queues while every slot is taken
# Per socket operation once a request is being answered: a client that stops reading the
# response for this long is dropped (request heads have their own, shorter, deadline).
WRITE_TIMEOUT = 60.0


class ListenError(Exception):
    """The listen address cannot be bound; the message names it and says why."""


def _shown(address: tuple[str, int]) -> str:
    host, port = address
    if not host:
        return f"0.0.0.0:{port} (every interface)"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_socket(address: tuple[str, int], backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A socket bound to `address` and listening; ListenError names the address on failure."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As socketserver does: a restart need not wait for the old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        hint = {
            errno.EADDRINUSE: "address already in use (another process listens there; pick "
            "another with --web.listen-address or web.listen_address)",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
            errno.EADDRNOTAVAIL: "no interface of this machine has that address",
        }.get(exc.errno or 0)
        if hint is None:
            hint = exc.strerror or type(exc).__name__
            if isinstance(exc, socket.gaierror):
                hint = f"the host name cannot be resolved ({hint})"
        raise ListenError(f"cannot listen on {_shown(address)}: {hint}") from None
    return sock


@dataclass(slots=True)
class _Connection:
    sock: socket.socket
    waiting_since: float
    deadline: float | None  # monotonic; None while a request is being answered
    evicted: bool = False


class ConnectionLimiter:
    """At most `limit` connections at once, none waiting for a request head past a deadline.

    Each connection is served by a thread of its own (ThreadingHTTPServer), so slow clients
    that open connections and send headers a byte at a time would otherwise hold a thread
    each, without end. Here a connection gets `header_timeout` to send a whole request head
    (from its opening, or from its last response when kept alive), and is shut down when it
    has not. When `limit` connections are open, the one that has waited longest for a request
    head is shut down to make room (a scraper sends its request at once, so it is rarely
    that one); when every connection is busy answering, the accept loop waits for one to end
    and new connections queue in the listen backlog.
    """

    def __init__(
        self,
        limit: int,
        header_timeout: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._open: dict[object, _Connection] = {}  # by client address
        self._closing = False

    def admit(self, sock: socket.socket, address: object) -> bool:
        """In the accept loop: make room for one more connection; False when closing."""
        with self._cond:
            while True:
                if self._closing:
                    return False
                live = [c for c in self._open.values() if not c.evicted]
                if len(live) < self.limit:
                    break
                idle = [c for c in live if c.deadline is not None]
                if idle:
                    self._evict(min(idle, key=lambda c: c.waiting_since))
                    break
                self._cond.wait(0.1)
            now = self._monotonic()
            self._open[address] = _Connection(sock, now, now + self.header_timeout)
            return True

    def waiting(self, address: object) -> None:
        """The connection now waits for a request head: its deadline starts."""
        with self._cond:
            conn = self._open.get(address)
            if conn is not None:
                now = self._monotonic()
                conn.waiting_since, conn.deadline = now, now + self.header_timeout

    def answering(self, address: object) -> bool:
        """A request head was read: no deadline while it is answered. False if the connection
        was shut down meanwhile (the head may be cut short): it must not be answered."""
        with self._cond:
            conn = self._open.get(address)
            if conn is None or conn.evicted:
                return False
            conn.deadline = None
            return True

    def rebind(self, address: object, sock: socket.socket) -> None:
        """The socket to shut down from now on (TLS wraps the accepted one)."""
        with self._cond:
            conn = self._open.get(address)
            if conn is not None:
                conn.sock = sock

    def release(self, address: object) -> None:
        with self._cond:
            self._open.pop(address, None)
            self._cond.notify_all()

    def reap(self) -> None:
        """Shut down every connection past its deadline (called by the accept loop)."""
        with self._cond:
            now = self._monotonic()
            for conn in self._open.values():
                if conn.deadline is not None and now >= conn.deadline and not conn.evicted:
                    self._evict(conn)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def open_count(self) -> int:
        with self._cond:
            return sum(1 for c in self._open.values() if not c.evicted)

    @staticmethod
    def _evict(conn: _Connection) -> None:
        conn.evicted = True
        # The serving thread's read returns at once and it ends; the thread closes the socket.
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class PageContext:
    """What the landing page shows besides the snapshot: the config, the state, the start."""

    config: Config | None = None
    state: Callable[[], StateHealth] | None = None
    started: float | None = None  # Unix time the exporter started


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        store: SnapshotStore,
        *,
        per_snapshot: CollectorRegistry | None = None,
        per_counts: CollectorRegistry | None = None,
        per_scrape: CollectorRegistry | None = None,
        telemetry_path: str = "/metrics",
        clock: Callable[[], float] = time.time,
        web: WebConfigFile | None = None,
        listener: socket.socket | None = None,
        max_connections: int = 64,
        read_header_timeout: float = 10.0,
        page: PageContext | None = None,
    ) -> None:
        """Serve `registry`, `per_counts` and `per_snapshot` (whose metrics depend only on
        the store's snapshot: its accounts' counts, or anything in it) and `per_scrape`
        (rendered at every scrape: the process's CPU and memory) on `telemetry_path`. `web`
        (from --web.config.file) adds TLS, basic auth and response headers. `listener`,
        already bound and listening, is used as it is (so that the caller can bind before
        creating anything else); without it, `address` is bound here (ListenError if it
        cannot be)."""
        self.registry = registry
        self.store = store
        self.clock = clock
        web = web or WebConfigFile()
        self.tls = None if web.tls is None else TLSWrapper(web.tls)
        self.auth = BasicAuth(web.users) if web.users else None
        self.extra_headers = web.headers
        self.renders = Renders(
            registry, per_snapshot, store, per_counts=per_counts, per_scrape=per_scrape
        )
        self.telemetry_path = telemetry_path
        self.connections = ConnectionLimiter(max_connections, read_header_timeout)
        self.page = page or PageContext(started=clock())
        sock = listener if listener is not None else listen_socket(address)
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()  # the one socketserver made; `sock` is already bound
        self.socket = sock
        self.address_family = sock.family
        self.server_address = sock.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    @property
    def url(self) -> str:
        """A URL this machine can reach the server at (loopback when bound to every address)."""
        host, port = self.server_address[:2]
        shown = host if isinstance(host, str) and host not in ("", "0.0.0.0", "::") else None  # noqa: S104
        if shown is None:
            shown = "::1" if self.address_family == socket.AF_INET6 else "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        return f"{'https' if self.tls else 'http'}://{shown}:{port}"

    def describe(self) -> str:
        """Where the socket is really bound, and how to reach it from here if that differs."""
        host, port = str(self.server_address[0]), self.server_address[1]
        scheme = "https" if self.tls else "http"
        bound = f"[{host}]" if ":" in host else host
        text = f"{scheme}://{bound}:{port}"
        if host in ("0.0.0.0", "::"):  # noqa: S104
            family = "IPv6" if host == "::" else "IPv4"
            text += f" (every {family} interface; from this machine: {self.url}/)"
        return text

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Admit the connection (waiting for, or making, room) before it gets a thread."""
        if isinstance(request, socket.socket) and not self.connections.admit(
            request, client_address
        ):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(client_address)

    def service_actions(self) -> None:
        """Run by the accept loop about twice a second: drop connections past their deadline."""
        self.connections.reap()

    def server_close(self) -> None:
        self.connections.close()
        super().server_close()

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """With TLS, the handshake runs here, in the request's own thread, not the accept loop."""
        if self.tls is None or not isinstance(request, socket.socket):
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            # No handshake yet: the limiter must hold the wrapped socket first, so that a
            # client too slow to finish it can be shut down like any other.
            secure = self.tls.context().wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        self.connections.rebind(client_address, secure)
        try:
            try:
                secure.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
            if not self.tls.allowed(secure):
                log.debug("client certificate of %s matches no allowed SAN", client_address)
                return
            secure.settimeout(None)
            super().finish_request(secure, client_address)
        finally:
            secure.close()

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


OPENMETRICS_EOF = b"# EOF\n"
GZIP_LEVEL = 1  # fast: a body is compressed once per snapshot, but at every poll


class Include(Collector):
    """Collects everything another registry holds, so that one registry can show two."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


@dataclass(slots=True)
class _Body:
    """One format's body of one snapshot: all but the per-scrape part, plain and gzipped."""

    snapshot: Snapshot
    plain: bytes  # without OpenMetrics' `# EOF`: the per-scrape part ends the body
    gzip_prefix: bytes | None = None  # `plain` compressed and flushed to a byte boundary
    compressor: zlib._Compress | None = None  # the stream after `gzip_prefix`, copied per tail


class Renders:
    """/metrics bodies, rendered and compressed once per snapshot and format.

    Rendering tens of thousands of series costs a large fraction of a second of CPU in
    prometheus_client, and compressing them more. Everything but the process's own figures
    (`per_scrape`: CPU, memory, open files) changes only when a poll publishes a snapshot:
    the Neo metrics (`per_snapshot`; the counters and histograms, `per_counts`, only when an
    account committed rows) and the exporter's own counters (`live`, which the polls
    increment before they publish). So a body is kept per format (text or OpenMetrics) until
    the snapshot is another object, and each scrape only renders `per_scrape` and appends it:
    to the plain bytes, or to a copy of the gzip stream's state after the kept part, so the
    whole body stays one gzip member and the kept part is never compressed again.
    """

    def __init__(
        self,
        live: CollectorRegistry,
        per_snapshot: CollectorRegistry | None,
        store: SnapshotStore,
        per_counts: CollectorRegistry | None = None,
        per_scrape: CollectorRegistry | None = None,
    ) -> None:
        self._live = live
        self._per_snapshot = per_snapshot
        self._per_counts = per_counts
        self._per_scrape = per_scrape
        self._store = store
        self._lock = threading.Lock()  # one render at a time; the others wait and reuse it
        self._bodies: dict[str, _Body] = {}
        self._snapshot_parts: dict[str, tuple[Snapshot, bytes]] = {}
        self._counts_parts: dict[str, tuple[tuple[object, ...], bytes]] = {}
        self.renders = 0  # bodies rendered (not reused): what the tests watch

    def get(self, encoder: Callable[[CollectorRegistry], bytes], kind: str, gzipped: bool) -> bytes:
        tail = encoder(self._per_scrape) if self._per_scrape is not None else b""
        with self._lock:
            body = self._body(encoder, kind)
            if not gzipped:
                return body.plain + (tail or _eof_of(kind))
            if body.compressor is None:
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
                body.gzip_prefix = compressor.compress(body.plain) + compressor.flush(
                    zlib.Z_SYNC_FLUSH
                )
                body.compressor = compressor
            prefix, ending = body.gzip_prefix or b"", body.compressor.copy()
        return prefix + ending.compress(tail or _eof_of(kind)) + ending.flush()

    def _body(self, encoder: Callable[[CollectorRegistry], bytes], kind: str) -> _Body:
        # Taken before rendering: if a poll replaces the snapshot meanwhile, the next
        # scrape sees a different object and renders again.
        snapshot = self._store.get()
        body = self._bodies.get(kind)
        if body is None or body.snapshot is not snapshot:
            plain = _join(
                _join(encoder(self._live), self._counts_part(encoder, kind, snapshot)),
                self._snapshot_part(encoder, kind, snapshot),
            )
            body = _Body(snapshot, plain.removesuffix(OPENMETRICS_EOF))
            self._bodies[kind] = body
            self.renders += 1
        return body

    def _snapshot_part(
        self, encoder: Callable[[CollectorRegistry], bytes], kind: str, snapshot: Snapshot
    ) -> bytes:
        if self._per_snapshot is None:
            return b""
        cached = self._snapshot_parts.get(kind)
        if cached is None or cached[0] is not snapshot:
            cached = (snapshot, encoder(self._per_snapshot))
            self._snapshot_parts[kind] = cached
        return cached[1]

    def _counts_part(
        self, encoder: Callable[[CollectorRegistry], bytes], kind: str, snapshot: Snapshot
    ) -> bytes:
        """The counters and histograms: rendered again only when an account's counts (an
        object that stays the same until a poll commits rows) are another object."""
        if self._per_counts is None:
            return b""
        key = tuple(account.counts for account in snapshot.accounts)
        cached = self._counts_parts.get(kind)
        if (
            cached is None
            or len(cached[0]) != len(key)
            or any(old is not new for old, new in zip(cached[0], key, strict=True))
        ):
            cached = (key, encoder(self._per_counts))
            self._counts_parts[kind] = cached
        return cached[1]


GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


def _eof_of(kind: str) -> bytes:
    """What ends a body of this format when nothing is rendered per scrape."""
    return OPENMETRICS_EOF if "openmetrics" in kind else b""


def _join(first: bytes, second: bytes) -> bytes:
    """Two expositions as one; an OpenMetrics exposition ends once, with `# EOF`."""
    if not second:
        return first
    return first.removesuffix(OPENMETRICS_EOF) + second


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    server_version = f"neo-exporter/{__version__}"
    timeout = WRITE_TIMEOUT  # per socket operation; request heads have a shorter deadline

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # scraper's delayed ACK add about 40 ms to every scrape on a kept-alive connection.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        # The request head's deadline starts now: at the opening, or after the last response.
        self.server.connections.waiting(self.client_address)
        try:
            super().handle_one_request()
        except OSError:
            # Shut down by the limiter (deadline, room for another) or gone: nothing to answer.
            self.close_connection = True

    def parse_request(self) -> bool:
        ok = super().parse_request()  # reads the headers; the end of the stream ends them too
        if not self.server.connections.answering(self.client_address):
            self.close_connection = True
            return False
        return ok

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if self.server.auth is not None and not self.server.auth.check(
            self.headers.get("Authorization")
        ):
            self._send(
                401,
                "text/plain; charset=utf-8",
                b"Unauthorized\n",
                {"WWW-Authenticate": 'Basic realm="neo-exporter", charset="UTF-8"'},
            )
        elif path == self.server.telemetry_path:
            self._metrics()
        elif path == "/":
            body = landing_page(self.server.store.get(), self.server.clock(), self.server.page)
            self._send(200, "text/html; charset=utf-8", body.encode())
        elif path == "/-/healthy":
            self._send(200, "text/plain; charset=utf-8", b"OK\n")
        elif path == "/-/ready":
            if self.server.store.get().ready:
                self._send(200, "text/plain; charset=utf-8", b"OK\n")
            else:
                # Ready means ready to serve, not "the API works": the landing page and neo_up
                # say that.
                self._send(503, "text/plain; charset=utf-8", b"first poll not done yet\n")
        else:
            hint = f"not found; try {self.server.telemetry_path}\n"
            self._send(404, "text/plain; charset=utf-8", hint.encode())

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        body = self.server.renders.get(encoder, content_type, gzipped)
        headers = {"Content-Encoding": "gzip"} if gzipped else {}
        self._send(200, content_type, body, headers)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        for name, value in self.server.extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


# --- the landing page ---------------------------------------------------------------------

REFRESH_SECONDS = 30
TOP_TASKS_SHOWN = 5
READ_ENDPOINTS = ("streams", "tasks")
DOCS = (
    ("configuration.md", "configuration, flags, exit codes"),
    ("metrics.md", "metrics reference"),
    ("dashboards.md", "dashboards, alerts and their runbooks"),
    ("reliability.md", "guarantees, failure modes, security"),
    ("deployment.md", "container, compose, Helm"),
)
STYLE = """body{font-family:sans-serif;margin:1.5em 2em;color:#222}
td,th{padding:.3em .7em;text-align:left;vertical-align:top}th{background:#eee}
table{border-collapse:collapse;margin-bottom:1em}tr{border-bottom:1px solid #ddd}
.headline{padding:.7em 1em;font-size:1.2em;border-radius:4px;margin:1em 0}
.healthy,.up{background:#dff5df}.degraded,.warn,.unavailable{background:#fff0c2}
.down{background:#f8d0d0;font-weight:bold}.starting,.pending{background:#e6eefa}
.down,.headline.down{color:#8a0000}ul.problems li{margin:.2em 0}
.muted{color:#666}code{background:#f4f4f4;padding:0 .2em}"""


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell of the page: its text and a CSS class saying how it is doing."""

    text: str
    level: str = ""  # up, down, unavailable, pending, warn, or ""


@dataclass(frozen=True, slots=True)
class Problem:
    """A read that is failing: which account and endpoint, since when, and why."""

    account: str
    endpoint: str
    since: float | None  # its last success; None if it never succeeded since the start
    error: str


def _with_endpoint(endpoint: str, error: str) -> str:
    return error if error.startswith(f"{endpoint}: ") else f"{endpoint}: {error}"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _ago(now: float, ts: float) -> str:
    return format_duration(round(max(0.0, now - ts))) + " ago"


def _endpoints(account: AccountSnapshot) -> dict[str, EndpointHealth | None]:
    both = {e: account.endpoints.get(e) for e in READ_ENDPOINTS}
    return both | {e: account.info.endpoints.get(e) for e in ACCOUNT_ENDPOINTS}


def problems(snapshot: Snapshot) -> list[Problem]:
    """Every failing read; an endpoint the token may not read (403/404) is not failing."""
    found = []
    for account in snapshot.accounts:
        for endpoint, health in _endpoints(account).items():
            if endpoint in account.info.unavailable_until:
                continue
            if health is not None and health.up is False:
                found.append(
                    Problem(account.name, endpoint, health.last_success, health.last_error or "")
                )
    return found


def headline(
    snapshot: Snapshot, state: StateHealth | None, now: float, started: float | None
) -> tuple[str, str]:
    """(level, sentence): healthy, degraded, down or starting, and what it rests on."""
    failing = problems(snapshot)

    def since(problem: Problem) -> str:
        ts = problem.since if problem.since is not None else started
        return "since the start" if ts is None else f"since {_utc(ts)}"

    def listing(items: list[Problem]) -> str:
        """`a: streams, tasks (since T1); b: credits (since T2)`: endpoints grouped by since."""
        by_account: dict[str, dict[str, list[str]]] = {}
        for item in items:
            by_account.setdefault(item.account, {}).setdefault(since(item), []).append(
                item.endpoint
            )
        return "; ".join(
            f"{name}: "
            + ", ".join(f"{', '.join(names)} ({when})" for when, names in groups.items())
            for name, groups in by_account.items()
        )

    if state is not None and not state.writable:
        when = f" since {_utc(state.since)}" if state.since is not None else ""
        return "down", (
            f"the state file cannot be written{when} ({state.error}): nothing new is counted; "
            "the last committed values are still served"
        )
    accounts = snapshot.accounts
    streams_down = [p for p in failing if p.endpoint == "streams"]
    if accounts and len(streams_down) == len(accounts):
        return "down", (
            f"no account's usage can be read: {listing(failing)}. The last committed values "
            "are still served"
        )
    if failing:
        names = {p.account for p in failing}
        return "degraded", (
            f"{len(failing)} read(s) of {len(names)} of {len(accounts)} account(s) failing: "
            f"{listing(failing)}"
        )
    if not snapshot.ready:
        waiting = [a.name for a in accounts if not a.first_poll_done]
        return "starting", f"the first read of {', '.join(waiting)} is not done yet"
    return "healthy", f"every read of {len(accounts)} account(s) succeeded at its last try"


def _endpoint_cell(
    endpoint: str, account: AccountSnapshot, now: float, started: float | None
) -> Cell:
    health = _endpoints(account)[endpoint]
    retry = account.info.unavailable_until.get(endpoint)
    if retry is not None:
        reason = health.last_error if health and health.last_error else ""
        reason = reason.removeprefix("unavailable").strip()  # "(HTTP 403: ...)"
        left = format_duration(round(max(0.0, retry - now)))
        return Cell(f"UNAVAILABLE {reason}, next try in {left}".replace("  ", " "), "unavailable")
    if health is None or health.up is None:
        return Cell("not read yet", "pending")
    if health.up:
        when = "" if health.last_success is None else f", {_ago(now, health.last_success)}"
        return Cell(f"up{when}", "up")
    ts = health.last_success if health.last_success is not None else started
    when = "" if ts is None else f" since {_utc(ts)} ({_ago(now, ts)})"
    # The column names the endpoint already; most errors start with it.
    error = (health.last_error or "").removeprefix(f"{endpoint}: ")
    return Cell(f"DOWN{when}: {error}", "down")


def status_rows(account: AccountSnapshot, now: float) -> list[tuple[str, Cell]]:
    """The account's reading and counting, one (label, cell) per row of its status table.

    Add a row here for any new per-account state worth a glance: the page renders whatever
    this returns.
    """
    rows: list[tuple[str, Cell]] = []
    if account.catching_up:
        rows.append(
            (
                "catching up",
                Cell(
                    "reading a backlog (first start, after downtime or an API outage); "
                    "counters are published when the window has been read",
                    "pending",
                ),
            )
        )
    progress = account.progress
    if progress is None:
        rows.append(("current read", Cell("none (idle)")))
    else:
        eta = "?" if progress.eta_seconds is None else f"{progress.eta_seconds:.0f}s"
        rows.append(
            (
                "current read",
                Cell(
                    f"{progress.kind}: pages {progress.pages_done}/{progress.pages_total or '?'}, "
                    f"rows {progress.rows_done}/{progress.rows_total or '?'}, about {eta} left",
                    "pending",
                ),
            )
        )
    if account.watermark is None:
        rows.append(("data complete up to", Cell("no complete streams read yet", "pending")))
    else:
        rows.append(
            (
                "data complete up to",
                Cell(f"{_utc(account.watermark)} ({_ago(now, account.watermark)})"),
            )
        )
    if account.last_poll_duration is not None:
        rows.append(("last streams read took", Cell(f"{account.last_poll_duration:.2f}s")))
    rows.append(("stream ids held", Cell(str(account.seen_streams))))
    short = {e: n for e, n in sorted(account.missing_rows.items()) if n > 0}
    if short:
        text = ", ".join(f"{endpoint} {rows} rows short" for endpoint, rows in short.items())
        rows.append(("last reads", Cell(f"incomplete against the API's own total: {text}", "warn")))
    rows.append(("self-audit", _audit_cell(account.audit, now)))
    return rows


def _audit_cell(result: AuditResult | None, now: float) -> Cell:
    """Neo's own totals beside the exporter's, for the last audited period."""
    if result is None:
        return Cell("not run yet (audit.interval; after the first read of the window)")
    missing, drift = result.streams_missing, result.credits_drift
    streams = "?" if result.neo_streams is None else f"{result.neo_streams:,}"
    parts = [f"Neo {streams} streams, counted {result.counted_streams:,}"]
    if result.neo_credits is None:
        parts.append("credits not compared (summary unavailable)")
    else:
        parts.append(f"credits drift {drift:+,.4f} of {result.neo_credits:,.2f}")
    exact = not missing and (drift is None or abs(drift) < 1e-6)
    verdict = "exact" if exact else f"{missing if missing is not None else '?'} streams missing"
    text = (
        f"{verdict}: {'; '.join(parts)} "
        f"({_utc(result.start)} to {_utc(result.end)}, {_ago(now, result.at)})"
    )
    return Cell(text, "" if exact else "warn")


def _spend_cells(account: AccountSnapshot, config: Config | None) -> list[Cell]:
    info = account.info
    if account.tasks is not None:
        window = Cell(f"{account.tasks.credits:,.1f} credits")
    elif info.summary is not None:
        window = Cell(f"{info.summary.credits:,.1f} credits (usage summary)")
    else:
        window = Cell("not read yet", "pending")
    cap = info.cap
    if cap is None:
        cap_cell = Cell("no cap (or not read yet)")
    else:
        ratio = cap.used / cap.limit if cap.limit > 0 else 0.0
        levels = _thresholds_of(account.name, config)
        level = ""
        if levels is not None and ratio > levels.spending_cap_critical_ratio:
            level = "down"
        elif levels is not None and ratio > levels.spending_cap_warning_ratio:
            level = "warn"
        cap_cell = Cell(
            f"{ratio:.0%}: {cap.used:,.2f} of {cap.limit:,.2f} USD, {cap.remaining:,.2f} left",
            level,
        )
    left = info.credits.available if info.credits is not None else None
    if left is None and info.summary is not None:
        left = info.summary.available_credits
    left_cell = Cell("unknown" if left is None else f"{left:,.1f}")
    tops = []
    for task in account.top_tasks[:TOP_TASKS_SHOWN]:
        title = f" {task.title}" if task.title else ""
        tops.append(f"#{task.rank} {task.credits:,.1f}:{title} (task {task.task_id})")
    top_cell = Cell("\n".join(tops) if tops else "none yet")
    return [window, cap_cell, left_cell, top_cell]


def _thresholds_of(name: str, config: Config | None) -> AlertThresholds | None:
    if config is None:
        return None
    return next((a.alert_thresholds for a in config.accounts if a.name == name), None)


def _td(cell: Cell) -> str:
    level = f' class="{cell.level}"' if cell.level else ""
    text = "<br>".join(html.escape(line) for line in cell.text.split("\n"))
    return f"<td{level}>{text}</td>"


def _config_rows(config: Config, state_path: str) -> list[tuple[str, str]]:
    p, h, m, w = config.polling, config.http, config.metrics, config.web
    d = format_duration
    return [
        ("version", __version__),
        ("listen address", w.listen_address),
        ("state", state_path),
        (
            "polling",
            f"interval {d(p.interval)}, lookback {d(p.lookback)}, window {d(p.window)}, "
            f"reconcile every {d(p.reconcile_interval)}, tasks every {d(p.tasks_interval)}, "
            f"catch-up limit {d(p.catch_up_limit)}",
        ),
        (
            "account-level reads",
            f"summary every {d(p.summary_interval)}, user every {d(p.user_interval)}, credits "
            f"every {d(p.credits_interval)}; 403/404 retried every "
            f"{d(p.unavailable_retry_interval)}",
        ),
        (
            "http",
            f"connect timeout {d(h.connect_timeout)}, read timeout {d(h.read_timeout)}, "
            f"{h.max_retries} retries per request, {h.retry_budget} per read, "
            f"concurrency {h.concurrency}, pages of {h.page_size}",
        ),
        (
            "metrics",
            f"top tasks {m.top_tasks}, task titles {'on' if m.task_titles else 'off'}, "
            f"per-member spend {'on' if m.members.enabled else 'off'}",
        ),
        (
            "web",
            f"request head timeout {d(w.read_header_timeout)}, "
            f"{w.max_connections} connections at once",
        ),
    ]


def _threshold_text(values: AlertThresholds) -> str:
    default = AlertThresholds()
    changed = [
        f"{item.name} {getattr(values, item.name):g}"
        for item in dataclasses.fields(values)
        if getattr(values, item.name) != getattr(default, item.name)
    ]
    return ", ".join(changed) if changed else "defaults"


def landing_page(snapshot: Snapshot, now: float, page: PageContext | None = None) -> str:
    """The status page: a headline that tells the truth, then the details behind it."""
    page = page or PageContext()
    config = page.config
    metrics = html.escape(config.web.telemetry_path if config else "/metrics")
    state = page.state() if page.state is not None else None
    level, sentence = headline(snapshot, state, now, page.started)
    failing = problems(snapshot)
    problem_items = "".join(
        f"<li><b>{html.escape(p.account)}</b>: {html.escape(_with_endpoint(p.endpoint, p.error))}"
        "</li>"
        for p in failing
    )
    problem_list = f'<ul class="problems">{problem_items}</ul>' if problem_items else ""

    health_rows = "\n".join(
        "<tr><th>"
        + html.escape(account.name)
        + "</th>"
        + "".join(
            _td(_endpoint_cell(endpoint, account, now, page.started))
            for endpoint in (*READ_ENDPOINTS, *ACCOUNT_ENDPOINTS)
        )
        + "</tr>"
        for account in snapshot.accounts
    )
    spend_rows = "\n".join(
        "<tr><th>"
        + html.escape(account.name)
        + "</th>"
        + "".join(_td(cell) for cell in _spend_cells(account, config))
        + "</tr>"
        for account in snapshot.accounts
    )
    status_sections = "\n".join(
        f"<h3>{html.escape(account.name)}</h3><table>"
        + "".join(
            f"<tr><th>{html.escape(label)}</th>{_td(cell)}</tr>"
            for label, cell in status_rows(account, now)
        )
        + "</table>"
        for account in snapshot.accounts
    )
    if state is None:
        state_cell = Cell("")
    elif state.writable:
        state_cell = Cell(f"{state.path} (writable, {snapshot.state_bytes:,} bytes)", "up")
    else:
        since = "" if state.since is None else f" since {_utc(state.since)}"
        state_cell = Cell(f"{state.path} CANNOT BE WRITTEN{since}: {state.error}", "down")
    config_html = ""
    if config is not None:
        rows = _config_rows(config, state.path if state is not None else config.state.path)
        accounts = "".join(
            f"<tr><th>{html.escape(a.name)}</th><td>{html.escape(a.base_url)}</td>"
            f"<td>{html.escape(a.auth_header)}</td>"
            f"<td>{html.escape(_threshold_text(a.alert_thresholds))}</td></tr>"
            for a in config.accounts
        )
        config_html = (
            "<h2>Configuration</h2><table>"
            + "".join(
                f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
            )
            + "</table><table><tr><th>account</th><th>API</th><th>auth header</th>"
            + f"<th>alert thresholds</th></tr>{accounts}</table>"
        )
    base = config.web.docs_url if config is not None else ""
    docs = "".join(
        f'<li><a href="{html.escape(base)}/{name}">docs/{name}</a>: {html.escape(what)}</li>'
        if base
        else f"<li><code>docs/{name}</code>: {html.escape(what)}</li>"
        for name, what in DOCS
    )
    where = (
        f"Published at {html.escape(base)}:"
        if base
        else "In the neo-exporter repository (set <code>web.docs_url</code> to link them here):"
    )
    started = "" if page.started is None else f", started {_utc(page.started)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>neo-exporter: {level}</title>
<style>{STYLE}</style></head>
<body><h1>neo-exporter {html.escape(__version__)}</h1>
<div class="headline {level}" id="headline"><strong>{level.capitalize()}</strong>:
{html.escape(sentence)}.</div>
{problem_list}
<p><a href="{metrics}">Metrics</a> &middot; <a href="/-/healthy">healthy</a> &middot;
<a href="/-/ready">ready</a> <span class="muted">(ready means ready to serve: every
account's first read has ended, whether or not it succeeded; this page and
<code>neo_up</code> say whether the API works)</span>. Shown at {_utc(now)}{started};
refreshes every {REFRESH_SECONDS}s.</p>
<h2>Reads</h2>
<table><tr><th>account</th><th>streams</th><th>tasks</th><th>summary</th><th>user</th>
<th>credits</th></tr>
{health_rows}
</table>
<h2>Spend</h2>
<table><tr><th>account</th><th>credits in the window</th><th>spending cap used</th>
<th>credits left</th><th>top tasks by credits</th></tr>
{spend_rows}
</table>
<h2>Accounts</h2>
{status_sections}
<h2>State</h2>
<table><tr><th>state file</th>{_td(state_cell)}</tr></table>
{config_html}
<h2>Documentation</h2>
<p>{where}</p><ul>{docs}</ul>
</body></html>
"""
