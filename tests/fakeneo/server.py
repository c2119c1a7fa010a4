"""The fake over HTTP: the API with injected faults, the control plane, the request log."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import socket
import struct
from collections.abc import Mapping
from urllib.parse import urlsplit

from exporter.demo import ApiHandler, DemoServer, credentials, first_values, to_json
from tests.fakeneo.api import FakeNeo
from tests.fakeneo.control import _control
from tests.fakeneo.faults import _CANNED_FAULTS, _HTML, Fault, _retry_after
from tests.fakeneo.requestlog import RequestRecord

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class _Handler(ApiHandler):
    """The demo's handler, with faults, the control plane and the request log."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = first_values(split.query)
        self._started = False
        try:
            body = self._read_body()
            if split.path.startswith("/_fake/"):
                self._control(method, split.path, query, body)
            else:
                self._api(method, split.path, query)
        except OSError:  # the client went away; there is no one left to answer
            self.close_connection = True
        except Exception:
            log.exception("fake Neo API failed on %s %s", method, split.path)
            self.close_connection = True
            if not self._started:
                with contextlib.suppress(OSError):
                    self._send(500, to_json({"error": "internal error in the fake"}))

    def _read_body(self) -> bytes:
        text = self.headers.get("Content-Length") or "0"
        if not (text.isascii() and text.isdigit()):
            self.close_connection = True  # where this request ends is unknown
            return b""
        return self.rfile.read(int(text)) if int(text) > 0 else b""

    def _control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        if not _is_loopback(self.client_address[0]):
            self._send(403, to_json({"error": "control endpoints answer loopback clients only"}))
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, to_json({"error": "body is not JSON"}))
            return
        status, payload = _control(self.server.api, method, path, query, body)
        self._send(status, to_json(payload))

    def _api(self, method: str, path: str, query: dict[str, str]) -> None:
        neo = self.server.api
        auth, token = credentials(self.headers)
        fault = neo.take_fault(path)
        kind = None if fault is None else fault.kind
        wait = neo.latency + (fault.delay if fault is not None and kind == "timeout" else 0.0)
        if wait > 0:
            self.server.stopping.wait(wait)
        headers: dict[str, str] = {}
        content_type = "application/json"
        if fault is not None and kind in _CANNED_FAULTS:
            status, body = 200, to_json({"data": "oops"})
            if kind == "status":
                status = fault.status or 503
                body = to_json({"error": f"injected {status}"})
                if fault.retry_after is not None:
                    headers["Retry-After"] = _retry_after(fault.retry_after)
            elif kind == "non_json":
                body, content_type = _HTML, "text/html; charset=utf-8"
        else:
            status, payload = neo.handle(method, path, query, token, fault=kind)
            body = to_json(payload)
        # Logged before answering, so a client that got its answer finds its request logged.
        neo.log_request(RequestRecord(method, path, query, 0 if kind == "reset" else status, auth))
        if kind == "reset":
            self._reset()
        else:
            self._send(status, body, content_type, headers, fault)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        fault: Fault | None = None,
    ) -> None:
        kind = None if fault is None else fault.kind
        self._started = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        # A truncated body announces more than it sends, then the connection closes.
        self.send_header("Content-Length", str(len(body) * (2 if kind == "truncated" else 1)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if kind == "truncated":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if fault is not None and kind == "slow_body":
            pieces = 10
            size = max(1, math.ceil(len(body) / pieces))
            for at in range(0, len(body), size):
                if self.server.stopping.wait(fault.delay / pieces):
                    self.close_connection = True  # the rest of the body is never sent
                    break
                self.wfile.write(body[at : at + size])
        else:
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with a TCP reset and no response at all."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class FakeNeoServer(DemoServer):
    """A FakeNeo served over HTTP on loopback, in background threads; a context manager."""

    handler = _Handler

    def __init__(
        self, neo: FakeNeo | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._neo = neo if neo is not None else FakeNeo()
        super().__init__(self._neo, host=host, port=port)

    @property
    def neo(self) -> FakeNeo:
        return self._neo
