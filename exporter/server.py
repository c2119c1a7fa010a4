"""HTTP endpoints: `/metrics`, the landing page `/`, `/-/healthy` and `/-/ready`.

A threading server, so one slow scrape never holds up another; each request renders the
current snapshot and touches neither the API nor the database.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import socketserver
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
from exporter.snapshot import Snapshot, SnapshotStore
from exporter.status_page import PageContext, landing_page
from exporter.webconfig import HANDSHAKE_TIMEOUT, BasicAuth, TLSWrapper, WebConfigFile

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 512  # connections the kernel queues while every slot is taken
# Per socket operation once a request is being answered: a client that stops reading the
# response for this long is dropped (request heads have their own, shorter, deadline).
WRITE_TIMEOUT = 60.0


class ListenError(Exception):
    """The listen address cannot be bound; the message names it and says why."""

    def __init__(self, message: str, *, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use  # another socket listens there


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
        raise ListenError(
            f"cannot listen on {_shown(address)}: {hint}", in_use=exc.errno == errno.EADDRINUSE
        ) from None
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

    @staticmethod
    def _evict(conn: _Connection) -> None:
        conn.evicted = True
        # The serving thread's read returns at once and it ends; the thread closes the socket.
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)


class PromptShutdown(socketserver.TCPServer):
    """A server whose `shutdown()` ends `serve_forever` at once.

    socketserver's own loop notices a shutdown only when its select times out, half a
    second by default: every stop of the exporter (and of each test's fake API) waited for
    it. Here a byte on a socket pair wakes the select. Mixed in before the server class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake_read, self._wake_write = socket.socketpair()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while not self._stop_requested.is_set():
                    ready = {key.fileobj for key, _ in selector.select(poll_interval)}
                    if self._stop_requested.is_set():
                        break
                    if self.socket in ready:
                        # What socketserver's own loop calls (not in typeshed's stubs).
                        self._handle_request_noblock()  # type: ignore[attr-defined]
                    self.service_actions()
        finally:
            self._stop_requested.clear()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` (running in another thread) and wait until it has."""
        self._stop_requested.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_read.close()
        self._wake_write.close()


class ExporterServer(PromptShutdown, ThreadingHTTPServer):
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
