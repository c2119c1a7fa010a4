"""The ground truth: what an exact exporter counts over the rows the fake serves."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from exporter.demo import parse_iso_us
from tests.fakeneo.reading import (
    _amount_of,
    _byok_of,
    _count_of,
    _dict,
    _label_of,
    _measure,
)

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
        and parse_iso_us(row.get("created_at")) is not None
    )


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


# The row fields the truth can group by (the monthly report's --by member, model, task).
GROUP_FIELDS = ("email", "model", "task_id")


@dataclass(frozen=True)
class GroupTotals:
    """A group's streams and money, summed as an exact report sums them."""

    streams: int
    credits: float
    llm_cost: float
    neo_cost: float

    def to_json(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "credits": self.credits,
            "llm_cost": self.llm_cost,
            "neo_cost": self.neo_cost,
        }


def _group_key(row: dict[str, Any], field: str) -> str:
    """A row's group: the model as a label (`unknown` when unusable); an email or task id
    trimmed, or "" when the row has none."""
    value = row.get(field)
    if field == "model":
        return _label_of(value)
    return value.strip() if isinstance(value, str) else ""


def _compute_groups(rows: Iterable[dict[str, Any]], field: str) -> dict[str, GroupTotals]:
    """Streams and money (absent, null or unusable money is 0) per value of `field`."""
    if field not in GROUP_FIELDS:
        raise ValueError(f"the truth groups by one of {', '.join(GROUP_FIELDS)}, not {field!r}")
    money: dict[str, list[list[float]]] = defaultdict(lambda: [[], [], []])
    for row in rows:
        sums = money[_group_key(row, field)]
        for i, name in enumerate(("neo_credits", "llm_cost", "neo_cost")):
            sums[i].append(_amount_of(row.get(name)))
    return {
        key: GroupTotals(len(sums[0]), math.fsum(sums[0]), math.fsum(sums[1]), math.fsum(sums[2]))
        for key, sums in money.items()
    }
