"""The real exporter process: graceful stop mid-poll, damaged state files, and secrets."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from exporter.app import build
from exporter.config import config_from_mapping
from tests.conftest import (
    SampleKey,
    assert_never_down,
    counters_of,
    sample,
    scrape,
    truth_mismatches,
)
from tests.processes import (
    ENV,
    fake_api,
    metrics,
    run_cli,
    start_exporter,
    truth,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.e2e

TOKEN = ENV["NEO_TEST_TOKEN"]


def inject(fake_url: str, **fault: Any) -> None:
    requests.post(f"{fake_url}/_fake/faults", json=fault, timeout=5).raise_for_status()


def reading(url: str) -> bool:
    """True once a streams read has fetched some pages and is still going."""
    page = requests.get(f"{url}/", timeout=5).text
    return "reconcile: pages" in page


def completed_read(url: str) -> dict[SampleKey, float] | None:
    """The metrics once a read of the whole window has completed (counters are then live)."""
    samples = metrics(url)
    done = sample(
        samples, "neo_exporter_polls_total", account="acme", kind="reconcile", result="success"
    )
    return samples if done >= 1 else None


# --- graceful stop -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stall",
    [
        None,  # paging along
        {"kind": "status", "status": 429, "retry_after": 60, "count": 50},  # a long pause
        {"kind": "slow_body", "delay": 20, "count": 50},  # a response that takes its time
    ],
    ids=["mid_paging", "in_a_60s_retry_after", "in_a_slow_body"],
)
def test_sigterm_during_a_poll_exits_0_quickly_and_the_state_stays_exact(
    tmp_path: Path, stall: dict[str, Any] | None, figures: Any, request: pytest.FixtureRequest
) -> None:
    state = tmp_path / "state.db"
    with fake_api("--seed", "6", "--streams", "3000", "--latency-ms", "40",
                  "--late-fraction", "0") as (_, fake_url):  # fmt: skip
        # One page at a time: the window's read lasts about 6 s whatever the machine's
        # speed, so the signal always lands in it.
        http = {"page_size": 20, "concurrency": 1, "backoff_base": "50ms", "backoff_max": "1s"}
        config = write_config(tmp_path / "config.yaml", fake_url, state, http=http)
        expected = truth(fake_url)
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        wait_until(lambda: reading(url), 20, "a read in progress")
        if stall is not None:
            inject(fake_url, **stall)
            time.sleep(0.3)  # let the pollers run into it
        before = counters_of(metrics(url))
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        code = proc.popen.wait(15)
        took = time.monotonic() - started
        assert code == 0
        assert "Traceback" not in proc.output
        assert took < 5.0, f"took {took:.1f}s to stop"
        assert "reconcile read of" not in proc.output  # it was stopped mid-read
        requests.delete(f"{fake_url}/_fake/faults", timeout=5)
        # A restart on the same file resumes from what was committed, and ends exact.
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            restarted = counters_of(metrics(url))
            assert_never_down(before, restarted)
            final = wait_until(lambda: completed_read(url), 60, "a complete read")
        finally:
            assert proc.stop() == 0
    assert truth_mismatches(final, expected, "acme") == []
    figures(f"stop {request.node.callspec.id}: SIGTERM to exit 0 in {took:.2f}s; restart exact")


# --- damaged state files -------------------------------------------------------------------


def test_a_damaged_state_file_stops_the_start_with_the_recovery_steps(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with fake_api("--seed", "8", "--streams", "200", "--late-fraction", "0") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, state)
        result = run_cli("--once", "--once.state", "live", "--config.file", str(config), env=ENV)
        assert result.returncode == 0
        # Overwrite the middle of the file (its tables), as a bad disk or a stray write would.
        data = bytearray(state.read_bytes())
        assert len(data) > 8192
        data[4096:] = b"\xde\xad\xbe\xef" * ((len(data) - 4096) // 4)
        state.write_bytes(bytes(data))
        for suffix in ("-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        result = run_cli("--once", "--once.state", "live", "--config.file", str(config), env=ENV)
    assert result.returncode == 1
    assert str(state) in result.stderr
    assert "move the file aside" in result.stderr
    assert "Traceback" not in result.stderr
    assert "neo_credits_total" not in result.stdout  # nothing served from a guess


def test_a_state_file_sqlite_cannot_open_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"this is not an SQLite database, and longer than its header" * 20)
    config = write_config(tmp_path / "config.yaml", "http://127.0.0.1:1", state)
    result = run_cli("--once", "--once.state", "live", "--config.file", str(config), env=ENV)
    assert result.returncode == 1
    assert "cannot be used" in result.stderr and str(state) in result.stderr
    assert "Traceback" not in result.stderr


# --- secrets ---------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Another host: records every request's headers."""

    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        body = b'{"data": [], "has_more": false, "total": 0}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Redirector(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.server.target + self.path)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    started: list[ThreadingHTTPServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def serve(handler: type[BaseHTTPRequestHandler], started: list[ThreadingHTTPServer]) -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started.append(server)
    return server


def test_a_redirect_never_carries_the_token_to_another_host(
    servers: list[ThreadingHTTPServer], caplog: pytest.LogCaptureFixture
) -> None:
    other = serve(_Recorder, servers)
    other.seen = []
    redirector = serve(_Redirector, servers)
    redirector.target = f"http://localhost:{other.server_address[1]}"
    config = config_from_mapping(
        {
            "accounts": [
                {
                    "name": "acme",
                    "base_url": f"http://127.0.0.1:{redirector.server_address[1]}",
                    "token": "neo-secret-redirect-token",
                }
            ],
            "state": {"path": ":memory:"},
        },
        {},
    )
    exporter = build(config, threading.Event(), time.time)
    try:
        assert not exporter.pollers[0].poll_streams()
        samples = scrape(exporter.registry)
    finally:
        exporter.close()
    assert other.seen == []  # the redirect was not followed at all
    assert sample(samples, "neo_up", account="acme", endpoint="streams") == 0
    assert "HTTP 302" in caplog.text
    assert "neo-secret-redirect-token" not in caplog.text


def test_the_token_appears_in_no_output_whatever_happens(tmp_path: Path, figures: Any) -> None:
    """Every output of a debug-level run with faults, errors and a bad token is searched."""
    wrong = "neo-secret-wrong-token-9f8e7d"
    outputs: dict[str, str] = {}
    state = tmp_path / "state.db"
    with fake_api("--seed", "12", "--streams", "400") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, state)
        proc, url = start_exporter("--config.file", str(config), "--log.level", "debug", env=ENV)
        try:
            for fault in (
                {"kind": "status", "status": 429, "retry_after": 0, "count": 2},
                {"kind": "status", "status": 500, "count": 2},
                {"kind": "reset", "count": 2},
                {"kind": "non_json", "count": 2},
                {"kind": "truncated", "count": 2},
                {"kind": "status", "status": 404, "count": 1},
            ):
                inject(fake_url, **fault)
            wait_until(
                lambda: requests.get(f"{url}/-/ready", timeout=5).status_code == 200, 30, "ready"
            )
            time.sleep(2.5)  # another poll or two, through the faults
            for path in ("/metrics", "/", "/-/ready", "/-/healthy", "/nope"):
                outputs[path] = requests.get(f"{url}{path}", timeout=5).text
            outputs["openmetrics"] = requests.get(
                f"{url}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                timeout=5,
            ).text
        finally:
            proc.popen.send_signal(signal.SIGTERM)
            proc.popen.wait(15)
        outputs["exporter log (debug)"] = proc.output
        bad = run_cli("--once", "--config.file", str(config), "--log.level", "debug",
                      env={"NEO_TEST_TOKEN": wrong})  # fmt: skip
        outputs["--once with a wrong token"] = bad.stdout + bad.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"accounts:\n  - name: acme\n    token: {TOKEN}\n    nope: 1\n")
    result = run_cli("--config.file", str(broken))
    outputs["config error"] = result.stderr + result.stdout
    spaced = tmp_path / "spaced.yaml"
    spaced.write_text(f"accounts:\n  - name: acme\n    token: '{TOKEN} x'\n")
    result = run_cli("--check-config", "--config.file", str(spaced))
    outputs["token with a space"] = result.stderr + result.stdout
    outputs["state file"] = state.read_bytes().decode("latin-1")
    with sqlite3.connect(state) as db:
        outputs["state tables"] = repr(db.execute("SELECT * FROM meta").fetchall())
    assert "Traceback" not in outputs["exporter log (debug)"]
    for name, text in outputs.items():
        for secret in (TOKEN, wrong):
            assert secret not in text, f"{secret!r} found in {name}"
    assert "rejected the token" in outputs["--once with a wrong token"]
    figures(f"secrets: token searched in {len(outputs)} outputs (logs at debug, pages, "
            "errors, state file): found in none")  # fmt: skip
