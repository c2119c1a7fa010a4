"""The fake's rows: generated streams with their quirks or rows added as-is, as served."""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from exporter.demo import Stream, stream_row
from tests.fakeneo.quirks import (
    _ODD,
    _ODD_NULLS,
    _first_money,
    _first_version,
    _iso_s,
    _make_odd,
    _Quirks,
)
from tests.fakeneo.reading import (
    _TASK_SUMS,
    _amount_of,
    _dict,
    _flag,
    _label_of,
    _measure,
    _total,
)


class _Gen(NamedTuple):
    """A generated stream and what the switches do to it (see _stream_row for its JSON)."""

    created_us: int  # what rows are filtered and sorted by (whole seconds with tie_seconds)
    visible_us: int
    stream: Stream
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


class _At(NamedTuple):
    """How rows are served: the moment (for revised rows) and the precision of created_at."""

    now_us: int
    seconds: bool = False  # created_at at whole seconds (tie_seconds)


def _stream_row(gen: _Gen, at: _At, *, detail: bool = True) -> dict[str, Any]:
    """A generated stream as the API sends it at `at`; without detail, less its breakdowns
    and history."""
    row = stream_row(gen.stream, detail=detail)
    if not row["email"]:
        row["email"] = None  # a task of no one (emails= with ""): the API sends null
    if at.seconds:
        row["created_at"] = _iso_s(gen.created_us)
    quirks = gen.quirks
    if quirks is not None:
        if at.now_us < quirks.revised_us:
            _first_version(row, gen.stream, quirks.factor)
        if quirks.odd:
            _make_odd(row, quirks.odd)
    return row


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
            return entry.stream.status
        if name == "stream_id":
            return entry.stream.stream_id
        value = getattr(entry.stream.task, name, None)
        return None if name == "email" and not value else value  # "": served as null
    row = entry.row
    return row.get(name) if isinstance(row, dict) else None


def _costs(entry: _Entry, now_us: int) -> tuple[float, float, float]:
    """(neo_credits, llm_cost, neo_cost) as served at now_us; 0 for what is missing or odd."""
    if isinstance(entry, _Gen):
        credits, llm_cost, neo_cost = entry.stream.money()
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


def _period(created_us: int, group_by: str) -> str:
    day = datetime.fromtimestamp(created_us // 1_000_000, UTC).date()
    if group_by == "day":
        return day.isoformat()
    if group_by == "week":  # weeks start on Monday, as ISO 8601 has it
        return (day - timedelta(days=day.weekday())).isoformat()
    return f"{day.year:04d}-{day.month:02d}"


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
