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

import gzip
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter import history
from exporter.cli import build
from exporter.config import Config, config_from_mapping
from exporter.fakeapi import FakeNeo, FakeNeoServer
from exporter.history import (
    HistoryError,
    HistoryOptions,
    HistoryRefused,
    HistorySummary,
    Span,
    plan,
)
from exporter.history import run as run_history
from exporter.state import StateLock
from tests.conftest import (
    BY_LABEL_TRUTH,
    HISTOGRAM_TRUTH,
    STREAM_TRUTH,
    ManualClock,
    SampleKey,
    parse_exposition,
)
from tests.processes import ROOT, free_port
from tests.test_rules import require_tool

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


def options(output: Path, **changes: Any) -> HistoryOptions:
    return HistoryOptions(output=str(output), **{"days": 2, **changes})


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
            live = first.get((name, frozenset(labels)))
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


def test_the_command_shows_progress_then_a_summary_and_is_refused_the_second_time(
    slow_fake: FakeNeoServer, tmp_path: Path
) -> None:
    state, output = tmp_path / "state.db", tmp_path / "history.om.gz"
    config = write_config(
        tmp_path / "config.yaml", slow_fake.url, state, http={"page_size": 20, "concurrency": 1}
    )
    result = cli("--config.file", str(config), "--days", "2", "--output", str(output))
    assert result.returncode == 0, result.stderr
    progress = re.findall(
        r"rows (\d+)/600, pages (\d+), (\w+) elapsed, about (\w+) left", result.stderr
    )
    assert len(progress) >= 2, result.stderr  # about once a second over a 2-3 s read
    assert [int(rows) for rows, *_ in progress] == sorted(int(r) for r, *_ in progress)
    assert re.search(
        r"done in [\d.]+s: 600 rows in 30 pages, 600 streams counted, \d+ series, \d+ samples, "
        rf"{output.stat().st_size} bytes written to {re.escape(str(output))}",
        result.stderr,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.yaml", "history.om.gz", "state.db", "state.db.lock",
    ]  # fmt: skip
    again = cli("--config.file", str(config), "--days", "2", "--output", str(output))
    assert again.returncode == EXIT_REFUSED
    assert "history refused: account acme already has counters" in again.stderr
    assert "docs/history.md" in again.stderr and "Traceback" not in again.stderr
    fresh_only = cli(
        "--config.file", str(config), "--days", "2", "--output", str(output), "--if-fresh"
    )
    assert fresh_only.returncode == 0 and "nothing to do" in fresh_only.stderr


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("unreachable", EXIT_FAILURE, r"history failed: account acme: streams: gave up after "
         r"\d+ attempts \(last: connection refused by 127\.0\.0\.1:\d+\); nothing was written"),
        ("wrong token", EXIT_FAILURE, r"history failed: account acme: streams: HTTP 401 .* the "
         r"API rejected the token; .*nothing was written"),
        ("output not writable", EXIT_FAILURE, r"history failed: cannot write the history file "
         r".*/not-a-directory/history\.om: Not a directory"),
        ("days shorter than the window", EXIT_USAGE, r"--days 1 is shorter than polling\.window "
         r"2d: the exporter re-reads its window"),
        ("a step with holes", EXIT_USAGE, r"--step must be whole seconds from 1s to 5m, not 10m"),
    ],
)  # fmt: skip
def test_bad_input_exits_non_zero_saying_why_and_leaves_nothing(
    case: str, status: int, message: str, fake: FakeNeoServer, tmp_path: Path
) -> None:
    url, token, output = fake.url, "fake-admin-token", tmp_path / "history.om"
    args = ["--days", "2"]
    extra: dict[str, Any] = {}
    if case == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    elif case == "wrong token":
        token = "not-the-token-7f3a"
    elif case == "output not writable":
        (tmp_path / "not-a-directory").write_text("a file")
        output = tmp_path / "not-a-directory" / "history.om"
    elif case == "days shorter than the window":
        args, extra = ["--days", "1"], {"polling": {"window": "2d", "lookback": "1h"}}
    else:
        args += ["--step", "10m"]
    config = write_config(tmp_path / "config.yaml", url, tmp_path / "state.db", **extra)
    result = cli("--config.file", str(config), "--output", str(output), *args, token=token)
    assert result.returncode == status, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and "not-the-token-7f3a" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "history" in line]) == 1
    assert [p for p in leftovers(tmp_path) if p != "not-a-directory"] == []


def test_a_running_exporter_holds_the_state_and_the_history_waits_for_nobody(
    fake: FakeNeoServer, tmp_path: Path
) -> None:
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "config.yaml", fake.url, state)
    lock = StateLock(str(state))  # as an exporter running on it holds it
    try:
        result = cli(
            "--config.file", str(config), "--days", "2", "--output", str(tmp_path / "h.om")
        )
    finally:
        lock.release()
    assert result.returncode == EXIT_IN_USE
    assert "is in use by another neo-exporter (pid" in result.stderr


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
         "2", "--output", str(tmp_path / "history.om")],
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
