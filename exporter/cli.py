"""Command line: flags, logging, and `run(config, stop_event)` which wires the parts.

Exit codes: 0 on a clean stop, 1 when the exporter cannot run (state file, port, a failed
`--once`), 2 for a configuration or usage error. Only `main()` exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import FrameType

from prometheus_client import CollectorRegistry, generate_latest

from exporter import __version__
from exporter.account_info import AccountInfoPoller
from exporter.client import NeoClient
from exporter.collector import NeoCollector
from exporter.config import Config, ConfigError, config_from_mapping, load_config
from exporter.config import parse_listen_address as parse_listen
from exporter.fakeapi import FakeNeo, FakeNeoServer
from exporter.instrumentation import ExporterMetrics
from exporter.poller import AccountPoller
from exporter.server import ExporterServer, Include
from exporter.snapshot import SnapshotStore
from exporter.state import (
    STEP_LATENCY,
    STREAM_DURATION,
    TOOL_CALL_DURATION,
    LabelLimitsView,
    State,
    StateError,
)
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
# Seconds to wait for pollers to finish their current step. A commit in progress is always
# waited for (closing the state takes its lock); a request still waiting on the API is not.
STOP_TIMEOUT = 3.0


@dataclass
class Exporter:
    """All parts of a running exporter, built from one Config."""

    config: Config
    state: State
    store: SnapshotStore
    registry: CollectorRegistry  # every metric: what --once prints and tests read
    live: CollectorRegistry  # the exporter's own metrics, rendered at every scrape
    per_snapshot: CollectorRegistry  # the Neo metrics, rendered once per snapshot
    pollers: list[AccountPoller]
    clients: list[NeoClient]
    info_pollers: list[AccountInfoPoller] = field(default_factory=list)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.state.close()


def build(config: Config, stop: threading.Event, clock: Callable[[], float]) -> Exporter:
    buckets = config.metrics.buckets
    limits = config.metrics.label_limits
    state = State(
        config.state.path,
        bounds={
            TOOL_CALL_DURATION: buckets.tool_call_duration,
            STREAM_DURATION: buckets.stream_duration,
            STEP_LATENCY: buckets.step_latency,
        },
        limits=LabelLimitsView(limits.model, limits.status, limits.tool, limits.agent),
    )
    names = tuple(account.name for account in config.accounts)
    store = SnapshotStore(names, config.polling.window)
    live, per_snapshot, registry = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    metrics = ExporterMetrics(live, names)
    neo = NeoCollector(store)
    per_snapshot.register(neo)
    registry.register(Include(live))
    registry.register(neo)
    pollers, clients, info_pollers = [], [], []
    for account in config.accounts:
        client = NeoClient(
            account,
            config.http,
            wait=stop.wait,
            on_request=metrics.request_hook(account.name),
            on_retry=metrics.retry_hook(account.name),
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
        config, state, store, registry, live, per_snapshot, pollers, clients, info_pollers
    )


def run(
    config: Config,
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.time,
    on_listening: Callable[[str], None] | None = None,
    web: WebConfig | None = None,
) -> None:
    """Serve /metrics and poll every account until `stop` is set."""
    exporter = build(config, stop, clock)
    try:
        server = ExporterServer(
            parse_listen(config.web.listen_address),
            exporter.live,
            exporter.store,
            per_snapshot=exporter.per_snapshot,
            clock=clock,
            web=web,
        )
    except BaseException:
        exporter.close()
        raise
    server.serve_in_thread()
    log.info("neo-exporter %s listening on %s", __version__, server.url)
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


def run_once(config: Config, stop: threading.Event) -> tuple[bytes, bool]:
    """Read the whole window of every account once; return the exposition and success."""
    exporter = build(config, stop, time.time)
    try:
        ok = all([poller.poll_once() for poller in exporter.pollers])
        ok = all([poller.poll_once() for poller in exporter.info_pollers]) and ok
        return generate_latest(exporter.registry), ok
    finally:
        exporter.close()


# --- command line ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neo-exporter",
        description="Prometheus exporter for ProjectDiscovery Neo usage.",
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
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    parser.add_argument("--log.format", dest="log_format", default="text", choices=["text", "json"])
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--once",
        action="store_true",
        help="read the whole window once, print the metrics to stdout, and exit",
    )
    parser.add_argument(
        "--demo", action="store_true", help="run against a built-in fake Neo API (no token needed)"
    )
    parser.add_argument("--version", action="version", version=f"neo-exporter {__version__}")
    return parser.parse_args(argv)


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
    neo = FakeNeo(seed=7)
    neo.start_live(rate_per_hour=600.0, history=86400.0, history_count=3000)
    with FakeNeoServer(neo) as fake:
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
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
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
            print(f"config OK: {len(config.accounts)} account(s)")
            return EXIT_OK
        if args.once:
            exposition, ok = run_once(config, stop)
            sys.stdout.buffer.write(exposition)
            sys.stdout.flush()
            return EXIT_OK if ok else EXIT_FAILURE
        run(config, stop, web=web)
        _leave_requests_in_flight()
        return EXIT_OK
    except ConfigError as exc:
        print(f"neo-exporter: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StateError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
