"""The demo's Neo API: seeded usage data with live traffic, served as the exporter reads it.

`neo-exporter --demo` runs the exporter against a `DemoNeo` served by `DemoServer` on
loopback: a day of history, then new streams as time passes (with a burst of expensive ones
every half hour). It serves `/api/v1/usage/streams` and `/api/v1/usage/tasks` (newest first,
`from`/`to` inclusive, `offset`/`limit` paging), `/api/v1/usage/summary`, `/api/v1/user` and
`/api/v1/billing/credits`, as docs/neo-api/usage-openapi.yaml describes them. Nothing else: the
tests' fake (tests/fakeneo) builds on this generator and adds faults, switches and the truth.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import operator
import random
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from typing import Any, NamedTuple, Protocol, Self
from urllib.parse import parse_qs, urlsplit

from exporter.api import (
    CREDITS_PATH,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    STREAMS_PATH,
    SUMMARY_PATH,
    TASKS_PATH,
    USER_PATH,
)
from exporter.server import PromptShutdown

ADMIN_TOKEN = "fake-admin-token"  # noqa: S105 (the fake's own)
ADMIN_EMAIL = "admin@example.com"
TEAM = "acme"
NEO_COST_RATE = 0.2
log = logging.getLogger(__name__)

LIVE_BUCKET = 60  # seconds of live traffic generated at once, from the bucket's own seed

# The generator's vocabulary; weights need not sum to 1. Kept compact: they are data.
# fmt: off
# (model, share, credits per step relative to claude-sonnet-4-5)
MODELS = (
    ("claude-sonnet-4-5", 0.35, 1.0), ("claude-opus-4-1", 0.12, 4.0), ("gpt-5", 0.2, 1.2),
    ("gpt-4.1-mini", 0.18, 0.2), ("gemini-2.5-pro", 0.15, 0.9),
)
STATUSES = (
    ("completed", 0.80), ("error", 0.06), ("failed", 0.06), ("aborted", 0.05), ("blocked", 0.03),
)
# (tool, share of calls, median duration ms, log-normal sigma)
TOOLS = (
    ("nuclei", 0.12, 45_000.0, 0.8), ("httpx", 0.16, 2_500.0, 0.6),
    ("subfinder", 0.06, 20_000.0, 0.6), ("naabu", 0.05, 30_000.0, 0.7),
    ("katana", 0.06, 25_000.0, 0.7), ("dnsx", 0.07, 3_000.0, 0.5),
    ("browser", 0.10, 8_000.0, 0.7), ("python", 0.15, 1_200.0, 0.8),
    ("shell", 0.13, 900.0, 0.9), ("http_request", 0.10, 600.0, 0.7),
)
AGENTS = (
    ("planner", 0.30), ("recon", 0.20), ("vuln_scanner", 0.20), ("exploit_validator", 0.10),
    ("code_reviewer", 0.10), ("reporter", 0.10),
)
EMAILS = (
    ("alice@example.com", 0.25), ("bob@example.com", 0.18), ("carol@example.com", 0.15),
    ("dave@example.com", 0.12), ("erin@example.com", 0.10), ("frank@example.com", 0.08),
    ("grace@example.com", 0.07), ("heidi@example.com", 0.05),
)
ERRORS = (
    "LLM provider returned 529: overloaded", "tool nuclei timed out after 600s",
    "context window exceeded", "sandbox exited with code 137",
    "rate limited by the LLM provider", "invalid API key for the configured provider",
)
_TITLE_VERBS = (
    "Recon of", "Vulnerability scan of", "Triage findings for", "Pentest",
    "Check exposed panels on", "Review the login flow of",
)
_TITLE_HOSTS = (
    "app.example.com", "api.example.com", "shop.example.org", "vpn.corp.example",
    "staging.acme.test", "grafana.acme.test",
)
# fmt: on
_TASK_SIZES = ((1, 0.5), (2, 0.25), (3, 0.15), (4, 0.10))
_BYOK_SHARE = 0.3
_NULL_LATENCY_SHARE = 0.05


def names(table: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(row[0] for row in table)


def cumulative(table: Sequence[tuple[Any, ...]]) -> tuple[float, ...]:
    return tuple(accumulate(row[1] for row in table))


MODEL_NAMES: tuple[str, ...] = names(MODELS)
STATUS_NAMES: tuple[str, ...] = names(STATUSES)
TOOL_NAMES: tuple[str, ...] = names(TOOLS)
AGENT_NAMES: tuple[str, ...] = names(AGENTS)
_MODEL_CUM = cumulative(MODELS)
_STATUS_CUM = cumulative(STATUSES)
_TOOL_CUM = cumulative(TOOLS)
_AGENT_CUM = cumulative(AGENTS)
_SIZE_CUM = cumulative(_TASK_SIZES)
_PRICE = {name: price for name, _, price in MODELS}
_TOOL_LOGNORMAL = tuple((math.log(median), sigma) for _, _, median, sigma in TOOLS)

# A stream keeps what filters and sorting need as tuple fields and the rest packed in one
# bytes blob (about 400 bytes a row in all), so that a million rows fit in memory; the JSON
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


class Task(NamedTuple):
    task_id: str
    task_title: str
    email: str
    model: str
    is_byok: bool


class People(NamedTuple):
    """Who creates tasks: emails and their cumulative weights."""

    emails: tuple[str, ...]
    cumulative: tuple[float, ...]


DEFAULT_PEOPLE = People(names(EMAILS), cumulative(EMAILS))


class Stream(NamedTuple):
    """A generated stream, compact (see stream_row for its JSON); times in epoch µs."""

    created_us: int
    visible_us: int  # when its execution has ended and listings show it
    stream_id: str
    task: Task
    status: str
    blob: bytes

    def money(self) -> tuple[float, float, float]:
        """(neo_credits, llm_cost, neo_cost)."""
        money: tuple[float, float, float] = _MONEY.unpack_from(self.blob)
        return money

    def steps(self) -> int:
        steps: int = _SCALARS.unpack_from(self.blob)[3]
        return steps

    def calls(self) -> list[tuple[int, int]]:
        """(tool index, duration ms) of each tool call, in order."""
        return list(_CALL.iter_unpack(memoryview(self.blob)[_CALLS_AT:]))


class Shape(NamedTuple):
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
    ) -> Shape:
        total_ms = llm_ms + overhead_ms + sum(duration for _, duration in calls)
        return cls(status, steps, calls, agents, llm_ms, overhead_ms, total_ms)

    def scaled(self, factor: float) -> Shape:
        return Shape.of(
            self.status,
            self.steps,
            calls=[(tool, int(duration * factor)) for tool, duration in self.calls],
            agents=self.agents,
            llm_ms=int(self.llm_ms * factor),
            overhead_ms=int(self.overhead_ms * factor),
        )


# Where a task starts, from (where it was drawn to start, its span from its first stream's
# start to its last one's end, the window's start and end, whether it must fit in the window),
# all in ms: a hook for the tests' fake, whose tasks can start in bursts that share a second.
Placement = Callable[[int, int, int, int, bool], int]


# --- the generator ------------------------------------------------------------------------


def _pick(rng: random.Random, weights: tuple[float, ...]) -> int:
    return bisect.bisect_right(weights, rng.random() * weights[-1])


def _lognormal(rng: random.Random, mu: float, sigma: float) -> float:
    return math.exp(rng.gauss(mu, sigma))  # as lognormvariate, in half the time


def _uuid(rng: random.Random) -> str:
    """A version 4 UUID from the seeded generator (the same as uuid.UUID(..., version=4))."""
    text = f"{rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _draw_task(rng: random.Random, people: People) -> Task:
    return Task(
        task_id=_uuid(rng),
        task_title=sys.intern(f"{rng.choice(_TITLE_VERBS)} {rng.choice(_TITLE_HOSTS)}"),
        email=people.emails[_pick(rng, people.cumulative)],
        model=MODEL_NAMES[_pick(rng, _MODEL_CUM)],
        is_byok=rng.random() < _BYOK_SHARE,
    )


def _draw_shape(rng: random.Random, status: str) -> Shape:
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
    return Shape.of(
        status, steps, calls=calls, agents=agents, llm_ms=llm_ms, overhead_ms=overhead_ms
    )


def _make_stream(
    rng: random.Random,
    task: Task,
    shape: Shape,
    *,
    created_ms: int,
    visible_us: int,
    multiplier: float = 1.0,
) -> Stream:
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
    return Stream(created_ms * 1000, visible_us, stream_id, task, shape.status, blob)


def generate(
    rng: random.Random,
    count: int,
    start: float,
    end: float,
    *,
    late_fraction: float,
    max_late: float,
    fit: bool,
    people: People = DEFAULT_PEOPLE,
    place: Placement | None = None,
) -> list[Stream]:
    """Streams grouped in tasks of 1-4, created in [start, end].

    With fit, a task's streams all finish by end (durations shrink if the span is too short), so
    that every row not picked as late is visible at end, and the late ones up to max_late after
    end; without it (live traffic), tasks start anywhere in the span and finish when they
    finish, the late ones up to max_late after that. `place` may move where a task starts.
    """
    start_ms = math.ceil(start * 1000)
    end_ms = max(start_ms, math.floor(end * 1000))
    window = end_ms - start_ms
    out: list[Stream] = []
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
        if place is not None:
            span = sum(shape.total_ms for shape in shapes) + sum(gaps)
            cursor = place(cursor, span, start_ms, end_ms, fit)
        for shape, gap in zip(shapes, gaps, strict=True):
            ended_us = (cursor + shape.total_ms) * 1000
            if rng.random() < late_fraction:
                # History's late rows show up after the span's end, whenever they were
                # created: as rows still arriving when an exporter starts on it.
                after_us = max(ended_us, end_ms * 1000) if fit else ended_us
                ended_us = after_us + round(rng.uniform(0.1, 1.0) * max_late * 1_000_000)
            out.append(_make_stream(rng, task, shape, created_ms=cursor, visible_us=ended_us))
            cursor += shape.total_ms + gap
    return out


def spike_streams(
    rng: random.Random, count: int, at_ms: int, multiplier: float, people: People
) -> list[Stream]:
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


def burst_streams(
    rng: random.Random, count: int, start_ms: int, end_ms: int, multiplier: float, people: People
) -> list[Stream]:
    """`count` streams of one new task, ending (and visible) between start_ms and end_ms:
    a task fanned out over many targets at once."""
    task = _draw_task(rng, people)
    out = []
    for n in range(count):
        shape = _draw_shape(rng, "completed")
        ended_ms = start_ms + (end_ms - start_ms) * n // max(1, count - 1)
        created_ms = ended_ms - shape.total_ms
        out.append(
            _make_stream(
                rng,
                task,
                shape,
                created_ms=created_ms,
                visible_us=ended_ms * 1000,
                multiplier=multiplier,
            )
        )
    return out


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


@dataclass
class _Live:
    rate_per_hour: float
    started_us: int
    next_bucket: int
    late_fraction: float
    max_late: float
    spike_every: float | None


class Traffic:
    """Seeded streams: history, spikes, and live traffic as the clock moves. Not thread-safe:
    its owner holds the lock."""

    def __init__(self, seed: int, people: People = DEFAULT_PEOPLE) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.people = people
        self._live: _Live | None = None

    def placement(self, bucket: int | None) -> Placement | None:
        """Where tasks start, for history (bucket None) or a live minute: a hook, None here."""
        return None

    def history(
        self, count: int, start: float, end: float, late_fraction: float, max_late: float
    ) -> list[Stream]:
        if count < 0 or end < start or not 0.0 <= late_fraction <= 1.0 or max_late < 0:
            raise ValueError(
                "need count >= 0, start <= end, 0 <= late_fraction <= 1, max_late >= 0"
            )
        return generate(
            self.rng,
            count,
            start,
            end,
            late_fraction=late_fraction,
            max_late=max_late,
            fit=True,
            people=self.people,
            place=self.placement(None),
        )

    def spike(self, count: int, at_ms: int, multiplier: float) -> list[Stream]:
        return spike_streams(self.rng, count, at_ms, multiplier, self.people)

    def burst(self, count: int, start_ms: int, end_ms: int, multiplier: float) -> list[Stream]:
        return burst_streams(self.rng, count, start_ms, end_ms, multiplier, self.people)

    def start_live(
        self, rate: float, now: float, late: tuple[float, float], spikes: float | None
    ) -> None:
        """New streams from now on, `rate` an hour, `late` = (late_fraction, max_late) of them
        late; every `spikes` seconds (aligned to the epoch; None: never) expensive ones too."""
        bucket = math.floor(now / LIVE_BUCKET)
        self._live = _Live(rate, to_us(now), bucket, *late, spikes)

    def due(self, now: float) -> list[Stream]:
        """The live streams of every minute that has started by now and was not yet due.

        A minute's traffic comes from a seed of the fake's seed and that minute, so that it
        does not depend on when requests come.
        """
        live = self._live
        if live is None:
            return []
        last = math.floor(now / LIVE_BUCKET)
        added: list[Stream] = []
        for bucket in range(live.next_bucket, last + 1):
            rng = random.Random(f"{self.seed}/live/{bucket}")
            start = bucket * LIVE_BUCKET
            streams = generate(
                rng,
                _poisson(rng, live.rate_per_hour * LIVE_BUCKET / 3600),
                start,
                start + LIVE_BUCKET,
                late_fraction=live.late_fraction,
                max_late=live.max_late,
                fit=False,
                people=self.people,
                place=self.placement(bucket),
            )
            every = live.spike_every
            if every and math.floor(start / every) != math.floor((start - LIVE_BUCKET) / every):
                size = max(3, round(live.rate_per_hour / 40))
                at_ms = start * 1000 + rng.randrange(LIVE_BUCKET * 1000)
                streams += spike_streams(rng, size, at_ms, 20.0, self.people)
            added.extend(s for s in streams if s.created_us >= live.started_us)
        live.next_bucket = max(live.next_bucket, last + 1)
        return added


# --- time and rows ------------------------------------------------------------------------


def to_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def parse_iso_us(value: object) -> int | None:
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


def iso_us(us: int) -> str:
    ms = us // 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def credit_period(now_us: int) -> tuple[int, int]:
    """The current credit period: from the first of this month to the first of the next (UTC)."""
    now = _EPOCH + timedelta(microseconds=now_us)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return (start - _EPOCH) // _MICROSECOND, (end - _EPOCH) // _MICROSECOND


def stream_row(stream: Stream, *, detail: bool = True) -> dict[str, Any]:
    """A stream as the API sends it; without detail, less its breakdowns and history."""
    credits, llm_cost, neo_cost, steps, llm_ms, total_ms, avg, error = _SCALARS.unpack_from(
        stream.blob
    )
    agents = _AGENT_COUNTS.unpack_from(stream.blob, _SCALARS.size)
    calls = stream.calls()
    task = stream.task
    row = {
        "stream_id": stream.stream_id,
        "task_id": task.task_id,
        "task_title": task.task_title,
        "email": task.email,
        "created_at": iso_us(stream.created_us),
        "model": task.model,
        "status": stream.status,
        "is_byok": task.is_byok,
        "neo_credits": credits,
        "llm_cost": llm_cost,
        "neo_cost": neo_cost,
        "step_count": steps,
        "tool_calls": len(calls),
        "agent_triggers": sum(agents),
        "llm_time_ms": llm_ms,
        "tool_time_ms": sum(duration for _, duration in calls),
        "total_execution_ms": total_ms,
        "avg_step_latency_ms": None if avg < 0 else avg,
        "error_message": None if error < 0 else ERRORS[error],
        "stream_count": 1,
    }
    if detail:
        row["agent_breakdown"] = {AGENT_NAMES[i]: n for i, n in enumerate(agents) if n}
        # Tool calls are spread over the run, with LLM time between them.
        gap = llm_ms // (len(calls) + 1)
        cursor = stream.created_us // 1000
        history: list[dict[str, Any]] = []
        breakdown: dict[str, dict[str, int]] = {}
        for index, (tool, duration) in enumerate(calls):
            name = TOOL_NAMES[tool]
            cursor += gap
            history.append(
                {"tool_name": name, "duration_ms": duration, "index": index, "timestamp": cursor}
            )
            cursor += duration
            slot = breakdown.setdefault(name, {"calls": 0, "duration_ms": 0})
            slot["calls"] += 1
            slot["duration_ms"] += duration
        row["tool_breakdown"], row["tool_call_history"] = breakdown, history
    return row


def _task_row(streams: Sequence[Stream]) -> dict[str, Any]:
    """A task as the API sends it: its created_at, model and is_byok its first stream's, its
    status and error its latest one's, its numbers summed."""
    rows = [stream_row(s, detail=False) for s in streams]
    first, last = rows[0], rows[-1]
    row = {key: first[key] for key in ("task_id", "task_title", "email", "created_at", "model")}
    row.update(status=last["status"], is_byok=first["is_byok"])
    for key in ("neo_credits", "llm_cost", "neo_cost"):
        row[key] = math.fsum(r[key] for r in rows)
    for key in ("step_count", "tool_calls", "agent_triggers", "llm_time_ms", "tool_time_ms"):
        row[key] = sum(r[key] for r in rows)
    row["total_execution_ms"] = sum(r["total_execution_ms"] for r in rows)
    latencies = [r["avg_step_latency_ms"] for r in rows if r["avg_step_latency_ms"] is not None]
    row["avg_step_latency_ms"] = round(sum(latencies) / len(latencies)) if latencies else None
    row.update(error_message=last["error_message"], stream_count=len(rows))
    return row


# --- requests -----------------------------------------------------------------------------


class BadRequest(Exception):
    """A request parameter the real API would reject with 400."""


def int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < low or (high and int(text) > high):
        bound = f"{low}..{high}" if high else f">= {low}"
        raise BadRequest(f"{name} must be an integer {bound}")
    return int(text)


def time_param(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    parsed = parse_iso_us(text)
    if parsed is None:
        raise BadRequest(f"{name} must be an ISO 8601 date-time")
    return parsed


def page_of(rows: Sequence[Any], query: Mapping[str, str]) -> dict[str, Any]:
    """The `offset`/`limit` page of rows (already rendered), as the listings send it."""
    limit = int_param(query, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    offset = int_param(query, "offset", 0, 0, None)
    stop = offset + limit
    return {"data": list(rows[offset:stop]), "has_more": stop < len(rows), "total": len(rows)}


def credits_body(now_us: int, issued: float, used: float) -> dict[str, Any]:
    """`/billing/credits`: credits reset on the first of each month and expire at the next."""
    _, expires_us = credit_period(now_us)
    return {
        "available_credits": max(0.0, issued - used),
        "issued_credits": issued,
        "used_credits": used,
        "expires_at": iso_us(expires_us),
        "is_expired": now_us >= expires_us,
    }


def user_body(email: str, cap: float | None, used: float) -> dict[str, Any]:
    """`/user`: the spending cap's `used` is the BYOK spend (llm_cost + neo_cost) this period."""
    limit = None if cap is None else {"limit": cap, "used": used, "remaining": max(0.0, cap - used)}
    return {"email": email, "team": TEAM, "neo_cost_rate": NEO_COST_RATE, "cap": limit}


_created = operator.attrgetter("created_us")


class DemoNeo:
    """A day of seeded usage and live traffic, answering the API's requests (thread-safe)."""

    def __init__(
        self,
        seed: int = 7,
        *,
        clock: Callable[[], float] = time.time,
        cap: float = 500.0,
        issued_credits: float = 25_000.0,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._cap = cap
        self._issued = issued_credits
        self._traffic = Traffic(seed)
        self._rows: list[Stream] = []  # sorted by created_at

    def start_live(self, rate_per_hour: float, history: float, history_count: int) -> None:
        """`history_count` streams over the last `history` seconds, then live traffic."""
        with self._lock:
            now = self._clock()
            self._add(self._traffic.history(history_count, now - history, now, 0.1, 3600.0))
            self._traffic.start_live(rate_per_hour, now, (0.1, 3600.0), 1800.0)

    def _add(self, streams: Iterable[Stream]) -> None:
        self._rows.extend(streams)
        self._rows.sort(key=_created)

    def handle(
        self, method: str, path: str, query: Mapping[str, str], token: str | None
    ) -> tuple[int, Any]:
        """Answer one API request: (status, JSON value)."""
        if token != ADMIN_TOKEN:
            return 401, {"error": "unauthorized"}
        if method != "GET":
            return 405, {"error": f"{method} not allowed"}
        routes = {
            STREAMS_PATH: self._streams,
            TASKS_PATH: self._tasks,
            SUMMARY_PATH: self._summary,
            USER_PATH: self._user,
            CREDITS_PATH: self._credits,
        }
        route = routes.get(path)
        if route is None:
            return 404, {"error": "not found"}
        query = {k: v for k, v in query.items() if v != ""}
        with self._lock:
            now_us = to_us(self._clock())
            self._add(self._traffic.due(now_us / 1_000_000))
            try:
                return 200, route(now_us, query)
            except BadRequest as exc:
                return 400, {"error": str(exc)}

    def _window(self, now_us: int, from_us: int | None, to_us: int | None) -> list[Stream]:
        """Visible streams created in [from, to], oldest first."""
        low = 0 if from_us is None else bisect.bisect_left(self._rows, from_us, key=_created)
        high = len(self._rows)
        if to_us is not None:
            high = bisect.bisect_right(self._rows, to_us, key=_created)
        return [s for s in self._rows[low:high] if s.visible_us <= now_us]

    def _span(self, now_us: int, query: Mapping[str, str]) -> list[Stream]:
        return self._window(now_us, time_param(query, "from"), time_param(query, "to"))

    def _streams(self, now_us: int, query: Mapping[str, str]) -> dict[str, Any]:
        newest_first = self._span(now_us, query)[::-1]
        page = page_of(newest_first, query)
        page["data"] = [stream_row(s) for s in page["data"]]
        return page

    def _tasks(self, now_us: int, query: Mapping[str, str]) -> dict[str, Any]:
        """Tasks whose first stream was created in [from, to], newest first."""
        tasks: dict[str, list[Stream]] = {}
        for stream in self._window(now_us, None, None):
            tasks.setdefault(stream.task.task_id, []).append(stream)
        low, high = time_param(query, "from"), time_param(query, "to")
        listed = [
            t
            for t in tasks.values()
            if (low is None or t[0].created_us >= low) and (high is None or t[0].created_us <= high)
        ]
        page = page_of(listed[::-1], query)
        page["data"] = [_task_row(t) for t in page["data"]]
        return page

    def _summary(self, now_us: int, query: Mapping[str, str]) -> dict[str, Any]:
        streams = self._span(now_us, query)
        tasks: dict[str, list[Stream]] = {}
        credits_of: dict[str, list[float]] = defaultdict(list)
        for stream in streams:
            tasks.setdefault(stream.task.task_id, []).append(stream)
            credits_of[stream.task.email].append(stream.money()[0])
        by_status: dict[str, int] = defaultdict(int)
        tasks_of: dict[str, int] = defaultdict(int)
        for task in tasks.values():
            by_status[task[-1].status] += 1
            tasks_of[task[0].task.email] += 1
        byok = [s for s in streams if s.task.is_byok]
        reset_us, _ = credit_period(now_us)
        balance = self._credits(now_us, query)
        return {
            "total_neo_credits": math.fsum(s.money()[0] for s in streams),
            "total_tasks": len(tasks),
            "by_status": dict(by_status),
            "by_email": [
                {"email": email, "neo_credits": math.fsum(amounts), "tasks": tasks_of[email]}
                for email, amounts in credits_of.items()
            ],
            "byok": {
                "total_llm_cost": math.fsum(s.money()[1] for s in byok),
                "total_neo_cost": math.fsum(s.money()[2] for s in byok),
                "total_streams": len(byok),
                "total_tasks": len({s.task.task_id for s in byok}),
            },
            "last_credit_reset": iso_us(reset_us),
            "total_available_neo_credits": balance["available_credits"],
            "total_issued_neo_credits": balance["issued_credits"],
            "neo_credits_expires_at": balance["expires_at"],
            "neo_credits_is_expired": balance["is_expired"],
        }

    def _this_period(self, now_us: int) -> list[Stream]:
        return self._window(now_us, credit_period(now_us)[0], None)

    def _credits(self, now_us: int, query: Mapping[str, str]) -> dict[str, Any]:
        used = math.fsum(s.money()[0] for s in self._this_period(now_us))
        return credits_body(now_us, self._issued, used)

    def _user(self, now_us: int, query: Mapping[str, str]) -> dict[str, Any]:
        byok = (s.money() for s in self._this_period(now_us) if s.task.is_byok)
        return user_body(ADMIN_EMAIL, self._cap, math.fsum(c[1] + c[2] for c in byok))


# --- HTTP ---------------------------------------------------------------------------------


class Api(Protocol):
    def handle(
        self, method: str, path: str, query: Mapping[str, str], token: str | None
    ) -> tuple[int, Any]: ...


def credentials(headers: Message) -> tuple[str, str | None]:
    """(auth kind, token) from `Authorization: Bearer` or `X-Api-Key`; Authorization wins."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        return "bearer", token.strip() if scheme.lower() == "bearer" else None
    api_key = headers.get("X-Api-Key")
    if api_key is not None:
        return "x-api-key", api_key.strip()
    return "none", None


def first_values(query_string: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}


def to_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class ApiHandler(BaseHTTPRequestHandler):
    """Answers GETs from the server's `api` with JSON, on kept-alive connections."""

    protocol_version = "HTTP/1.1"  # keep-alive, so paging does not reconnect per page
    timeout = 60  # idle keep-alive connections are closed after this
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: an exporter makes a request every few seconds."""

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
        split = urlsplit(self.path)
        _, token = credentials(self.headers)
        status, payload = self.server.api.handle(
            "GET", split.path, first_values(split.query), token
        )
        body = to_json(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ApiServer(PromptShutdown, ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once must not be refused

    def __init__(
        self, address: tuple[str, int], api: Api, handler: type[ApiHandler] = ApiHandler
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

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


class DemoServer:
    """An API served over HTTP on loopback, in background threads; a context manager."""

    handler: type[ApiHandler] = ApiHandler

    def __init__(self, api: Api, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._api = api
        self._address = (host, port)
        self._server: ApiServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Neo server is not started")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> Self:
        if self._server is None:
            self._server = ApiServer(self._address, self._api, self.handler)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
