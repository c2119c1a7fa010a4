"""A stop never hangs: SIGTERM and SIGINT end every command, wherever they land.

The signal handler used to set the stop event itself, so a signal that landed while the
main thread held the event's lock (in `stop.wait(0)` between two pages) hung the process
for good. exporter/signals.py hands the signal to a thread instead.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ENV, ROOT, fake_api, spawn, write_config

pytestmark = pytest.mark.e2e

TRIES_IN_PROCESS = 300
HISTORY_LABELS = ("--label", "job=neo-exporter", "--label", "instance=127.0.0.1:9636")
# (command, the line that says it is under way, the exit statuses a stop may end with):
# --once and history exit 1 when stopped before the end, 0 when they finished first.
COMMANDS = {
    "exporter": (("--web.listen-address", "127.0.0.1:0"), r"listening on", {0}),
    "once": (("--once",), r"reading|read of|poll", {0, 1}),
    "history": (
        ("history", "--days", "2", "--output", "{run}/history.om", *HISTORY_LABELS),
        r"history: reading",
        {0, 1},
    ),
}
TRIES_PER_COMMAND = 6


def test_a_signal_at_any_moment_of_a_wait_sets_the_stop_and_never_hangs() -> None:
    # The child stops TRIES_IN_PROCESS times, each on a signal sent at a random moment while
    # its main thread spins on stop.wait(0); a handler that took the event's lock would hang.
    result = subprocess.run(
        [sys.executable, "-m", "tests.signal_child", str(TRIES_IN_PROCESS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"stopped {TRIES_IN_PROCESS} times"


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    # Two days of streams served with some latency: a read lasts a few seconds.
    with fake_api("--seed", "41", "--streams", "1500", "--history", "2d", "--latency-ms", "15",
                  "--late-fraction", "0") as (_, url):  # fmt: skip
        yield url


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_sigterm_or_sigint_at_many_points_always_ends_the_command(
    command: str, fake_url: str, tmp_path: Path
) -> None:
    args, under_way, statuses = COMMANDS[command]
    rng = random.Random(command)
    ended: list[str] = []
    for n in range(TRIES_PER_COMMAND):
        run = tmp_path / str(n)
        run.mkdir()
        config = write_config(
            run / "config.yaml",
            fake_url,
            run / "state.db",
            http={"page_size": 10, "concurrency": 2},
        )
        signum = signal.SIGINT if n % 2 else signal.SIGTERM
        argv = [arg.format(run=run) for arg in args]
        proc = spawn(["-m", "exporter", *argv, "--config.file", str(config)], env=ENV)
        try:
            proc.wait_for_line(under_way, timeout=30)
            time.sleep(rng.uniform(0, 1.5))  # anywhere in the read, or after it
            sent = time.monotonic()
            proc.popen.send_signal(signum)
            code = proc.popen.wait(timeout=20)
        finally:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait()
        took = time.monotonic() - sent
        assert code in statuses, f"try {n}, {signum.name}: exit {code}\n{proc.output}"
        assert "Traceback" not in proc.output, proc.output
        assert took < 10, f"try {n}: {signum.name} took {took:.1f}s to end {command}"
        ended.append(f"{signum.name}->{code} in {took:.2f}s")
    assert len(ended) == TRIES_PER_COMMAND, ended
