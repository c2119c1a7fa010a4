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
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from exporter.cli import Exporter, build
from exporter.client import JSON_DECODER
from exporter.collector import NeoCollector
from exporter.config import Config, config_from_mapping
from exporter.instrumentation import ExporterMetrics
from exporter.models import format_timestamp
from exporter.poller import STREAMS_PATH, TASKS_PATH, incremental_span
from exporter.server import RENDER_TTL, ExporterServer, Renders
from exporter.snapshot import SnapshotStore
from exporter.state import (
    STREAM_COUNTERS,
    WATERMARK_RECONCILE,
    WATERMARK_STREAMS,
    CounterValue,
    Counts,
)

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


# --- the baseline ------------------------------------------------------------------------


@dataclass
class PlainResult:
    stream_ids: set[str] = field(default_factory=set)
    task_rows: int = 0
    pages: int = 0


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
                response = session.get(url + path, params=params, timeout=60)
                response.raise_for_status()
                body = json.loads(response.content)
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
    streams: int = 0
    tasks: int = 0
    pages: int = 0


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
    for run in range(repeat):
        plain, wall, cpu = measure(lambda: plain_read(url, now))
        out.plain_wall.append(wall)
        out.plain_cpu.append(cpu)
        stop = threading.Event()
        state = workdir / f"backfill-{len(os.listdir(workdir))}-{run}.db"
        exporter = build(config(url, str(state)), stop, Clock(now))
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


@dataclass
class Steady:
    requests: list[int] = field(default_factory=list)
    lookback_pages: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)


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
    return out


@dataclass
class Memory:
    streams: int
    peak_rss_mib: float
    wall: float
    cpu: float
    state_mib: float


def run_memory(streams: int, workdir: Path) -> Memory:
    """A real `python -m exporter --once` process reading a window of `streams` streams."""
    now = time.time()
    with fake_api(streams, 0.0, now, cache_mb=0) as url:
        state = workdir / f"memory-{streams}.db"
        config_file = workdir / f"memory-{streams}.yaml"
        config_file.write_text(
            f"accounts:\n  - name: bench\n    base_url: {url}\n    token: {TOKEN}\n"
            f'polling:\n  window: 7d\nstate:\n  path: "{state}"\n'
        )
        started = time.perf_counter()
        with open(workdir / f"memory-{streams}.log", "wb") as log:
            proc = subprocess.Popen(
                [
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
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise Failed(f"exporter --once exited {proc.returncode} reading {streams} streams")
        size = sum(p.stat().st_size for p in workdir.glob(f"memory-{streams}.db*"))
        return Memory(
            streams,
            usage.ru_maxrss / 1024,  # KiB on Linux
            wall,
            usage.ru_utime + usage.ru_stime,
            size / 2**20,
        )


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
    counters: dict[tuple[str, tuple[str, ...]], CounterValue] = {}
    per_metric = math.ceil(series / len(STREAM_COUNTERS))
    statuses = 10
    for i in range(per_metric):
        labels = (f"model-{i // (statuses * 2)}", f"status-{i // 2 % statuses}", str(i % 2 == 0))
        for metric in STREAM_COUNTERS:
            if len(counters) < series:
                counters[(metric, labels)] = CounterValue(i * 1.5, 1_700_000_000.0)
    store = SnapshotStore(("bench",), WINDOW)
    store.update("bench", counts=Counts(counters, {}))
    return store


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
    ticks = itertools.count(step=RENDER_TTL)  # past the one-second reuse at every scrape
    renders = Renders(live, ours, store, monotonic=lambda: float(next(ticks)))
    renders.get(generate_latest, CONTENT_TYPE_LATEST, False)
    for _ in range(repeat):
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
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one run each: checks the suite runs"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.streams, args.latency_ms, args.repeat, args.polls = 600, 2.0, 1, 2
        args.series, args.scrapes, args.memory_sizes, args.scale_sizes = 500, 3, "300", "200,400"
    return args


def sizes(text: str) -> list[int]:
    return [] if text.strip() in ("", "none") else [int(x) for x in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"# neo-exporter benchmarks\n\n`{command.strip()}`: {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, JSON decoder: {JSON_DECODER}\n"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="neo-bench-") as tmp:
            return report(args, Path(tmp))
    except Failed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1


def report(args: argparse.Namespace, workdir: Path) -> int:
    now = time.time()
    kept: list[Exporter] = []
    with fake_api(args.streams, args.latency_ms, now) as url:
        backfill = run_backfill(url, now + 1, args.repeat, workdir, kept)
        try:
            steady = run_steady(url, kept[0], args.polls)
        finally:
            kept[0].close()
    scrape = run_scrape(args.series, args.scrapes)
    memory = [run_memory(n, workdir) for n in sizes(args.memory_sizes)]
    scaling = []
    for n in sizes(args.scale_sizes):
        scale_now = time.time()
        with fake_api(n, args.latency_ms, scale_now) as url:
            scaling.append((n, run_backfill(url, scale_now + 1, 1, workdir)))

    b = backfill
    wall_ratio = med(b.wall) / med(b.plain_wall)
    cpu_ratio = med(b.cpu) / med(b.plain_cpu)
    extra = [r - p for r, p in zip(steady.requests, steady.lookback_pages, strict=True)]
    scrape_ratio = med(scrape.ours) / med(scrape.direct)
    print(
        f"Backfill: {b.streams:,} streams and {b.tasks:,} tasks in {b.pages} pages, "
        f"{args.latency_ms:g} ms latency per request; medians of {args.repeat} runs.\n"
    )
    rows = [
        [
            "backfill wall time",
            s(med(b.wall)),
            s(med(b.plain_wall)),
            f"{wall_ratio:.2f}x",
            "<= 0.3x",
            verdict(wall_ratio <= 0.3),
        ],
        [
            "backfill CPU",
            s(med(b.cpu)),
            s(med(b.plain_cpu)),
            f"{cpu_ratio:.2f}x",
            "<= 1.2x",
            verdict(cpu_ratio <= 1.2),
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
            "",
            "",
            "a few ms",
            verdict(med(steady.cpu) < 0.005),
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
    ]
    for m in memory:
        rows.append(
            [
                f"memory, {m.streams:,} streams: peak RSS",
                f"{m.peak_rss_mib:.0f} MiB",
                "",
                "",
                "< 150 MiB",
                verdict(m.peak_rss_mib < 150),
            ]
        )
    print(table(["scenario", "exporter", "baseline", "ratio", "target", ""], rows))
    if memory:
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
