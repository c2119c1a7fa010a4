"""History: `neo-exporter history`, its OpenMetrics, and its join with the live exporter.

In process, against the fake API on a manual clock: every step of the file holds the fake's
truth up to that instant; the file parses (prometheus_client's OpenMetrics parser, one
instant at a time, and promtool, whole); an exporter started on the seeded state publishes
at once, continues every series of the file under the same labels (the label budget folds
the same way), and counts a row that shows up later once. Bad input leaves nothing behind:
no output, no temporary file, no state.

End to end (`e2e`): the fake with 30 days of history, the real CLI, the shipped backfill
script, promtool, and two real Prometheus: one started on the blocks, one that had been
running (and scraping) before they were moved into its data directory.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter import catalogue, history
from exporter.app import build
from exporter.cli import parse_history_args
from exporter.config import Config, config_from_mapping, load_config, parse_duration
from exporter.history import (
    HistoryError,
    HistoryOptions,
    HistoryRefused,
    HistorySummary,
    Span,
    check_options,
    plan,
)
from exporter.history import run as run_history
from exporter.models import format_timestamp
from exporter.state import StateLock
from tests.conftest import (
    BY_LABEL_TRUTH,
    FIGURES,
    HISTOGRAM_TRUTH,
    STREAM_TRUTH,
    ManualClock,
    SampleKey,
    parse_exposition,
)
from tests.fakeneo import FakeNeo, FakeNeoServer
from tests.processes import (
    ROOT,
    Proc,
    fake_api,
    free_port,
    prometheus_graph_legend,
    require_module,
    require_tool,
    screenshot,
    start_exporter,
    wait_until,
)
from tests.processes import prometheus_query as query
from tests.repo_files import (
    CHART,
    COMPOSE_DIR,
    KUBERNETES_VERSIONS,
    compose,
    dashboard_exprs,
    metric_names,
    one,
    render,
)

DAY = 86400.0
T0 = 1_795_000_000.0 + 123.456  # 2026-11-18T07:08:43Z: not on a step
ACCOUNT = "acme"
HISTORY_METRICS = ("neo_credits_total", "neo_streams_total", "neo_llm_cost_usd_total")
EXIT_FAILURE, EXIT_USAGE, EXIT_IN_USE, EXIT_REFUSED = 1, 2, 5, 7
# Exit statuses and messages are the CLI's: run it as a user would.
CLI_ENV = {k: v for k, v in os.environ.items() if k != "NEO_API_TOKEN"}


# --- in process: a fake with two days of history ----------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def neo(clock: ManualClock) -> FakeNeo:
    fake = FakeNeo(seed=17, clock=clock)
    # Two days, up to a minute ago: rows on both sides of the join (3 hours back).
    fake.populate(900, T0 - 2 * DAY + 600, T0 - 60, late_fraction=0.0)
    return fake


@pytest.fixture
def fake(neo: FakeNeo) -> Iterator[FakeNeoServer]:
    with FakeNeoServer(neo) as server:
        yield server


def config_of(url: str, state: Path, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "accounts": [{"name": ACCOUNT, "base_url": url, "token": "fake-admin-token"}],
        "polling": {"interval": "1m", "lookback": "6h", "window": "1d"},
        # A small budget, so that folding into `other` is part of what must line up.
        "metrics": {"label_limits": {"model": 2, "tool": 3, "agent": 2}},
        "http": {"page_size": 50, "backoff_base": "10ms", "backoff_max": "50ms"},
        "state": {"path": str(state)},
        **extra,
    }
    return config_from_mapping(data, {})


TARGET = (("job", "neo-exporter"), ("instance", "127.0.0.1:9636"))  # as Prometheus adds them
CLI_TARGET = ("--label", "job=neo-exporter", "--label", "instance=127.0.0.1:9636")


def options(output: Path, **changes: Any) -> HistoryOptions:
    return HistoryOptions(output=str(output), **{"days": 2, "target_labels": TARGET, **changes})


def make(config: Config, output: Path, clock: ManualClock, **changes: Any) -> HistorySummary:
    return run_history(config, options(output, **changes), stop=threading.Event(), clock=clock)


Instant = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def instants(text: str, wanted: set[int]) -> dict[int, Instant]:
    """The `wanted` instants of the file, each cut into an OpenMetrics document of its own
    and parsed by prometheus_client: {timestamp: {(sample name, labels): value}}.

    Whole, the file holds every timestamp of a series one after the other, as the format
    wants; prometheus_client's parser (0.26) takes a histogram's second instant for
    duplicates of its first and drops it, so it reads one instant at a time (promtool reads
    the whole file below).
    """
    assert text.endswith("# EOF\n")
    meta: dict[str, list[str]] = defaultdict(list)  # family -> its HELP and TYPE
    families: list[str] = []
    of_sample: dict[str, str] = {}  # sample name -> family
    lines: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for line in text.splitlines():
        if line.startswith("# EOF"):
            break
        if line.startswith("#"):
            family = line.split()[2]
            if family not in meta:
                families.append(family)
            meta[family].append(line)
            continue
        name = line.split("{", 1)[0]
        family = of_sample.get(name) or of_sample.setdefault(
            name, max((f for f in families if name.startswith(f)), key=len)
        )
        ts = int(line.rsplit(" ", 1)[1])
        if ts in wanted:
            lines[ts][family].append(line)
    out: dict[int, Instant] = {}
    for ts, by_family in lines.items():
        doc = [line for f in families for line in (*meta[f], *by_family.get(f, ()))]
        parsed: Instant = {}
        for metric in text_string_to_metric_families("\n".join(doc) + "\n# EOF\n"):
            for s in metric.samples:
                assert s.timestamp is not None and float(s.timestamp) == ts
                parsed[(s.name, tuple(sorted(s.labels.items())))] = s.value
        out[ts] = parsed
    return out


def summed(instant: Instant, name: str, **labels: str) -> float:
    return math.fsum(
        v for (n, ls), v in instant.items() if n == name and set(labels.items()) <= set(ls)
    )


def truth_sum(neo: FakeNeo, field: str, start: float | None, end: float | None) -> float:
    return math.fsum(getattr(neo.truth(start, end), field).values())


def totals_mismatches(samples: dict[SampleKey, float], truth: Any) -> list[str]:
    """Every counter and histogram summed over its labels against the fake's truth: the
    label budget folds some values into `other`, which the truth does not."""
    problems = []
    pairs = [(name, math.fsum(getattr(truth, f).values())) for f, name in STREAM_TRUTH.items()]
    pairs += [
        (name, math.fsum(getattr(truth, f).values())) for f, (name, _) in BY_LABEL_TRUTH.items()
    ]
    for field, (name, _) in HISTOGRAM_TRUTH.items():
        values = getattr(truth, field).values()
        pairs += [(f"{name}_count", float(sum(c for c, _ in values)))]
        pairs += [(f"{name}_sum", math.fsum(s for _, s in values))]
    for name, want in pairs:
        if not any(n == name for n, _ in samples):
            problems.append(f"{name}: missing from the exposition, truth {want!r}")
            continue
        got = math.fsum(v for (n, labels), v in samples.items() if n == name)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"{name}: exported {got!r}, truth {want!r}")
    return problems


def test_the_span_stops_a_head_margin_before_now_on_whole_steps() -> None:
    span = plan(T0, HistoryOptions(output="x", days=30, step=300, head_margin=3 * 3600))
    assert span.join % 300 == 0 and span.start % 300 == 0
    assert T0 - 3 * 3600 - 300 < span.join <= T0 - 3 * 3600
    assert span.start <= T0 - 30 * DAY < span.start + 300
    assert span.steps == (span.join - span.start) / 300 + 1
    # A stream belongs to the first step whose value includes it; past the join, nowhere.
    assert span.index(span.start) == 0
    assert span.index(span.start + 0.001) == 1
    assert span.index(span.start + 300) == 1
    assert span.index(span.join + 0.001) == span.steps
    assert Span(0.0, 600.0, 300.0).at(2) == 600


def test_each_step_holds_what_the_exporter_would_have_shown_then(
    neo: FakeNeo, fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    output = tmp_path / "history.om"
    summary = make(config_of(fake.url, tmp_path / "state.db"), output, clock)
    text = output.read_text()
    assert summary.bytes == len(text.encode()) and summary.streams == 900
    assert "_created" not in text  # promtool would store them as series of their own
    # Every series in time order, never down from one sample to the next; all on steps.
    samples = [line.rsplit(" ", 2) for line in text.splitlines() if not line.startswith("#")]
    assert len(samples) == summary.samples
    last: dict[str, tuple[float, int]] = {}
    for series, value, ts in samples:
        before = last.get(series, (0.0, 0))
        assert float(value) >= before[0] and int(ts) > before[1], (series, ts)
        assert (int(ts) - summary.start) % 300 == 0
        last[series] = (float(value), int(ts))
    times = {ts for _, ts in last.values()}
    assert times == {int(summary.join)} and summary.join <= T0 - 3 * 3600
    # Checkpoints every 6 hours and the join: every counter summed over its labels, and the
    # histogram counts per model, equal the truth of the streams created up to then.
    wanted = set(range(int(summary.start), int(summary.join), 6 * 3600)) | {int(summary.join)}
    steps = instants(text, wanted)
    checked = 0
    for ts in sorted(steps):
        instant, truth = steps[ts], neo.truth(summary.start, ts)
        for field, name in (("credits", "neo_credits_total"), ("streams", "neo_streams_total"),
                            ("llm_cost", "neo_llm_cost_usd_total"),
                            ("tool_calls", "neo_tool_calls_total")):  # fmt: skip
            assert math.isclose(
                summed(instant, name), math.fsum(getattr(truth, field).values()), rel_tol=1e-9
            ), (name, ts)
        streams = sum(count for count, _ in truth.stream_duration.values())
        assert summed(instant, "neo_stream_duration_seconds_count") == streams
        assert summed(instant, "neo_stream_duration_seconds_bucket", le="+Inf") == streams
        checked += 1
    assert checked >= 8
    # The budget folded models into `other`, in the file as it will be live.
    assert any(("model", "other") in labels for _, labels in steps[int(summary.join)])


def test_promtool_makes_blocks_of_every_sample_of_a_compressed_history(
    fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    promtool = require_tool("promtool")
    output = tmp_path / "history.om.gz"
    summary = make(config_of(fake.url, tmp_path / "state.db"), output, clock)
    assert summary.bytes == output.stat().st_size
    plain = tmp_path / "history.om"
    plain.write_bytes(gzip.decompress(output.read_bytes()))
    assert plain.stat().st_size > 10 * summary.bytes  # the text repeats itself
    blocks = tmp_path / "blocks"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
         "--max-block-duration=720h", str(plain), str(blocks)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    listing = subprocess.run(
        [promtool, "tsdb", "list", str(blocks)], check=True, capture_output=True, text=True
    ).stdout.splitlines()[1:]
    # ULID, min time, max time, duration, samples, chunks, series, size
    assert sum(int(row.split()[4]) for row in listing) == summary.samples
    assert min(int(row.split()[1]) for row in listing) >= summary.start * 1000
    assert max(int(row.split()[2]) for row in listing) == summary.join * 1000 + 1


def test_an_exporter_on_the_seeded_state_continues_every_series_and_counts_a_late_row_once(
    neo: FakeNeo, fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    config = config_of(fake.url, tmp_path / "state.db")
    output = tmp_path / "history.om"
    summary = make(config, output, clock)
    at_join = instants(output.read_text(), {int(summary.join)})[int(summary.join)]
    stop = threading.Event()
    exporter = build(config, stop, clock)
    try:
        # Live from the first scrape, before any read: the first full read is behind it.
        assert exporter.pollers[0].live
        first = parse_exposition(generate_latest(exporter.registry).decode())
        for (name, labels), value in at_join.items():
            # Every series of the file carries the scrape's labels, which Prometheus adds.
            assert set(TARGET) <= set(labels), (name, labels)
            live = first.get((name, frozenset(set(labels) - set(TARGET))))
            assert live is not None, f"{name}{dict(labels)} of the history is not live"
            assert live >= value, f"{name}{dict(labels)} would reset: {value} -> {live}"
        # The rise across the join is exactly the streams created after it.
        after = truth_sum(neo, "credits", summary.join + 0.0005, None)
        rise = sum(v for (n, _), v in first.items() if n == "neo_credits_total") - summed(
            at_join, "neo_credits_total"
        )
        assert after > 0 and math.isclose(rise, after, rel_tol=1e-9)
        assert exporter.pollers[0].poll_streams()
        scraped = parse_exposition(generate_latest(exporter.registry).decode())
        assert totals_mismatches(scraped, neo.truth()) == []
        # A row of the history's past shows up only now: the live read counts it, once.
        late = neo.generate(1, summary.join - 3600, summary.join - 3000, late_fraction=0.0)
        clock.advance(60)
        assert exporter.pollers[0].poll_streams()
        scraped = parse_exposition(generate_latest(exporter.registry).decode())
        assert totals_mismatches(scraped, neo.truth()) == []
        total = sum(v for (n, _), v in scraped.items() if n == "neo_credits_total")
        assert math.isclose(total, truth_sum(neo, "credits", None, None), rel_tol=1e-9)
        assert late[0]["neo_credits"] > 0 or late[0]["llm_cost"] > 0
    finally:
        stop.set()
        exporter.close()


# What Neo's docs leave open, each switched on in the fake (tests/test_fidelity.py does the
# same for the live reads): the history reads through the same listing, so it stays exact.
SWITCHES: dict[str, dict[str, Any]] = {
    "page cap": {"page_cap": 37},
    "odd fields": {"odd_fields": 0.3},
    "revisions": {"revise": 0.3},
    "ties": {"tie_seconds": True},
    "oldest first": {"order": "asc"},
    "exclusive bounds": {"from_inclusive": False, "to_inclusive": False},
    "all at once": {
        "page_cap": 37, "odd_fields": 0.3, "revise": 0.3, "tie_seconds": True, "order": "asc",
    },
}  # fmt: skip


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_the_history_is_exact_whatever_neo_leaves_open(
    switch: str, clock: ManualClock, tmp_path: Path
) -> None:
    neo = FakeNeo(seed=29, clock=clock, **SWITCHES[switch])
    neo.populate(700, T0 - 2 * DAY + 600, T0 - 60, late_fraction=0.0)
    with FakeNeoServer(neo) as server:
        config = config_of(server.url, tmp_path / "state.db")
        output = tmp_path / "history.om"
        summary = make(config, output, clock)
    assert summary.streams == 700 and summary.bad_rows == 0
    # The last step holds the truth up to the join; the exporter's first scrape, all of it.
    join = int(summary.join)
    at_join = instants(output.read_text(), {join})[join]
    truth = neo.truth(summary.start, join)
    for field, name in (("credits", "neo_credits_total"), ("streams", "neo_streams_total"),
                        ("llm_cost", "neo_llm_cost_usd_total")):  # fmt: skip
        want = math.fsum(getattr(truth, field).values())
        assert math.isclose(summed(at_join, name), want, rel_tol=1e-9), (switch, name)
    stop = threading.Event()
    exporter = build(config, stop, clock)
    try:
        scraped = parse_exposition(generate_latest(exporter.registry).decode())
    finally:
        stop.set()
        exporter.close()
    assert totals_mismatches(scraped, neo.truth()) == []


def test_every_account_goes_in_one_file_and_account_picks_one(
    fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    accounts = [
        {"name": name, "base_url": fake.url, "token": "fake-admin-token"} for name in ("a", "b")
    ]
    config = config_of(fake.url, tmp_path / "both.db", accounts=accounts)
    both = make(config, tmp_path / "both.om", clock)
    assert both.accounts == ("a", "b")
    text = (tmp_path / "both.om").read_text()
    assert 'account="a"' in text and 'account="b"' in text
    # Each family once, with both accounts' series in it.
    assert text.count("# TYPE neo_credits counter") == 1
    config = config_of(fake.url, tmp_path / "one.db", accounts=accounts)
    one = make(config, tmp_path / "one.om", clock, accounts=("b",))
    assert one.accounts == ("b",)
    assert 'account="a"' not in (tmp_path / "one.om").read_text()
    # The other account is still fresh: its history can be made later, on the same state.
    later = make(config, tmp_path / "later.om", clock, accounts=("a",))
    assert later.accounts == ("a",) and later.streams == one.streams


def test_a_state_that_holds_counters_is_refused_and_left_as_it_was(
    fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    state = tmp_path / "state.db"
    config = config_of(fake.url, state)
    make(config, tmp_path / "first.om", clock)
    before = state.read_bytes()
    refused = r"already has counters in the state since .* cannot join without a counter reset"
    with pytest.raises(HistoryRefused, match=refused):
        make(config, tmp_path / "second.om", clock)
    assert state.read_bytes() == before
    assert not (tmp_path / "second.om").exists() and not (tmp_path / "second.om.tmp").exists()
    # --if-fresh leaves it alone and writes nothing (an init container at every pod start).
    skipped = make(config, tmp_path / "third.om", clock, if_fresh=True)
    assert skipped.accounts == () and skipped.skipped == (ACCOUNT,)
    assert not (tmp_path / "third.om").exists() and state.read_bytes() == before


def leftovers(tmp_path: Path) -> list[str]:
    """What a failed run left; the state's lock file stays, as the exporter leaves it."""
    left = {"config.yaml", "state.db.lock"}
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in left)


def test_an_incomplete_read_fails_and_writes_nothing(clock: ManualClock, tmp_path: Path) -> None:
    # Neo counts streams it never lists: the read stays short of its own total.
    neo = FakeNeo(seed=5, clock=clock, hide=0.05)
    neo.populate(400, T0 - 2 * DAY + 600, T0 - 60, late_fraction=0.0)
    with FakeNeoServer(neo) as server:
        config = config_of(server.url, tmp_path / "state.db")
        with pytest.raises(HistoryError, match=r"incomplete: the API counts \d+ streams"):
            make(config, tmp_path / "history.om", clock)
    assert leftovers(tmp_path) == []


def test_a_failed_write_at_the_end_leaves_no_file_and_no_state(
    fake: FakeNeoServer, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(out: Any, *args: Any) -> None:
        out.write(b"# HELP neo_streams half a file\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(history, "write_openmetrics", full_disk)
    with pytest.raises(HistoryError, match="No space left on device; nothing was written"):
        make(config_of(fake.url, tmp_path / "state.db"), tmp_path / "history.om", clock)
    assert leftovers(tmp_path) == []


# --- the command line -------------------------------------------------------------------------


def write_config(path: Path, url: str, state: Path, **extra: Any) -> Path:
    config: dict[str, Any] = {
        "accounts": [{"name": ACCOUNT, "base_url": url, "token": "${NEO_TEST_TOKEN}"}],
        "polling": {"window": "1d", "lookback": "1h"},
        "http": {"page_size": 20, "backoff_base": "10ms", "backoff_max": "50ms"},
        "state": {"path": str(state)},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str, token: str = "fake-admin-token") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "history", *args],
        cwd=ROOT,
        env={**CLI_ENV, "NEO_TEST_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def slow_fake() -> Iterator[FakeNeoServer]:
    """Two days of history at the real time, served slowly: a read that takes seconds."""
    import time

    now = time.time()
    neo = FakeNeo(seed=23, latency=0.08)
    neo.populate(600, now - 2 * DAY + 600, now - 60, late_fraction=0.0)
    with FakeNeoServer(neo) as server:
        yield server


@pytest.mark.e2e
def test_the_command_shows_progress_then_a_summary_and_is_refused_the_second_time(
    slow_fake: FakeNeoServer, tmp_path: Path
) -> None:
    state, output = tmp_path / "state.db", tmp_path / "history.om.gz"
    config = write_config(
        tmp_path / "config.yaml", slow_fake.url, state, http={"page_size": 20, "concurrency": 1}
    )
    result = cli("--config.file", str(config), "--days", "2", "--output", str(output), *CLI_TARGET)
    assert result.returncode == 0, result.stderr
    progress = re.findall(
        r"rows (\d+)/600 read, (\d+) counted, pages (\d+), (\w+) elapsed, about (\w+) left",
        result.stderr,
    )
    assert len(progress) >= 3, result.stderr  # about once a second over a 2-3 s read
    read = [int(rows) for rows, *_ in progress]
    assert read == sorted(read) and read[0] < 600
    assert progress[-1][:2] == ("600", "600") and progress[-1][4] == "0s"
    assert re.search(
        r"done in [\d.]+s: 600 rows in 30 pages, 600 streams counted, \d+ series, \d+ samples, "
        rf"{output.stat().st_size} bytes written to {re.escape(str(output))}",
        result.stderr,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.yaml", "history.om.gz", "state.db", "state.db.lock",
    ]  # fmt: skip
    again = cli("--config.file", str(config), "--days", "2", "--output", str(output), *CLI_TARGET)
    assert again.returncode == EXIT_REFUSED
    assert "history refused: account acme already has counters" in again.stderr
    assert "docs/history.md" in again.stderr and "Traceback" not in again.stderr
    fresh_only = cli(
        "--config.file", str(config), "--days", "2", "--output", str(output), "--if-fresh",
        *CLI_TARGET,
    )  # fmt: skip
    assert fresh_only.returncode == 0 and "nothing to do" in fresh_only.stderr


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("unreachable", EXIT_FAILURE, r"history failed: account acme: streams: gave up after "
         r"\d+ attempts \(last: connection refused by 127\.0\.0\.1:\d+\); check base_url \(or "
         r"NEO_API_URL\); nothing was written"),
        ("wrong token", EXIT_FAILURE, r"history failed: account acme: streams: HTTP 401 .* the "
         r"API rejected the token; .*nothing was written"),
        ("output not writable", EXIT_FAILURE, r"history failed: cannot write the history file "
         r".*/not-a-directory/history\.om: Not a directory"),
        ("days shorter than the window", EXIT_USAGE, r"--days 1 is shorter than polling\.window "
         r"2d: the exporter re-reads its window"),
        ("a step with holes", EXIT_USAGE, r"--step must be whole seconds from 1s to 5m, not 10m"),
        ("no target labels", EXIT_USAGE, r"--label is needed: the labels Prometheus adds to the "
         r"exporter's series when it scrapes them"),
        ("a label of the exporter's own", EXIT_USAGE, r"--label model: the exporter's own label"),
    ],
)  # fmt: skip
@pytest.mark.e2e
def test_bad_input_exits_non_zero_saying_why_and_leaves_nothing(
    case: str, status: int, message: str, fake: FakeNeoServer, tmp_path: Path
) -> None:
    url, token, output = fake.url, "fake-admin-token", tmp_path / "history.om"
    args = ["--days", "2", *CLI_TARGET]
    extra: dict[str, Any] = {}
    if case == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    elif case == "wrong token":
        token = "not-the-token-7f3a"
    elif case == "output not writable":
        (tmp_path / "not-a-directory").write_text("a file")
        output = tmp_path / "not-a-directory" / "history.om"
    elif case == "days shorter than the window":
        args, extra = ["--days", "1", *CLI_TARGET], {"polling": {"window": "2d", "lookback": "1h"}}
    elif case == "no target labels":
        args = ["--days", "2"]
    elif case == "a label of the exporter's own":
        args += ["--label", "model=x"]
    else:
        args += ["--step", "10m"]
    config = write_config(tmp_path / "config.yaml", url, tmp_path / "state.db", **extra)
    result = cli("--config.file", str(config), "--output", str(output), *args, token=token)
    assert result.returncode == status, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and "not-the-token-7f3a" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "history" in line]) == 1
    assert [p for p in leftovers(tmp_path) if p != "not-a-directory"] == []


@pytest.mark.e2e
def test_a_running_exporter_holds_the_state_and_the_history_waits_for_nobody(
    fake: FakeNeoServer, tmp_path: Path
) -> None:
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "config.yaml", fake.url, state)
    lock = StateLock(str(state))  # as an exporter running on it holds it
    try:
        result = cli(
            "--config.file", str(config), "--days", "2", "--output", str(tmp_path / "h.om"),
            *CLI_TARGET,
        )  # fmt: skip
    finally:
        lock.release()
    assert result.returncode == EXIT_IN_USE
    assert "is in use by another neo-exporter (pid" in result.stderr
    assert "stop the exporter first" in result.stderr and "--once" not in result.stderr


@pytest.mark.e2e
def test_a_stop_mid_read_exits_1_and_writes_nothing(
    slow_fake: FakeNeoServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        slow_fake.url,
        tmp_path / "state.db",
        http={"page_size": 10, "concurrency": 1},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "history", "--config.file", str(config), "--days",
         "2", "--output", str(tmp_path / "history.om"), *CLI_TARGET],
        cwd=ROOT, env={**CLI_ENV, "NEO_TEST_TOKEN": "fake-admin-token"},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if "history: reading" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_FAILURE, rest
    assert "history failed: stopped before the end; nothing was written" in rest
    assert leftovers(tmp_path) == []


def test_the_backfill_script_passes_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    script = ROOT / "prometheus" / "backfill-history.sh"
    result = subprocess.run(
        [shellcheck, "-s", "sh", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
    assert os.access(script, os.X_OK)


def test_the_last_line_names_the_backfill_script_with_its_recording_rules() -> None:
    summary = HistorySummary(
        accounts=("acme",), skipped=(), start=1.7e9, join=1.7e9 + 3600, end=1.7e9 + 3900,
        rows=10, pages=1, streams=10, bad_rows=0, series=4, samples=40, bytes=512,
        seconds=1.0, output="neo-history.om.gz", state_path="state.db",
    )  # fmt: skip
    *_, last = history.describe(summary)
    assert (
        "prometheus/backfill-history.sh neo-history.om.gz PROMETHEUS_DATA_DIR "
        "prometheus/rules/neo-recording.rules.yml"
    ) in last
    assert "recording rules" in last and "start the exporter" in last


@pytest.mark.e2e
def test_the_backfill_script_with_its_staging_port_taken_says_so_before_any_rule(
    tmp_path: Path,
) -> None:
    require_tool("promtool"), require_tool("prometheus")
    history_file, data, calls = tmp_path / "h.om", tmp_path / "data", tmp_path / "calls"
    history_file.write_text(
        "# TYPE neo_streams counter\nneo_streams_total 1 1700000000\n"
        "neo_streams_total 2 1700000300\n# EOF\n"
    )
    # promtool through a shim that notes each call, to see which ran.
    shim = tmp_path / "promtool"
    shim.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexec {require_tool("promtool")} "$@"\n')
    shim.chmod(0o755)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken.setblocking(False)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(BACKFILL), str(history_file), str(data),
             str(RULES / "neo-recording.rules.yml")],
            env={**os.environ, "STAGING_PORT": str(port), "PROMTOOL": str(shim),
                 "PROMETHEUS": require_tool("prometheus")},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        with pytest.raises(BlockingIOError):
            taken.accept()  # nothing ever connected to whatever holds the port
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"backfill: port {port} is already in use on 127.0.0.1; the staging Prometheus needs "
        "a free one: set STAGING_PORT to another port"
    ) in result.stderr
    assert "No such process" not in result.stderr
    ran = calls.read_text()
    assert "create-blocks-from openmetrics" in ran
    assert "create-blocks-from rules" not in ran and "query" not in ran
    assert not list(data.glob(".neo-history.*")) and not list(data.glob("*/meta.json"))


# --- end to end: 30 days, promtool, two real Prometheus ---------------------------------------

E2E_FAKE = ("--seed", "31", "--streams", "3000", "--history", "30d", "--late-fraction", "0")
ARTIFACTS = ROOT / "artifacts" / "history"
RULES = ROOT / "prometheus" / "rules"
BACKFILL = ROOT / "prometheus" / "backfill-history.sh"
SPEND_DASHBOARD = "neo-spend-overview.json"
# The history's series: every counter and histogram fed by the streams.
HISTORY_NAMES = tuple(d.name for d in history.COUNTERS) + tuple(
    f"{d.name}_{suffix}" for d in catalogue.HISTOGRAMS for suffix in ("bucket", "count", "sum")
)
DAILY = {"neo_credits_total": "credits", "neo_streams_total": "streams",
         "neo_llm_cost_usd_total": "llm_cost"}  # fmt: skip
# A stream Neo lists only after the history was read, created before the join.
LATE_ROW = {
    "task_id": "6b1f0c55-0000-4000-8000-00000000late",
    "model": "claude-sonnet-4-5",
    "status": "completed",
    "is_byok": True,
    "neo_credits": 0.0,
    "llm_cost": 4.25,
    "neo_cost": 0.85,
    "step_count": 3,
    "tool_calls": 1,
    "agent_triggers": 1,
    "total_execution_ms": 42000,
    "llm_time_ms": 30000,
    "tool_time_ms": 9000,
    "avg_step_latency_ms": 14000,
}


@dataclasses.dataclass
class World:
    fake_url: str
    exporter_url: str
    start: float  # the history's first step
    join: float  # its last: T_join
    late_created: float
    prometheus: dict[str, str]  # "fresh" / "running" -> URL
    head_min_time: float  # the running Prometheus' head start when its blocks went in
    loaded_at: dict[str, float] = dataclasses.field(default_factory=dict)
    figures: list[str] = dataclasses.field(default_factory=list)


def scalar(url: str, expr: str, at: float | None = None) -> float | None:
    result = query(url, expr, at)
    return float(result[0]["value"][1]) if result else None


def truth_of(fake_url: str, start: float | None, end: float | None) -> dict[str, float]:
    """The fake's truth of streams created in (start, end]: sums over labels."""
    params = {}
    if start is not None:
        params["from"] = f"{start + 0.0005:.4f}"  # created_at has milliseconds: (start, ...]
    if end is not None:
        params["to"] = f"{end:.4f}"
    data = requests.get(f"{fake_url}/_fake/truth", params=params, timeout=10).json()
    return {field: math.fsum(row[-1] for row in data[field]) for field in DAILY.values()}


def prometheus_config(path: Path, exporter: str, self_address: str) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted(RULES.glob("*.rules.yml"))],
        "scrape_configs": [
            {"job_name": "neo-exporter", "static_configs": [{"targets": [exporter]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [self_address]}]},
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_prometheus(binary: str, config: Path, data: Path, port: int, log: Path) -> Any:
    return subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=60d",
         "--log.level=warn"],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def other_job_blocks(promtool: str, tmp: Path, data: Path, now: float) -> None:
    """A month of another job's samples, as blocks a long-running Prometheus would hold:
    the history's blocks overlap them in time."""
    lines = ["# TYPE other_job_requests counter"]
    end = math.floor((now - 4 * 3600) / 300) * 300
    lines += [f'other_job_requests_total{{job="other"}} {i} {end - (8640 - i) * 300}'
              for i in range(8640)]  # fmt: skip
    source = tmp / "other.om"
    source.write_text("\n".join(lines) + "\n# EOF\n")
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
         "--max-block-duration=720h", str(source), str(data)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def backfill(history_file: Path, data: Path) -> float:
    """The shipped script, as a user runs it; its wall time."""
    started = time.monotonic()
    result = subprocess.run(
        [str(BACKFILL), str(history_file), str(data), str(RULES / "neo-recording.rules.yml")],
        env={**os.environ, "STAGING_PORT": str(free_port())},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"backfill: \d+ blocks moved into", result.stdout), result.stdout
    assert not list(data.glob(".neo-history.*")), "the staging directory was left behind"
    return time.monotonic() - started


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[World]:
    prometheus, promtool = require_tool("prometheus"), require_tool("promtool")
    tmp = tmp_path_factory.mktemp("history-e2e")
    ports = {name: free_port() for name in ("fresh", "running", "exporter")}
    exporter_address = f"127.0.0.1:{ports['exporter']}"
    data = {name: tmp / f"tsdb-{name}" for name in ("fresh", "running")}
    servers: list[Any] = []
    exporter: Proc | None = None
    with fake_api(*E2E_FAKE) as (_, fake_url):
        try:
            # A Prometheus that has been running a while: other jobs' blocks on disk, and
            # a head of its own scrapes (the exporter's target is down until it starts).
            other_job_blocks(promtool, tmp, data["running"], time.time())
            servers.append(start_prometheus(
                prometheus,
                prometheus_config(tmp / "running.yml", exporter_address,
                                  f"127.0.0.1:{ports['running']}"),
                data["running"], ports["running"], tmp / "running.log",
            ))  # fmt: skip
            running_url = f"http://127.0.0.1:{ports['running']}"
            # Both targets scraped: itself, and the exporter's address (down for now).
            wait_until(
                lambda: (
                    query(running_url, 'up{job="prometheus"}')
                    and query(running_url, 'up{job="neo-exporter"}')
                ),
                30,
                "its scrapes",
            )
            # The history, as a user runs it: 30 days, a small label budget (the folding
            # must line up with the live series), the lookback that finds the late row.
            config = tmp / "exporter.yaml"
            config.write_text(yaml.safe_dump({
                "accounts": [{"name": ACCOUNT, "base_url": fake_url, "token": "${NEO_TEST_TOKEN}"}],
                "polling": {"interval": "1s", "lookback": "6h", "tasks_interval": "5s"},
                "metrics": {"label_limits": {"model": 1, "tool": 1, "agent": 1}},
                "state": {"path": str(tmp / "state.db")},
            }))  # fmt: skip
            # The labels Prometheus gives the exporter's series, read where the docs say:
            # up{job="neo-exporter"}, there since the target was configured.
            up = query(running_url, 'up{job="neo-exporter"}')[0]["metric"]
            target = [f"{k}={v}" for k, v in sorted(up.items()) if k != "__name__"]
            assert sorted(k for k, _ in (t.split("=", 1) for t in target)) == ["instance", "job"]
            output = tmp / "neo-history.om.gz"
            started = time.monotonic()
            made = cli("--config.file", str(config), "--output", str(output),
                       *(arg for label in target for arg in ("--label", label)))  # fmt: skip
            made_in = time.monotonic() - started
            assert made.returncode == 0, made.stderr
            span = re.search(r"samples from (\S+) to (\S+);", made.stderr)
            done = re.search(r"done in [\d.]+s: (\d+) rows .* (\d+) samples", made.stderr)
            assert span is not None and done is not None, made.stderr
            start, join = iso_seconds(span[1]), iso_seconds(span[2])
            status = requests.get(f"{running_url}/api/v1/status/tsdb", timeout=5).json()
            head_min = status["data"]["headStats"]["minTime"] / 1000
            # The plain data directory: blocks in, then Prometheus starts on them.
            fresh_in = backfill(output, data["fresh"])
            exporter, exporter_url = start_exporter(
                "--config.file", str(config), "--web.listen-address", exporter_address,
                env={"NEO_TEST_TOKEN": "fake-admin-token"},
            )  # fmt: skip
            servers.append(start_prometheus(
                prometheus,
                prometheus_config(tmp / "fresh.yml", exporter_address,
                                  f"127.0.0.1:{ports['fresh']}"),
                data["fresh"], ports["fresh"], tmp / "fresh.log",
            ))  # fmt: skip
            # The running one: blocks moved in under it; it loads them by itself.
            running_in = backfill(output, data["running"])
            moved_at = time.monotonic()
            late_created = join - 1800
            row = {**LATE_ROW, "stream_id": "0d5e7a52-5a1e-4c51-9b1e-00000000late",
                   "created_at": format_timestamp(late_created)}  # fmt: skip
            requests.post(f"{fake_url}/_fake/rows", json=[row], timeout=5).raise_for_status()
            world = World(
                fake_url, exporter_url, start, join, late_created,
                {"fresh": f"http://127.0.0.1:{ports['fresh']}", "running": running_url},
                head_min,
            )  # fmt: skip
            blocks = sum(p.stat().st_size for p in data["fresh"].rglob("*") if p.is_file())
            world.figures.append(
                f"history e2e: 30 days, {done[1]} rows, {done[2]} samples; history "
                f"{made_in:.1f}s, {output.stat().st_size} bytes gzipped; backfill script "
                f"{fresh_in:.1f}s (stopped) and {running_in:.1f}s (running), blocks with "
                f"rules {blocks} bytes"
            )
            world.loaded_at["moved"] = moved_at
            yield world
            if "running" in world.loaded_at:
                world.figures.append(
                    "history e2e: the running Prometheus loaded the blocks "
                    f"{world.loaded_at['running']:.0f}s after they were moved in"
                )
            # Printed at the end of the run, with the reliability figures.
            request.config.stash.setdefault(FIGURES, []).extend(world.figures)
        finally:
            if exporter is not None:
                exporter.stop()
            for server in servers:
                server.terminate()
                server.wait(10)


def loaded(world: World, which: str) -> str:
    """The Prometheus `which`, once it holds the history and has scraped the late row.

    The running one loads the blocks moved under it at its next reload (every minute).
    """
    url = world.prometheus[which]
    wait_until(lambda: query(url, "count(neo_credits_total)", world.join), 90, "the history loaded")
    world.loaded_at.setdefault(which, time.monotonic() - world.loaded_at["moved"])
    total = truth_of(world.fake_url, world.start - 0.001, None)["llm_cost"]
    wait_until(
        lambda: math.isclose(
            scalar(url, "sum(neo_llm_cost_usd_total)") or 0.0, total, rel_tol=1e-9
        ),
        30,
        "the late row counted and scraped",
    )
    return url


@pytest.fixture(scope="module", params=["fresh", "running"])
def prom(request: pytest.FixtureRequest, world: World) -> str:
    """Each Prometheus in turn: every test below runs against both."""
    return loaded(world, request.param)


def days_of(world: World) -> list[tuple[float, float]]:
    """UTC days whose end is in the history: (start, end), the first one cut at its start."""
    first = math.floor(world.start / DAY) * DAY
    return [
        (max(day, world.start), day + DAY)
        for day in range(int(first), int(world.join), int(DAY))
        if day + DAY <= world.join
    ]


@pytest.mark.e2e
def test_every_past_day_rises_by_the_truth_of_its_streams(prom: str, world: World) -> None:
    names = "|".join(DAILY)
    checked = 0
    for start, end in days_of(world):
        rises = defaultdict(float)
        for at, sign in ((end, 1.0), (start, -1.0)):
            for row in query(prom, f'sum by (__name__) ({{__name__=~"{names}"}} @ {at})'):
                rises[row["metric"]["__name__"]] += sign * float(row["value"][1])
        # The first day starts with the history's first step: its streams count from there.
        truth = truth_of(world.fake_url, start, end)
        for name, field in DAILY.items():
            assert math.isclose(rises[name], truth[field], rel_tol=1e-6, abs_tol=1e-9), (
                f"{name} on {format_timestamp(end - DAY)[:10]}: Prometheus {rises[name]!r}, "
                f"truth {truth[field]!r}"
            )
        checked += 1
    assert checked >= 29


@pytest.mark.e2e
def test_the_join_has_no_reset_and_rises_by_the_truth_with_the_late_row_once(
    prom: str, world: World
) -> None:
    for name in HISTORY_NAMES:  # resets() drops the name: one metric at a time
        resets = scalar(prom, f"max(resets({name}[31d]))")
        assert resets == 0, f"{name}: {resets} resets over the history and the join"
    # From an hour before the join (history) to now (live): the streams created between,
    # the late row among them, each once.
    before = world.join - 3600
    assert before < world.late_created < world.join
    truth = truth_of(world.fake_url, before, None)
    for name, field in DAILY.items():
        then = scalar(prom, f"sum({name} @ {before})")
        now = scalar(prom, f"sum({name})")
        assert then is not None and now is not None
        assert math.isclose(now - then, truth[field], rel_tol=1e-6, abs_tol=1e-9), name
    # And over everything: the whole history plus the live part, nothing twice.
    everything = truth_of(world.fake_url, world.start - 0.001, None)
    assert math.isclose(
        scalar(prom, "sum(neo_credits_total)") or 0.0, everything["credits"], rel_tol=1e-9
    )


@pytest.mark.e2e
def test_the_history_series_are_the_live_series(prom: str, world: World) -> None:
    """Same names, labels and label values: every series of the history goes on live (the
    folding into `other` included), none goes down."""
    for name in HISTORY_NAMES:
        assert query(prom, f"count({name} @ {world.join})"), f"{name} is not in the history"
        orphans = query(prom, f"{name} @ {world.join} unless {name}")
        assert orphans == [], f"history series with no live continuation: {orphans[:3]}"
        lower = query(prom, f"{name} < {name} @ {world.join}")
        assert lower == [], f"live below the history: {lower[:3]}"
    # The budget folded models: `other` is one of the series that joined.
    models = {r["metric"]["model"] for r in query(prom, f"neo_credits_total @ {world.join}")}
    assert "other" in models and len(models) == 2


@pytest.mark.e2e
def test_the_spend_dashboard_and_the_recording_rules_show_a_past_day(
    prom: str, world: World
) -> None:
    start, end = days_of(world)[-1]
    truth = truth_of(world.fake_url, start, end)
    empty = []
    in_range = None
    for dashboard, title, expr in dashboard_exprs():
        names = metric_names(expr)
        if dashboard != SPEND_DASHBOARD or not names or not names <= set(HISTORY_NAMES):
            continue  # gauges read from Neo now have no past
        past = expr
        for variable, value in (
            ("$__rate_interval", "15m"),
            ("$__interval", "5m"),
            ("$__range", "1d"),
            ("$account", ACCOUNT),
            ("$model", ".*"),
        ):
            past = past.replace(variable, value)  # fmt: skip
        result = query(prom, past, end)
        if not result:
            empty.append(f"{title}: {past}")
        if title == "Credits in range":
            in_range = math.fsum(float(r["value"][1]) for r in result)
    assert not empty, "panels without data for a past day:\n" + "\n".join(empty)
    # increase() over a day whose both ends have samples is the day's rise, exactly.
    assert in_range is not None
    assert math.isclose(in_range, truth["credits"], rel_tol=1e-6)
    # The recording rules were backfilled: each of the spend rules has a past. The rules
    # evaluate at an offset of their own, so a rolling day ends a few minutes early.
    for rule in (
        "account_model:neo_credits:increase1d",
        "account_model:neo_credits:increase1h",
        "account_model:neo_llm_cost_usd:increase1d",
        "account:neo_credits:rate15m",
    ):
        assert query(prom, f"{rule} @ {end}"), f"{rule} has no past"  # fmt: skip
    daily = scalar(prom, f"sum(account_model:neo_credits:increase1d @ {end})")
    assert daily is not None and math.isclose(daily, truth["credits"], rel_tol=0.1)


@pytest.mark.e2e
def test_the_history_stays_clear_of_the_running_head(world: World) -> None:
    # The blocks end more than the head margin before the history was made; the running
    # Prometheus' head began after that, so no block overlaps what it still writes.
    assert world.join * 1000 < world.head_min_time * 1000
    assert world.join <= world.start + 30 * DAY - 3 * 3600 + 300


@pytest.mark.e2e
def test_a_graph_of_30_days_of_daily_spend_from_the_history(world: World) -> None:
    chromium = require_tool("chromium")
    url = loaded(world, "fresh")
    expr = "sum by (model) (account_model:neo_credits:increase1d)"
    params = urllib.parse.urlencode(
        {"g0.expr": expr, "g0.tab": "0", "g0.stacked": "1", "g0.range_input": "31d"}
    )
    dom = screenshot(chromium, f"{url}/graph?{params}", ARTIFACTS / "daily-spend-30d.png",
                     size="1400,900", settle_ms=15_000)  # fmt: skip
    # The page drew one line per model that Prometheus holds a daily spend for, and no error.
    models = sorted(series["metric"]["model"] for series in query(url, expr, world.join))
    assert len(models) >= 2
    assert sorted(entry["model"] for entry in prometheus_graph_legend(dom)) == models


# --- the shipped procedures: compose and Helm (no Docker engine or cluster here) ----------------

COMPOSE_OVERLAY = COMPOSE_DIR / "history.yaml"
HISTORY_VALUES: dict[str, Any] = {
    "secret": {"tokens": {"default": "test-token-not-real"}},
    "history": {"enabled": True},
    "serviceMonitor": {"enabled": True},
}


def overlay() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_OVERLAY.read_text())
    return data


def flag(args: list[str], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]


def test_compose_history_overlay_matches_the_compose_spec() -> None:
    checker = require_tool("check-jsonschema")
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_OVERLAY)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_history_joins_the_stack_s_own_scrape_and_state(tmp_path: Path) -> None:
    """The one-shot services fit the stack: the history's labels are those prometheus.yml
    gives the exporter, it seeds the exporter's own state file, and the backfill reads its
    output and writes into Prometheus' volume, which keeps more than the history."""
    services, base = overlay()["services"], compose()["services"]
    history_args = services["neo-history"]["command"]
    assert history_args[0] == "history"
    args = parse_history_args(history_args[1:])
    scrape = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert dict(args.labels) == {
        "job": job["job_name"], "instance": job["static_configs"][0]["targets"][0],
    }  # fmt: skip
    assert set(services["neo-history"]["profiles"]) == {"history"}
    assert set(services["prometheus-backfill"]["profiles"]) == {"history"}
    # The same config and state volume as the exporter, which goes on from that state.
    assert services["neo-history"]["volumes"] == services["neo-exporter"]["volumes"]
    assert services["neo-history"]["image"] == base["neo-exporter"]["image"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["neo-exporter"]["volumes"]}
    config = load_config(str(COMPOSE_DIR / mounts[args.config_file]), {"NEO_API_TOKEN": "t"})
    state_dir = next(t for t, s in mounts.items() if s == "neo-exporter-state")
    assert config.state.path.startswith(state_dir + "/")
    assert args.output.startswith(state_dir + "/")
    check_options(config, HistoryOptions(args.output, args.days, target_labels=tuple(args.labels)))
    # The backfill reads that output through its own mount of the state volume, and
    # writes into the volume Prometheus keeps its data in.
    backfill_service = services["prometheus-backfill"]
    volumes = dict(v.split(":")[:2] for v in backfill_service["volumes"])
    history_file, data_dir, *rules = backfill_service["command"]
    assert volumes["neo-exporter-state"] == PurePosixPath(history_file).parent.as_posix()
    assert PurePosixPath(history_file).name == PurePosixPath(args.output).name
    prometheus_args = services["prometheus"]["command"]
    assert f"--storage.tsdb.path={data_dir}" in prometheus_args
    assert volumes["prometheus-data"] == data_dir
    assert f"prometheus-data:{data_dir}" in base["prometheus"]["volumes"]
    retention = flag(prometheus_args, "storage.tsdb.retention.time")
    assert retention and parse_duration(retention[0]) > args.days * DAY
    assert backfill_service["image"] == base["prometheus"]["image"]  # the same promtool
    assert backfill_service["depends_on"] == {
        "neo-history": {"condition": "service_completed_successfully"}
    }
    assert rules == ["/etc/prometheus/rules/neo-recording.rules.yml"]


@pytest.mark.e2e
def test_compose_backfill_command_runs_as_the_service_would(
    fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    """The service's entrypoint and command, with this machine's promtool and Prometheus,
    in a directory laid out as its mounts (a history made here stands in for the volume)."""
    promtool = require_tool("promtool")
    service = overlay()["services"]["prometheus-backfill"]
    root = tmp_path / "container"
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        inside = root / PurePosixPath(target).relative_to("/")
        inside.parent.mkdir(parents=True, exist_ok=True)
        if source.startswith("."):
            inside.symlink_to((COMPOSE_DIR / source).resolve())
        else:
            inside.mkdir()  # a named volume
    history_file, *_ = service["command"]
    made = make(
        config_of(fake.url, tmp_path / "state.db"),
        root / PurePosixPath(history_file).relative_to("/"),
        clock,
    )
    shell, script = service["entrypoint"]
    in_root = [str(root / PurePosixPath(a).relative_to("/")) for a in [script, *service["command"]]]
    result = subprocess.run(
        [shell, *in_root], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "STAGING_PORT": str(free_port())},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    listing = subprocess.run(
        [promtool, "tsdb", "list", str(root / "prometheus")],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()[1:]  # fmt: skip
    samples = sum(int(row.split()[4]) for row in listing)
    assert samples > made.samples  # the history, and the recording rules over it


@pytest.fixture(scope="module")
def helm() -> Any:
    module = require_module("helm_python", "pip install helm-python-sdk")
    module.disable_logging()
    return module


def history_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["initContainers"]
    return container


def test_chart_history_init_container_seeds_the_state_with_the_operator_s_labels(
    helm: Any, tmp_path: Path
) -> None:
    manifests = render(helm, HISTORY_VALUES)
    container = history_container(manifests)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (exporter,) = pod["containers"]
    assert container["args"][0] == "history"
    args = parse_history_args(container["args"][1:])
    assert args.if_fresh  # every later pod start leaves the seeded state alone
    # The labels the Operator gives this ServiceMonitor's target; the pod's own name and
    # address come from the downward API, as the kubelet expands $(VAR) in args.
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    (endpoint,) = monitor["spec"]["endpoints"]
    port = exporter["ports"][0]["containerPort"]
    assert dict(args.labels) == {
        "job": service["metadata"]["labels"][monitor["spec"]["jobLabel"]],
        "namespace": "monitoring",
        "service": service["metadata"]["name"],
        "pod": "$(POD_NAME)",
        "container": exporter["name"],
        "endpoint": endpoint["port"],
        "instance": f"$(POD_IP):{port}",
    }
    downward = {
        e["name"]: e["valueFrom"].get("fieldRef", {}).get("fieldPath") for e in container["env"]
    }
    assert downward["POD_NAME"] == "metadata.name" and downward["POD_IP"] == "status.podIP"
    # The exporter's own config, tokens, state volume and restrictions; memory of its own.
    assert container["resources"]["limits"]["memory"]
    assert container["volumeMounts"] == exporter["volumeMounts"]
    assert container["securityContext"] == exporter["securityContext"]
    tokens = [e for e in exporter["env"]]
    assert all(e in container["env"] for e in tokens)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(manifests, "ConfigMap")["data"]["config.yaml"])
    config = load_config(str(config_file), {e["name"]: "t" for e in tokens})
    state_mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["state"]
    assert args.output.startswith(state_mount + "/")
    check_options(config, HistoryOptions(args.output, args.days, args.step, args.head_margin,
                                         target_labels=tuple(args.labels)))  # fmt: skip
    # Labels given in the values win over the Operator's.
    values = {**HISTORY_VALUES, "history": {"enabled": True, "labels": {"job": "neo"}}}
    args = parse_history_args(history_container(render(helm, values))["args"][1:])
    assert dict(args.labels)["job"] == "neo" and "pod" in dict(args.labels)


def test_chart_with_history_passes_lint_and_the_kubernetes_schemas(helm: Any) -> None:
    validate = require_module("kubernetes_validate", "pip install kubernetes-validate")
    report = helm.lint(str(CHART), HISTORY_VALUES, strict=True, namespace="monitoring")
    assert not [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    builtin = [
        m for m in render(helm, HISTORY_VALUES)
        if not m["apiVersion"].startswith("monitoring.coreos.com/")
    ]  # fmt: skip
    for version in KUBERNETES_VERSIONS:
        wanted = validate.latest_version() if version == "latest" else version
        for manifest in builtin:
            validate.validate(manifest, wanted, strict=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"persistence": {"enabled": False}}, r"history\.enabled needs persistence\.enabled"),
        ({"serviceMonitor": {"enabled": False}}, r"history\.labels: give the labels Prometheus"),
    ],
)
def test_chart_refuses_a_history_that_could_not_join(
    helm: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(helm, {**HISTORY_VALUES, **values})
