"""Real processes for end-to-end tests: the fake API and the exporter, over loopback."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

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


def screenshot(
    chromium: str, url: str, shot: Path, *, size: str = "1400,900", settle_ms: int | None = None
) -> Path:
    """A headless Chromium picture of `url` for a person to look at; fails if none is written.

    `settle_ms` lets the page's own queries finish first (virtual time, not a sleep).
    """
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    profile = shot.parent / "chromium-profile"
    wait = [] if settle_ms is None else [f"--virtual-time-budget={settle_ms}"]
    subprocess.run(
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
            f"--screenshot={shot}",
            f"--window-size={size}",
            url,
        ],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(profile)},
    )
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot was written"
    return shot


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
    """Poll `check` until it returns a truthy value, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except requests.RequestException:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
