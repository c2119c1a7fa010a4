"""Operating the exporter: one writer per state file, errors that say where and why, the
status page, the state path, a bounded `--once`, and bounded connections.

Real processes over loopback (the fake API and the exporter), as a user would run them.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import counters_of, parse_exposition, sample, truth_mismatches
from tests.fakeneo import FakeNeo
from tests.processes import (
    ENV,
    ROOT,
    fake_api,
    free_port,
    metrics,
    require_tool,
    run_cli,
    start_exporter,
    truth,
    unavailable,
    wait_until,
    write_config,
)
from tests.processes import screenshot as take_screenshot

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "artifacts" / "status"
SECRET = "tok-never-shown-5e1f9a"  # the failing accounts' token: it must appear nowhere
FAST_FAILURES = {"max_retries": 1, "backoff_base": "50ms", "backoff_max": "100ms"}
EXIT_STATE_DIRECTORY, EXIT_STATE_NOT_WRITABLE, EXIT_STATE_IN_USE, EXIT_LISTEN = 3, 4, 5, 6


def ready(url: str) -> bool:
    return requests.get(f"{url}/-/ready", timeout=5).status_code == 200


def headline(url: str) -> str:
    """The landing page's headline level: healthy, degraded, down or starting."""
    match = re.search(r'class="headline (\w+)"', requests.get(f"{url}/", timeout=5).text)
    assert match is not None
    return match.group(1)


def threads_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Threads:\s+(\d+)$", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def screenshot(url: str, name: str) -> str:
    """A headless Chromium picture of the page under artifacts/status/, for a person to see;
    returns the DOM Chromium renders of it."""
    return take_screenshot(
        require_tool("chromium"), url, ARTIFACTS / f"{name}.png", size="1400,1200"
    )


# --- one writer per state file ---------------------------------------------------------------


def test_a_second_exporter_on_the_same_state_exits_at_once_naming_the_file_and_the_first_pid(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    with fake_api("--seed", "21", "--streams", "200", "--late-fraction", "0") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, state)
        first, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            wait_until(lambda: ready(url), 30, "the first exporter ready")
            # The same config started again, its address included: the port is in use, and
            # it is this exporter that uses it. Another port would only meet the held state.
            again = run_cli(
                "--config.file", str(config), "--web.listen-address", url.split("//")[1], env=ENV
            )
            assert again.returncode == EXIT_STATE_IN_USE, again.stderr
            assert (
                f"(pid {first.popen.pid}; lock {state}.lock): another neo-exporter already runs "
                "with this config"
            ) in again.stderr
            assert "pick another" not in again.stderr and "Traceback" not in again.stderr
            started = time.monotonic()
            second = run_cli(
                "--config.file", str(config), "--web.listen-address", "127.0.0.1:0", env=ENV
            )
            took = time.monotonic() - started
            assert second.returncode == EXIT_STATE_IN_USE, second.stderr
            assert (
                f"state file '{state}' is in use by another neo-exporter "
                f"(pid {first.popen.pid}; lock {state}.lock)"
            ) in second.stderr
            assert "Traceback" not in second.stderr
            assert took < 10
            # --once into the live state is refused the same way; plain --once is not.
            live = run_cli("--once", "--once.state", "live", "--config.file", str(config), env=ENV)
            assert live.returncode == EXIT_STATE_IN_USE
            assert f"pid {first.popen.pid}" in live.stderr
            assert "neo_credits_total" not in live.stdout
            # The first one goes on, exact.
            assert truth_mismatches(metrics(url), truth(fake_url), "acme") == []
        finally:
            assert first.stop() == 0
        assert "Traceback" not in first.output


def test_once_beside_a_running_exporter_reads_a_temporary_state_and_the_exporters_totals_stay_exact(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    polling = {"interval": "5s", "lookback": "1h", "window": "2d", "reconcile_interval": "6h"}
    with fake_api("--seed", "22", "--streams", "300", "--late-fraction", "0") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, state, polling=polling)
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            wait_until(lambda: ready(url), 30, "ready")
            for round_ in range(3):
                # New streams, then --once at once: it reads them before the exporter's next
                # poll. Sharing the state, the exporter would then skip them as counted.
                now = time.time()
                rows = FakeNeo(seed=700 + round_).generate(
                    25, now - 600, now - 120, late_fraction=0
                )
                requests.post(f"{fake_url}/_fake/rows", json={"rows": rows}, timeout=10)
                once = run_cli("--once", "--config.file", str(config), env=ENV)
                assert once.returncode == 0, once.stderr
                assert "reading into a temporary state" in once.stderr
                temporary = re.search(r"temporary state \(([^,]+), deleted at exit\)", once.stderr)
                assert temporary is not None and not Path(temporary.group(1)).exists()
                assert (
                    truth_mismatches(parse_exposition(once.stdout), truth(fake_url), "acme") == []
                )
            expected = truth(fake_url)
            assert sum(expected.streams.values()) == 375
            wait_until(
                lambda: not truth_mismatches(metrics(url), expected, "acme"),
                30,
                "the running exporter to count every stream --once read",
            )
        finally:
            assert proc.stop() == 0


# --- the state path --------------------------------------------------------------------------


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make `path` unwritable to this process: chmod, or for root (whom modes do not stop) the
    immutable attribute."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = require_tool("chattr")  # modes do not stop root; the immutable attribute does
    made = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        unavailable(f"chattr +i is not permitted here: {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def prepare_missing_directory(tmp_path: Path) -> tuple[Path, Path | None, str, int]:
    state = tmp_path / "no-such-dir" / "state.db"
    message = f"state.path: directory {state.parent} does not exist"
    return state, None, message, EXIT_STATE_DIRECTORY


def prepare_path_is_a_directory(tmp_path: Path) -> tuple[Path, Path | None, str, int]:
    state = tmp_path / "state"
    state.mkdir()
    return state, None, f"state.path: {state} is a directory", EXIT_STATE_NOT_WRITABLE


def prepare_read_only_file(tmp_path: Path) -> tuple[Path, Path | None, str, int]:
    state = tmp_path / "state.db"
    state.write_bytes(b"")
    message = f"state.path: {state} is not writable by this user (uid {os.geteuid()})"
    return state, state, message, EXIT_STATE_NOT_WRITABLE


def prepare_read_only_directory(tmp_path: Path) -> tuple[Path, Path | None, str, int]:
    directory = tmp_path / "ro"
    directory.mkdir()
    state = directory / "state.db"
    message = f"state.path: directory {directory} is not writable by this user"
    return state, directory, message, EXIT_STATE_NOT_WRITABLE


STATE_PROBLEMS = {
    "missing_directory": prepare_missing_directory,
    "path_is_a_directory": prepare_path_is_a_directory,
    "read_only_file": prepare_read_only_file,
    "read_only_directory": prepare_read_only_directory,
}


@pytest.mark.parametrize("problem", sorted(STATE_PROBLEMS))
def test_each_state_path_problem_stops_check_config_and_the_start_with_its_own_message_and_code(
    tmp_path: Path, problem: str
) -> None:
    state, locked, message, code = STATE_PROBLEMS[problem](tmp_path)
    config = write_config(tmp_path / "config.yaml", f"http://127.0.0.1:{free_port()}", state)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    @contextmanager
    def maybe_unwritable() -> Iterator[None]:
        if locked is None:
            yield
        else:
            with unwritable(locked):
                yield

    with maybe_unwritable():
        checked = run_cli("--check-config", "--config.file", str(config), env=ENV)
        started = run_cli(
            "--config.file", str(config), "--web.listen-address", "127.0.0.1:0", env=ENV
        )
        live_once = run_cli("--once", "--once.state", "live", "--config.file", str(config), env=ENV)
    for result in (checked, started, live_once):
        assert result.returncode == code, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert "move the file aside" not in result.stderr  # that advice is for damaged files
    assert "config OK" not in checked.stdout
    assert "listening on" not in started.stderr  # it stopped before binding
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing was created


def test_a_state_unwritable_at_run_time_shows_on_the_page_and_in_a_metric_and_counting_resumes(
    tmp_path: Path, figures: Any
) -> None:
    polling = {"interval": "1s", "lookback": "1h", "window": "2d", "reconcile_interval": "6h"}
    with fake_api("--seed", "23", "--streams", "200", "--late-fraction", "0") as (_, fake_url):
        config = write_config(
            tmp_path / "config.yaml", fake_url, tmp_path / "state.db", polling=polling
        )
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        pid = proc.popen.pid
        try:
            wait_until(lambda: ready(url), 30, "ready")
            wait_until(
                lambda: not truth_mismatches(metrics(url), truth(fake_url), "acme"), 30, "exact"
            )
            before = counters_of(metrics(url))
            assert sample(metrics(url), "neo_exporter_state_writable") == 1
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            # A full disk, as the exporter sees it: every write to a file past its first byte
            # fails (EFBIG; Python ignores SIGXFSZ), so SQLite cannot commit.
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
            try:
                now = time.time()
                rows = FakeNeo(seed=801).generate(30, now - 600, now - 120, late_fraction=0)
                requests.post(f"{fake_url}/_fake/rows", json={"rows": rows}, timeout=10)
                wait_until(
                    lambda: sample(metrics(url), "neo_exporter_state_writable") == 0,
                    20,
                    "neo_exporter_state_writable 0",
                )
                page = requests.get(f"{url}/", timeout=5).text
                assert 'class="headline down"' in page
                assert "the state file cannot be written since" in page
                assert "CANNOT BE WRITTEN" in page
                # What was committed is still served, unchanged.
                assert counters_of(metrics(url)) == before
                assert requests.get(f"{url}/-/healthy", timeout=5).status_code == 200
            finally:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
            expected = truth(fake_url)
            wait_until(
                lambda: not truth_mismatches(metrics(url), expected, "acme"),
                30,
                "counting to resume, exact",
            )
            assert sample(metrics(url), "neo_exporter_state_writable") == 1
            assert headline(url) == "healthy"
        finally:
            assert proc.stop() == 0
    assert "cannot be written" in proc.output and "can be written again" in proc.output
    assert "Traceback" not in proc.output
    figures(
        "state: unwritable at run time -> page down, writable gauge 0, counters kept; exact after"
    )


def test_a_state_on_a_read_only_file_system_is_told_to_move_not_to_chmod(tmp_path: Path) -> None:
    """A read-only mount, made in a user and mount namespace of the exporter's own."""
    unshare = require_tool("unshare")
    volume = tmp_path / "volume"
    volume.mkdir()
    config = write_config(
        tmp_path / "config.yaml", f"http://127.0.0.1:{free_port()}", volume / "state.db"
    )
    # Once with a state file already there, once without.
    for make in ("touch state.db", "true"):
        script = (
            f'mount -t tmpfs none "$1" && cd "$1" && {make} && mount -o remount,ro "$1" && '
            'shift && exec "$@"'
        )
        result = subprocess.run(
            [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
             str(volume), sys.executable, "-m", "exporter", "--config.file", str(config)],
            cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        if "mount" in result.stderr and "exporter" not in result.stderr:
            unavailable(f"no mount namespace here: {result.stderr.strip()}")
        assert result.returncode == EXIT_STATE_NOT_WRITABLE, result.stderr
        assert (
            f"state.path: {volume} is on a read-only file system: point state.path at a "
            "writable volume"
        ) in result.stderr
        assert "chmod" not in result.stderr and "Traceback" not in result.stderr


# --- the listen address ----------------------------------------------------------------------


def test_a_port_in_use_is_named_and_nothing_is_created_before_the_bind(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "config.yaml", f"http://127.0.0.1:{free_port()}", state)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}", env=ENV
        )
    assert result.returncode == EXIT_LISTEN
    assert (
        f"cannot listen on 127.0.0.1:{port}: address already in use (another process listens "
        "there; pick another with --web.listen-address or web.listen_address)"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_the_log_says_where_the_socket_is_really_bound(tmp_path: Path) -> None:
    from tests.processes import spawn

    config = write_config(
        tmp_path / "config.yaml", f"http://127.0.0.1:{free_port()}", tmp_path / "state.db"
    )
    port = free_port()
    proc = spawn(
        ["-m", "exporter", "--config.file", str(config), "--web.listen-address", f":{port}"],
        env=ENV,
    )
    try:
        proc.wait_for_line(r"listening on ")
    finally:
        proc.stop()
    assert (
        f"listening on http://0.0.0.0:{port} (every IPv4 interface; from this machine: "
        f"http://127.0.0.1:{port}/)"
    ) in proc.output


# --- errors that say where and why, and the status page ---------------------------------------


def status_config(path: Path, accounts: list[dict[str, str]], state: Path) -> Path:
    config = {
        "accounts": accounts,
        "polling": {
            "interval": "2s",
            "lookback": "1h",
            "window": "2d",
            "reconcile_interval": "6h",
            "tasks_interval": "2s",
            "summary_interval": "2s",
            "user_interval": "2s",
            "credits_interval": "2s",
        },
        "http": {**FAST_FAILURES, "connect_timeout": "2s"},
        "state": {"path": str(state)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("level", ["healthy", "degraded", "down"])
def test_the_status_page_headline_says_healthy_degraded_or_down_naming_hosts_and_causes(
    tmp_path: Path, level: str
) -> None:
    refused = free_port()
    with fake_api("--seed", "24", "--streams", "300") as (_, fake_url):
        good = {"name": "acme", "base_url": fake_url, "token": "${NEO_TEST_TOKEN}"}
        broken = {"name": "broken", "base_url": f"http://127.0.0.1:{refused}", "token": SECRET}
        unknown = {
            "name": "unknown",
            "base_url": "https://neo-exporter-test.invalid",
            "token": SECRET,
        }
        accounts = {"healthy": [good], "degraded": [good, broken], "down": [unknown, broken]}[level]
        config = status_config(tmp_path / "config.yaml", accounts, tmp_path / "state.db")
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            down_row = r'<tr><th>{}</th>(<td class="down">DOWN since [^<]+</td>){{5}}</tr>'
            failing = [a["name"] for a in accounts if a is not good]

            def settled() -> str | None:
                """The page once the headline says `level` and every failing read has failed."""
                text = requests.get(f"{url}/", timeout=5).text
                done = ready(url) and all(re.search(down_row.format(n), text) for n in failing)
                return text if done and f'class="headline {level}"' in text else None

            page = wait_until(settled, 30, f"headline {level}, every endpoint read")
            assert '<meta http-equiv="refresh"' in page
            assert f"<title>neo-exporter: {level}</title>" in page
            assert f"<strong>{level.capitalize()}</strong>" in page
            if level == "healthy":
                assert 'class="down"' not in page
                assert "every read of 1 account(s) succeeded" in page
            if level in ("degraded", "down"):
                # The failing account's cells stand out; its error names the host and cause.
                refused_text = f"connection refused by 127.0.0.1:{refused}"
                assert refused_text in page and refused_text in proc.output
                assert re.search(r"broken: streams, tasks, summary, user, credits \(since ", page)
            if level == "degraded":
                assert re.search(r'<tr><th>acme</th>(<td class="up">up[^<]*</td>){5}</tr>', page)
            if level == "down":
                assert "no account&#x27;s usage can be read" in page
                dns_text = "DNS lookup of neo-exporter-test.invalid failed"
                assert dns_text in page and dns_text in proc.output
            # The effective configuration is shown, and no secret anywhere.
            assert "<th>state</th>" in page and str(tmp_path / "state.db") in page
            assert SECRET not in page + proc.output
            assert "fake-admin-token" not in page + proc.output
            # What a browser shows: the headline, and a row of reads for each account.
            dom = screenshot(url + "/", level)
            assert re.search(
                rf'class="headline {level}"[^>]*>.*?<strong>{level.capitalize()}</strong>',
                dom,
                re.S,
            )
            for account in accounts:
                assert f"<tr><th>{account['name']}</th>" in dom, account["name"]
        finally:
            assert proc.stop() == 0
    assert "Traceback" not in proc.output


def test_dns_and_refused_connections_are_counted_by_cause(tmp_path: Path) -> None:
    refused = free_port()
    accounts = [
        {"name": "unknown", "base_url": "https://neo-exporter-test.invalid", "token": SECRET},
        {"name": "broken", "base_url": f"http://127.0.0.1:{refused}", "token": SECRET},
    ]
    config = status_config(tmp_path / "config.yaml", accounts, tmp_path / "state.db")
    result = run_cli("--once", "--config.file", str(config), env=ENV)
    assert result.returncode == 1
    # It ends on one line that says what failed, account by account.
    last = result.stderr.strip().splitlines()[-1]
    assert "--once failed (exit 1; the metrics printed are incomplete): unknown: streams" in last
    assert re.search(
        r"; broken: streams[^;]* failed \(streams: gave up after 2 attempts \(last: connection "
        rf"refused by 127\.0\.0\.1:{refused}\); check base_url \(or NEO_API_URL\)\)$",
        last,
    ), last
    samples = parse_exposition(result.stdout)
    requests_total = "neo_exporter_api_requests_total"
    assert (
        sample(samples, requests_total, account="unknown", endpoint="streams", code="dns_error")
        == 2
    )
    assert (
        sample(
            samples, requests_total, account="broken", endpoint="streams", code="connection_refused"
        )
        == 2
    )
    assert (
        "account=unknown reconcile read failed: streams: gave up after 2 attempts (last: DNS "
        "lookup of neo-exporter-test.invalid failed ("
    ) in result.stderr
    assert (
        "account=broken reconcile read failed: streams: gave up after 2 attempts (last: "
        f"connection refused by 127.0.0.1:{refused})"
    ) in result.stderr
    assert SECRET not in result.stdout + result.stderr


# --- a bounded --once ------------------------------------------------------------------------


def test_once_against_an_unreachable_api_finishes_within_its_time_limit_saying_what_it_waits_for(
    tmp_path: Path, figures: Any
) -> None:
    refused = free_port()
    # A host that takes the connection and never answers: each request waits for
    # http.read_timeout (30 s by default), far past the limit.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        accounts = [
            {"name": "silent", "base_url": f"http://127.0.0.1:{silent.getsockname()[1]}"},
            {"name": "refused", "base_url": f"http://127.0.0.1:{refused}"},
        ]
        config = {
            "accounts": [{**a, "token": SECRET} for a in accounts],
            "state": {"path": str(tmp_path / "state.db")},
        }  # default retries and backoff: the refused account alone would take 8 s or more
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        started = time.monotonic()
        result = run_cli("--once", "--once.timeout", "8s", "--config.file", str(path), env=ENV)
        took = time.monotonic() - started
    assert result.returncode == 1
    # Within the limit, which counts from the exporter's start: Python's own start comes first
    # (about half a second here).
    assert took < 8 + 1, took
    assert re.search(r"--once: 5s of 8s; waiting for silent \(streams, tasks", result.stderr)
    assert re.search(
        rf"refused \([^)]*last failure: connection refused by 127\.0\.0\.1:{refused}", result.stderr
    )
    assert (
        "--once: stopping at the time limit of 8s (--once.timeout); the reads of" in result.stderr
    )
    assert "neo_up" in result.stdout  # what was read is printed all the same
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state.db").exists()  # a temporary state, not the live one
    figures(f"--once against an unreachable API (limit 8s): exit 1 after {took:.1f}s")


# --- bounded connections ---------------------------------------------------------------------

SLOW_CLIENTS = 1000
HEADER_TIMEOUT = 2.0


def test_a_thousand_slow_clients_neither_stop_a_scrape_nor_hold_a_thread_past_the_header_timeout(
    tmp_path: Path, figures: Any
) -> None:
    with fake_api("--seed", "25", "--streams", "300") as (_, fake_url):
        config = write_config(
            tmp_path / "config.yaml",
            fake_url,
            tmp_path / "state.db",
            web={"read_header_timeout": f"{HEADER_TIMEOUT:g}s", "max_connections": 64},
        )
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        pid = proc.popen.pid
        host, port = url.removeprefix("http://").split(":")
        clients: list[socket.socket] = []
        try:
            wait_until(lambda: ready(url), 30, "ready")
            time.sleep(0.5)
            baseline = threads_of(pid)
            peak, scrapes = baseline, []
            flood_started = time.monotonic()
            for i in range(SLOW_CLIENTS):
                client = socket.create_connection((host, int(port)), timeout=10)
                # Part of a request head, and then nothing.
                client.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n")
                clients.append(client)
                if i % 100 == 99:
                    began = time.monotonic()
                    response = requests.get(f"{url}/metrics", timeout=10)
                    scrapes.append(time.monotonic() - began)
                    assert response.status_code == 200 and "neo_credits_total" in response.text
                    peak = max(peak, threads_of(pid))
            flooded = time.monotonic()
            # Every slow client is closed by the exporter within the timeout (plus the half
            # second between two checks of the deadlines).
            still_open = 0
            for client in clients:
                client.settimeout(max(0.05, flooded + HEADER_TIMEOUT + 1.5 - time.monotonic()))
                try:
                    if client.recv(1024) != b"":
                        still_open += 1  # it answered a request that never ended: wrong
                except TimeoutError:
                    still_open += 1
                except ConnectionResetError:
                    pass
            assert still_open == 0
            closed = time.monotonic()
            # Their threads end with them (the API client's page workers, started lazily, may
            # add a few to the baseline meanwhile).
            wait_until(
                lambda: threads_of(pid) <= baseline + 8, 1.0, "the slow clients' threads to end"
            )
            after = threads_of(pid)
            ended = time.monotonic() - closed
            response = requests.get(f"{url}/metrics", timeout=10)
            assert response.status_code == 200
        finally:
            for client in clients:
                client.close()
            assert proc.stop() == 0
    assert max(scrapes) < 2.0, scrapes
    assert peak <= baseline + 64 + 8, (baseline, peak)
    assert after <= baseline + 8, (baseline, after)
    assert "Traceback" not in proc.output
    figures(
        f"slow clients: {SLOW_CLIENTS} partial request heads in {flooded - flood_started:.1f}s; "
        f"{len(scrapes)} scrapes meanwhile, slowest {max(scrapes) * 1000:.0f} ms; threads "
        f"{baseline} before, {peak} at most, {after} {ended:.2f}s after the last was closed; "
        f"all closed {closed - flooded:.1f}s after the flood (header timeout {HEADER_TIMEOUT:g}s)"
    )
