"""Command line: flags, logging, and `run(config, stop_event)` which wires the parts.

Exit codes (docs/configuration.md lists them): 0 on a clean stop, 1 for a failed or timed
out `--once` or a damaged state file, 2 for a configuration or usage error, 3 when the
state's directory is missing, 4 when the state cannot be written, 5 when another process
holds the state's lock, 6 when the listen address cannot be bound, 7 when `history` is
refused because the state already holds counters. Only `main()` exits.

`neo-exporter history ...` is a subcommand of its own (`exporter.history` does the work).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import FrameType

from prometheus_client import CollectorRegistry, generate_latest

from exporter import __version__
from exporter.account_info import AccountInfoPoller
from exporter.client import NeoClient, page_executor
from exporter.collector import COUNTS, STATUS, NeoCollector
from exporter.config import (
    Config,
    ConfigError,
    config_from_mapping,
    format_duration,
    load_config,
    parse_duration,
)
from exporter.config import parse_listen_address as parse_listen
from exporter.history import (
    DEFAULT_DAYS,
    DEFAULT_HEAD_MARGIN,
    DEFAULT_STEP,
    HistoryError,
    HistoryOptions,
    HistoryRefused,
    HistoryUsageError,
    describe,
    open_state,
)
from exporter.history import run as run_history
from exporter.instrumentation import ExporterMetrics
from exporter.poller import FULL_READS_AT_ONCE, AccountPoller, FullReads
from exporter.server import ExporterServer, Include, ListenError, PageContext, listen_socket
from exporter.snapshot import ACCOUNT_ENDPOINTS, SnapshotStore
from exporter.state import (
    MEMORY,
    State,
    StateError,
    StateLockedError,
    StatePathError,
    check_state_path,
)
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
EXIT_STATE_DIRECTORY, EXIT_STATE_NOT_WRITABLE, EXIT_STATE_IN_USE, EXIT_LISTEN = 3, 4, 5, 6
EXIT_HISTORY_REFUSED = 7
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
    live, per_snapshot, registry = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    per_counts = CollectorRegistry()
    metrics = ExporterMetrics(
        live, names, {account.name: account.alert_thresholds for account in config.accounts}
    )
    metrics.state_writable.set_function(lambda: 1.0 if state.health().writable else 0.0)
    neo = NeoCollector(store)
    per_counts.register(NeoCollector(store, COUNTS))
    per_snapshot.register(NeoCollector(store, STATUS))
    registry.register(Include(live))
    registry.register(neo)
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
    )


def run(
    config: Config,
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.time,
    on_listening: Callable[[str], None] | None = None,
    web: WebConfig | None = None,
) -> None:
    """Serve /metrics and poll every account until `stop` is set.

    The state path is checked, then the socket bound, and only then is anything created
    (the state file, its lock), so a start that cannot listen leaves nothing behind.
    """
    check_state_path(config.state.path)
    listener = listen_socket(parse_listen(config.web.listen_address))
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
    exposition = generate_latest(exporter.registry)
    stuck = sum(thread.is_alive() for _, thread, _ in jobs)
    if not stuck:
        exporter.close()
    # else the state is left open: a thread may still commit; the process exits at once.
    return OnceResult(exposition, ok, stuck)


def _once_waiting(exporter: Exporter, jobs: list[tuple[str, threading.Thread, list[bool]]]) -> str:
    """`team-a (streams, tasks; last failure: ...)` for every account still being read."""
    busy = {name for name, thread, _ in jobs if thread.is_alive()}
    parts = []
    for account, client in zip(exporter.store.get().accounts, exporter.clients, strict=True):
        if account.name not in busy:
            continue
        health = {**account.endpoints, **account.info.endpoints}
        pending = [
            e
            for e in ("streams", "tasks", *ACCOUNT_ENDPOINTS)
            if health.get(e) is None or health[e].up is None
        ]
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neo-exporter",
        description="Prometheus exporter for ProjectDiscovery Neo usage.",
        epilog="neo-exporter history --help: the last days of the counters as OpenMetrics "
        "for promtool, joined to the live series (docs/history.md).",
    )
    parser.add_argument("--config.file", dest="config_file", metavar="PATH", help="YAML config")
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        metavar="ADDR",
        help="address to serve /metrics on (default :9636, or web.listen_address)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic auth for the endpoints, in Prometheus exporter-toolkit's format",
    )
    add_logging_flags(parser)
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--once",
        action="store_true",
        help="read the whole window once, print the metrics to stdout, and exit",
    )
    parser.add_argument(
        "--once.state",
        dest="once_state",
        choices=ONCE_STATES,
        default="temp",
        help="with --once: read into a temporary state (temp, the default) or into "
        "state.path (live; refused while an exporter runs on it)",
    )
    parser.add_argument(
        "--once.timeout",
        dest="once_timeout",
        metavar="DURATION",
        type=_positive_duration,
        default=ONCE_TIMEOUT,
        help="with --once: the most the whole run may take (default 10m)",
    )
    parser.add_argument(
        "--demo", action="store_true", help="run against a built-in fake Neo API (no token needed)"
    )
    parser.add_argument("--version", action="version", version=f"neo-exporter {__version__}")
    return parser.parse_args(argv)


def parse_history_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neo-exporter history",
        description="Write the last days of the counters as OpenMetrics with timestamps, "
        "for promtool tsdb create-blocks-from openmetrics, and seed the exporter's state so "
        "that its live series continue them. Needs a state with nothing counted for the "
        "accounts (a fresh install): see docs/history.md.",
    )
    parser.add_argument("--config.file", dest="config_file", metavar="PATH", help="YAML config")
    parser.add_argument(
        "--output",
        required=True,
        metavar="PATH",
        help="the OpenMetrics file to write (compressed if the name ends in .gz)",
    )
    parser.add_argument(
        "--days",
        type=_positive_int,
        default=DEFAULT_DAYS,
        help=f"days of history (default {DEFAULT_DAYS}; at least polling.window)",
    )
    parser.add_argument(
        "--step",
        type=_positive_duration,
        default=DEFAULT_STEP,
        metavar="DURATION",
        help=f"time between samples, 1s to 5m (default {format_duration(DEFAULT_STEP)})",
    )
    parser.add_argument(
        "--head-margin",
        dest="head_margin",
        type=_duration,
        default=DEFAULT_HEAD_MARGIN,
        metavar="DURATION",
        help="samples stop this long before now, clear of Prometheus' head block; the live "
        f"exporter covers the rest (default {format_duration(DEFAULT_HEAD_MARGIN)})",
    )
    parser.add_argument(
        "--label",
        dest="labels",
        action="append",
        default=[],
        type=_label,
        metavar="NAME=VALUE",
        help="a label Prometheus adds to the exporter's series when it scrapes them (job, "
        "instance, and what relabelling adds: those of up{job=...}); repeat for each",
    )
    parser.add_argument(
        "--account",
        dest="accounts",
        action="append",
        default=[],
        metavar="NAME",
        help="only this account of the config (repeatable; default: every account)",
    )
    parser.add_argument(
        "--if-fresh",
        dest="if_fresh",
        action="store_true",
        help="leave accounts that already hold counters alone instead of refusing (exit 0)",
    )
    add_logging_flags(parser)
    return parser.parse_args(argv)


def _label(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def history_main(argv: Sequence[str], stop: threading.Event) -> int:
    """`neo-exporter history`: its own flags; the same exit statuses as the exporter's."""
    args = parse_history_args(argv)
    setup_logging(args.log_level, args.log_format)
    options = HistoryOptions(
        output=args.output,
        days=args.days,
        step=args.step,
        head_margin=args.head_margin,
        accounts=tuple(args.accounts),
        if_fresh=args.if_fresh,
        target_labels=tuple(args.labels),
    )
    try:
        config = load_config(args.config_file, os.environ)
        for warning in config.warnings:
            log.warning("%s", warning)
        summary = run_history(config, options, stop=stop)
    except ConfigError as exc:
        print(f"neo-exporter: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except HistoryUsageError as exc:
        log.error("history: %s", exc)
        return EXIT_CONFIG
    except HistoryRefused as exc:
        log.error("history refused: %s", exc)
        return EXIT_HISTORY_REFUSED
    except HistoryError as exc:
        log.error("history failed: %s", exc)
        return EXIT_FAILURE
    except StateError as exc:
        log.error("%s", exc)
        return state_exit_code(exc)
    for line in describe(summary):
        log.info("%s", line)
    return EXIT_OK


def _positive_duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return seconds


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    parser.add_argument("--log.format", dest="log_format", default="text", choices=["text", "json"])


def state_exit_code(exc: StateError) -> int:
    """The exit status that says what is wrong with the state file."""
    if isinstance(exc, StatePathError):
        return EXIT_STATE_DIRECTORY if exc.missing_directory else EXIT_STATE_NOT_WRITABLE
    if isinstance(exc, StateLockedError):
        return EXIT_STATE_IN_USE
    return EXIT_FAILURE


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 at debug would log every request line; ours already say what matters.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))


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


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config_file, os.environ)
    if args.listen_address:
        try:
            parse_listen(args.listen_address)
        except ValueError as exc:
            raise ConfigError((f"--web.listen-address: {exc}",)) from None
        config = replace(config, web=replace(config.web, listen_address=args.listen_address))
    return config


def _leave_requests_in_flight() -> None:
    """Exit now if threads still wait on the API (up to http.read_timeout otherwise).

    The state is closed by now, so nothing uncommitted can be lost; Python would otherwise
    join the page fetchers' threads before exiting.
    """
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if stuck:
        log.info("stopped; not waiting for %d thread(s) still in a request", len(stuck))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()  # --once.timeout counts from here
    argv = sys.argv[1:] if argv is None else list(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if argv[:1] == ["history"]:
        return history_main(argv[1:], stop)
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.demo:
            if args.config_file:
                log.warning("--demo ignores --config.file: it runs against the fake API")
            with demo_config(args.listen_address) as config:
                log.info("demo mode: fake Neo API at %s", config.accounts[0].base_url)
                run(config, stop)
            return EXIT_OK
        config = _load(args)
        web = load_web_config(args.web_config_file) if args.web_config_file else None
        for warning in config.warnings:
            log.warning("%s", warning)
        if args.check_config:
            check_state_path(config.state.path)
            print(f"config OK: {len(config.accounts)} account(s), state {config.state.path}")
            return EXIT_OK
        if args.once:
            with once_state(config, args.once_state) as once_config:
                result = run_once(once_config, stop, timeout=args.once_timeout, started=started)
            sys.stdout.buffer.write(result.exposition)
            sys.stdout.flush()
            code = EXIT_OK if result.ok else EXIT_FAILURE
            if result.stuck:
                log.info("not waiting for %d read(s) still in a request", result.stuck)
                logging.shutdown()
                sys.stderr.flush()
                os._exit(code)
            return code
        run(config, stop, web=web)
        _leave_requests_in_flight()
        return EXIT_OK
    except ConfigError as exc:
        print(f"neo-exporter: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StateError as exc:
        log.error("%s", exc)
        return state_exit_code(exc)
    except ListenError as exc:
        log.error("%s", exc)
        return EXIT_LISTEN
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
