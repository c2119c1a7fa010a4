"""Real-API fidelity: the real exporter process against a fake API that does, one at a time,
each thing Neo's docs leave open, and every sum ends exact against the fake's ground truth.

Each case is the table of the fidelity issue: 2,500 streams over a day, 10% of them late (a
few seconds here, so that a test can wait for them), one behaviour switched on in the fake.
The exporter reads the lookback every second and the whole window every few seconds, and
audits itself every two; once every late row and every revision has been served, the
test waits for one more complete read of the whole window and compares:
- every counter and histogram with the fake's truth (conftest.truth_mismatches);
- the tasks of the window with the API's own count (ties make offset paging miss tasks);
- the self-audit: no stream missing and no credit drift, against Neo's own totals.
With rows hidden from the listings (Neo's books hold more than it lists), the exporter is
exact against what is listed and says, with numbers, what it could not see.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import yaml

from exporter.models import format_timestamp
from tests.conftest import SampleKey, sample, select, truth_mismatches
from tests.processes import ENV, fake_api, metrics, start_exporter, truth_from_json, wait_until

pytestmark = pytest.mark.e2e

STREAMS = 2500
LATE_SECONDS = 3.0  # the late 10% show up within this after the fake starts
REVISE_AFTER = 3.0
HEADERS = {"Authorization": "Bearer fake-admin-token"}

CASES: dict[str, tuple[str, ...]] = {
    "pages_capped_at_50": ("--page-cap", "50"),
    "odd_non_money_fields": ("--odd-fields", "0.034"),
    "costs_revised_after_listing": ("--revise", "0.1", "--revise-after", f"{REVISE_AFTER}s"),
    "second_precision_ties_in_any_order": ("--ties",),
    # Scans cron starts at the same second: 32 tasks in each of 40 seconds, ties shuffled.
    "dense_ties_32_a_second_for_40s": ("--ties", "--dense-ties", "32", "--dense-seconds", "40"),
    "oldest_first": ("--order", "asc"),
    "to_and_from_exclusive": ("--from-exclusive", "--to-exclusive"),
    "everything_at_once": (
        "--page-cap",
        "50",
        "--odd-fields",
        "0.034",
        "--revise",
        "0.1",
        "--revise-after",
        f"{REVISE_AFTER}s",
        "--ties",
        "--order",
        "asc",
    ),
}


def write_config(path: Path, url: str, state: Path) -> Path:
    config = {
        "accounts": [{"name": "acme", "base_url": url, "token": "${NEO_TEST_TOKEN}"}],
        "polling": {
            "interval": "1s",
            "lookback": "1h",
            "window": "2d",
            "reconcile_interval": "1s",
            "tasks_interval": "2s",
        },
        "http": {"page_size": 200, "concurrency": 4, "backoff_base": "50ms", "backoff_max": "1s"},
        "audit": {"interval": "2s"},
        "state": {"path": str(state)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def fake_truth(url: str, **params: str) -> SimpleNamespace:
    return truth_from_json(requests.get(f"{url}/_fake/truth", params=params, timeout=10).json())


def listing_total(url: str, path: str, start: float, end: float) -> int:
    body = requests.get(
        f"{url}/api/v1/usage/{path}",
        params={"from": format_timestamp(start), "to": format_timestamp(end), "limit": "1"},
        headers=HEADERS,
        timeout=10,
    ).json()
    return int(body["total"])


def reads_of_the_window(samples: dict[SampleKey, float]) -> float:
    return sample(
        samples, "neo_exporter_polls_total", account="acme", kind="reconcile", result="success"
    )


def settle(exporter_url: str, started: float) -> dict[SampleKey, float]:
    """Metrics after two more complete reads of the window than when everything was served.

    The second one started after every late row and revision had been served, and a tasks
    read and an audit ran after it (both are more frequent than the window's read).
    """
    time.sleep(max(0.0, started + LATE_SECONDS + REVISE_AFTER + 1.0 - time.monotonic()))
    baseline = reads_of_the_window(metrics(exporter_url))

    def done() -> dict[SampleKey, float] | None:
        samples = metrics(exporter_url)
        return samples if reads_of_the_window(samples) >= baseline + 2 else None

    wait_until(done, 60, "two complete reads of the window after the last late row")
    time.sleep(2.5)  # a tasks read and an audit after them
    return metrics(exporter_url)


@contextmanager
def settled_exporter(
    tmp_path: Path, *fake_args: str
) -> Iterator[tuple[str, dict[SampleKey, float]]]:
    """The fake API (2,500 streams over a day and `fake_args`) and the real exporter on it;
    yields the fake's URL and the exporter's metrics once settled. The exporter must stop
    with 0 and print no traceback."""
    history = ("--seed", "31", "--streams", str(STREAMS), "--history", "1d")
    with fake_api(*history, *fake_args) as (_, fake_url):
        started = time.monotonic()
        config = write_config(tmp_path / "config.yaml", fake_url, tmp_path / "state.db")
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            yield fake_url, settle(url, started)
        finally:
            assert proc.stop() == 0
    assert "Traceback" not in proc.output


def dense_streams(switches: tuple[str, ...]) -> int:
    """The streams a case's dense burst of ties adds to the history's."""
    if "--dense-ties" not in switches:
        return 0
    rate = int(switches[switches.index("--dense-ties") + 1])
    return rate * int(switches[switches.index("--dense-seconds") + 1])


def total(samples: dict[SampleKey, float], name: str) -> float:
    found = select(samples, name, account="acme")
    assert found, f"no series {name}"
    return math.fsum(found.values())


@pytest.mark.parametrize("case", list(CASES))
def test_every_sum_is_exact_whatever_the_api_leaves_open(
    case: str, tmp_path: Path, figures: Any
) -> None:
    switches = CASES[case]
    late = ("--late-fraction", "0.1", "--max-late", f"{LATE_SECONDS}s")
    with settled_exporter(tmp_path, *late, *switches) as (fake_url, samples):
        now = time.time()
        truth = fake_truth(fake_url)
        tasks = listing_total(fake_url, "tasks", now - 2 * 86400, now)
    assert truth_mismatches(samples, truth, "acme") == []
    if "--dense-ties" in switches:
        assert tasks > 1_000  # the burst's tasks are in the window the gauges cover
    streams, credits = total(samples, "neo_streams_total"), total(samples, "neo_credits_total")
    listed = STREAMS + dense_streams(switches)
    assert streams == listed
    window_tasks = total(samples, "neo_window_tasks")
    assert window_tasks == tasks
    for endpoint in ("streams", "tasks"):
        assert sample(samples, "neo_exporter_read_missing_rows", account="acme",
                      endpoint=endpoint) == 0  # fmt: skip
    assert sample(samples, "neo_exporter_audit_streams_missing", account="acme") == 0
    drift = sample(samples, "neo_exporter_audit_credits_drift", account="acme")
    assert abs(drift) < 1e-6
    audited = sample(samples, "neo_exporter_audit_neo_streams", account="acme")
    assert audited > 0.9 * STREAMS  # the audit covered most of the day, not an empty period
    repaired = total(samples, "neo_exporter_repaired_fields_total")
    revised = sample(samples, "neo_exporter_changed_records_total", account="acme")
    requests_made = {
        endpoint: math.fsum(
            select(
                samples, "neo_exporter_api_requests_total", account="acme", endpoint=endpoint
            ).values()
        )
        for endpoint in ("streams", "tasks")
    }
    want = math.fsum(truth.credits.values())
    figures(
        f"fidelity {case}: {streams:.0f} of {listed} streams, credits {credits:.4f} of "
        f"{want:.4f} (diff {abs(credits - want):.1e}), tasks {window_tasks:.0f} of {tasks}, "
        f"{repaired:.0f} fields repaired, {revised:.0f} streams revised, audit missing 0, "
        f"drift {abs(drift):.1e}; requests streams {requests_made['streams']:.0f}, "
        f"tasks {requests_made['tasks']:.0f}"
    )
    if case in ("odd_non_money_fields", "everything_at_once"):
        assert repaired > 0
    if "--revise" in switches:
        assert revised > 0


def test_rows_neo_never_lists_are_counted_by_the_audit_and_the_reads_say_so(
    tmp_path: Path, figures: Any
) -> None:
    with settled_exporter(tmp_path, "--late-fraction", "0", "--hide", "0.02") as (
        fake_url,
        samples,
    ):
        books, listed = fake_truth(fake_url), fake_truth(fake_url, listed_only="1")
    # Exact against everything Neo lists...
    assert truth_mismatches(samples, listed, "acme") == []
    # ...and short of Neo's books by the hidden rows, which the exporter says, in numbers.
    hidden = round(sum(books.streams.values()) - sum(listed.streams.values()))
    assert hidden > 0
    missing = sample(samples, "neo_exporter_audit_streams_missing", account="acme")
    drift = sample(samples, "neo_exporter_audit_credits_drift", account="acme")
    # The audited period is the day less the lookback: most hidden rows fall in it.
    assert 0.8 * hidden <= missing <= hidden
    assert drift > 0
    assert sample(samples, "neo_exporter_read_missing_rows", account="acme",
                  endpoint="streams") > 0  # fmt: skip
    assert sample(samples, "neo_exporter_incomplete_reads_total", account="acme",
                  endpoint="streams") >= 1  # fmt: skip
    credits = math.fsum(books.credits.values())
    figures(
        f"fidelity hidden_rows: {hidden} of {STREAMS} streams never listed; exact against the "
        f"listed rows; audit {missing:.0f} streams missing, credits drift {drift:+.4f} "
        f"({drift / credits:.2%} of Neo's {credits:.2f})"
    )
