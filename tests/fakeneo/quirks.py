"""The switches for what Neo's docs leave open: odd field forms, revisions, hidden rows, ties."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from exporter.demo import (
    DEFAULT_PEOPLE,
    NEO_COST_RATE,
    People,
    Placement,
    Stream,
    Traffic,
    cumulative,
    names,
)
from tests.fakeneo.reading import _NUMBER_FIELDS, _is_number

V = TypeVar("V")


# The forms an odd row's fields come in (odd_fields=); each is a bit of _Quirks.odd. An odd row
# has one picked from the seed, and each of the others with _ODD_EXTRA chance.
ODD_KINDS = (
    "model_null",
    "status_null",
    "step_count_null",
    "tool_calls_null",
    "agent_triggers_null",
    "is_byok_string",  # "true" / "false"
    "is_byok_null",
    "numeric_strings",  # counts, timings and money as strings: "12", "0.35"
    "avg_step_latency_unmeasured",  # -1
    "total_execution_unmeasured",  # -1
    "llm_time_unmeasured",  # -1
    "tool_time_unmeasured",  # -1
    "tool_breakdown_keys",  # {"count": 3, "time_ms": 120} instead of {"calls", "duration_ms"}
    "no_tool_call_history",  # the field is left out
)


_ODD = MappingProxyType({kind: 1 << i for i, kind in enumerate(ODD_KINDS)})


_ODD_EXTRA = 0.1


_ODD_NULLS = (
    ("model_null", "model"),
    ("status_null", "status"),
    ("step_count_null", "step_count"),
    ("tool_calls_null", "tool_calls"),
    ("agent_triggers_null", "agent_triggers"),
    ("is_byok_null", "is_byok"),
)


_ODD_UNMEASURED = (
    ("avg_step_latency_unmeasured", "avg_step_latency_ms"),
    ("total_execution_unmeasured", "total_execution_ms"),
    ("llm_time_unmeasured", "llm_time_ms"),
    ("tool_time_unmeasured", "tool_time_ms"),
)


_REVISED_MONEY = (0.5, 0.9)  # a revised stream's first money, as a share of its final money


class _Quirks(NamedTuple):
    """What the switches do to one generated stream (None on a stream they leave alone)."""

    odd: int = 0  # bits of _ODD: the odd forms its fields are served in
    revised_us: int = 0  # served in its first, lower version before this time (0: never)
    factor: float = 1.0  # the first version's money, as a share of the final
    hidden: bool = False  # in Neo's books, never in a listing


def _iso_s(us: int) -> str:
    """Whole seconds (truncated), as with tie_seconds: 2026-11-18T11:06:40Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))


def _first_money(credits: float, llm_cost: float, factor: float) -> tuple[float, float, float]:
    """A revised stream's first (neo_credits, llm_cost, neo_cost), rounded as generated ones."""
    first_llm = round(llm_cost * factor, 6)
    return round(credits * factor, 4), first_llm, round(first_llm * NEO_COST_RATE, 6)


def _make_odd(row: dict[str, Any], odd: int) -> None:
    """Serve a row's fields in the odd forms of the `odd` bits (see ODD_KINDS); money keeps
    its value (as a number or a numeric string)."""
    if odd & _ODD["numeric_strings"]:
        for name in _NUMBER_FIELDS:
            value = row.get(name)
            if _is_number(value):
                row[name] = repr(value) if isinstance(value, float) else str(value)
    if odd & _ODD["is_byok_string"]:
        row["is_byok"] = "true" if row.get("is_byok") is True else "false"
    for kind, name in _ODD_NULLS:
        if odd & _ODD[kind]:
            row[name] = None
    for kind, name in _ODD_UNMEASURED:
        if odd & _ODD[kind]:
            row[name] = -1
    if odd & _ODD["tool_breakdown_keys"] and "tool_breakdown" in row:
        row["tool_breakdown"] = {
            name: {"count": usage["calls"], "time_ms": usage["duration_ms"]}
            for name, usage in row["tool_breakdown"].items()
        }
    if odd & _ODD["no_tool_call_history"]:
        row.pop("tool_call_history", None)


def _odd_bits(rng: random.Random) -> int:
    """An odd row's ODD_KINDS bits: one picked, and each of the others with _ODD_EXTRA chance."""
    bits = 1 << rng.randrange(len(ODD_KINDS))
    for i in range(len(ODD_KINDS)):
        if rng.random() < _ODD_EXTRA:
            bits |= 1 << i
    return bits


def _revisable(stream: Stream) -> bool:
    """Whether a stream can be served with one tool call and some steps less (two or more)."""
    return stream.steps() >= 2 and bool(stream.calls())


def _first_version(row: dict[str, Any], stream: Stream, factor: float) -> None:
    """Make a stream's row its first, lower version: one call and some steps less, its money
    `factor` of the final; the other calls are as they will stay."""
    credits, llm_cost, _ = stream.money()
    row["neo_credits"], row["llm_cost"], row["neo_cost"] = _first_money(credits, llm_cost, factor)
    row["step_count"] -= max(1, row["step_count"] // 5)
    row["tool_calls"] -= 1
    row["tool_time_ms"] -= stream.calls()[-1][1]
    if "tool_call_history" in row:
        last = row["tool_call_history"].pop()
        slot = row["tool_breakdown"][last["tool_name"]]
        slot["calls"] -= 1
        slot["duration_ms"] -= last["duration_ms"]
        if not slot["calls"]:
            del row["tool_breakdown"][last["tool_name"]]


def _burst_size(rng: random.Random) -> int:
    """Tasks started in one second with tie_seconds: mostly a few, sometimes a batch."""
    draw = rng.random()
    if draw < 0.4:
        return 1
    if draw < 0.9:
        return rng.randint(2, 4)
    return rng.randint(5, 30)


class _Bursts:
    """With tie_seconds, tasks start in bursts of 1 to 30 that share a second: a Placement
    for one generation run, drawing from an RNG of its own so the rows are otherwise the same."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._ms = 0
        self._left = 0

    def __call__(self, cursor_ms: int, span_ms: int, start_ms: int, end_ms: int, fit: bool) -> int:
        if self._left > 0 and (not fit or self._ms + span_ms <= end_ms):
            self._left -= 1
            return self._ms
        # This task starts a burst, at the start of its second if that fits.
        burst_ms = cursor_ms - cursor_ms % 1000
        if burst_ms < start_ms:
            burst_ms += 1000
        if fit and burst_ms + span_ms > end_ms:
            burst_ms = cursor_ms
        self._ms, self._left = burst_ms, _burst_size(self._rng) - 1
        return burst_ms


class TieTraffic(Traffic):
    """The demo's generator, with tasks in bursts when tie_seconds is on."""

    def __init__(self, seed: int, people: People, *, ties: bool) -> None:
        super().__init__(seed, people)
        self._ties = ties
        # History's bursts draw from one RNG for the fake's life; a live minute's from its own.
        self._history_rng = random.Random(f"{seed}/ties")

    def placement(self, bucket: int | None) -> Placement | None:
        if not self._ties:
            return None
        if bucket is None:
            return _Bursts(self._history_rng)
        return _Bursts(random.Random(f"{self.seed}/live/{bucket}/ties"))


def team(members: int | None) -> People:
    """The demo's eight members, or `members` of them with Zipf-like shares (--members)."""
    if members is None:
        return DEFAULT_PEOPLE
    if members < 1:
        raise ValueError(f"members must be >= 1, not {members}")
    table = [(f"member{i:04d}@example.com", 1.0 / (i + 1)) for i in range(members)]
    return People(names(table), cumulative(table))


def _shuffled_ties(
    matched: Sequence[V], start: int, stop: int, key: Callable[[V], int], rng: random.Random
) -> list[V]:
    """matched[start:stop], with each run of equal keys it touches in a random order.

    A run that crosses the page's edges is shuffled whole before it is cut, so that which of
    its rows fall in this page changes from request to request. The work is the page and the
    runs at its edges, never the whole listing.
    """
    stop = min(stop, len(matched))
    if start >= stop:
        return []
    low, high = start, stop
    while low > 0 and key(matched[low - 1]) == key(matched[start]):
        low -= 1
    while high < len(matched) and key(matched[high]) == key(matched[stop - 1]):
        high += 1
    segment = list(matched[low:high])
    run = 0
    for i in range(1, len(segment) + 1):
        if i == len(segment) or key(segment[i]) != key(segment[run]):
            if i - run > 1:
                part = segment[run:i]
                rng.shuffle(part)
                segment[run:i] = part
            run = i
    return segment[start - low : stop - low]
