"""The composition root: an exporter built from one Config, run until a stop event is set.

`build(config, stop, clock)` opens the state and wires the clients, pollers, snapshot store
and registries; `run(config, stop)` serves them; `run_once` reads every account's window
once. Nothing here parses flags or exits: `exporter.cli` does that.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.account_info import AccountInfoPoller
from exporter.api import ENDPOINTS
from exporter.client import NeoClient, page_executor
from exporter.collector import NeoCollector, Part, WithoutCreated
from exporter.config import Config, config_from_mapping, format_duration
from exporter.config import parse_listen_address as parse_listen
from exporter.instrumentation import ExporterMetrics, process_registry
from exporter.poller import FULL_READS_AT_ONCE, AccountPoller, FullReads
from exporter.server import ExporterServer, Include, ListenError, listen_socket
from exporter.snapshot import SnapshotStore
from exporter.state import (
    MEMORY,
    State,
    StateLockedError,
    check_state_path,
    lock_holder,
    open_state,
)
from exporter.status_page import PageContext
from exporter.webconfig import WebConfigFile

log = logging.getLogger("exporter")

# Seconds to wait for pollers to finish their current step. A commit in progress is always
# waited for (closing the state takes its lock); a request still waiting on the API is not.
STOP_TIMEOUT = 3.0
# --once: the default limit on the whole run (a 7-day window of a big account takes a few
# minutes; an unreachable API gives up by itself well before), and how often it says what
# it is waiting for.
ONCE_TIMEOUT = 600.0
ONCE_PROGRESS_EVERY = 5.0
ONCE_STOP_GRACE = 1.0  # seconds before --once.timeout at which the reads are stopped
ONCE_STATES = ("temp", "live")


@dataclass
class Exporter:
    """All parts of a running exporter, built from one Config."""

    config: Config
    state: State
    store: SnapshotStore
    registry: CollectorRegistry  # every metric: what --once prints and tests read
    live: CollectorRegistry  # the exporter's own metrics, rendered at every scrape
    per_snapshot: CollectorRegistry  # the Neo metrics but counts, rendered once per snapshot
    per_counts: CollectorRegistry  # counters and histograms, rendered once per commit
    pollers: list[AccountPoller]
    clients: list[NeoClient]
    info_pollers: list[AccountInfoPoller] = field(default_factory=list)
    pages: ThreadPoolExecutor | None = None  # the clients' shared page fetchers
    # process_* and python_*: read at every scrape (the others at most once per snapshot).
    per_scrape: CollectorRegistry = field(default_factory=CollectorRegistry)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if self.pages is not None:
            self.pages.shutdown(wait=False, cancel_futures=True)
        self.state.close()


def build(config: Config, stop: threading.Event, clock: Callable[[], float]) -> Exporter:
    state = open_state(config, config.state.path)  # the history seeds it the same way
    names = tuple(account.name for account in config.accounts)
    store = SnapshotStore(names, config.polling.window)
    own, live, per_snapshot = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    per_counts, registry = CollectorRegistry(), CollectorRegistry()
    metrics = ExporterMetrics(
        own, names, {account.name: account.alert_thresholds for account in config.accounts}
    )
    metrics.state_writable.set_function(lambda: 1.0 if state.health().writable else 0.0)
    per_scrape = process_registry()
    created = config.metrics.created_series

    def served(collector: Collector) -> Collector:
        return collector if created else WithoutCreated(collector)

    per_counts.register(served(NeoCollector(store, Part.COUNTS)))
    per_snapshot.register(served(NeoCollector(store, Part.STATUS)))
    live.register(served(Include(own)))
    registry.register(Include(live))
    registry.register(served(NeoCollector(store)))
    registry.register(Include(per_scrape))
    pollers, clients, info_pollers = [], [], []
    full_reads = FullReads()  # shared: a few accounts' full reads at a time
    # One pool of page fetchers for all accounts: as many as the full reads at once can
    # keep busy (threads per account would be hundreds with many accounts, idle, in RSS).
    pages = page_executor(2 * config.http.concurrency * min(len(names), FULL_READS_AT_ONCE))
    for account in config.accounts:
        client = NeoClient(
            account,
            config.http,
            wait=stop.wait,
            on_request=metrics.request_hook(account.name),
            on_retry=metrics.retry_hook(account.name),
            executor=pages,
        )
        clients.append(client)
        pollers.append(
            AccountPoller(
                account,
                config.polling,
                state,
                client,
                store,
                metrics,
                stop=stop,
                clock=clock,
                top_tasks=config.metrics.top_tasks,
                task_emails=config.metrics.members.enabled,
                audit_interval=config.audit.interval,
                task_titles=config.metrics.task_titles,
                full_reads=full_reads,
                budgets=config.budgets,
            )
        )
        info_pollers.append(
            AccountInfoPoller(
                account.name,
                config.polling,
                config.metrics,
                client,
                store,
                metrics,
                stop=stop,
                clock=clock,
            )
        )
    return Exporter(
        config,
        state,
        store,
        registry,
        live,
        per_snapshot,
        per_counts,
        pollers,
        clients,
        info_pollers,
        pages,
        per_scrape,
    )


def run(
    config: Config,
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.time,
    on_listening: Callable[[str], None] | None = None,
    web: WebConfigFile | None = None,
) -> None:
    """Serve /metrics and poll every account until `stop` is set.

    The state path is checked, then the socket bound, and only then is anything created
    (the state file, its lock), so a start that cannot listen leaves nothing behind.
    """
    check_state_path(config.state.path)
    try:
        listener = listen_socket(parse_listen(config.web.listen_address))
    except ListenError as exc:
        who = lock_holder(config.state.path) if exc.in_use else None
        if who is None:
            raise
        # The same config started twice: another port would only meet the held state.
        raise StateLockedError(
            config.state.path,
            who,
            f"another neo-exporter already runs with this config (it holds this state, and "
            f"{config.web.listen_address} is in use). Leave that one running, or stop it "
            "first; a second exporter needs a state.path and a listen address of its own",
        ) from None
    try:
        exporter = build(config, stop, clock)
    except BaseException:
        listener.close()
        raise
    try:
        server = ExporterServer(
            parse_listen(config.web.listen_address),
            exporter.live,
            exporter.store,
            per_snapshot=exporter.per_snapshot,
            per_counts=exporter.per_counts,
            per_scrape=exporter.per_scrape,
            telemetry_path=config.web.telemetry_path,
            clock=clock,
            web=web,
            listener=listener,
            max_connections=config.web.max_connections,
            read_header_timeout=config.web.read_header_timeout,
            page=PageContext(config, exporter.state.health, clock()),
        )
    except BaseException:
        listener.close()
        exporter.close()
        raise
    server.serve_in_thread()
    log.info("neo-exporter %s listening on %s", __version__, server.describe())
    if config.state.path != MEMORY:
        log.info("state: %s (locked for this process)", os.path.abspath(config.state.path))
    if on_listening is not None:
        on_listening(server.url)
    threads = [
        threading.Thread(target=poller.run, name=f"poll-{poller.name}", daemon=True)
        for poller in exporter.pollers
    ] + [
        threading.Thread(target=poller.run, name=f"info-{poller.name}", daemon=True)
        for poller in exporter.info_pollers
    ]
    for thread in threads:
        thread.start()
    stop.wait()
    log.info("stopping")
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + STOP_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    exporter.close()


@dataclass(frozen=True)
class OnceResult:
    exposition: bytes
    ok: bool  # every read of every account succeeded, within the time limit
    stuck: int  # threads still in a request when it returned: exit without waiting for them


def run_once(
    config: Config,
    stop: threading.Event,
    *,
    timeout: float = ONCE_TIMEOUT,
    started: float | None = None,
    progress_every: float = ONCE_PROGRESS_EVERY,
) -> OnceResult:
    """Read the whole window of every account once, the accounts side by side.

    Each account's streams and tasks (one thread) and its account-level endpoints (another)
    are read at the same time as every other account's. Every `progress_every` seconds a log
    line says what is still being waited for. The whole run, from `started` (monotonic; now
    if not given), ends within `timeout`: the reads are stopped a little before it, so that
    what was read can still be returned (not ok).
    """
    started = time.monotonic() if started is None else started
    deadline = started + timeout
    # Time kept at the end to stop the reads and render what they read.
    stop_at = deadline - min(ONCE_STOP_GRACE, timeout / 5)
    exporter = build(config, stop, time.time)
    jobs: list[tuple[str, threading.Thread, list[bool]]] = []
    for poller, info in zip(exporter.pollers, exporter.info_pollers, strict=True):
        for reader in (poller.poll_once, info.poll_once):
            result: list[bool] = []
            thread = threading.Thread(
                target=lambda r=reader, out=result: out.append(r()),
                name=f"once-{poller.name}",
                daemon=True,
            )
            jobs.append((poller.name, thread, result))
    for _, thread, _ in jobs:
        thread.start()
    next_report = started + progress_every
    while any(thread.is_alive() for _, thread, _ in jobs):
        now = time.monotonic()
        if now >= stop_at:
            break
        if now >= next_report:
            next_report += progress_every
            log.info(
                "--once: %s of %s; waiting for %s",
                format_duration(round(now - started)),
                format_duration(timeout),
                _once_waiting(exporter, jobs),
            )
        for _, thread, _ in jobs:
            thread.join(max(0.0, min(next_report, stop_at) - time.monotonic()))
            if time.monotonic() >= min(next_report, stop_at):
                break
    timed_out = any(thread.is_alive() for _, thread, _ in jobs)
    if timed_out:
        log.error(
            "--once: stopping at the time limit of %s (--once.timeout); the reads of %s did "
            "not finish: their metrics are incomplete",
            format_duration(timeout),
            _once_waiting(exporter, jobs),
        )
        stop.set()
        # Half the time kept: a read waiting on a retry stops at once; one waiting on the
        # network is not waited for (the process exits without it; nothing is lost, as
        # after a crash).
        stop_deadline = stop_at + (deadline - stop_at) / 2
        for _, thread, _ in jobs:
            thread.join(max(0.0, stop_deadline - time.monotonic()))
    ok = not timed_out and all(result == [True] for _, _, result in jobs)
    if not ok:
        # The reads' own errors scroll by among the progress lines: one line to end on.
        log.error(
            "--once failed (exit 1; the metrics printed are incomplete): %s",
            _once_failures(exporter, jobs),
        )
    exposition = generate_latest(exporter.registry)
    stuck = sum(thread.is_alive() for _, thread, _ in jobs)
    if not stuck:
        exporter.close()
    # else the state is left open: a thread may still commit; the process exits at once.
    return OnceResult(exposition, ok, stuck)


def _once_failures(exporter: Exporter, jobs: list[tuple[str, threading.Thread, list[bool]]]) -> str:
    """`a: streams, tasks (streams: gave up ...); b: not finished within --once.timeout`."""
    unfinished = {name for name, thread, _ in jobs if thread.is_alive()}
    failed = {name for name, thread, result in jobs if not thread.is_alive() and result != [True]}
    parts = []
    for account in exporter.store.get().accounts:
        health = {**account.endpoints, **account.info.endpoints}
        down = [
            endpoint
            for endpoint in ENDPOINTS
            if endpoint in health
            and health[endpoint].up is False
            and endpoint not in account.info.unavailable_until
        ]
        if down:
            # Its error names the endpoint already.
            parts.append(f"{account.name}: {', '.join(down)} failed ({health[down[0]].last_error})")
        elif account.name in unfinished:
            parts.append(f"{account.name}: not finished within --once.timeout")
        elif account.name in failed:
            parts.append(f"{account.name}: a read failed (see above)")
    return "; ".join(parts)


def _once_waiting(exporter: Exporter, jobs: list[tuple[str, threading.Thread, list[bool]]]) -> str:
    """`team-a (streams, tasks; last failure: ...)` for every account still being read."""
    busy = {name for name, thread, _ in jobs if thread.is_alive()}
    parts = []
    for account, client in zip(exporter.store.get().accounts, exporter.clients, strict=True):
        if account.name not in busy:
            continue
        health = {**account.endpoints, **account.info.endpoints}
        pending = [e for e in ENDPOINTS if health.get(e) is None or health[e].up is None]
        text = ", ".join(pending) or "finishing"
        if account.progress is not None:
            p = account.progress
            text += f"; {p.kind} read: pages {p.pages_done}/{p.pages_total or '?'}"
        if client.last_failure:
            text += f"; last failure: {client.last_failure}"
        parts.append(f"{account.name} ({text})")
    return "; ".join(parts) or "nothing"


@contextmanager
def once_state(config: Config, mode: str) -> Iterator[Config]:
    """The config `--once` reads with: its own temporary state unless `live` is asked for."""
    if mode == "live":
        check_state_path(config.state.path)
        log.info("--once: reading into the live state %s (--once.state live)", config.state.path)
        yield config
        return
    directory = tempfile.mkdtemp(prefix="neo-exporter-once-")
    path = os.path.join(directory, "state.db")
    log.info(
        "--once: reading into a temporary state (%s, deleted at exit); the state file %s is "
        "not touched (--once.state live reads into it, when no exporter runs on it)",
        path,
        config.state.path,
    )
    try:
        yield replace(config, state=replace(config.state, path=path))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- command line ----------------------------------------------------------------------


@contextmanager
def demo_config(listen_address: str | None) -> Iterator[Config]:
    """A fake Neo API on loopback with a day of history and live traffic, and its config."""
    # Imported here: only the demo needs its data generator and server.
    from exporter.demo import DemoNeo, DemoServer  # noqa: PLC0415

    neo = DemoNeo(seed=7)
    neo.start_live(rate_per_hour=600.0, history=86400.0, history_count=3000)
    with DemoServer(neo) as fake:
        yield config_from_mapping(
            {
                "web": {"listen_address": listen_address or ":9636"},
                "accounts": [
                    {"name": "demo", "base_url": fake.url, "token": "fake-admin-token"},
                ],
                "polling": {
                    "interval": "15s",
                    "lookback": "1h",
                    "window": "1d",
                    "reconcile_interval": "10m",
                    "tasks_interval": "1m",
                },
                "state": {"path": ":memory:"},
            },
            {},
        )
