"""HTTP endpoints: `/metrics`, the landing page `/`, `/-/healthy` and `/-/ready`.

A threading server, so one slow scrape never holds up another; each request renders the
current snapshot and touches neither the API nor the database.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.account_info import describe_endpoints
from exporter.snapshot import AccountSnapshot, Snapshot, SnapshotStore
from exporter.webconfig import HANDSHAKE_TIMEOUT, BasicAuth, TLSWrapper, WebConfig

log = logging.getLogger(__name__)


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    # Many scrapers at once should queue, not be refused.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        store: SnapshotStore,
        *,
        per_snapshot: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        web: WebConfig | None = None,
    ) -> None:
        """Serve `registry` and `per_snapshot` (whose metrics depend only on the store's
        snapshot) on /metrics. `web` (from --web.config.file) adds TLS, basic auth and
        response headers."""
        self.registry = registry
        self.store = store
        self.clock = clock
        web = web or WebConfig()
        self.tls = None if web.tls is None else TLSWrapper(web.tls)
        self.auth = BasicAuth(web.users) if web.users else None
        self.extra_headers = web.headers
        self.renders = Renders(registry, per_snapshot, store)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = host if isinstance(host, str) and host not in ("", "0.0.0.0") else "127.0.0.1"  # noqa: S104
        if ":" in shown:
            shown = f"[{shown}]"
        return f"{'https' if self.tls else 'http'}://{shown}:{port}"

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        """With TLS, the handshake runs here, in the request's own thread, not the accept loop."""
        if self.tls is None or not isinstance(request, socket.socket):
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            secure = self.tls.context().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
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


RENDER_TTL = 1.0  # seconds a rendered /metrics is reused for
OPENMETRICS_EOF = b"# EOF\n"


class Include(Collector):
    """Collects everything another registry holds, so that one registry can show two."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class Renders:
    """/metrics bodies: the costly part once per snapshot, the whole shared for a second.

    Rendering thousands of series costs a large fraction of a second of CPU in
    prometheus_client. The Neo metrics (`per_snapshot`) depend on the snapshot alone, which
    changes once per poll, so they are rendered once per snapshot and format; the exporter's
    own metrics (`live`) are rendered at each render, so they stay current. A whole body is
    reused for a second, so that many scrapers at once (HA Prometheus pairs, federation,
    people with curl) share one render instead of queueing behind each other.
    """

    def __init__(
        self,
        live: CollectorRegistry,
        per_snapshot: CollectorRegistry | None,
        store: SnapshotStore,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live = live
        self._per_snapshot = per_snapshot
        self._store = store
        self._monotonic = monotonic
        self._lock = threading.Lock()  # one render at a time; the others wait and reuse it
        self._bodies: dict[tuple[str, bool], tuple[float, bytes]] = {}
        self._snapshot_parts: dict[str, tuple[Snapshot, bytes]] = {}

    def get(self, encoder: Callable[[CollectorRegistry], bytes], kind: str, gzipped: bool) -> bytes:
        with self._lock:
            now = self._monotonic()
            key = (kind, gzipped)
            cached = self._bodies.get(key)
            if cached is not None and now - cached[0] < RENDER_TTL:
                return cached[1]
            body = _join(encoder(self._live), self._snapshot_part(encoder, kind))
            if gzipped:
                body = gzip.compress(body, compresslevel=1)  # fast: scrapes are frequent
            self._bodies[key] = (now, body)
            return body

    def _snapshot_part(self, encoder: Callable[[CollectorRegistry], bytes], kind: str) -> bytes:
        if self._per_snapshot is None:
            return b""
        # Taken before rendering: if a poll replaces the snapshot meanwhile, the next
        # render sees a different object and renders again.
        snapshot = self._store.get()
        cached = self._snapshot_parts.get(kind)
        if cached is None or cached[0] is not snapshot:
            cached = (snapshot, encoder(self._per_snapshot))
            self._snapshot_parts[kind] = cached
        return cached[1]


def _join(first: bytes, second: bytes) -> bytes:
    """Two expositions as one; an OpenMetrics exposition ends once, with `# EOF`."""
    if not second:
        return first
    return first.removesuffix(OPENMETRICS_EOF) + second


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    server_version = f"neo-exporter/{__version__}"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # scraper's delayed ACK add about 40 ms to every scrape on a kept-alive connection.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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
        elif path == "/metrics":
            self._metrics()
        elif path == "/":
            body = landing_page(self.server.store.get(), self.server.clock())
            self._send(200, "text/html; charset=utf-8", body.encode())
        elif path == "/-/healthy":
            self._send(200, "text/plain; charset=utf-8", b"OK\n")
        elif path == "/-/ready":
            if self.server.store.get().ready:
                self._send(200, "text/plain; charset=utf-8", b"OK\n")
            else:
                self._send(503, "text/plain; charset=utf-8", b"first poll not done yet\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")

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


def _age(now: float, ts: float | None) -> str:
    return "never" if ts is None else f"{max(0.0, now - ts):.0f}s ago"


def _account_row(account: AccountSnapshot, now: float) -> str:
    cells = [html.escape(account.name)]
    for endpoint in ("streams", "tasks"):
        state = account.endpoints.get(endpoint)
        if state is None or state.up is None:
            cells.append("not read yet")
            continue
        text = ("up" if state.up else "DOWN") + f", last success {_age(now, state.last_success)}"
        if state.last_error and not state.up:
            text += f": {state.last_error}"
        cells.append(html.escape(text))
    cells.append(html.escape(describe_endpoints(account.info, now)))
    cells.append(str(account.seen_streams))
    progress = account.progress
    if progress is None:
        cells.append("idle")
    else:
        eta = "?" if progress.eta_seconds is None else f"{progress.eta_seconds:.0f}s"
        cells.append(
            html.escape(
                f"{progress.kind}: pages {progress.pages_done}/{progress.pages_total or '?'}, "
                f"rows {progress.rows_done}/{progress.rows_total or '?'}, about {eta} left"
            )
        )
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def landing_page(snapshot: Snapshot, now: float) -> str:
    rows = "\n".join(_account_row(account, now) for account in snapshot.accounts)
    ready = "ready" if snapshot.ready else "starting: first poll not done yet"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>neo-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.3em .8em;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}</style></head>
<body><h1>neo-exporter {html.escape(__version__)}</h1>
<p>Prometheus exporter for ProjectDiscovery Neo usage. Status: {ready}.</p>
<p><a href="/metrics">Metrics</a> &middot; <a href="/-/healthy">healthy</a> &middot;
<a href="/-/ready">ready</a></p>
<table><tr><th>account</th><th>streams</th><th>tasks</th><th>summary, user, credits</th>
<th>seen streams</th>
<th>current read</th></tr>
{rows}
</table></body></html>
"""
