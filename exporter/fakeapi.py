"""A fake of ProjectDiscovery Neo's usage API, for the demo, the tests and the benchmarks.

`FakeNeo` holds seeded, realistic usage data and answers the API's requests; `FakeNeoServer`
serves it over HTTP on loopback; `python -m exporter.fakeapi` runs it as a process. It serves
`/api/v1/usage/streams`, `/api/v1/usage/tasks[/{task_id}]`, `/api/v1/usage/summary`,
`/api/v1/user` and `/api/v1/billing/credits` as described in shared/neo-usage-openapi.yaml,
injects faults (error statuses, resets, timeouts, slow or truncated bodies, bad JSON, endless
paging, wrong totals), and computes the ground truth (`FakeNeo.truth`) straight from the rows it
serves, so that tests can compare the exporter's metrics with it. Standard library only.

What the public docs leave open, the fake's default, and the switch (constructor argument /
command-line flag) that makes it behave otherwise, so that tests can exercise both sides:
- How many rows a page holds. Default: what `limit` asks. `page_cap=N` / `--page-cap N`: at
  most N rows a page whatever `limit` asks; `has_more` stays true while rows remain past
  `offset` + the rows served, and `total` is unchanged.
- The direction of `sort=created_at`. Default `order="desc"` (newest first); `order="asc"` /
  `--order asc`: oldest first, on streams and tasks alike. `sort=cost` goes the same way
  (dearest first with desc).
- The order of rows with equal `created_at`, and its precision. Default: milliseconds, and
  equal times keep their insertion order. `tie_seconds=True` / `--ties`: `created_at` is kept
  and served at whole seconds (truncated; `...T11:06:40Z`), the `from`/`to` filters, the
  sorting and the truth's time filters use that truncated time, generated tasks start in
  bursts that share a second, and every list request returns the rows of equal `created_at`
  (streams sorted by created_at, and tasks by their first stream's) in a fresh random order,
  so that naive offset
  paging misses and repeats rows across page boundaries. The shuffle's RNG is seeded from the
  seed and a count of list requests, so a run is reproducible.
- Whether `from` and `to` are inclusive. Default: both are. `from_inclusive=False` /
  `--from-exclusive` and `to_inclusive=False` / `--to-exclusive` make either exclusive.
- Which fields can be null or come in other forms than the docs' example. Default: the
  example's types, with only `avg_step_latency_ms` and `error_message` ever null.
  `odd_fields=share` / `--odd-fields share`: that share of generated streams (picked from the
  seed) come with some of the forms in ODD_KINDS (null `model`, `status`, `step_count`,
  `tool_calls`, `agent_triggers`; `is_byok` as "true"/"false" or null; counts, timings and
  money as numeric strings; -1 for an unmeasured timing; `tool_breakdown` entries with other
  inner keys; no `tool_call_history`). Money always keeps its true value. Task rows built
  from such streams carry the oddities over (model, is_byok and status come from the
  streams; their sums come as strings when a summed stream's did).
- The inner keys of `tool_breakdown` values: `{"calls", "duration_ms"}`, except in odd rows
  (above). `tool_call_history[].timestamp` is epoch milliseconds (no switch: nothing in the
  exporter reads it).
- Whether a row changes after it was first listed. Default: never (unless a test calls
  `replace_row`). `revise=share` / `--revise share` with `revise_after=seconds` /
  `--revise-after 5s`: that share of generated streams (picked from the seed, among those
  with a tool call and two steps) is first served with lower `neo_credits`, `llm_cost`,
  `neo_cost`, `step_count`, `tool_calls` (one tool call less, in `tool_call_history`,
  `tool_breakdown` and `tool_time_ms` alike), then from `revise_after` seconds after it became
  visible with its final, higher figures. Its model, status, is_byok, created_at, stream_id
  and other timings never change. Every endpoint and the truth serve the version of the moment.
- Whether the listings show everything Neo counts. Default: they do. `hide=share` /
  `--hide share`: that share of generated streams (picked from the seed) is never in any
  listing's `data` (a task's sums leave them out; a task whose streams are all hidden is not
  listed) but counts in the streams listing's `total` (pages are filled and `has_more` set
  from the shown rows; the tasks listing's `total` counts listed tasks) and in
  `/usage/summary`, `/billing/credits` and the spending cap. `truth()` is Neo's books and
  includes them; `truth(listed_only=True)` (`/_fake/truth?listed_only=1`) is what the
  listings show.
- When a row shows up: only once its execution has ended (`created_at + total_execution_ms`),
  and `late_fraction` / `--late-fraction` of them up to `max_late` / `--max-late` later.
- A task's `created_at` and `model` are its first stream's, its `status` its latest
  stream's; the tasks endpoint's partial-match filter is named `search` (no switch).
- The status set: `blocked` (newer docs) is served by default; any other value can be served
  with `add_rows` (no switch).
- Error bodies are `{"error": "..."}`; no `Retry-After` unless a fault sets one; a team
  member's token gets 403 on usage and billing; an account on no plan (`billing=False` /
  `--no-billing`) gets 404 on `/billing/credits`; the token is taken from `Authorization:
  Bearer` or `X-Api-Key` alike (no switch).
- Credits reset on the first day of each month (UTC) and expire at the next reset; the
  spending cap's `used` is the BYOK spend (`llm_cost + neo_cost`, USD) since the last reset;
  `/usage/summary` filters `from`/`to` on `created_at` as the listings do (no switch).

The truth follows the repair rules an exact exporter applies (see `_compute_truth`): a row
counts when it has a `stream_id` and a parsable `created_at` and its money fields are absent,
null, or non-negative numbers (numeric strings read as numbers); a `model` or `status` that is
not a non-empty string is `unknown` (status lower-cased); `is_byok` is true/false from a
boolean or a "true"/"false" string and `unknown` otherwise; a count or timing that is null,
negative or not a number is absent for that field only (adds nothing; a histogram gets no
observation); per-tool calls and times come from `tool_call_history` where a row has a
non-empty one, else from the `tool_breakdown` entries that have `calls` and `duration_ms`.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import copy
import hashlib
import ipaddress
import json
import logging
import math
import operator
import random
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from types import FrameType, MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FAULT_KINDS",
    "ODD_KINDS",
    "FakeNeo",
    "FakeNeoServer",
    "Fault",
    "RequestRecord",
    "Truth",
    "main",
]

log = logging.getLogger(__name__)

STREAMS_PATH = "/api/v1/usage/streams"
TASKS_PATH = "/api/v1/usage/tasks"
SUMMARY_PATH = "/api/v1/usage/summary"
USER_PATH = "/api/v1/user"
CREDITS_PATH = "/api/v1/billing/credits"
NEO_COST_RATE = 0.2
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
FAULT_KINDS = frozenset(
    {
        "status",
        "reset",
        "timeout",
        "slow_body",
        "truncated",
        "non_json",
        "bad_shape",
        "endless",
        "wrong_total",
        "short_total",
        "duplicates",
        "insert",
    }
)
INSERTED_PER_FAULT = 5  # rows an `insert` fault adds, created in the minute before now
# Faults answered by the handler without asking FakeNeo for the real response.
_CANNED_FAULTS = frozenset({"status", "reset", "non_json", "bad_shape"})
_ADMIN_EMAIL = "admin@example.com"
_MEMBER_EMAIL = "member@example.com"
_TEAM = "acme"

# The generator's vocabulary. Weights need not sum to 1.
# (model, share, credits per step relative to claude-sonnet-4-5)
MODELS = (
    ("claude-sonnet-4-5", 0.35, 1.0),
    ("claude-opus-4-1", 0.12, 4.0),
    ("gpt-5", 0.2, 1.2),
    ("gpt-4.1-mini", 0.18, 0.2),
    ("gemini-2.5-pro", 0.15, 0.9),
)
STATUSES = (
    ("completed", 0.80),
    ("error", 0.06),
    ("failed", 0.06),
    ("aborted", 0.05),
    ("blocked", 0.03),
)
# (tool, share of calls, median duration ms, log-normal sigma)
TOOLS = (
    ("nuclei", 0.12, 45_000.0, 0.8),
    ("httpx", 0.16, 2_500.0, 0.6),
    ("subfinder", 0.06, 20_000.0, 0.6),
    ("naabu", 0.05, 30_000.0, 0.7),
    ("katana", 0.06, 25_000.0, 0.7),
    ("dnsx", 0.07, 3_000.0, 0.5),
    ("browser", 0.10, 8_000.0, 0.7),
    ("python", 0.15, 1_200.0, 0.8),
    ("shell", 0.13, 900.0, 0.9),
    ("http_request", 0.10, 600.0, 0.7),
)
AGENTS = (
    ("planner", 0.30),
    ("recon", 0.20),
    ("vuln_scanner", 0.20),
    ("exploit_validator", 0.10),
    ("code_reviewer", 0.10),
    ("reporter", 0.10),
)
EMAILS = (
    ("alice@example.com", 0.25),
    ("bob@example.com", 0.18),
    ("carol@example.com", 0.15),
    ("dave@example.com", 0.12),
    ("erin@example.com", 0.10),
    ("frank@example.com", 0.08),
    ("grace@example.com", 0.07),
    ("heidi@example.com", 0.05),
)
ERRORS = (
    "LLM provider returned 529: overloaded",
    "tool nuclei timed out after 600s",
    "context window exceeded",
    "sandbox exited with code 137",
    "rate limited by the LLM provider",
    "invalid API key for the configured provider",
)
_TITLE_VERBS = (
    "Recon of",
    "Vulnerability scan of",
    "Triage findings for",
    "Pentest",
    "Check exposed panels on",
    "Review the login flow of",
)
_TITLE_HOSTS = (
    "app.example.com",
    "api.example.com",
    "shop.example.org",
    "vpn.corp.example",
    "staging.acme.test",
    "grafana.acme.test",
)
_TASK_SIZES = ((1, 0.5), (2, 0.25), (3, 0.15), (4, 0.10))
_BYOK_SHARE = 0.3
_NULL_LATENCY_SHARE = 0.05
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
_MONEY_FIELDS = ("neo_credits", "llm_cost", "neo_cost")
# What a task row sums over its streams; with the average latency, a row's numbers.
_TASK_SUMS = (
    *_MONEY_FIELDS,
    "step_count",
    "tool_calls",
    "agent_triggers",
    "llm_time_ms",
    "tool_time_ms",
    "total_execution_ms",
)
_NUMBER_FIELDS = (*_TASK_SUMS, "avg_step_latency_ms")
_REVISED_MONEY = (0.5, 0.9)  # a revised stream's first money, as a share of its final money
_LIVE_BUCKET = 60  # seconds of live traffic generated at once, from the bucket's own seed


def _names(table: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(row[0] for row in table)


def _cumulative(table: Sequence[tuple[Any, ...]]) -> tuple[float, ...]:
    return tuple(accumulate(row[1] for row in table))


MODEL_NAMES: tuple[str, ...] = _names(MODELS)
STATUS_NAMES: tuple[str, ...] = _names(STATUSES)
TOOL_NAMES: tuple[str, ...] = _names(TOOLS)
AGENT_NAMES: tuple[str, ...] = _names(AGENTS)
_MODEL_CUM = _cumulative(MODELS)
_STATUS_CUM = _cumulative(STATUSES)
_TOOL_CUM = _cumulative(TOOLS)
_AGENT_CUM = _cumulative(AGENTS)
_EMAIL_CUM = _cumulative(EMAILS)
_SIZE_CUM = _cumulative(_TASK_SIZES)
_PRICE = MappingProxyType({name: price for name, _, price in MODELS})
_TOOL_LOGNORMAL = tuple((math.log(median), sigma) for _, _, median, sigma in TOOLS)

# A generated stream keeps what filters and sorting need as tuple fields and the rest packed in
# one bytes blob (about 400 bytes a row in all), so a million rows fit in memory; the JSON
# dict is built only for rows being served. Blob: credits, llm_cost, neo_cost, step_count,
# llm_time_ms, total_execution_ms, avg_step_latency_ms (-1 = null), error index (-1 = null);
# then one trigger count per agent; then (tool index, duration_ms) per tool call, in order.
_SCALARS = struct.Struct("<dddHIIib")
_MONEY = struct.Struct("<ddd")
_AGENT_COUNTS = struct.Struct(f"<{len(AGENTS)}H")
_CALL = struct.Struct("<BI")
_CALLS_AT = _SCALARS.size + _AGENT_COUNTS.size

# Version 4 and RFC 4122 variant bits of a UUID held as a 128-bit integer.
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DURATION_UNITS = MappingProxyType(
    {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
)
_CACHE_SIZE = 8

V = TypeVar("V")


class _Task(NamedTuple):
    task_id: str
    task_title: str
    email: str
    model: str
    is_byok: bool


class _Quirks(NamedTuple):
    """What the switches do to one generated stream (None on a stream they leave alone)."""

    odd: int = 0  # bits of _ODD: the odd forms its fields are served in
    revised_us: int = 0  # served in its first, lower version before this time (0: never)
    factor: float = 1.0  # the first version's money, as a share of the final
    hidden: bool = False  # in Neo's books, never in a listing


class _Gen(NamedTuple):
    """A generated stream (compact; see _stream_row for its JSON)."""

    created_us: int
    visible_us: int
    stream_id: str
    task: _Task
    status: str
    blob: bytes
    quirks: _Quirks | None = None


class _Raw(NamedTuple):
    """A row added as-is (any JSON value), or a generated one changed by replace_row."""

    created_us: int
    visible_us: int
    row: Any
    in_truth: bool
    hidden: bool = False


_Entry = _Gen | _Raw
_E = TypeVar("_E", bound=_Entry)
_created = operator.itemgetter(0)


@dataclass(frozen=True)
class Fault:
    """One injected fault; see FakeNeo.inject."""

    kind: str
    path: str = STREAMS_PATH
    status: int | None = None
    retry_after: float | str | None = None
    delay: float = 0.0


@dataclass
class _PendingFault:
    fault: Fault
    remaining: int


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the fake saw it. The token itself is never kept."""

    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 when the connection was reset without a response
    auth: str  # "bearer", "x-api-key" or "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "auth": self.auth,
        }


StreamKey = tuple[str, str, str]


@dataclass(frozen=True)
class Truth:
    """What an exact exporter counts: sums over the countable visible stream rows.

    Per-stream sums are keyed by (model, status, byok) with byok "true"/"false"/"unknown" and
    `unknown` for a model or status that is not a string (see _compute_truth for the rules);
    times are in seconds; histogram-like fields map a label to (count, sum of seconds).
    `step_latency_seconds` sums avg_step_latency_ms/1000 * step_count over the streams that
    have both, `step_latency_steps` those streams' step_count (their ratio is the mean step
    latency).
    """

    streams: dict[StreamKey, float]
    credits: dict[StreamKey, float]
    llm_cost: dict[StreamKey, float]
    neo_cost: dict[StreamKey, float]
    steps: dict[StreamKey, float]
    tool_calls: dict[StreamKey, float]
    agent_triggers: dict[StreamKey, float]
    llm_time_seconds: dict[StreamKey, float]
    tool_time_seconds: dict[StreamKey, float]
    execution_time_seconds: dict[StreamKey, float]
    step_latency_seconds: dict[StreamKey, float]
    step_latency_steps: dict[StreamKey, float]
    agent_triggers_by_agent: dict[str, float]
    tool_calls_by_tool: dict[str, float]
    tool_time_by_tool_seconds: dict[str, float]
    tool_call_history: dict[str, tuple[int, float]]
    stream_duration: dict[str, tuple[int, float]]
    step_latency: dict[str, tuple[int, float]]

    def to_json(self) -> dict[str, Any]:
        """Tuple-keyed dicts become lists of [*key, value]; (count, sum) pairs become lists."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value: dict[Any, Any] = getattr(self, item.name)
            if value and isinstance(next(iter(value)), tuple):
                out[item.name] = [[*key, number] for key, number in value.items()]
            elif item.name in _TRUTH_KEYED:
                out[item.name] = []
            else:
                out[item.name] = {
                    k: list(v) if isinstance(v, tuple) else v for k, v in value.items()
                }
        return out


# (Truth field, row field, divisor) for the per-stream sums.
_TRUTH_SUMS = (
    ("credits", "neo_credits", 1.0),
    ("llm_cost", "llm_cost", 1.0),
    ("neo_cost", "neo_cost", 1.0),
    ("steps", "step_count", 1.0),
    ("tool_calls", "tool_calls", 1.0),
    ("agent_triggers", "agent_triggers", 1.0),
    ("llm_time_seconds", "llm_time_ms", 1000.0),
    ("tool_time_seconds", "tool_time_ms", 1000.0),
    ("execution_time_seconds", "total_execution_ms", 1000.0),
)
_TRUTH_KEYED = frozenset(
    {
        "streams",
        "step_latency_seconds",
        "step_latency_steps",
        *(name for name, _, _ in _TRUTH_SUMS),
    }
)
_COUNT_FIELDS = frozenset({"step_count", "tool_calls", "agent_triggers"})


class _BadRequest(Exception):
    """A request parameter the real API would reject with 400."""


class _Lru(Generic[V]):
    """A small least-recently-used cache for selections that paging asks for again and again."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = compute()
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True)
class _Selection:
    """A list request's filters, without its page: the key of the cached matching rows."""

    from_us: int | None = None
    to_us: int | None = None
    filters: tuple[tuple[str, str | bool], ...] = ()
    sort: str = "created_at"
    search: str | None = None


@dataclass
class _Live:
    rate_per_hour: float
    started_us: int
    next_bucket: int
    late_fraction: float
    max_late: float
    spike_every: float | None


# --- time -------------------------------------------------------------------------------


def _to_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _parse_iso_us(value: object) -> int | None:
    """ISO 8601 to epoch microseconds (naive = UTC), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _MICROSECOND


def _iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _iso_us(us: int) -> str:
    return _iso_ms(us // 1000)


def _iso_s(us: int) -> str:
    """Whole seconds (truncated), as with tie_seconds: 2026-11-18T11:06:40Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))


def _credit_period(now_us: int) -> tuple[int, int]:
    """The current credit period: from the first of this month to the first of the next (UTC)."""
    now = _EPOCH + timedelta(microseconds=now_us)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return (start - _EPOCH) // _MICROSECOND, (end - _EPOCH) // _MICROSECOND


def _period(created_us: int, group_by: str) -> str:
    day = (_EPOCH + timedelta(microseconds=created_us)).date()
    if group_by == "day":
        return day.isoformat()
    if group_by == "week":  # weeks start on Monday, as ISO 8601 has it
        return (day - timedelta(days=day.weekday())).isoformat()
    return f"{day.year:04d}-{day.month:02d}"


# --- numbers ------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_LARGEST = sys.float_info.max


def _measure(value: object) -> int | float | None:
    """A count, timing or amount as the repair rules read it: a finite number >= 0, or a
    string of one ("12", "0.35"); None (not measured) for null, negatives and anything else."""
    kind = type(value)  # the fast path: what rows hold almost always
    if kind is int or kind is float:  # NaN, infinities and ints past any float fail this
        return value if 0 <= value <= _LARGEST else None  # type: ignore[operator,return-value]
    if isinstance(value, str):
        text = value.strip()
        try:
            return _measure(int(text))
        except ValueError:
            pass
        try:
            return _measure(float(text))
        except ValueError:
            return None
    return None


def _count_of(value: object) -> int | None:
    """A count as the repair rules read it: a whole _measure, else None (absent)."""
    number = _measure(value)
    return None if number is None or not float(number).is_integer() else int(number)


def _amount_of(value: object) -> float:
    number = _measure(value)
    return 0.0 if number is None else float(number)


def _flag(value: object) -> bool | None:
    """A boolean, or a "true"/"false" string, as a bool; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _total(values: Iterable[object]) -> int | float:
    """Sum of the measured values (see _measure): an int when all are ints, else an exact
    float sum."""
    numbers = [n for v in values if (n := _measure(v)) is not None]
    if all(isinstance(v, int) for v in numbers):
        return sum(int(v) for v in numbers)
    return math.fsum(float(v) for v in numbers)


# --- the generator ------------------------------------------------------------------------


def _pick(rng: random.Random, cumulative: tuple[float, ...]) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


def _lognormal(rng: random.Random, mu: float, sigma: float) -> float:
    return math.exp(rng.gauss(mu, sigma))  # as lognormvariate, in half the time


def _uuid(rng: random.Random) -> str:
    """A version 4 UUID from the seeded generator (the same as uuid.UUID(..., version=4))."""
    bits = rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class _Shape(NamedTuple):
    """A stream's work before it is placed in time: what its durations are made of."""

    status: str
    steps: int
    calls: list[tuple[int, int]]  # (tool index, duration ms)
    agents: list[int]
    llm_ms: int
    overhead_ms: int
    total_ms: int

    @classmethod
    def of(
        cls,
        status: str,
        steps: int,
        *,
        calls: list[tuple[int, int]],
        agents: list[int],
        llm_ms: int,
        overhead_ms: int,
    ) -> _Shape:
        total_ms = llm_ms + overhead_ms + sum(duration for _, duration in calls)
        return cls(status, steps, calls, agents, llm_ms, overhead_ms, total_ms)

    def scaled(self, factor: float) -> _Shape:
        return _Shape.of(
            self.status,
            self.steps,
            calls=[(tool, int(duration * factor)) for tool, duration in self.calls],
            agents=self.agents,
            llm_ms=int(self.llm_ms * factor),
            overhead_ms=int(self.overhead_ms * factor),
        )


class _People(NamedTuple):
    """Who creates tasks: emails and their cumulative weights."""

    emails: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def team(cls, members: int | None) -> _People:
        """The default eight members, or `members` of them with Zipf-like shares."""
        if members is None:
            return _DEFAULT_PEOPLE
        if members < 1:
            raise ValueError(f"members must be >= 1, not {members}")
        table = [(f"member{i:04d}@example.com", 1.0 / (i + 1)) for i in range(members)]
        return cls(_names(table), _cumulative(table))


_DEFAULT_PEOPLE = _People(_names(EMAILS), _EMAIL_CUM)


def _draw_task(rng: random.Random, people: _People = _DEFAULT_PEOPLE) -> _Task:
    return _Task(
        task_id=_uuid(rng),
        task_title=sys.intern(f"{rng.choice(_TITLE_VERBS)} {rng.choice(_TITLE_HOSTS)}"),
        email=people.emails[_pick(rng, people.cumulative)],
        model=MODEL_NAMES[_pick(rng, _MODEL_CUM)],
        is_byok=rng.random() < _BYOK_SHARE,
    )


def _draw_shape(rng: random.Random, status: str) -> _Shape:
    steps = min(80, max(1, int(_lognormal(rng, 2.3, 0.6))))
    if status in ("aborted", "blocked"):  # stopped early
        steps = max(1, steps // 3)
    calls = []
    for _ in range(int(steps * rng.uniform(0.3, 1.3))):  # the hot loop of the generator
        tool = bisect.bisect_right(_TOOL_CUM, rng.random() * _TOOL_CUM[-1])
        mu, sigma = _TOOL_LOGNORMAL[tool]
        calls.append((tool, min(600_000, int(math.exp(rng.gauss(mu, sigma))))))
    agents = [0] * len(AGENTS)
    for _ in range(1 + rng.randrange(1 + steps // 4)):
        agents[_pick(rng, _AGENT_CUM)] += 1
    llm_ms = int(steps * _lognormal(rng, math.log(2500.0), 0.4))
    overhead_ms = steps * rng.randint(50, 300)
    return _Shape.of(
        status, steps, calls=calls, agents=agents, llm_ms=llm_ms, overhead_ms=overhead_ms
    )


def _make_stream(
    rng: random.Random,
    task: _Task,
    shape: _Shape,
    *,
    created_ms: int,
    visible_us: int,
    multiplier: float = 1.0,
) -> _Gen:
    stream_id = _uuid(rng)
    base = shape.steps * 0.015 * _PRICE.get(task.model, 1.0) * _lognormal(rng, 0.0, 0.35)
    if task.is_byok:  # paid to the customer's own provider, plus Neo's fee on it
        credits = 0.0
        llm_cost = round(max(0.0005, base * 0.6) * multiplier, 6)
        neo_cost = round(llm_cost * NEO_COST_RATE, 6)
    else:
        credits = round(min(3.0, max(0.05, base)) * multiplier, 4)
        llm_cost = neo_cost = 0.0
    total_ms = shape.total_ms
    avg = -1 if rng.random() < _NULL_LATENCY_SHARE else round(total_ms / shape.steps)
    error = rng.randrange(len(ERRORS)) if shape.status in ("error", "failed") else -1
    blob = b"".join(
        (
            _SCALARS.pack(
                credits, llm_cost, neo_cost, shape.steps, shape.llm_ms, total_ms, avg, error
            ),
            _AGENT_COUNTS.pack(*shape.agents),
            *(_CALL.pack(tool, duration) for tool, duration in shape.calls),
        )
    )
    return _Gen(created_ms * 1000, visible_us, stream_id, task, shape.status, blob)


def _generate(
    rng: random.Random,
    count: int,
    start: float,
    end: float,
    *,
    late_fraction: float,
    max_late: float,
    fit: bool,
    people: _People = _DEFAULT_PEOPLE,
    ties: random.Random | None = None,
) -> list[_Gen]:
    """Streams grouped in tasks of 1-4, created in [start, end].

    With fit, a task's streams all finish by end (durations shrink if the span is too short), so
    that every row not picked as late is visible at end, and the late ones up to max_late after
    end; without it (live traffic), tasks start anywhere in the span and finish when they
    finish, the late ones up to max_late after that. With `ties` (an RNG of its own, so that
    the rows are otherwise the same), tasks start in bursts of 1 to 30 that share a second.
    """
    start_ms = math.ceil(start * 1000)
    end_ms = max(start_ms, math.floor(end * 1000))
    window = end_ms - start_ms
    out: list[_Gen] = []
    burst_ms, burst_left = 0, 0
    while len(out) < count:
        task = _draw_task(rng, people)
        size = min(count - len(out), _TASK_SIZES[_pick(rng, _SIZE_CUM)][0])
        shapes = [_draw_shape(rng, STATUS_NAMES[_pick(rng, _STATUS_CUM)]) for _ in range(size)]
        gaps = [rng.randint(5_000, 600_000) for _ in range(size - 1)] + [0]
        if fit:
            span = sum(shape.total_ms for shape in shapes) + sum(gaps)
            if span > window:
                factor = window / span
                shapes = [shape.scaled(factor) for shape in shapes]
                gaps = [int(gap * factor) for gap in gaps]
                span = sum(shape.total_ms for shape in shapes) + sum(gaps)
            cursor = start_ms + rng.randint(0, window - span)
        else:
            cursor = rng.randint(start_ms, end_ms)
        if ties is not None:
            span = sum(shape.total_ms for shape in shapes) + sum(gaps)
            if burst_left > 0 and (not fit or burst_ms + span <= end_ms):
                cursor, burst_left = burst_ms, burst_left - 1
            else:  # this task starts a burst, at the start of its second if that fits
                burst_ms = cursor - cursor % 1000
                if burst_ms < start_ms:
                    burst_ms += 1000
                if fit and burst_ms + span > end_ms:
                    burst_ms = cursor
                cursor, burst_left = burst_ms, _burst_size(ties) - 1
        for shape, gap in zip(shapes, gaps, strict=True):
            ended_us = (cursor + shape.total_ms) * 1000
            late = rng.random() < late_fraction
            if late:
                # History's late rows show up after the span's end, whenever they were
                # created: as rows still arriving when an exporter starts on it.
                after_us = max(ended_us, end_ms * 1000) if fit else ended_us
                ended_us = after_us + round(rng.uniform(0.1, 1.0) * max_late * 1_000_000)
            out.append(_make_stream(rng, task, shape, created_ms=cursor, visible_us=ended_us))
            cursor += shape.total_ms + gap
    return out


def _burst_size(rng: random.Random) -> int:
    """Tasks started in one second with tie_seconds: mostly a few, sometimes a batch."""
    draw = rng.random()
    if draw < 0.4:
        return 1
    if draw < 0.9:
        return rng.randint(2, 4)
    return rng.randint(5, 30)


def _spike_streams(
    rng: random.Random,
    count: int,
    at_ms: int,
    multiplier: float,
    people: _People = _DEFAULT_PEOPLE,
) -> list[_Gen]:
    """Expensive single-stream tasks, created and visible at at_ms."""
    return [
        _make_stream(
            rng,
            _draw_task(rng, people),
            _draw_shape(rng, "completed"),
            created_ms=at_ms,
            visible_us=at_ms * 1000,
            multiplier=multiplier,
        )
        for _ in range(count)
    ]


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:  # the normal approximation is close enough, and exp(-mean) would underflow
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


# --- rows ---------------------------------------------------------------------------------


class _At(NamedTuple):
    """How rows are served: the moment (for revised rows) and the precision of created_at."""

    now_us: int
    seconds: bool = False  # created_at at whole seconds (tie_seconds)


def _stream_row(gen: _Gen, at: _At, *, detail: bool = True) -> dict[str, Any]:
    """A generated stream as the API sends it at `at`; without detail, less its breakdowns
    and history."""
    credits, llm_cost, neo_cost, steps, llm_ms, total_ms, avg, error = _SCALARS.unpack_from(
        gen.blob
    )
    agents = _AGENT_COUNTS.unpack_from(gen.blob, _SCALARS.size)
    calls = list(_CALL.iter_unpack(memoryview(gen.blob)[_CALLS_AT:]))
    quirks = gen.quirks
    first = quirks is not None and at.now_us < quirks.revised_us
    if first:  # the first, lower version of a revised stream: one call and some steps less
        assert quirks is not None
        credits, llm_cost, neo_cost = _first_money(credits, llm_cost, quirks.factor)
        steps -= max(1, steps // 5)
    task = gen.task
    row = {
        "stream_id": gen.stream_id,
        "task_id": task.task_id,
        "task_title": task.task_title,
        "email": task.email,
        "created_at": _iso_s(gen.created_us) if at.seconds else _iso_us(gen.created_us),
        "model": task.model,
        "status": gen.status,
        "is_byok": task.is_byok,
        "neo_credits": credits,
        "llm_cost": llm_cost,
        "neo_cost": neo_cost,
        "step_count": steps,
        "tool_calls": len(calls) - first,
        "agent_triggers": sum(agents),
        "llm_time_ms": llm_ms,
        "tool_time_ms": sum(duration for _, duration in calls[: len(calls) - first]),
        "total_execution_ms": total_ms,
        "avg_step_latency_ms": None if avg < 0 else avg,
        "error_message": None if error < 0 else ERRORS[error],
        "stream_count": 1,
    }
    if detail:
        row["agent_breakdown"] = {AGENT_NAMES[i]: n for i, n in enumerate(agents) if n}
        row["tool_breakdown"], row["tool_call_history"] = _tool_detail(
            calls, gen.created_us // 1000, llm_ms
        )
        if first:  # its last call is not there yet; the others are as they will stay
            last = row["tool_call_history"].pop()
            slot = row["tool_breakdown"][last["tool_name"]]
            slot["calls"] -= 1
            slot["duration_ms"] -= last["duration_ms"]
            if not slot["calls"]:
                del row["tool_breakdown"][last["tool_name"]]
    if quirks is not None and quirks.odd:
        _make_odd(row, quirks.odd)
    return row


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


def _tool_detail(
    calls: list[tuple[int, int]], created_ms: int, llm_ms: int
) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """tool_breakdown and tool_call_history, from the (tool index, duration) of each call."""
    # Tool calls are spread over the run, with LLM time between them.
    gap = llm_ms // (len(calls) + 1)
    cursor = created_ms
    history: list[dict[str, Any]] = []
    breakdown: dict[str, dict[str, int]] = {}
    for index, (tool, duration) in enumerate(calls):
        name = TOOL_NAMES[tool]
        cursor += gap
        history.append(
            {"tool_name": name, "duration_ms": duration, "index": index, "timestamp": cursor}
        )
        cursor += duration
        slot = breakdown.get(name)
        if slot is None:
            breakdown[name] = {"calls": 1, "duration_ms": duration}
        else:
            slot["calls"] += 1
            slot["duration_ms"] += duration
    return breakdown, history


def _row(entry: _Entry, at: _At, *, detail: bool = True) -> Any:
    return _stream_row(entry, at, detail=detail) if isinstance(entry, _Gen) else entry.row


def _hidden(entry: _Entry) -> bool:
    if isinstance(entry, _Gen):
        return entry.quirks is not None and entry.quirks.hidden
    return entry.hidden


def _attr(entry: _Entry, name: str) -> object:
    """A row field that filters and grouping use, without building the whole row.

    Filters see what is served: a nulled field is None; an is_byok sent as a string filters
    as the boolean it spells.
    """
    if isinstance(entry, _Gen):
        quirks = entry.quirks
        if (
            quirks is not None
            and quirks.odd
            and any(quirks.odd & _ODD[kind] and field == name for kind, field in _ODD_NULLS)
        ):
            return None
        if name == "status":
            return entry.status
        if name == "stream_id":
            return entry.stream_id
        return getattr(entry.task, name, None)
    row = entry.row
    return row.get(name) if isinstance(row, dict) else None


def _costs(entry: _Entry, now_us: int) -> tuple[float, float, float]:
    """(neo_credits, llm_cost, neo_cost) as served at now_us; 0 for what is missing or odd."""
    if isinstance(entry, _Gen):
        credits, llm_cost, neo_cost = _MONEY.unpack_from(entry.blob)
        quirks = entry.quirks
        if quirks is not None and now_us < quirks.revised_us:
            return _first_money(credits, llm_cost, quirks.factor)
        return credits, llm_cost, neo_cost
    row = entry.row
    if not isinstance(row, dict):
        return 0.0, 0.0, 0.0
    return (
        _amount_of(row.get("neo_credits")),
        _amount_of(row.get("llm_cost")),
        _amount_of(row.get("neo_cost")),
    )


def _cost(entry: _Entry, now_us: int) -> float:
    credits, llm_cost, _ = _costs(entry, now_us)
    return credits + llm_cost


def _matches(entry: _Entry, filters: tuple[tuple[str, str | bool], ...]) -> bool:
    for name, wanted in filters:
        got = _attr(entry, name)
        if name == "is_byok":
            if (_flag(got) is True) != wanted:
                return False
        elif got != wanted:
            return False
    return True


def _task_row(task_id: str, streams: list[dict[str, Any]]) -> dict[str, Any]:
    """A task as the API sends it: its streams (in created order) summed and merged.

    Sums skip what is not measured (null, negative, not a number) and read numeric strings
    as numbers; a sum is sent as a string when a summed stream's value was one.
    """
    first, last = streams[0], streams[-1]
    row: dict[str, Any] = {"task_id": task_id}
    for key in ("task_title", "email"):
        if key in first:
            row[key] = first[key]
    row.update(
        created_at=first.get("created_at"),
        model=first.get("model"),
        status=last.get("status"),
        is_byok=first.get("is_byok", False),
    )
    for key in _TASK_SUMS:
        row[key] = _served_sum([stream.get(key) for stream in streams])
    latencies = [s.get("avg_step_latency_ms") for s in streams]
    measured = [n for v in latencies if (n := _measure(v)) is not None]
    latency = round(math.fsum(measured) / len(measured)) if measured else None
    as_text = latency is not None and any(isinstance(v, str) for v in latencies)
    row["avg_step_latency_ms"] = str(latency) if as_text else latency
    row["error_message"] = last.get("error_message")
    row["stream_count"] = len(streams)
    agents: dict[str, list[object]] = {}
    tools: dict[str, dict[str, list[object]]] = {}
    history: list[Any] = []
    for stream in streams:
        for name, triggers in _dict(stream.get("agent_breakdown")).items():
            agents.setdefault(name, []).append(triggers)
        for name, usage in _dict(stream.get("tool_breakdown")).items():
            slot = tools.setdefault(name, {})
            for inner, value in _dict(usage).items():  # whatever its keys are, each is summed
                slot.setdefault(inner, []).append(value)
        calls = stream.get("tool_call_history")
        history.extend(calls if isinstance(calls, list) else ())
    row["agent_breakdown"] = {name: _total(counts) for name, counts in agents.items()}
    row["tool_breakdown"] = {
        name: {inner: _total(values) for inner, values in slot.items()}
        for name, slot in tools.items()
    }
    # One numbering for the whole task, in the order the calls happened.
    row["tool_call_history"] = [
        {**call, "index": i} if isinstance(call, dict) else call for i, call in enumerate(history)
    ]
    return row


def _served_sum(values: list[object]) -> int | float | str:
    total = _total(values)
    if any(isinstance(v, str) for v in values):
        return repr(total) if isinstance(total, float) else str(total)
    return total


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- ground truth -------------------------------------------------------------------------


UNKNOWN = "unknown"  # the label value of a model, status or is_byok that is not usable


def _countable(row: object) -> bool:
    """Whether a row is one an exporter must count (the truth skips the others): an object
    with a `stream_id` and a parsable `created_at`. Everything else in it is repaired field
    by field; money that is negative or not a number is absent (0) for that field only."""
    if not isinstance(row, dict):
        return False
    stream_id = row.get("stream_id")
    return (
        isinstance(stream_id, str)
        and bool(stream_id)
        and _parse_iso_us(row.get("created_at")) is not None
    )


def _label_of(value: object) -> str:
    return value.strip() if isinstance(value, str) and value.strip() else UNKNOWN


def _byok_of(value: object) -> str:
    flag = _flag(value)
    return UNKNOWN if flag is None else "true" if flag else "false"


def _tool_usage(row: dict[str, Any]) -> tuple[dict[str, tuple[int, int | float]], list[Any]]:
    """A row's per-tool (calls, duration ms), and the history entries that count.

    From `tool_call_history` where the row has a non-empty one (its entries with a tool name
    and a duration); otherwise from the `tool_breakdown` entries with `calls` and
    `duration_ms` (an entry without them counts nothing).
    """
    usage: dict[str, tuple[int, int | float]] = {}
    history = row.get("tool_call_history")
    if isinstance(history, list) and history:
        calls = []
        for call in history:
            if not isinstance(call, dict):
                continue
            tool, duration = call.get("tool_name"), _measure(call.get("duration_ms"))
            if isinstance(tool, str) and tool and duration is not None:
                calls.append((tool, duration))
                count, total = usage.get(tool, (0, 0))
                usage[tool] = (count + 1, total + duration)
        return usage, calls
    for tool, entry in _dict(row.get("tool_breakdown")).items():
        calls_of = _count_of(_dict(entry).get("calls"))
        time_of = _measure(_dict(entry).get("duration_ms"))
        if calls_of is not None and time_of is not None:
            count, total = usage.get(tool, (0, 0))
            usage[tool] = (count + calls_of, total + time_of)
    return usage, []


def _compute_truth(rows: Iterable[dict[str, Any]]) -> Truth:
    """Sums over countable rows (see _countable), under the repair rules an exact exporter
    applies: a `model` or `status` that is not a non-empty string is `unknown` (status
    lower-cased); `is_byok` from a boolean or a "true"/"false" string, else `unknown`;
    numeric strings are numbers; a count or timing that is null, negative or not a number is
    absent for that field only (adds 0; a histogram gets no observation); per-tool figures as
    in _tool_usage."""
    sums: dict[str, dict[StreamKey, list[float]]] = defaultdict(lambda: defaultdict(list))
    by_label: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        model = _label_of(row.get("model"))
        key = (model, _label_of(row.get("status")).lower(), _byok_of(row.get("is_byok")))
        sums["streams"][key].append(1.0)
        for name, field, divisor in _TRUTH_SUMS:
            value = row.get(field)
            number = _count_of(value) if field in _COUNT_FIELDS else _measure(value)
            sums[name][key].append(0.0 if number is None else number / divisor)
        latency = _measure(row.get("avg_step_latency_ms"))
        steps = _count_of(row.get("step_count"))
        if latency is not None and steps is not None:
            sums["step_latency_seconds"][key].append(latency * steps / 1000)
            sums["step_latency_steps"][key].append(float(steps))
        else:  # the key is there all the same, as in every other sum
            sums["step_latency_seconds"][key].append(0.0)
            sums["step_latency_steps"][key].append(0.0)
        for agent, triggers in _dict(row.get("agent_breakdown")).items():
            count = _count_of(triggers)
            if count is not None:
                by_label["agent_triggers_by_agent"][agent].append(float(count))
        usage, calls = _tool_usage(row)
        for tool, (count, duration) in usage.items():
            by_label["tool_calls_by_tool"][tool].append(float(count))
            by_label["tool_time_by_tool_seconds"][tool].append(duration / 1000)
        for tool, duration in calls:
            by_label["tool_call_history"][tool].append(duration / 1000)
        execution = _measure(row.get("total_execution_ms"))
        if execution is not None:
            by_label["stream_duration"][model].append(execution / 1000)
        if latency is not None:
            by_label["step_latency"][model].append(latency / 1000)

    def summed(values: Mapping[Any, list[float]]) -> dict[Any, float]:
        return {k: math.fsum(v) for k, v in values.items()}

    def histogram(name: str) -> dict[str, tuple[int, float]]:
        return {k: (len(v), math.fsum(v)) for k, v in by_label[name].items()}

    return Truth(
        **{name: summed(sums[name]) for name in _TRUTH_KEYED},
        agent_triggers_by_agent=summed(by_label["agent_triggers_by_agent"]),
        tool_calls_by_tool=summed(by_label["tool_calls_by_tool"]),
        tool_time_by_tool_seconds=summed(by_label["tool_time_by_tool_seconds"]),
        tool_call_history=histogram("tool_call_history"),
        stream_duration=histogram("stream_duration"),
        step_latency=histogram("step_latency"),
    )


# --- request parameters -------------------------------------------------------------------


def _int_param(
    query: Mapping[str, str], name: str, default: int, low: int, high: int | None
) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < low or (high and int(text) > high):
        bound = f"{low}..{high}" if high else f">= {low}"
        raise _BadRequest(f"{name} must be an integer {bound}")
    return int(text)


def _time_param(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    parsed = _parse_iso_us(text)
    if parsed is None:
        raise _BadRequest(f"{name} must be an ISO 8601 date-time")
    return parsed


def _bool_param(query: Mapping[str, str], name: str) -> bool | None:
    text = query.get(name)
    if text is None:
        return None
    if text.lower() not in ("true", "false"):
        raise _BadRequest(f"{name} must be true or false")
    return text.lower() == "true"


def _parse_list(query: Mapping[str, str], *, tasks: bool) -> tuple[_Selection, int, int]:
    """A list request's selection, limit and offset; empty parameters count as absent."""
    query = {k: v for k, v in query.items() if v != ""}
    limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(query, "offset", 0, 0, None)
    names = ("task_id", "status", "model", "email") + (() if tasks else ("stream_id",))
    filters: list[tuple[str, str | bool]] = [(n, query[n]) for n in names if n in query]
    byok = _bool_param(query, "is_byok")
    if byok is not None:
        filters.append(("is_byok", byok))
    sort = "created_at" if tasks else query.get("sort", "created_at")
    if sort not in ("created_at", "cost"):
        raise _BadRequest("sort must be created_at or cost")
    search = query.get("search", "").lower() or None if tasks else None
    selection = _Selection(
        _time_param(query, "from"), _time_param(query, "to"), tuple(filters), sort, search
    )
    return selection, limit, offset


def _first_values(query_string: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}


def _time_arg(text: str | None) -> float | None:
    """A control endpoint's time: epoch seconds or ISO 8601."""
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return float(text)
    parsed = _parse_iso_us(text)
    if parsed is None:
        raise ValueError(f"not a time: {text!r}")
    return parsed / 1_000_000


# --- the fake API -------------------------------------------------------------------------


class FakeNeo:
    """Neo's usage data and the API's behaviour, without HTTP (see FakeNeoServer for that).

    Thread-safe: every method takes one lock. All "now" decisions use `clock`.

    The switches for what the docs leave open (see the module docstring; the defaults are the
    fake's guesses): `order`, `from_inclusive`, `to_inclusive`, `page_cap` (rows a page holds
    at most), `tie_seconds` (created_at at whole seconds, tasks in bursts, ties shuffled per
    request), `odd_fields` (share of streams with odd field forms), `revise` and
    `revise_after` (share of streams served lower first, and for how many seconds after they
    become visible), `hide` (share of streams in Neo's books but never listed). Which streams
    a share picks depends only on the seed and the stream's id.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
        order: str = "desc",
        admin_tokens: Iterable[str] = ("fake-admin-token",),
        member_tokens: Iterable[str] = ("fake-member-token",),
        latency: float = 0.0,
        to_inclusive: bool = True,
        cap: float | None = 500.0,
        issued_credits: float = 25_000.0,
        members: int | None = None,
        billing: bool = True,
        from_inclusive: bool = True,
        page_cap: int | None = None,
        tie_seconds: bool = False,
        odd_fields: float = 0.0,
        revise: float = 0.0,
        revise_after: float = 5.0,
        hide: float = 0.0,
    ) -> None:
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be asc or desc, not {order!r}")
        if page_cap is not None and page_cap < 1:
            raise ValueError(f"page_cap must be >= 1 or None, not {page_cap}")
        for name, share in (("odd_fields", odd_fields), ("revise", revise), ("hide", hide)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} is a share: 0 <= {name} <= 1, not {share}")
        if revise_after < 0:
            raise ValueError(f"revise_after must be >= 0, not {revise_after}")
        self._lock = threading.RLock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._clock = clock
        self._order = order
        self._to_inclusive = to_inclusive
        self._from_inclusive = from_inclusive
        self._page_cap = page_cap
        self._ties = tie_seconds
        # Tie bursts come from an RNG of their own, so that the rows are otherwise the same.
        self._ties_rng = random.Random(f"{seed}/ties") if tie_seconds else None
        self._odd_fields = odd_fields
        self._revise = revise
        self._revise_after_us = _to_us(revise_after)
        self._hide = hide
        self._list_requests = 0  # seeds each list request's shuffle of ties
        self._admin = frozenset(admin_tokens)
        self._tokens = self._admin | frozenset(member_tokens)
        self._cap = cap
        self._issued = issued_credits
        # members: how many team members create tasks (None: the eight of EMAILS).
        self._people = _People.team(members)
        # billing=False: the account is on no plan, and /billing/credits answers 404.
        self._billing = billing
        self.latency = latency
        self._rows: list[_Entry] = []  # sorted by created_at; ties in insertion order
        self._visible: list[int] = []  # every row's visible_us, sorted
        self._revisions: list[int] = []  # when each revised row gets its final version, sorted
        self._version = 0
        self._cache: _Lru[Any] = _Lru(_CACHE_SIZE)
        self._faults: list[_PendingFault] = []
        self._log: list[RequestRecord] = []
        self._live: _Live | None = None

    @property
    def order(self) -> str:
        return self._order

    @property
    def to_inclusive(self) -> bool:
        return self._to_inclusive

    def _at(self, now_us: int) -> _At:
        return _At(now_us, self._ties)

    def _now_at(self) -> _At:
        return self._at(_to_us(self._clock()))

    # --- data -------------------------------------------------------------------------

    def generate(
        self,
        count: int,
        start: float,
        end: float,
        *,
        late_fraction: float = 0.1,
        max_late: float = 3600.0,
    ) -> list[dict[str, Any]]:
        """Add `count` realistic streams created in [start, end]; return them as Neo holds
        them now (hidden ones too; revised ones in their version of the moment).

        A stream becomes visible when its execution ends, which is by `end` except for
        `late_fraction` of them, which show up to `max_late` seconds after `end`.
        """
        with self._lock:
            at = self._now_at()
            return [
                _stream_row(g, at)
                for g in self._add_generated(count, start, end, late_fraction, max_late)
            ]

    def populate(
        self,
        count: int,
        start: float,
        end: float,
        *,
        late_fraction: float = 0.1,
        max_late: float = 3600.0,
    ) -> int:
        """Like generate, for large counts: returns only how many rows were added."""
        with self._lock:
            return len(self._add_generated(count, start, end, late_fraction, max_late))

    def add_rows(
        self, rows: Iterable[Any], visible_at: float | None = None, *, in_truth: bool = True
    ) -> None:
        """Add rows served verbatim (any JSON value, malformed ones too), visible from visible_at.

        A row without a parseable created_at is filtered as if created at visible_at. Rows that
        are not well-formed never count in the truth; in_truth=False leaves out the others too.
        """
        with self._lock:
            visible_us = _to_us(self._clock() if visible_at is None else visible_at)
            entries: list[_Entry] = []
            for row in rows:
                created = _parse_iso_us(row.get("created_at")) if isinstance(row, dict) else None
                entries.append(
                    _Raw(
                        visible_us if created is None else created,
                        visible_us,
                        copy.deepcopy(row),
                        in_truth,
                    )
                )
            self._insert(entries)

    def replace_row(self, stream_id: str, **changes: Any) -> dict[str, Any]:
        """Change a served stream after the fact; returns the new row. KeyError if unknown.

        The row is frozen as it is served now, with the changes: a revised stream is not
        revised any more; a hidden one stays hidden.
        """
        with self._lock:
            index = next(
                (i for i, e in enumerate(self._rows) if _attr(e, "stream_id") == stream_id), None
            )
            if index is None:
                raise KeyError(stream_id)
            entry = self._rows[index]
            old = _row(entry, self._now_at())
            row = {**old, **changes}
            in_truth = entry.in_truth if isinstance(entry, _Raw) else True
            created = _parse_iso_us(row.get("created_at"))
            created_us = entry.created_us if created is None else self._key_us(created)
            self._rows[index] = _Raw(
                created_us, entry.visible_us, row, in_truth, hidden=_hidden(entry)
            )
            if created_us != entry.created_us:
                self._rows.sort(key=_created)
            self._changed()
            return copy.deepcopy(row)

    def spike(
        self, count: int, *, multiplier: float = 20.0, at: float | None = None
    ) -> list[dict[str, Any]]:
        """Add `count` expensive streams created and visible at `at` (default now)."""
        with self._lock:
            at_ms = math.floor((self._clock() if at is None else at) * 1000)
            streams = self._insert(
                _spike_streams(self._rng, count, at_ms, multiplier, self._people)
            )
            now = self._now_at()
            return [_stream_row(g, now) for g in streams]

    def start_live(
        self,
        rate_per_hour: float,
        history: float,
        history_count: int,
        *,
        late_fraction: float = 0.1,
        max_late: float = 3600.0,
        spike_every: float | None = 1800.0,
    ) -> None:
        """Generate history once, then new streams as the clock moves, at rate_per_hour.

        New traffic is generated per minute of clock time from a seed derived from the fake's
        seed and that minute, so it does not depend on when requests come. Every spike_every
        seconds (aligned to the epoch; None for never) a burst of expensive streams comes too.
        """
        with self._lock:
            now = self._clock()
            self._add_generated(history_count, now - history, now, late_fraction, max_late)
            self._live = _Live(
                rate_per_hour,
                _to_us(now),
                math.floor(now / _LIVE_BUCKET),
                late_fraction,
                max_late,
                spike_every,
            )

    def set_cap(self, cap: float | None) -> None:
        """Change the user's spending cap in USD (None: no cap applies)."""
        with self._lock:
            self._cap = cap

    # --- faults and the log ------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        path: str = STREAMS_PATH,
        status: int | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make the next `count` requests whose path starts with `path` fail as `kind`.

        Kinds: status (answer `status`, default 503, with Retry-After if given), reset (close
        without answering), timeout (answer after `delay` s), slow_body (spread the body over
        `delay` s), truncated (close halfway through the announced body), non_json (HTML),
        bad_shape (`{"data": "oops"}`), endless (has_more stays true, rows repeat),
        wrong_total (total far too high), short_total (total half the truth), duplicates (the
        page also repeats the half page before it), insert (5 new streams are created just
        before answering, as if they arrived while the client pages). Faults are used in the
        order they were injected.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if count < 1 or delay < 0:
            raise ValueError("count must be >= 1 and delay >= 0")
        if kind == "status":
            status = 503 if status is None else status
            if not 100 <= status <= 599:
                raise ValueError(f"not an HTTP status: {status}")
        fault = Fault(kind, path, status, retry_after, delay)
        with self._lock:
            self._faults.append(_PendingFault(fault, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        """Use up one pending fault matching path, if any (the HTTP server calls this)."""
        with self._lock:
            for pending in self._faults:
                if path.startswith(pending.fault.path):
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._faults.remove(pending)
                    return pending.fault
            return None

    @property
    def requests_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def log_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # --- ground truth -------------------------------------------------------------------

    def truth(
        self,
        start: float | None = None,
        end: float | None = None,
        *,
        now: float | None = None,
        listed_only: bool = False,
    ) -> Truth:
        """Sums over the countable streams visible at `now` created in [start, end], as served
        at `now`: Neo's books, hidden streams included; with listed_only, only the streams
        the listings show. (With tie_seconds, created_at is the truncated time.)"""
        with self._lock:
            at = self._clock() if now is None else now
            self._advance_live(at)
            view = self._at(_to_us(at))
            entries = [
                e
                for e in self._rows
                if e.visible_us <= view.now_us
                and (isinstance(e, _Gen) or e.in_truth)
                and not (listed_only and _hidden(e))
                and (start is None or e.created_us / 1_000_000 >= start)
                and (end is None or e.created_us / 1_000_000 <= end)
            ]
        # Entries never change (replace_row swaps in a new one), so this needs no lock.
        rows = (_row(e, view) for e in entries)
        return _compute_truth(row for row in rows if _countable(row))

    # --- requests -----------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        token: str | None,
        *,
        fault: str | None = None,
    ) -> tuple[int, Any]:
        """Answer one API request: (status, JSON value). `fault` may be endless or wrong_total."""
        with self._lock:
            now = self._clock()
            self._advance_live(now)
            now_us = _to_us(now)
            refusal = self._refusal(method, path, token)
            if refusal is not None:
                return refusal
            if path == USER_PATH:
                return 200, self._user(token in self._admin, now_us)
            if fault == "insert" and path == STREAMS_PATH:
                self._add_generated(INSERTED_PER_FAULT, now - 60.0, now, 0.0, 0.0)
            route = self._route(path)
            if route is None:
                return 404, {"error": "not found"}
            try:
                return route(now_us, query, fault)
            except _BadRequest as exc:
                return 400, {"error": str(exc)}

    def _refusal(self, method: str, path: str, token: str | None) -> tuple[int, Any] | None:
        if token is None or token not in self._tokens:
            return 401, {"error": "unauthorized"}
        if method != "GET":
            return 405, {"error": f"{method} not allowed"}
        if path != USER_PATH and token not in self._admin:
            return 403, {"error": "forbidden: team members and viewers cannot read usage"}
        return None

    def _route(
        self, path: str
    ) -> Callable[[int, Mapping[str, str], str | None], tuple[int, Any]] | None:
        fixed = {
            STREAMS_PATH: self._list_streams,
            TASKS_PATH: self._list_tasks,
            SUMMARY_PATH: self._summary,
            CREDITS_PATH: self._credits,
        }
        if path in fixed:
            return fixed[path]
        prefix = TASKS_PATH + "/"
        if path.startswith(prefix) and "/" not in path[len(prefix) :] and path != prefix:
            task_id = path[len(prefix) :]
            return lambda now_us, query, fault: self._one_task(now_us, task_id)
        return None

    def _list_streams(
        self, now_us: int, query: Mapping[str, str], fault: str | None
    ) -> tuple[int, Any]:
        selection, limit, offset = _parse_list(query, tasks=False)
        # Revisions change costs, and so the order of sort=cost.
        revised = bisect.bisect_right(self._revisions, now_us)
        key = ("streams", self._version, self._visible_count(now_us), revised, selection)
        shown, hidden = self._cache.get(key, lambda: self._select_streams(now_us, selection))
        at = self._at(now_us)
        return 200, self._page(
            shown,
            limit,
            offset,
            fault,
            lambda entry: _row(entry, at),
            hidden=hidden,
            tie_key=_created if selection.sort == "created_at" else None,
        )

    def _list_tasks(
        self, now_us: int, query: Mapping[str, str], fault: str | None
    ) -> tuple[int, Any]:
        selection, limit, offset = _parse_list(query, tasks=True)
        key = ("tasks", self._version, self._visible_count(now_us), selection)
        matched = self._cache.get(key, lambda: self._select_tasks(now_us, selection))
        at = self._at(now_us)
        return 200, self._page(
            matched,
            limit,
            offset,
            fault,
            lambda task: self._task_of(task, at),
            tie_key=lambda task: task[1][0].created_us,
        )

    def _one_task(self, now_us: int, task_id: str) -> tuple[int, Any]:
        streams = self._task_index(now_us).get(task_id)
        if streams is None:
            return 404, {"error": "task not found"}
        return 200, self._task_of((task_id, streams), self._at(now_us))

    @staticmethod
    def _task_of(task: tuple[str, list[_Entry]], at: _At) -> dict[str, Any]:
        return _task_row(task[0], [_row(e, at) for e in task[1]])

    def _page(
        self,
        matched: Sequence[V],
        limit: int,
        offset: int,
        fault: str | None,
        render: Callable[[V], Any],
        *,
        hidden: int = 0,
        tie_key: Callable[[V], int] | None = None,
    ) -> dict[str, Any]:
        """One page of the shown rows `matched`; `total` counts `hidden` ones too.

        With page_cap, a page holds at most that many rows whatever `limit` asks; with
        tie_seconds (and a tie_key, the created_at sort), rows of equal key come in an order
        drawn afresh for this request.
        """
        self._list_requests += 1
        total = len(matched)
        if fault == "endless":  # past the end it starts over, and never says it is done
            offset = offset % total if total else 0
        size = limit if self._page_cap is None else min(limit, self._page_cap)
        start = max(0, offset - size // 2) if fault == "duplicates" else offset
        stop = offset + size
        items: Sequence[V]
        if self._ties and tie_key is not None:
            rng = random.Random(f"{self._seed}/order/{self._list_requests}")
            items = _shuffled_ties(matched, start, stop, tie_key, rng)
        else:
            items = matched[start:stop]
        data = [render(item) for item in items]
        books = total + hidden
        shown = books
        if fault == "wrong_total":
            shown = books * 10 + 1000
        elif fault == "short_total":
            shown = books // 2
        return {"data": data, "has_more": fault == "endless" or stop < total, "total": shown}

    def _summary(self, now_us: int, query: Mapping[str, str], fault: str | None) -> tuple[int, Any]:
        query = {k: v for k, v in query.items() if v != ""}
        group_by = query.get("group_by")
        if group_by not in (None, "day", "week", "month"):
            raise _BadRequest("group_by must be day, week or month")
        window = self._window(now_us, _time_param(query, "from"), _time_param(query, "to"))
        at = self._at(now_us)
        rows = [
            (e.created_us, r) for e in window if isinstance(r := _row(e, at, detail=False), dict)
        ]
        reset_us, _ = _credit_period(now_us)
        summary = _summarize(rows, group_by, reset_us)
        credits = self._credit_state(now_us)
        summary.update(
            last_credit_reset=_iso_us(reset_us),
            total_available_neo_credits=credits["available_credits"],
            total_issued_neo_credits=credits["issued_credits"],
            neo_credits_expires_at=credits["expires_at"],
            neo_credits_is_expired=credits["is_expired"],
        )
        return 200, summary

    def _credits(self, now_us: int, query: Mapping[str, str], fault: str | None) -> tuple[int, Any]:
        if not self._billing:
            return 404, {"error": "no billing plan for this account"}
        return 200, self._credit_state(now_us)

    def _credit_state(self, now_us: int) -> dict[str, Any]:
        reset_us, expires_us = _credit_period(now_us)
        used = math.fsum(_costs(e, now_us)[0] for e in self._window(now_us, reset_us, None))
        return {
            "available_credits": max(0.0, self._issued - used),
            "issued_credits": self._issued,
            "used_credits": used,
            "expires_at": _iso_us(expires_us),
            "is_expired": now_us >= expires_us,
        }

    def _user(self, admin: bool, now_us: int) -> dict[str, Any]:
        cap: dict[str, float] | None = None
        if self._cap is not None:
            reset_us, _ = _credit_period(now_us)
            used = math.fsum(
                sum(_costs(e, now_us)[1:])
                for e in self._window(now_us, reset_us, None)
                if _flag(_attr(e, "is_byok")) is True
            )
            cap = {"limit": self._cap, "used": used, "remaining": max(0.0, self._cap - used)}
        return {
            "email": _ADMIN_EMAIL if admin else _MEMBER_EMAIL,
            "team": _TEAM,
            "neo_cost_rate": NEO_COST_RATE,
            "cap": cap,
        }

    # --- selections ---------------------------------------------------------------------

    def _visible_count(self, now_us: int) -> int:
        """How many rows are visible; with the data version it says which ones."""
        return bisect.bisect_right(self._visible, now_us)

    def _window(self, now_us: int, from_us: int | None, to_us: int | None) -> list[_Entry]:
        """Visible rows created in [from, to] (either exclusive if so configured), oldest
        first; hidden rows too."""
        if from_us is None:
            low = 0
        elif self._from_inclusive:
            low = bisect.bisect_left(self._rows, from_us, key=_created)
        else:
            low = bisect.bisect_right(self._rows, from_us, key=_created)
        if to_us is None:
            high = len(self._rows)
        elif self._to_inclusive:
            high = bisect.bisect_right(self._rows, to_us, key=_created)
        else:
            high = bisect.bisect_left(self._rows, to_us, key=_created)
        return [e for e in self._rows[low:high] if e.visible_us <= now_us]

    def _select_streams(self, now_us: int, selection: _Selection) -> tuple[list[_Entry], int]:
        """The shown streams that match, in the listing's order, and how many hidden ones do."""
        window = self._window(now_us, selection.from_us, selection.to_us)
        matched = [e for e in window if _matches(e, selection.filters)]
        shown = [e for e in matched if not _hidden(e)]
        hidden = len(matched) - len(shown)
        newest_first = self._order == "desc"
        if selection.sort == "cost":
            if newest_first:  # ties keep the created_at order of the same direction
                shown.reverse()
            return sorted(shown, key=lambda e: _cost(e, now_us), reverse=newest_first), hidden
        if newest_first:
            shown.reverse()
        return shown, hidden

    def _task_index(self, now_us: int) -> dict[str, list[_Entry]]:
        """Visible shown streams by task, tasks ordered by their first stream's created_at."""

        def build() -> dict[str, list[_Entry]]:
            tasks: dict[str, list[_Entry]] = {}
            for entry in self._rows:
                task_id = _attr(entry, "task_id")
                if entry.visible_us <= now_us and isinstance(task_id, str) and not _hidden(entry):
                    tasks.setdefault(task_id, []).append(entry)
            return tasks

        key = ("task-index", self._version, self._visible_count(now_us))
        index: dict[str, list[_Entry]] = self._cache.get(key, build)
        return index

    def _select_tasks(self, now_us: int, selection: _Selection) -> list[tuple[str, list[_Entry]]]:
        """Tasks whose first stream is in the span and that match the filters, in order.

        A task's status is its latest stream's; its other fields its first stream's.
        """
        on_last = tuple(f for f in selection.filters if f[0] == "status")
        on_first = tuple(f for f in selection.filters if f[0] != "status")
        low, high = selection.from_us, selection.to_us
        matched = []
        for task_id, streams in self._task_index(now_us).items():
            first = streams[0]
            created = first.created_us
            if (
                (low is not None and created < low)
                or (created == low and not self._from_inclusive)
                or (high is not None and created > high)
                or (created == high and not self._to_inclusive)
                or not _matches(first, on_first)
                or not _matches(streams[-1], on_last)
            ):
                continue
            if selection.search is not None:
                email = _attr(first, "email")
                if not any(
                    selection.search in text.lower()
                    for text in (task_id, email)
                    if isinstance(text, str)
                ):
                    continue
            matched.append((task_id, streams))
        if self._order == "desc":
            matched.reverse()
        return matched

    # --- storage ------------------------------------------------------------------------

    def _add_generated(
        self, count: int, start: float, end: float, late_fraction: float, max_late: float
    ) -> list[_Gen]:
        if count < 0 or end < start or not 0.0 <= late_fraction <= 1.0 or max_late < 0:
            raise ValueError(
                "need count >= 0, start <= end, 0 <= late_fraction <= 1, max_late >= 0"
            )
        streams = _generate(
            self._rng,
            count,
            start,
            end,
            late_fraction=late_fraction,
            max_late=max_late,
            fit=True,
            people=self._people,
            ties=self._ties_rng,
        )
        return self._insert(streams)

    def _insert(self, entries: Iterable[_E]) -> list[_E]:
        """Store entries, as the switches have them; returns them in created_at order."""
        ordered = sorted(map(self._switched, entries), key=_created)
        if not ordered:
            return ordered
        append_only = not self._rows or ordered[0].created_us >= self._rows[-1].created_us
        self._rows.extend(ordered)
        if not append_only:
            self._rows.sort(key=_created)  # stable: equal created_at keeps insertion order
        self._visible.extend(e.visible_us for e in ordered)
        self._visible.sort()
        revisions = [
            e.quirks.revised_us
            for e in ordered
            if isinstance(e, _Gen) and e.quirks is not None and e.quirks.revised_us
        ]
        if revisions:
            self._revisions.extend(revisions)
            self._revisions.sort()
        self._changed()
        return ordered

    def _key_us(self, created_us: int) -> int:
        """The created time rows are filtered and sorted by: whole seconds with tie_seconds."""
        return created_us - created_us % 1_000_000 if self._ties else created_us

    def _switched(self, entry: _E) -> _E:
        """An entry as the switches have it: its time truncated with tie_seconds, and a
        generated stream's quirks (odd fields, revision, hidden) drawn from the seed."""
        switched: _Entry = entry
        if self._ties:
            switched = switched._replace(created_us=self._key_us(entry.created_us))
        if isinstance(switched, _Gen) and (self._odd_fields or self._revise or self._hide):
            switched = switched._replace(quirks=self._quirks_of(switched))
        return cast(_E, switched)

    def _quirks_of(self, gen: _Gen) -> _Quirks | None:
        """Which of the shares pick this stream: independent draws from the seed and its id."""
        digest = hashlib.blake2b(f"{self._seed}/{gen.stream_id}".encode(), digest_size=32)
        raw = digest.digest()
        draws = [int.from_bytes(raw[i : i + 8], "little") / 2**64 for i in range(0, 32, 8)]
        hidden = draws[0] < self._hide
        odd = _odd_bits(random.Random(raw)) if draws[1] < self._odd_fields else 0
        revised_us = 0
        if draws[2] < self._revise and _revisable(gen.blob):
            revised_us = gen.visible_us + self._revise_after_us
        if not (hidden or odd or revised_us):
            return None
        low, high = _REVISED_MONEY
        return _Quirks(odd, revised_us, low + (high - low) * draws[3], hidden)

    def _changed(self) -> None:
        self._version += 1
        self._cache.clear()

    def _advance_live(self, now: float) -> None:
        """Generate live traffic for every minute bucket that has started by now."""
        live = self._live
        if live is None:
            return
        last = math.floor(now / _LIVE_BUCKET)
        added: list[_Entry] = []
        for bucket in range(live.next_bucket, last + 1):
            rng = random.Random(f"{self._seed}/live/{bucket}")
            start = bucket * _LIVE_BUCKET
            count = _poisson(rng, live.rate_per_hour * _LIVE_BUCKET / 3600)
            streams = _generate(
                rng,
                count,
                start,
                start + _LIVE_BUCKET,
                late_fraction=live.late_fraction,
                max_late=live.max_late,
                fit=False,
                people=self._people,
                ties=random.Random(f"{self._seed}/live/{bucket}/ties") if self._ties else None,
            )
            every = live.spike_every
            if every and math.floor(start / every) != math.floor((start - _LIVE_BUCKET) / every):
                size = max(3, round(live.rate_per_hour / 40))
                at_ms = start * 1000 + rng.randrange(_LIVE_BUCKET * 1000)
                streams += _spike_streams(rng, size, at_ms, 20.0, self._people)
            added.extend(s for s in streams if s.created_us >= live.started_us)
        live.next_bucket = max(live.next_bucket, last + 1)
        self._insert(added)


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


def _odd_bits(rng: random.Random) -> int:
    """An odd row's ODD_KINDS bits: one picked, and each of the others with _ODD_EXTRA chance."""
    bits = 1 << rng.randrange(len(ODD_KINDS))
    for i in range(len(ODD_KINDS)):
        if rng.random() < _ODD_EXTRA:
            bits |= 1 << i
    return bits


def _revisable(blob: bytes) -> bool:
    """Whether a stream can be served with one tool call and some steps less (two or more)."""
    steps = _SCALARS.unpack_from(blob)[3]
    return steps >= 2 and len(blob) - _CALLS_AT >= _CALL.size


def _summarize(
    rows: Sequence[tuple[int, dict[str, Any]]], group_by: str | None, reset_us: int
) -> dict[str, Any]:
    """The summary's usage fields over stream rows (created_us, row), oldest first."""
    tasks: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for created_us, row in rows:
        task_id = row.get("task_id")
        if isinstance(task_id, str):
            tasks.setdefault(task_id, []).append((created_us, row))
    credits = [(created_us, _amount_of(row.get("neo_credits"))) for created_us, row in rows]
    by_status: dict[str, int] = defaultdict(int)
    email_tasks: dict[str, int] = defaultdict(int)
    for streams in tasks.values():
        by_status[_label_of(streams[-1][1].get("status"))] += 1
        email = streams[0][1].get("email")
        if isinstance(email, str):
            email_tasks[email] += 1
    model_credits: dict[str, list[float]] = defaultdict(list)
    model_tasks: dict[str, set[str]] = defaultdict(set)
    email_credits: dict[str, list[float]] = defaultdict(list)
    for _, row in rows:
        model = _label_of(row.get("model"))
        model_credits[model].append(_amount_of(row.get("neo_credits")))
        if isinstance(row.get("task_id"), str):
            model_tasks[model].add(row["task_id"])
        if isinstance(row.get("email"), str):
            email_credits[row["email"]].append(_amount_of(row.get("neo_credits")))
    byok = [row for _, row in rows if _flag(row.get("is_byok")) is True]
    summary: dict[str, Any] = {
        "total_neo_credits": math.fsum(c for _, c in credits),
        "total_tasks": len(tasks),
        "by_status": dict(by_status),
        "by_model": {
            m: {"tasks": len(model_tasks[m]), "neo_credits": math.fsum(v)}
            for m, v in model_credits.items()
        },
        "by_email": sorted(
            (
                {"email": e, "neo_credits": math.fsum(v), "tasks": email_tasks.get(e, 0)}
                for e, v in email_credits.items()
            ),
            key=lambda item: -item["neo_credits"],
        ),
        "byok": {
            "total_llm_cost": math.fsum(_amount_of(r.get("llm_cost")) for r in byok),
            "total_neo_cost": math.fsum(_amount_of(r.get("neo_cost")) for r in byok),
            "total_streams": len(byok),
            "total_tasks": len(
                {r.get("task_id") for r in byok if isinstance(r.get("task_id"), str)}
            ),
        },
        "total_agent_triggers": _total(row.get("agent_triggers") for _, row in rows),
        "total_execution_ms": _total(row.get("total_execution_ms") for _, row in rows),
        "total_steps": _total(row.get("step_count") for _, row in rows),
        "total_tool_calls": _total(row.get("tool_calls") for _, row in rows),
        "total_neo_credits_post_reset": math.fsum(c for t, c in credits if t >= reset_us),
    }
    if group_by is not None:
        summary["by_period"] = _by_period(credits, tasks, group_by)
    return summary


def _by_period(
    credits: Sequence[tuple[int, float]],
    tasks: Mapping[str, list[tuple[int, dict[str, Any]]]],
    group_by: str,
) -> list[dict[str, Any]]:
    """Credits by the period streams were created in; tasks by their first stream's period."""
    period_credits: dict[str, list[float]] = defaultdict(list)
    period_tasks: dict[str, int] = defaultdict(int)
    for created_us, amount in credits:
        period_credits[_period(created_us, group_by)].append(amount)
    for streams in tasks.values():
        period_tasks[_period(streams[0][0], group_by)] += 1
    return [
        {"date": p, "neo_credits": math.fsum(period_credits[p]), "tasks": period_tasks.get(p, 0)}
        for p in sorted(period_credits)
    ]


# --- control endpoints --------------------------------------------------------------------

_FAULT_ARGS = frozenset({"kind", "count", "path", "status", "retry_after", "delay"})


def _control(
    neo: FakeNeo, method: str, path: str, query: Mapping[str, str], body: Any
) -> tuple[int, Any]:
    """The /_fake/ endpoints, for tests that run the fake in another process."""

    def faults() -> Any:
        if not isinstance(body, dict) or not set(body) <= _FAULT_ARGS:
            raise ValueError(f"a JSON object with some of {sorted(_FAULT_ARGS)}")
        args = dict(body)
        neo.inject(str(args.pop("kind", "status")), **args)
        return {"ok": True}

    def spike() -> Any:
        spec = _dict(body)
        rows = neo.spike(
            int(spec.get("count", 10)),
            multiplier=float(spec.get("multiplier", 20.0)),
            at=_time_arg(str(spec["at"])) if spec.get("at") is not None else None,
        )
        return {"added": len(rows), "stream_ids": [r["stream_id"] for r in rows]}

    def rows() -> Any:
        items = body if isinstance(body, list) else _dict(body).get("rows")
        if not isinstance(items, list):
            raise ValueError("a JSON list of rows, or {'rows': [...], 'visible_at', 'in_truth'}")
        spec = _dict(body)
        visible_at = spec.get("visible_at")
        neo.add_rows(
            items,
            None if visible_at is None else float(visible_at),
            in_truth=bool(spec.get("in_truth", True)),
        )
        return {"added": len(items)}

    def clear_faults() -> Any:
        neo.clear_faults()
        return {"ok": True}

    def clear_log() -> Any:
        neo.clear_log()
        return {"ok": True}

    routes: dict[tuple[str, str], Callable[[], Any]] = {
        ("POST", "/_fake/faults"): faults,
        ("DELETE", "/_fake/faults"): clear_faults,
        ("POST", "/_fake/spike"): spike,
        ("POST", "/_fake/rows"): rows,
        ("GET", "/_fake/truth"): lambda: neo.truth(
            _time_arg(query.get("from")),
            _time_arg(query.get("to")),
            listed_only=query.get("listed_only", "").lower() in ("1", "true", "yes"),
        ).to_json(),
        ("GET", "/_fake/requests"): lambda: [r.to_json() for r in neo.requests_log],
        ("DELETE", "/_fake/requests"): clear_log,
    }
    action = routes.get((method, path))
    if action is None:
        return 404, {"error": "not found"}
    try:
        return 200, action()
    except (ValueError, TypeError, KeyError) as exc:
        return 400, {"error": str(exc)}


# --- HTTP ---------------------------------------------------------------------------------


def _credentials(headers: Message) -> tuple[str, str | None]:
    """(auth kind, token); Authorization wins when both headers are sent."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        return "bearer", token.strip() if scheme.lower() == "bearer" else None
    api_key = headers.get("X-Api-Key")
    if api_key is not None:
        return "x-api-key", api_key.strip()
    return "none", None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


_HTML = b"<!doctype html><html><body><h1>502 Bad Gateway</h1><p>cloudflare</p></body></html>"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so paging does not reconnect per page
    timeout = 60  # idle keep-alive connections are closed after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: benchmarks make thousands of requests."""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add about 40 ms to every response on a kept-alive connection.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = _first_values(split.query)
        self._started = False
        try:
            body = self._read_body()
            if split.path.startswith("/_fake/"):
                self._control(method, split.path, query, body)
            else:
                self._api(method, split.path, query)
        except OSError:  # the client went away; there is no one left to answer
            self.close_connection = True
        except Exception:
            log.exception("fake Neo API failed on %s %s", method, split.path)
            self.close_connection = True
            if not self._started:
                with contextlib.suppress(OSError):
                    self._send(500, _json({"error": "internal error in the fake"}))

    def _read_body(self) -> bytes:
        text = self.headers.get("Content-Length") or "0"
        if not (text.isascii() and text.isdigit()):
            self.close_connection = True  # where this request ends is unknown
            return b""
        return self.rfile.read(int(text)) if int(text) > 0 else b""

    def _control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        if not _is_loopback(self.client_address[0]):
            self._send(403, _json({"error": "control endpoints answer loopback clients only"}))
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, _json({"error": "body is not JSON"}))
            return
        status, payload = _control(self.server.neo, method, path, query, body)
        self._send(status, _json(payload))

    def _api(self, method: str, path: str, query: dict[str, str]) -> None:
        neo = self.server.neo
        auth, token = _credentials(self.headers)
        fault = neo.take_fault(path)
        kind = None if fault is None else fault.kind
        wait = neo.latency + (fault.delay if fault is not None and kind == "timeout" else 0.0)
        if wait > 0:
            self.server.stopping.wait(wait)
        headers: dict[str, str] = {}
        content_type = "application/json"
        if fault is not None and kind in _CANNED_FAULTS:
            status, body = 200, _json({"data": "oops"})
            if kind == "status":
                status = fault.status or 503
                body = _json({"error": f"injected {status}"})
                if fault.retry_after is not None:
                    headers["Retry-After"] = _retry_after(fault.retry_after)
            elif kind == "non_json":
                body, content_type = _HTML, "text/html; charset=utf-8"
        else:
            status, payload = neo.handle(method, path, query, token, fault=kind)
            body = _json(payload)
        # Logged before answering, so a client that got its answer finds its request logged.
        neo.log_request(RequestRecord(method, path, query, 0 if kind == "reset" else status, auth))
        if kind == "reset":
            self._reset()
        else:
            self._send(status, body, content_type, headers, fault)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        fault: Fault | None = None,
    ) -> None:
        kind = None if fault is None else fault.kind
        self._started = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        # A truncated body announces more than it sends, then the connection closes.
        self.send_header("Content-Length", str(len(body) * (2 if kind == "truncated" else 1)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if kind == "truncated":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if fault is not None and kind == "slow_body":
            pieces = 10
            size = max(1, math.ceil(len(body) / pieces))
            for at in range(0, len(body), size):
                if self.server.stopping.wait(fault.delay / pieces):
                    self.close_connection = True  # the rest of the body is never sent
                    break
                self.wfile.write(body[at : at + size])
        else:
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with a TCP reset and no response at all."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def _retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once must not be refused

    def __init__(self, address: tuple[str, int], neo: FakeNeo) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.neo = neo
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can be slow; none is needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that hung up mid-request is not worth a traceback
        log.error("fake Neo API: error serving %s", client_address, exc_info=True)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Wake handlers waiting on idle keep-alive connections, so they end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class FakeNeoServer:
    """A FakeNeo served over HTTP on loopback, in background threads; a context manager."""

    def __init__(
        self, neo: FakeNeo | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._neo = neo if neo is not None else FakeNeo()
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def neo(self) -> FakeNeo:
        return self._neo

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Neo server is not started")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> FakeNeoServer:
        if self._server is None:
            self._server = _Server(self._address, self._neo)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-neo-api",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> FakeNeoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the command line ---------------------------------------------------------------------


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
        prog="python -m exporter.fakeapi",
        description="Serve a fake Neo usage API with generated data (for tests and demos).",
    )
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 0), help="HOST:PORT")
    parser.add_argument("--seed", type=int, default=1)
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
    parser.add_argument("--no-cap", action="store_true", help="the user has no spending cap")
    parser.add_argument("--members", type=int, default=None, help="team members creating tasks")
    parser.add_argument(
        "--no-billing", action="store_true", help="no billing plan: /billing/credits answers 404"
    )
    return parser.parse_args(argv)


def _fake_of(args: argparse.Namespace) -> FakeNeo:
    """The FakeNeo the command line asks for, before any data is added."""
    return FakeNeo(
        seed=args.seed,
        order=args.order,
        latency=args.latency_ms / 1000,
        cap=None if args.no_cap else 500.0,
        members=args.members,
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
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = args.listen
    server = FakeNeoServer(neo, host=host, port=port).start()
    try:
        print(f"listening on {server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
