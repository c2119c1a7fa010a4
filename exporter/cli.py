"""Command line: flags and logging, then `exporter.app` runs what they ask for.

Exit codes (docs/configuration.md lists them): 0 on a clean stop, 1 for a failed or timed
out `--once` or a damaged state file, 2 for a configuration or usage error, 3 when the
state's directory is missing, 4 when the state cannot be written, 5 when another process
holds the state's lock, 6 when the listen address cannot be bound, 7 when `history` is
refused because the state already holds counters, 8 when `report`'s figures do not agree
with Neo's own (or its read was incomplete). Only `main()` exits.

`neo-exporter history ...` and `neo-exporter report ...` are subcommands of their own
(`exporter.history` and `exporter.report` do the work).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from exporter import __version__
from exporter.app import ONCE_STATES, ONCE_TIMEOUT, demo_config, once_state, run, run_once
from exporter.config import (
    Config,
    ConfigError,
    format_duration,
    load_config,
    parse_duration,
    to_telemetry_path,
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
)
from exporter.history import run as run_history
from exporter.periods import parse_month
from exporter.report import (
    FORMATS,
    GROUPS,
    ReportError,
    ReportOptions,
    ReportUsageError,
    describe_checks,
    render,
    write_atomically,
)
from exporter.report import run as run_report
from exporter.server import ListenError
from exporter.signals import stop_on_signals
from exporter.state import (
    StateError,
    StateLockedError,
    StatePathError,
    check_state_path,
)
from exporter.webconfig import load_web_config

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
EXIT_STATE_DIRECTORY, EXIT_STATE_NOT_WRITABLE, EXIT_STATE_IN_USE, EXIT_LISTEN = 3, 4, 5, 6
EXIT_HISTORY_REFUSED = 7
EXIT_REPORT_MISMATCH = 8


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neo-exporter",
        description="Prometheus exporter for ProjectDiscovery Neo usage.",
        epilog="neo-exporter history --help: the last days of the counters as OpenMetrics "
        "for promtool, joined to the live series (docs/history.md). neo-exporter report "
        "--help: a month's spend by team, member, model or task, checked against Neo's "
        "books (docs/budgets.md).",
    )
    parser.add_argument("--config.file", dest="config_file", metavar="PATH", help="YAML config")
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        metavar="ADDR",
        help="address to serve /metrics on (default :9636, or web.listen_address)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        metavar="PATH",
        help="path to serve the metrics on (default /metrics, or web.telemetry_path)",
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


def _add_account_flag(parser: argparse.ArgumentParser) -> None:
    """`--account NAME`, repeatable, of the subcommands that read some accounts or all."""
    parser.add_argument(
        "--account",
        dest="accounts",
        action="append",
        default=[],
        metavar="NAME",
        help="only this account of the config (repeatable; default: every account)",
    )


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
    _add_account_flag(parser)
    parser.add_argument(
        "--if-fresh",
        dest="if_fresh",
        action="store_true",
        help="leave accounts that already hold counters alone instead of refusing (exit 0)",
    )
    add_logging_flags(parser)
    return parser.parse_args(argv)


def parse_report_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neo-exporter report",
        description="A month's spend (UTC, by created_at; the current month up to now) per "
        "team, member, model or task, read from Neo's listing and checked against Neo's own "
        "count and summary for the month: exit 0 when they agree within the account's "
        "audit_drift_ratio and the read was complete, 8 otherwise (docs/budgets.md).",
    )
    parser.add_argument("--config.file", dest="config_file", metavar="PATH", help="YAML config")
    parser.add_argument(
        "--month", required=True, type=_month, metavar="YYYY-MM", help="the month (UTC)"
    )
    parser.add_argument(
        "--by",
        choices=tuple(GROUPS),
        default="team",
        help="one row per team (the config's teams:, the default), member (email), model or "
        "task (task_id and task_title)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="csv", help="csv (the default), markdown or json"
    )
    parser.add_argument(
        "--output", metavar="PATH", help="write the report to this file (default: stdout)"
    )
    _add_account_flag(parser)
    add_logging_flags(parser)
    return parser.parse_args(argv)


def _month(text: str) -> str:
    try:
        year, month = parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return f"{year:04d}-{month:02d}"


def _load_subcommand_config(path: str | None) -> Config:
    """The config of `history` or `report`, its warnings logged."""
    config = load_config(path, os.environ)
    for warning in config.warnings:
        log.warning("%s", warning)
    return config


def report_main(argv: Sequence[str], stop: threading.Event) -> int:
    """`neo-exporter report`: the report on stdout or in --output, Neo's figures on stderr."""
    args = parse_report_args(argv)
    setup_logging(args.log_level, args.log_format)
    options = ReportOptions(
        month=args.month,
        by=args.by,
        format=args.format,
        output=args.output,
        accounts=tuple(args.accounts),
    )
    try:
        config = _load_subcommand_config(args.config_file)
        report = run_report(config, options, stop=stop)
        text = render(report, options.format)
        if options.output is None:
            sys.stdout.buffer.write(text.encode())
            sys.stdout.flush()
        else:
            write_atomically(options.output, text)
    except ConfigError as exc:
        print(f"neo-exporter: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ReportUsageError as exc:
        print(f"neo-exporter report: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ReportError as exc:
        log.error("report failed: %s", exc)
        return EXIT_FAILURE
    # Neo's figures beside the report's go to stderr whatever the log level: they are
    # what says whether the report can be trusted.
    for line in describe_checks(report):
        print(line, file=sys.stderr)
    if not report.agrees:
        where = "on stdout" if options.output is None else f"in {options.output}"
        print(
            f"neo-exporter report: the report ({where}) does not agree with Neo's books; "
            f"exit status {EXIT_REPORT_MISMATCH}",
            file=sys.stderr,
        )
        return EXIT_REPORT_MISMATCH
    return EXIT_OK


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
        config = _load_subcommand_config(args.config_file)
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


def _load(args: argparse.Namespace) -> Config:
    return _web_flags(load_config(args.config_file, os.environ), args)


def _web_flags(config: Config, args: argparse.Namespace) -> Config:
    """The --web.* flags laid over the config's web section."""
    if args.telemetry_path is not None:
        try:
            path = to_telemetry_path(args.telemetry_path)
        except ValueError as exc:
            raise ConfigError((f"--web.telemetry-path: {exc}",)) from None
        config = replace(config, web=replace(config.web, telemetry_path=path))
    if args.listen_address:
        try:
            parse_listen(args.listen_address)
        except ValueError as exc:
            raise ConfigError((f"--web.listen-address: {exc}",)) from None
        config = replace(config, web=replace(config.web, listen_address=args.listen_address))
    return config


def _leave_requests_in_flight(code: int) -> None:
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
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()  # --once.timeout counts from here
    argv = sys.argv[1:] if argv is None else list(argv)
    stop = threading.Event()
    with stop_on_signals(stop):
        if argv[:1] == ["history"]:
            return history_main(argv[1:], stop)
        if argv[:1] == ["report"]:
            return report_main(argv[1:], stop)
        code, leave = _main(argv, stop, started)
    if leave:
        _leave_requests_in_flight(code)
    return code


def _main(argv: list[str], stop: threading.Event, started: float) -> tuple[int, bool]:
    """The exit status, and whether to leave threads still in a request behind."""
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.demo:
            if args.config_file:
                log.warning("--demo ignores --config.file: it runs against the fake API")
            with demo_config(args.listen_address) as config:
                log.info("demo mode: fake Neo API at %s", config.accounts[0].base_url)
                run(_web_flags(config, args), stop)
            return EXIT_OK, False
        config = _load(args)
        web = load_web_config(args.web_config_file) if args.web_config_file else None
        for warning in config.warnings:
            log.warning("%s", warning)
        if args.check_config:
            check_state_path(config.state.path)
            print(
                f"config OK: {len(config.accounts)} account(s), state {config.state.path} "
                "(the tokens were not checked: the API is not asked; --once reads with them)"
            )
            return EXIT_OK, False
        if args.once:
            with once_state(config, args.once_state) as once_config:
                result = run_once(once_config, stop, timeout=args.once_timeout, started=started)
            sys.stdout.buffer.write(result.exposition)
            sys.stdout.flush()
            return (EXIT_OK if result.ok else EXIT_FAILURE), bool(result.stuck)
        run(config, stop, web=web)
        return EXIT_OK, True
    except ConfigError as exc:
        print(f"neo-exporter: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG, False
    except StateError as exc:
        log.error("%s", exc)
        return state_exit_code(exc), False
    except ListenError as exc:
        log.error("%s", exc)
        return EXIT_LISTEN, False
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE, False
