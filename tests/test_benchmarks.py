"""The benchmark suite's smoke mode runs, so that the suite cannot rot (no timings checked)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import ROOT


@pytest.mark.e2e
def test_the_benchmark_suite_runs_in_smoke_mode_and_reports_every_scenario() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Exit 1 means the exporter's counters disagreed with the rows the fake served.
    assert done.returncode == 0, done.stderr
    for scenario in (
        "backfill wall time, cached pages: against the floor",
        "backfill wall time, pages rendered afresh: against the floor",
        "backfill CPU, cached pages",
        "backfill CPU, pages rendered afresh",
        "first start, cached pages: stream rows fetched | 600 |",
        "first start, pages rendered afresh: stream rows fetched | 600 |",
        "3 accounts x 200 streams: all exact | 3 of 3",
        "3 accounts: idle CPU at a 2 s interval, no scrapes",
        "3 accounts: one scrape of /metrics (gzip)",
        "3 accounts: slowest first full read",
        "3 accounts: longest time between two polls of one account",
        "idle poll: API requests",
        "idle poll: CPU",
        "render p50",
        "GET /metrics p50",
        "peak RSS",
        "exporter CPU per stream",
    ):
        assert scenario in done.stdout, done.stdout
    # The idle poll makes exactly the lookback's requests even in a tiny run.
    assert "| idle poll: API requests | 1 | 1 (lookback pages) | +0 extra at most |" in done.stdout
