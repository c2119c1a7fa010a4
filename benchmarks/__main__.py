"""The benchmark suite: `python -m benchmarks` (full run) or `python -m benchmarks --smoke`.

Every figure is measured in this run, against a baseline measured in the same run:

- backfill: the exporter's first read of the whole window (streams and tasks, as `--once`
  does) against a plain sequential client that fetches the same pages and `json.loads`
  them, both from the fake API (`benchmarks.fake`, its own process) with a fixed latency;
- steady: polls with no new rows: API requests per poll against the pages of the lookback
  span, and CPU per poll;
- memory: peak RSS of a real `python -m exporter --once` process per window size;
- scrape: rendering `/metrics` with N series against `generate_latest` over the same families
  built directly, and a real GET /metrics over loopback;
- scaling: backfill cost at several sizes.

Exits 1 if the exporter's counters disagree with the rows served (a benchmark of a wrong
result is worthless); timing targets are reported, never enforced (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import requests
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from exporter.api import STREAMS_PATH, TASKS_PATH
from exporter.app import Exporter, build
from exporter.collector import NeoCollector, Part
from exporter.config import Config, config_from_mapping
from exporter.counting import STREAM_COUNTER_NAMES, CounterValue, Counts
from exporter.instrumentation import ExporterMetrics, process_registry
from exporter.models import format_timestamp
from exporter.poller import incremental_span
from exporter.server import ExporterServer, Renders
from exporter.snapshot import SnapshotStore
from exporter.state import WATERMARK_RECONCILE, WATERMARK_STREAMS

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "fake-admin-token"
WINDOW = 7 * 86400.0
PAGE_SIZE = 200
T = TypeVar("T")


class Failed(Exception):
    """The exporter's result was wrong: the run's figures mean nothing."""


# --- set-up ------------------------------------------------------------------------------


@contextmanager
def fake_api(
    streams: int, latency_ms: float, now: float, *, cache_mb: float = 1024.0
) -> Iterator[str]:
    """Start `benchmarks.fake` in its own process (so it does not share our GIL)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.fake",
            f"--streams={streams}",
            f"--latency-ms={latency_ms}",
            f"--now={now}",
            f"--cache-mb={cache_mb}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"listening on (\S+)", line)
        if match is None:
            raise RuntimeError(f"the fake API did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(30)


class Clock:
    """The exporter's clock, moved by hand so that every run reads the same pages."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(url: str, state: str, *, http: dict[str, Any] | None = None) -> Config:
    return config_from_mapping(
        {
            "accounts": [{"name": "bench", "base_url": url, "token": TOKEN}],
            "polling": {"window": "7d", "lookback": "1h", "interval": "1m"},
            "http": {"page_size": PAGE_SIZE, **(http or {})},
            "state": {"path": state},
        },
        {},
    )


def measure(fn: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def requests_served(url: str) -> int:
    return int(requests.get(f"{url}/_bench/requests", timeout=10).json()["requests"])


def stream_rows_served(url: str) -> int:
    rows = requests.get(f"{url}/_bench/requests", timeout=10).json()["rows"]
    return int(rows.get(STREAMS_PATH, 0))


# --- the baseline ------------------------------------------------------------------------


@dataclass
class PlainResult:
    stream_ids: set[str] = field(default_factory=set)
    task_rows: int = 0
    pages: int = 0
    request_times: list[float] = field(default_factory=list)  # request and body, not decoding


def plain_read(url: str, now: float) -> PlainResult:
    """The baseline: one connection, one page after another, `json.loads` and nothing else."""
    result = PlainResult()
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        span = {"from": format_timestamp(now - WINDOW), "to": format_timestamp(now)}
        for path, extra in ((STREAMS_PATH, {"sort": "created_at"}), (TASKS_PATH, {})):
            offset = 0
            while True:
                params = {**span, **extra, "limit": str(PAGE_SIZE), "offset": str(offset)}
                started = time.perf_counter()
                response = session.get(url + path, params=params, timeout=60)
                response.raise_for_status()
                content = response.content
                result.request_times.append(time.perf_counter() - started)
                body = json.loads(content)
                result.pages += 1
                if path == STREAMS_PATH:
                    result.stream_ids.update(row["stream_id"] for row in body["data"])
                else:
                    result.task_rows += len(body["data"])
                if not body["has_more"]:
                    break
                offset += PAGE_SIZE
    return result


def rows_in(url: str, start: float, end: float) -> int:
    """How many streams the API has in [start, end] (one request, outside any timing)."""
    params = {"from": format_timestamp(start), "to": format_timestamp(end), "limit": "1"}
    response = requests.get(
        url + STREAMS_PATH, params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    return int(response.json()["total"])


# --- scenarios ---------------------------------------------------------------------------


@dataclass
class Backfill:
    plain_wall: list[float] = field(default_factory=list)
    plain_cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    streams: int = 0
    tasks: int = 0
    pages: int = 0
    concurrency: int = 4
    # A first start's stream rows fetched (the first poll of a long-running exporter): the
    # benchmark's fake pages exactly (no ties, no late rows), so no read needs a repair.
    first_start_rows: int = 0

    def floor(self) -> float:
        """The wall time `http.concurrency` allows: pages x per-request time / concurrency,
        the per-request time being the median the plain client saw in this run."""
        return self.pages * med(self.request_times) / self.concurrency


def counted_streams(exporter: Exporter) -> float:
    counts = exporter.state.counts("bench").counters
    return sum(v.value for (metric, _), v in counts.items() if metric == "neo_streams_total")


def run_backfill(
    url: str, now: float, repeat: int, workdir: Path, keep: list[Exporter] | None = None
) -> Backfill:
    """Plain client and exporter, `repeat` times each, after one untimed warm-up read."""
    out = Backfill()
    warm = plain_read(url, now)  # renders and caches every page in the fake
    out.streams, out.tasks, out.pages = len(warm.stream_ids), warm.task_rows, warm.pages
    out.first_start_rows = first_start(url, now, workdir)
    for run in range(repeat):
        plain, wall, cpu = measure(lambda: plain_read(url, now))
        out.plain_wall.append(wall)
        out.plain_cpu.append(cpu)
        out.request_times += plain.request_times
        stop = threading.Event()
        state = workdir / f"backfill-{len(os.listdir(workdir))}-{run}.db"
        exporter = build(config(url, str(state)), stop, Clock(now))
        out.concurrency = exporter.config.http.concurrency
        ok, wall, cpu = measure(exporter.pollers[0].poll_once)
        out.wall.append(wall)
        out.cpu.append(cpu)
        counted = counted_streams(exporter)
        if not ok or counted != len(plain.stream_ids):
            exporter.close()
            raise Failed(f"the exporter counted {counted} streams of {len(plain.stream_ids)}")
        if keep is not None and run == repeat - 1:
            keep.append(exporter)
        else:
            exporter.close()
    return out


def first_start(url: str, now: float, workdir: Path) -> int:
    """The stream rows a long-running exporter's first poll fetches on a fresh state (the
    fake leaves out the one row of a count request)."""
    stop = threading.Event()
    state = workdir / f"first-start-{len(os.listdir(workdir))}.db"
    exporter = build(config(url, str(state)), stop, Clock(now))
    try:
        before = stream_rows_served(url)
        ok = exporter.pollers[0].poll_both()
        fetched = stream_rows_served(url) - before
    finally:
        exporter.close()
    if not ok:
        raise Failed("the first poll of a fresh exporter failed")
    return fetched


@dataclass
class Steady:
    requests: list[int] = field(default_factory=list)
    lookback_pages: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    plain_cpu: list[float] = field(default_factory=list)  # one requests GET of the same page


def plain_page(session: requests.Session, url: str, start: float, end: float) -> None:
    """What fetching the lookback's page costs by itself: a GET with requests, body read."""
    params = {
        "from": format_timestamp(start),
        "to": format_timestamp(end),
        "limit": str(PAGE_SIZE),
        "offset": "0",
        "sort": "created_at",
    }
    session.get(url + STREAMS_PATH, params=params, timeout=60).raise_for_status()


def run_steady(url: str, exporter: Exporter, polls: int) -> Steady:
    """Polls a minute apart with no new rows, on the state the backfill left."""
    out = Steady()
    poller = exporter.pollers[0]
    clock = poller._clock
    assert isinstance(clock, Clock)
    polling = exporter.config.polling
    for _ in range(polls):
        clock.now += polling.interval
        reconciled = exporter.state.watermark("bench", WATERMARK_RECONCILE)
        if reconciled is None or clock.now - reconciled >= polling.reconcile_interval:
            raise Failed("expected an incremental poll only, but the window's read is due")
        plan = incremental_span(
            clock.now, polling, exporter.state.watermark("bench", WATERMARK_STREAMS)
        )
        expected = max(1, math.ceil(rows_in(url, plan.start, plan.end) / PAGE_SIZE))
        before = requests_served(url)
        ok, wall, cpu = measure(poller.poll_streams)
        if not ok:
            raise Failed("an idle poll failed")
        out.requests.append(requests_served(url) - before - 0)
        out.lookback_pages.append(expected)
        out.cpu.append(cpu)
        out.wall.append(wall)
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            start, end = plan.start, plan.end
            plain_page(session, url, start, end)  # a connection, as the poller's
            _, _, page_cpu = measure(
                lambda: plain_page(session, url, start, end)  # noqa: B023  # called at once
            )
        out.plain_cpu.append(page_cpu)
    return out


@dataclass
class Memory:
    streams: int
    peak_rss_mib: float
    wall: float
    cpu: float
    state_mib: float


# Runs the exporter as its child and prints the child's peak RSS (KiB) and CPU seconds. A
# child started straight from this process would report this process's RSS as its own
# peak when larger: Linux keeps the peak of the memory a process replaces at exec, and a
# vfork-ed child replaces its parent's (this one's ~100 MiB, after the scrape scenario).
LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
sys.exit(code)
"""


def run_memory(streams: int, workdir: Path) -> Memory:
    """A real `python -m exporter --once` process reading a window of `streams` streams."""
    now = time.time()
    with fake_api(streams, 0.0, now, cache_mb=0) as url:
        state = workdir / f"memory-{streams}.db"
        config_file = workdir / f"memory-{streams}.yaml"
        config_file.write_text(
            f"accounts:\n  - name: bench\n    base_url: {url}\n    token: {TOKEN}\n"
            f'polling:\n  window: 7d\nstate:\n  path: "{state}"\n'
            # The fake renders a page of a million rows slowly on these shared cores: a
            # timeout would measure the fake, not the exporter's memory.
            "http:\n  read_timeout: 5m\n"
        )
        started = time.perf_counter()
        with open(workdir / f"memory-{streams}.log", "wb") as log:
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    LAUNCHER,
                    sys.executable,
                    "-m",
                    "exporter",
                    "--once",
                    "--once.state",
                    "live",
                    "--config.file",
                    str(config_file),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                check=False,
            )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise Failed(f"exporter --once exited {done.returncode} reading {streams} streams")
        maxrss_kib, cpu = done.stdout.split()
        size = sum(p.stat().st_size for p in workdir.glob(f"memory-{streams}.db*"))
        return Memory(streams, int(maxrss_kib) / 1024, wall, float(cpu), size / 2**20)


@dataclass
class Accounts:
    accounts: int
    streams: int
    interval: float
    to_live: list[float]  # per account: seconds from the process start to its first full read
    max_gap: float  # longest time between two polls of one account once all were live
    polls: int  # incremental polls seen while observing
    observed: float  # seconds of observation, all accounts live
    idle_cpu: float  # process CPU seconds while observing, no scrapes
    scrape_cpu: float  # process CPU seconds of one /metrics scrape (gzip), median
    scrape_samples: int
    scrape_bytes: int  # uncompressed
    peak_rss_mib: float
    exact: int  # accounts whose streams and credits equal what the API served


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric_samples(url: str) -> dict[tuple[str, str, str, str], float]:
    """(name, account, kind, result) -> value of the counters this scenario follows."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    out: dict[tuple[str, str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith(("neo_exporter_polls_total", "neo_streams_total", "neo_credits")):
            continue
        name, _, value = line.rpartition(" ")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
        key = (name.split("{")[0], labels.get("account", ""), labels.get("kind", ""), "")
        if key[0] == "neo_exporter_polls_total":
            key = (*key[:3], labels.get("result", ""))
        out[key] = out.get(key, 0.0) + float(value)
    return out


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run_accounts(
    accounts: int, streams: int, interval: float, observe: int, latency_ms: float, workdir: Path
) -> Accounts:
    """`accounts` accounts of `streams` streams each in one real exporter process.

    Every account reads the same fake API (one process, pages cached), so each must count
    exactly what a plain read of it finds. Timings come from the process's own /metrics,
    sampled every 0.5 s: when each account's first full read succeeded, and the gaps between
    an account's incremental polls once all are live, over `observe` intervals.
    """
    now = time.time()
    with fake_api(streams, latency_ms, now) as api:
        plain = plain_read(api, now + 1)
        credits = served_credits(api, now + 1, streams)
        port = free_port()
        names = [f"team-{i:02d}" for i in range(accounts)]
        config_file = workdir / f"accounts-{accounts}.yaml"
        config_file.write_text(
            yaml.safe_dump(
                {
                    "web": {"listen_address": f"127.0.0.1:{port}"},
                    "accounts": [{"name": n, "base_url": api, "token": TOKEN} for n in names],
                    "polling": {"interval": f"{interval:g}s", "window": "7d"},
                    "state": {"path": str(workdir / f"accounts-{accounts}.db")},
                }
            )
        )
        with open(workdir / f"accounts-{accounts}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "exporter", "--config.file", str(config_file)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            watch = Watch(proc, f"http://127.0.0.1:{port}", workdir / f"accounts-{accounts}.log")
            watch.run(names, interval, observe)
        finally:
            proc.terminate()
            proc.wait(30)
    exact = sum(
        1
        for name in names
        if watch.samples.get(("neo_streams_total", name, "", "")) == len(plain.stream_ids)
        and math.isclose(
            watch.samples.get(("neo_credits_total", name, "", ""), math.nan),
            credits,
            rel_tol=1e-9,
        )
    )
    if exact != accounts:
        raise Failed(f"{accounts - exact} of {accounts} accounts counted something else")
    return Accounts(
        accounts,
        streams,
        interval,
        sorted(watch.live.values()),
        max(watch.gaps, default=math.nan),
        watch.polls,
        watch.observed,
        watch.idle_cpu,
        med(watch.scrape_cpu),
        watch.scrape_samples,
        watch.scrape_bytes,
        watch.rss,
        exact,
    )


def served_credits(api: str, end: float, streams: int) -> float:
    """The credits of every stream the fake API serves (what Neo holds)."""
    credits = 0.0
    for offset in range(0, streams, PAGE_SIZE):
        params = {
            "from": format_timestamp(end - WINDOW),
            "to": format_timestamp(end),
            "limit": str(PAGE_SIZE),
            "offset": str(offset),
            "sort": "created_at",
        }
        body = requests.get(
            api + STREAMS_PATH,
            params=params,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ).json()
        credits += sum(row["neo_credits"] for row in body["data"])
    return credits


class Watch:
    """Follows an exporter process through its log: when each account's first full read
    ended, then the gaps between each account's incremental reads and the process's CPU
    while every account is live and nothing scrapes it; then what one scrape of /metrics
    costs it (as Prometheus asks: gzip), measured apart."""

    LINE = re.compile(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ exporter\.poller: "
        r"account=(\S+) (incremental read of|the whole window is read)"
    )
    SCRAPES = 5

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log
        self.started = time.time()
        self.live: dict[str, float] = {}
        self.last_poll: dict[str, float] = {}
        self.gaps: list[float] = []
        self.polls = 0
        self.observed = self.idle_cpu = self.rss = 0.0
        self.scrape_cpu: list[float] = []
        self.scrape_samples = self.scrape_bytes = 0
        self.samples: dict[tuple[str, str, str, str], float] = {}
        self._offset = 0

    def run(self, names: list[str], interval: float, observe: int) -> None:
        cpu_start, observe_from = math.nan, math.inf
        deadline = time.monotonic() + max(600.0, interval * (observe + 4))
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if self.proc.poll() is not None:
                raise Failed(f"the exporter exited {self.proc.returncode}")
            self._read_log(observe_from)
            now = time.time()
            if len(self.live) == len(names) and observe_from == math.inf:
                observe_from, cpu_start = now, process_cpu(self.proc.pid)
            if now - observe_from >= observe * interval:
                break
        else:
            raise Failed(f"only {len(self.live)} of {len(names)} accounts went live")
        ended = time.time()
        self.observed = ended - observe_from
        self.idle_cpu = process_cpu(self.proc.pid) - cpu_start
        # Still waiting for the next read is a gap too: it counts as long as it has lasted.
        self.gaps += [ended - when for when in self.last_poll.values()]
        idle_rate = self.idle_cpu / self.observed
        with requests.Session() as session:
            for _ in range(self.SCRAPES):
                time.sleep(1.2)  # as scrapes come: polls publish in between
                cpu, wall = process_cpu(self.proc.pid), time.perf_counter()
                response = session.get(f"{self.url}/metrics", timeout=120)
                time.sleep(0.3)  # the process's CPU counters lag a little
                spent = process_cpu(self.proc.pid) - cpu
                self.scrape_cpu.append(spent - idle_rate * (time.perf_counter() - wall))
        self.scrape_bytes = len(response.content)
        self.scrape_samples = sum(
            1 for line in response.text.splitlines() if line and not line.startswith("#")
        )
        self.rss = peak_rss(self.proc.pid)
        self.samples = metric_samples(self.url)

    def _read_log(self, observe_from: float) -> None:
        with open(self.log, "rb") as log:
            log.seek(self._offset)
            text = log.read()
        complete = text.rfind(b"\n") + 1  # a line still being written waits for its end
        self._offset += complete
        for line in text[:complete].decode(errors="replace").splitlines():
            match = self.LINE.match(line)
            if match is None:
                continue
            stamp, name, what = match.groups()
            at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1e3
            if what == "the whole window is read":
                self.live.setdefault(name, at - self.started)
                continue
            before = self.last_poll.get(name)
            if before is not None and at >= observe_from:
                self.gaps.append(at - before)
                self.polls += 1
            self.last_poll[name] = at


@dataclass
class Scrape:
    series: int
    samples: int
    ours: list[float]
    direct: list[float]
    http: list[float]
    between_polls: list[float] = field(default_factory=list)


class _Fixed(Collector):
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> list[Any]:
        return self._families


def scrape_store(series: int) -> SnapshotStore:
    """A snapshot holding `series` stream counters (models x statuses x byok x metrics)."""
    store = SnapshotStore(("bench",), WINDOW)
    counts = scrape_counts(series)
    store.update("bench", lambda a: replace(a, counts=counts))
    return store


def scrape_counts(series: int) -> Counts:
    counters: dict[tuple[str, tuple[str, ...]], CounterValue] = {}
    per_metric = math.ceil(series / len(STREAM_COUNTER_NAMES))
    statuses = 10
    for i in range(per_metric):
        labels = (f"model-{i // (statuses * 2)}", f"status-{i // 2 % statuses}", str(i % 2 == 0))
        for metric in STREAM_COUNTER_NAMES:
            if len(counters) < series:
                counters[(metric, labels)] = CounterValue(i * 1.5, 1_700_000_000.0)
    return Counts(counters, {})


def run_scrape(series: int, repeat: int) -> Scrape:
    store = scrape_store(series)
    ours = CollectorRegistry()
    ours.register(NeoCollector(store))
    direct = CollectorRegistry()
    direct.register(_Fixed(list(NeoCollector(store).collect())))
    exposition = generate_latest(ours)
    if exposition != generate_latest(direct):
        raise Failed("the collector's exposition differs from the directly built families")
    samples = sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))
    out = Scrape(series, samples, [], [], [])
    for _ in range(repeat):
        # Interleaved, so that a busy moment of the machine hits both alike.
        out.ours.append(measure(lambda: generate_latest(ours))[1])
        out.direct.append(measure(lambda: generate_latest(direct))[1])
    # What the server does between polls: the Neo metrics were rendered once for this
    # snapshot; the exporter's own metrics are rendered again at each scrape.
    live = CollectorRegistry()
    ExporterMetrics(live, ("bench",))
    renders = Renders(live, CollectorRegistry(), store, per_counts=ours)
    renders.get(generate_latest, CONTENT_TYPE_LATEST, False)
    for _ in range(repeat):
        # A poll that counted nothing: a new snapshot, the same counts.
        store.update("bench", lambda a: replace(a, seen_streams=a.seen_streams + 1))
        out.between_polls.append(
            measure(lambda: renders.get(generate_latest, CONTENT_TYPE_LATEST, False))[1]
        )
    server = ExporterServer(("127.0.0.1", 0), live, store, per_snapshot=ours)
    server.serve_in_thread()
    try:
        with requests.Session() as session:
            for _ in range(repeat):
                response, wall, _ = measure(
                    lambda: session.get(f"{server.url}/metrics", timeout=10)
                )
                response.raise_for_status()
                out.http.append(wall)
    finally:
        server.shutdown()
        server.server_close()
    return out


@dataclass
class Unchanged:
    accounts: int
    samples: int
    body_bytes: int  # uncompressed
    first: list[float]  # the first gzip scrape of a snapshot: rendered and compressed
    again: list[float]  # each later gzip scrape of the same snapshot
    http: list[float]  # GET /metrics (gzip) over loopback, the same snapshot


def run_unchanged(accounts: int, series: int, repeat: int) -> Unchanged:
    """Scrapes of one snapshot of `accounts` accounts, as a Prometheus asks (gzip), with the
    exporter's registries as app.build lays them out (its own counters of every account,
    the Neo metrics in two parts, the process's metrics at every scrape)."""
    names = tuple(f"account-{i:02d}" for i in range(accounts))
    store = SnapshotStore(names, WINDOW)
    for name in names:
        counts = scrape_counts(series)
        store.update(name, lambda a, c=counts: replace(a, counts=c, first_poll_done=True))
    live, per_snapshot, per_counts = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    ExporterMetrics(live, names)
    per_snapshot.register(NeoCollector(store, Part.STATUS))
    per_counts.register(NeoCollector(store, Part.COUNTS))
    server = ExporterServer(
        ("127.0.0.1", 0),
        live,
        store,
        per_snapshot=per_snapshot,
        per_counts=per_counts,
        per_scrape=process_registry(),
    )
    renders = server.renders
    out = Unchanged(accounts, 0, 0, [], [], [])
    plain = renders.get(generate_latest, CONTENT_TYPE_LATEST, False)
    out.body_bytes = len(plain)
    out.samples = sum(1 for line in plain.splitlines() if line and not line.startswith(b"#"))

    def gzipped() -> bytes:
        return renders.get(generate_latest, CONTENT_TYPE_LATEST, True)

    for _ in range(max(3, repeat // 10)):
        store.update(names[0], lambda a: replace(a, seen_streams=a.seen_streams + 1))
        out.first.append(measure(gzipped)[1])
    for _ in range(repeat):
        out.again.append(measure(gzipped)[1])
    server.serve_in_thread()
    try:
        with requests.Session() as session:

            def get() -> bytes:
                # The body as it comes, not decompressed: Prometheus' part is its own.
                with session.get(
                    f"{server.url}/metrics",
                    headers={"Accept-Encoding": "gzip"},
                    timeout=30,
                    stream=True,
                ) as response:
                    body: bytes = response.raw.read()
                    return body

            for _ in range(repeat):
                out.http.append(measure(get)[1])
    finally:
        server.shutdown()
        server.server_close()
    return out


# --- the report --------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of neo-exporter (see docs/performance.md).",
    )
    parser.add_argument("--streams", type=int, default=20_000, help="backfill size")
    parser.add_argument("--latency-ms", type=float, default=60.0, help="per API request")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed scenario")
    parser.add_argument("--polls", type=int, default=10, help="idle polls in the steady scenario")
    parser.add_argument("--series", type=int, default=10_000, help="series in the scrape")
    parser.add_argument("--scrapes", type=int, default=30, help="renders in the scrape scenario")
    parser.add_argument(
        "--memory-sizes", default="10000,100000", help="comma-separated window sizes, or none"
    )
    parser.add_argument(
        "--scale-sizes", default="1000,10000,100000", help="comma-separated sizes, or none"
    )
    parser.add_argument("--accounts", type=int, default=50, help="accounts in one process")
    parser.add_argument("--account-streams", type=int, default=2000, help="streams per account")
    parser.add_argument(
        "--accounts-interval", type=float, default=60.0, help="polling.interval (s) for them"
    )
    parser.add_argument(
        "--observe", type=int, default=2, help="intervals observed once all accounts are live"
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the memory runs (--memory-sizes)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one run each: checks the suite runs"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.streams, args.latency_ms, args.repeat, args.polls = 600, 2.0, 1, 2
        args.series, args.scrapes, args.memory_sizes, args.scale_sizes = 500, 3, "300", "200,400"
        args.accounts, args.account_streams, args.accounts_interval, args.observe = 3, 200, 2.0, 2
    return args


def sizes(text: str) -> list[int]:
    return [] if text.strip() in ("", "none") else [int(x) for x in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"# neo-exporter benchmarks\n\n`{command.strip()}`: {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, JSON decoder: msgspec {msgspec.__version__}\n"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="neo-bench-") as tmp:
            return report(args, Path(tmp))
    except Failed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1


def print_memory(memory: Sequence[Memory]) -> None:
    print("\nMemory: a real `python -m exporter --once` process, no API latency.\n")
    print(
        table(
            ["streams in the window", "peak RSS", "wall time", "CPU", "state file"],
            [
                [
                    f"{m.streams:,}",
                    f"{m.peak_rss_mib:.0f} MiB",
                    s(m.wall),
                    s(m.cpu),
                    f"{m.state_mib:.1f} MiB",
                ]
                for m in memory
            ],
        )
    )


def report(args: argparse.Namespace, workdir: Path) -> int:
    if args.memory_only:
        print_memory([run_memory(n, workdir) for n in sizes(args.memory_sizes)])
        return 0
    now = time.time()
    kept: list[Exporter] = []
    with fake_api(args.streams, args.latency_ms, now) as url:
        backfill = run_backfill(url, now + 1, args.repeat, workdir, kept)
        try:
            steady = run_steady(url, kept[0], args.polls)
        finally:
            kept[0].close()
    # The same backfill against a fake that renders every page afresh, in its own process
    # on the same two cores, as a busy API (or a small VM shared with other work) would.
    fresh_now = time.time()
    with fake_api(args.streams, args.latency_ms, fresh_now, cache_mb=0) as url:
        fresh = run_backfill(url, fresh_now + 1, args.repeat, workdir)
    accounts = run_accounts(
        args.accounts,
        args.account_streams,
        args.accounts_interval,
        args.observe,
        args.latency_ms,
        workdir,
    )
    scrape = run_scrape(args.series, args.scrapes)
    # 900 counter series an account: about the 90,000 samples of the 50-account run.
    unchanged = run_unchanged(args.accounts, 900 if not args.smoke else 50, args.scrapes)
    memory = [run_memory(n, workdir) for n in sizes(args.memory_sizes)]
    scaling = []
    for n in sizes(args.scale_sizes):
        scale_now = time.time()
        with fake_api(n, args.latency_ms, scale_now) as url:
            scaling.append((n, run_backfill(url, scale_now + 1, 1, workdir)))

    b = backfill
    extra = [r - p for r, p in zip(steady.requests, steady.lookback_pages, strict=True)]
    scrape_ratio = med(scrape.ours) / med(scrape.direct)
    print(
        f"Backfill: {b.streams:,} streams and {b.tasks:,} tasks in {b.pages} pages, "
        f"{args.latency_ms:g} ms latency per request; medians of {args.repeat} runs.\n"
    )
    rows = []
    for name, run in (("cached pages", b), ("pages rendered afresh", fresh)):
        floor_ratio = med(run.wall) / run.floor()
        rows += [
            [
                f"backfill wall time, {name}: against the floor",
                s(med(run.wall)),
                f"{s(run.floor())} ({run.pages} pages x {ms(med(run.request_times))} / "
                f"{run.concurrency})",
                f"{floor_ratio:.2f}x",
                "<= 1.15x",
                verdict(floor_ratio <= 1.15),
            ],
            [
                f"backfill wall time, {name}: against the plain client",
                s(med(run.wall)),
                s(med(run.plain_wall)),
                f"{med(run.wall) / med(run.plain_wall):.2f}x",
                "<= 0.40x",
                verdict(med(run.wall) / med(run.plain_wall) <= 0.40),
            ],
            [
                f"backfill CPU, {name}",
                s(med(run.cpu)),
                s(med(run.plain_cpu)),
                f"{med(run.cpu) / med(run.plain_cpu):.2f}x",
                "<= 1.3x",
                verdict(med(run.cpu) / med(run.plain_cpu) <= 1.3),
            ],
            [
                f"first start, {name}: stream rows fetched",
                f"{run.first_start_rows:,}",
                f"{run.streams:,} rows in the API (no repair needed)",
                f"{run.first_start_rows / max(1, run.streams):.2f}x",
                "= the API's rows",
                verdict(run.first_start_rows == run.streams),
            ],
        ]
    a = accounts
    busy = a.idle_cpu / a.observed * 100
    tick = 1 / os.sysconf("SC_CLK_TCK")
    at_60 = busy + a.scrape_cpu / 60 * 100
    at_15 = busy + a.scrape_cpu / 15 * 100
    rows += [
        [
            f"{a.accounts} accounts x {a.streams:,} streams: all exact",
            f"{a.exact} of {a.accounts}",
            "",
            "",
            "all",
            verdict(a.exact == a.accounts),
        ],
        [
            f"{a.accounts} accounts: peak RSS",
            f"{a.peak_rss_mib:.0f} MiB",
            "",
            "",
            "< 200 MiB",
            verdict(a.peak_rss_mib < 200),
        ],
        [
            f"{a.accounts} accounts: idle CPU at a {a.interval:g} s interval, no scrapes",
            f"{busy:.2f}% of a core",
            f"{a.idle_cpu:.2f} s over {a.observed:.0f} s, {a.polls} polls",
            "",
            "< 1%",
            verdict(busy < 1.0),
        ],
        [
            f"{a.accounts} accounts: one scrape of /metrics (gzip)",
            # /proc counts CPU in clock ticks: a cached scrape costs less than one.
            f"{a.scrape_cpu * 1000:.0f} ms of CPU"
            if a.scrape_cpu >= tick
            else f"under {tick * 1000:.0f} ms of CPU (one clock tick)",
            f"{a.scrape_samples:,} samples, {a.scrape_bytes / 2**20:.1f} MiB",
            "",
            "",
            "",
        ],
        [
            f"{a.accounts} accounts: idle CPU with a scrape every 60 s / 15 s",
            f"{at_60:.2f}% / {at_15:.2f}% of a core",
            "",
            "",
            "< 1%",
            verdict(at_60 < 1.0) + " / " + verdict(at_15 < 1.0),
        ],
        [
            f"{a.accounts} accounts: slowest first full read",
            s(max(a.to_live)),
            f"median {s(med(a.to_live))}",
            f"{max(a.to_live) / a.interval:.2f} intervals",
            "<= 1 interval",
            verdict(max(a.to_live) <= a.interval),
        ],
        [
            f"{a.accounts} accounts: longest time between two polls of one account",
            s(a.max_gap),
            "",
            f"{a.max_gap / a.interval:.2f} intervals",
            "<= 2 intervals (late by <= 1)",
            verdict(a.max_gap <= 2 * a.interval),
        ],
        [
            "idle poll: API requests",
            f"{med(steady.requests):g}",
            f"{med(steady.lookback_pages):g} (lookback pages)",
            f"{max(extra):+d} extra at most",
            "= lookback pages",
            verdict(max(extra) == 0),
        ],
        [
            "idle poll: CPU",
            ms(med(steady.cpu)),
            ms(med(steady.plain_cpu)) + " (a requests GET of the same page)",
            f"{med(steady.cpu) / med(steady.plain_cpu):.2f}x",
            "< 2 ms",
            verdict(med(steady.cpu) < 0.002),
        ],
        [
            f"scrape, {scrape.series:,} series: first render of a snapshot",
            ms(med(scrape.ours)),
            ms(med(scrape.direct)) + " (generate_latest alone)",
            f"{scrape_ratio:.2f}x",
            "<= 1.5x",
            verdict(scrape_ratio <= 1.5),
        ],
        [
            f"scrape, {scrape.series:,} series: render p50 between polls",
            ms(med(scrape.between_polls)),
            "",
            "",
            "< 50 ms",
            verdict(med(scrape.between_polls) < 0.05),
        ],
        [
            "scrape: GET /metrics p50 over loopback",
            ms(med(scrape.http)),
            "",
            "",
            "",
            "",
        ],
        [
            f"{unchanged.accounts} accounts, {unchanged.samples:,} samples "
            f"({unchanged.body_bytes / 2**20:.1f} MiB): a gzip scrape of an unchanged snapshot",
            ms(med(unchanged.again)),
            ms(med(unchanged.first)) + " (its first scrape: render and gzip)",
            f"{med(unchanged.again) / med(unchanged.first):.3f}x",
            "< 10 ms",
            verdict(med(unchanged.again) < 0.010),
        ],
        [
            f"{unchanged.accounts} accounts: GET /metrics (gzip) p50 over loopback, unchanged",
            ms(med(unchanged.http)),
            "",
            "",
            "",
            "",
        ],
    ]
    for m in memory:
        rows.append(
            [
                f"memory, {m.streams:,} streams: peak RSS",
                f"{m.peak_rss_mib:.0f} MiB",
                "",
                "",
                "< 100 MiB",
                verdict(m.peak_rss_mib < 100),
            ]
        )
    print(table(["scenario", "exporter", "baseline", "ratio", "target", ""], rows))
    if memory:
        print_memory(memory)
    if scaling:
        print(f"\nScaling: backfill at {args.latency_ms:g} ms latency, one run per size.\n")
        print(
            table(
                [
                    "streams",
                    "tasks",
                    "pages",
                    "exporter wall",
                    "plain wall",
                    "exporter CPU",
                    "plain CPU",
                    "CPU ratio",
                    "exporter CPU per stream",
                ],
                [
                    [
                        f"{n:,}",
                        f"{r.tasks:,}",
                        str(r.pages),
                        s(med(r.wall)),
                        s(med(r.plain_wall)),
                        s(med(r.cpu)),
                        s(med(r.plain_cpu)),
                        f"{med(r.cpu) / med(r.plain_cpu):.2f}x",
                        f"{med(r.cpu) / max(r.streams, 1) * 1e6:.0f} us",
                    ]
                    for n, r in scaling
                ],
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
