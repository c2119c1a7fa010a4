"""The fake Neo API for benchmarks: FakeNeo's data over HTTP, with a fixed latency per request.

The real API renders pages on its own machines; here the fake shares our two cores. So that
its CPU does not decide the figures, each response body is rendered once and kept (the data
does not change during a run: no live traffic, no late rows), and a warm-up read fills the
cache before anything is timed. `GET /_bench/requests` tells how many API requests came in,
and how many rows each list endpoint served in pages (a count's one-row request aside).

    python -m benchmarks.fake --streams 20000 --latency-ms 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from exporter.signals import stop_on_signals
from tests.fakeneo import FakeNeo

TOKEN = "fake-admin-token"
DAY = 86400.0


class BenchServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], neo: FakeNeo, latency: float, cache_bytes: int
    ) -> None:
        self.neo = neo
        self.latency = latency
        self.cache_left = cache_bytes
        self.cache: dict[str, tuple[bytes, int]] = {}
        self.requests = 0
        self.rows: dict[str, int] = {}  # rows served, by path
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up, which can be slow; none is needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def body(self, path: str, raw_query: str, token: str | None) -> tuple[int, bytes]:
        query = {k: v[0] for k, v in parse_qs(raw_query).items()}
        key = f"{path}?{sorted(query.items())}"  # the same page, whatever the parameter order
        with self.lock:
            cached = self.cache.get(key)
        if cached is None:
            status, payload = self.neo.handle("GET", path, query, token)
            body = json.dumps(payload, separators=(",", ":")).encode()
            data = payload.get("data") if isinstance(payload, dict) else None
            # A request for one row asks for the `total`: its row is not a page's.
            rows = len(data) if isinstance(data, list) and query.get("limit") != "1" else 0
            if status == 200:
                with self.lock:
                    if len(body) <= self.cache_left:
                        self.cache[key] = (body, rows)
                        self.cache_left -= len(body)
        else:
            status, (body, rows) = 200, cached
        with self.lock:
            self.rows[path] = self.rows.get(path, 0) + rows
        return status, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BenchServer

    def setup(self) -> None:
        super().setup()
        # Without it, Nagle's algorithm and delayed ACKs add about 40 ms per kept-alive response.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a run makes thousands of requests."""

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        if path == "/_bench/requests":
            with self.server.lock:
                count, rows = self.server.requests, dict(self.server.rows)
            self._send(200, json.dumps({"requests": count, "rows": rows}).encode())
            return
        with self.server.lock:
            self.server.requests += 1
        if self.server.latency > 0:
            self.server.stopping.wait(self.server.latency)
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        status, body = self.server.body(path, split.query, token)
        self._send(status, body)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake", description=__doc__)
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--history-days", type=float, default=6.0)
    parser.add_argument("--latency-ms", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--now", type=float, default=None, help="end of the history (Unix s)")
    parser.add_argument("--cache-mb", type=float, default=1024.0, help="0: render every time")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    now = time.time() if args.now is None else args.now
    neo = FakeNeo(seed=args.seed)
    started = time.perf_counter()
    # No late rows: every row is visible from the start, so a cached body stays right.
    neo.populate(args.streams, now - args.history_days * DAY, now, late_fraction=0.0)
    generated = time.perf_counter() - started
    server = BenchServer(
        ("127.0.0.1", 0), neo, args.latency_ms / 1000, int(args.cache_mb * 1024 * 1024)
    )
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    with stop_on_signals(stop):
        thread.start()
        host, port = server.server_address[:2]
        print(f"listening on http://{host}:{port} generated {generated:.2f}", flush=True)
        try:
            stop.wait()
        finally:
            server.stopping.set()
            server.shutdown()
            server.server_close()
            thread.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
