"""`python -m tests.fakeneo`: the fake as a process, its switches as flags."""

from __future__ import annotations

import argparse
import math
import re
import threading
import time
from collections.abc import Sequence
from types import MappingProxyType

from exporter.signals import stop_on_signals
from tests.fakeneo.api import FakeNeo
from tests.fakeneo.server import FakeNeoServer

_DURATION_UNITS = MappingProxyType(
    {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
)


def _duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration (like 90, 15m, 7d): {text!r}")
    return float(match[1]) * _DURATION_UNITS[match[2] or "s"]


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"not a share between 0 and 1: {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number >= 1: {text!r}")
    return int(text)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakeneo",
        description="Serve a fake Neo usage API with generated data, faults and switches (tests).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Tokens it accepts (as `Authorization: Bearer TOKEN` or `X-Api-Key: TOKEN`): "
        "fake-admin-token reads everything; fake-member-token reads /api/v1/user only (the "
        "usage endpoints answer 403, as Neo does for team members); any other token gets 401. "
        "Ground truth and switches: GET /_fake/truth and the other /_fake/ paths.",
    )
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 0), help="HOST:PORT")
    parser.add_argument("--seed", type=int, default=1, help="of the generated data")
    parser.add_argument("--streams", type=int, default=1000, help="streams of history")
    parser.add_argument("--history", type=_duration, default=86400.0, help="span of the history")
    parser.add_argument("--late-fraction", type=float, default=0.1, help="share of late streams")
    parser.add_argument("--max-late", type=_duration, default=3600.0, help="how late they get")
    parser.add_argument("--live-rate", type=float, default=0.0, help="new streams an hour")
    parser.add_argument(
        "--live-spike-every",
        type=_duration,
        default=0.0,
        help="with --live-rate, a burst of expensive streams this often (0 = never)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument(
        "--order",
        choices=("desc", "asc"),
        default="desc",
        help="direction of sort=created_at and sort=cost (desc: newest/dearest first)",
    )
    parser.add_argument(
        "--from-exclusive", action="store_true", help="`from` leaves out rows created at it"
    )
    parser.add_argument(
        "--to-exclusive", action="store_true", help="`to` leaves out rows created at it"
    )
    parser.add_argument(
        "--page-cap",
        type=_positive_int,
        default=None,
        metavar="N",
        help="a page holds at most N rows whatever `limit` asks",
    )
    parser.add_argument(
        "--ties",
        action="store_true",
        help="created_at at whole seconds, tasks started in bursts, ties shuffled per request",
    )
    parser.add_argument(
        "--odd-fields",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of streams with nulls, strings and -1 where the docs show other forms",
    )
    parser.add_argument(
        "--revise",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of streams first served with lower costs and counts",
    )
    parser.add_argument(
        "--revise-after",
        type=_duration,
        default=5.0,
        metavar="DURATION",
        help="with --revise, how long after it shows up a stream gets its final figures",
    )
    parser.add_argument(
        "--hide",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of streams counted in totals and the summary but never listed",
    )
    parser.add_argument(
        "--dense-ties",
        type=int,
        default=0,
        metavar="RATE",
        help="with --ties, RATE single-stream tasks created in each second of a burst an hour "
        "ago (0: none)",
    )
    parser.add_argument(
        "--dense-seconds", type=int, default=40, help="how many seconds the dense burst lasts"
    )
    parser.add_argument("--no-cap", action="store_true", help="the user has no spending cap")
    parser.add_argument("--members", type=int, default=None, help="team members creating tasks")
    parser.add_argument(
        "--emails",
        type=_emails,
        default=None,
        metavar="ADDR=WEIGHT,...",
        help="who creates tasks, with weights (an empty ADDR: tasks with no email)",
    )
    parser.add_argument(
        "--no-billing", action="store_true", help="no billing plan: /billing/credits answers 404"
    )
    return parser.parse_args(argv)


def _emails(text: str) -> list[tuple[str, float]]:
    """`ADDR=WEIGHT,...` as (address, weight) pairs; a bare ADDR weighs 1."""
    pairs = []
    for item in text.split(","):
        address, _, weight = item.rpartition("=") if "=" in item else (item, "", "1")
        pairs.append((address.strip(), float(weight)))
    return pairs


def _fake_of(args: argparse.Namespace) -> FakeNeo:
    """The FakeNeo the command line asks for, before any data is added."""
    return FakeNeo(
        seed=args.seed,
        order=args.order,
        latency=args.latency_ms / 1000,
        cap=None if args.no_cap else 500.0,
        members=args.members,
        emails=args.emails,
        billing=not args.no_billing,
        from_inclusive=not args.from_exclusive,
        to_inclusive=not args.to_exclusive,
        page_cap=args.page_cap,
        tie_seconds=args.ties,
        odd_fields=args.odd_fields,
        revise=args.revise,
        revise_after=args.revise_after,
        hide=args.hide,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; print `listening on URL` once ready."""
    args = _parse_args(argv)
    neo = _fake_of(args)
    if args.live_rate > 0:
        neo.start_live(
            args.live_rate,
            args.history,
            args.streams,
            late_fraction=args.late_fraction,
            max_late=args.max_late,
            spike_every=args.live_spike_every or None,
        )
    else:
        now = time.time()
        neo.populate(
            args.streams,
            now - args.history,
            now,
            late_fraction=args.late_fraction,
            max_late=args.max_late,
        )
    if args.dense_ties:
        neo.dense_ties(args.dense_ties, args.dense_seconds)
    stop = threading.Event()
    host, port = args.listen
    with stop_on_signals(stop):
        server = FakeNeoServer(neo, host=host, port=port).start()
        try:
            print(f"listening on {server.url}", flush=True)
            stop.wait()
        finally:
            server.stop()
    return 0
