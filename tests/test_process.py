"""The real exporter process: SIGKILL at random points, restarts, SIGTERM, the CLI."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import (
    SampleKey,
    assert_never_down,
    counters_of,
    parse_exposition,
    sample,
    select,
    truth_mismatches,
)
from tests.processes import (
    ENV,
    assert_promtool_lint_clean,
    fake_api,
    metrics,
    require_tool,
    run_cli,
    start_exporter,
    truth,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.e2e


KILLS = 10


def test_sigkill_at_random_points_of_a_backfill_never_loses_or_double_counts(
    tmp_path: Path, figures: Any
) -> None:
    rng = random.Random(2026)
    state = tmp_path / "state.db"
    with fake_api(
        "--seed",
        "11",
        "--streams",
        "3000",
        "--history",
        "1d",
        "--latency-ms",
        "15",
        "--late-fraction",
        "0",
    ) as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, state)
        expected = truth(fake_url)
        previous: dict[SampleKey, float] = {}
        kills = scrapes = 0
        for _ in range(KILLS):
            proc, url = start_exporter("--config.file", str(config), env=ENV)
            deadline = time.monotonic() + rng.uniform(0.2, 1.0)
            try:
                # Scraped all along: no counter ever goes down, within a life or across a
                # restart, whatever instant the previous process died at.
                while time.monotonic() < deadline:
                    now = counters_of(metrics(url))
                    scrapes += 1
                    assert_never_down(previous, now)
                    previous = now
                    time.sleep(0.05)
            finally:
                proc.popen.send_signal(signal.SIGKILL)
                proc.popen.wait(10)
            kills += 1
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:

            def caught_up() -> dict[SampleKey, float] | None:
                samples = metrics(url)
                done = sample(
                    samples,
                    "neo_exporter_polls_total",
                    account="acme",
                    kind="reconcile",
                    result="success",
                )
                return samples if done >= 1 else None

            final = wait_until(caught_up, 60, "a complete read after the restarts")
        finally:
            assert proc.stop() == 0
        assert kills == KILLS
        assert truth_mismatches(final, expected, "acme") == []
        assert sum(select(final, "neo_streams_total").values()) == 3000
        assert_never_down(previous, counters_of(final))
    figures(
        f"crash exporter: {kills} SIGKILLs during a 3000-stream backfill, {scrapes} scrapes, "
        "no counter ever went down; final counters equal the truth"
    )


def test_sigterm_stops_cleanly_with_exit_0(tmp_path: Path) -> None:
    with fake_api("--seed", "3", "--streams", "500", "--latency-ms", "20") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, tmp_path / "state.db")
        proc, _ = start_exporter("--config.file", str(config), env=ENV)
        time.sleep(0.3)  # likely mid-backfill
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0
        assert time.monotonic() - started < 10
        assert "Traceback" not in proc.output


def test_endpoints_serve_metrics_landing_page_health_and_readiness(tmp_path: Path) -> None:
    with fake_api("--seed", "5", "--streams", "200") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, tmp_path / "state.db")
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            assert requests.get(f"{url}/-/healthy", timeout=5).status_code == 200
            wait_until(
                lambda: requests.get(f"{url}/-/ready", timeout=5).status_code == 200, 30, "ready"
            )
            landing = requests.get(f"{url}/", timeout=5).text
            assert 'href="/metrics"' in landing and "acme" in landing
            om = requests.get(
                f"{url}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                timeout=5,
            )
            assert om.headers["Content-Type"].startswith("application/openmetrics-text")
            assert om.text.rstrip().endswith("# EOF")
            gz = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5)
            assert gz.headers.get("Content-Encoding") == "gzip"
            assert "neo_streams_total" in gz.text
            assert requests.get(f"{url}/nope", timeout=5).status_code == 404
        finally:
            proc.stop()


def test_promtool_finds_nothing_to_complain_about_in_metrics(tmp_path: Path) -> None:
    tool = require_tool("promtool")
    with fake_api("--seed", "9", "--streams", "400") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, tmp_path / "state.db")
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            wait_until(
                lambda: requests.get(f"{url}/-/ready", timeout=5).status_code == 200, 30, "ready"
            )
            text = requests.get(f"{url}/metrics", timeout=5).text
        finally:
            proc.stop()
    assert "neo_credits_total" in text
    assert_promtool_lint_clean(tool, text)


def test_a_config_error_exits_2_naming_every_key_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "accounts:\n  - name: acme\n    token: x\n    auth_header: basic\n"
        "polling:\n  interval: soon\n  intervall: 5m\n"
    )
    result = run_cli("--config.file", str(bad))
    assert result.returncode == 2
    assert "accounts[0].auth_header" in result.stderr
    assert "polling.interval" in result.stderr
    assert "polling.intervall" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_accepts_the_example_config() -> None:
    result = run_cli(
        "--check-config",
        "--config.file",
        "config.example.yaml",
        env={"NEO_API_TOKEN": "example-token"},
    )
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert "the tokens were not checked" in result.stdout


def test_no_config_and_no_token_is_a_config_error() -> None:
    result = run_cli("--check-config")
    assert result.returncode == 2
    assert "NEO_API_TOKEN" in result.stderr
    assert "neo-exporter --demo" in result.stderr


def test_version_prints_the_package_version() -> None:
    from exporter import __version__

    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_once_prints_the_window_to_stdout_and_logs_to_stderr(tmp_path: Path) -> None:
    with fake_api("--seed", "4", "--streams", "300", "--late-fraction", "0") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, tmp_path / "state.db")
        result = run_cli("--once", "--config.file", str(config), env=ENV)
        expected = truth(fake_url)
    assert result.returncode == 0, result.stderr
    samples = parse_exposition(result.stdout)
    assert truth_mismatches(samples, expected, "acme") == []
    assert "reconcile read" in result.stderr
    assert "fake-admin-token" not in result.stdout + result.stderr


def test_once_exits_non_zero_when_an_account_fails(tmp_path: Path) -> None:
    with fake_api("--seed", "4", "--streams", "10") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, tmp_path / "state.db")
        result = run_cli("--once", "--config.file", str(config), env={"NEO_TEST_TOKEN": "nope"})
    assert result.returncode == 1
    assert "neo_up" in result.stdout
    assert "rejected the token" in result.stderr
