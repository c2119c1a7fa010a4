"""Pure parsing of Neo usage API bodies into typed records. No I/O here.

A row is either turned into a record that is right to the cent, or rejected with a
`RowError` whose `reason` is one of a small fixed set (it becomes a label value of
`neo_exporter_skipped_records_total`) and whose `detail` says what was wrong (for the log).

Optional detail fields (breakdowns, tool call history) never cost a row its money: a bad
entry there is dropped and named in `StreamRecord.invalid_details`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# The fixed set of reasons a row can be skipped for (a label, so it must stay bounded).
REASON_NOT_AN_OBJECT = "not_an_object"
REASON_MISSING_FIELD = "missing_field"
REASON_WRONG_TYPE = "wrong_type"
REASON_BAD_VALUE = "bad_value"
REASON_BAD_TIMESTAMP = "bad_timestamp"
ROW_REASONS = (
    REASON_NOT_AN_OBJECT,
    REASON_MISSING_FIELD,
    REASON_WRONG_TYPE,
    REASON_BAD_VALUE,
    REASON_BAD_TIMESTAMP,
)

# Long label values would bloat every scrape; no real model or tool name comes close.
MAX_LABEL_LENGTH = 120
MAX_ID_LENGTH = 256
# No single stream costs anywhere near this; a larger value is a broken row, and summing it
# would wreck the counter's precision (or overflow it to +Inf) for good.
MAX_AMOUNT = 1e12
UNKNOWN = "unknown"


class RowError(ValueError):
    """A row that cannot be counted: `reason` is a bounded label value, `detail` is for logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PageError(ValueError):
    """A response body that is not a usage list page; the client retries the request."""


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[object]
    has_more: bool
    total: int | None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One stream row, in base units (seconds, USD, credits), ready to be counted."""

    stream_id: str
    task_id: str
    created_ts: float
    model: str
    status: str
    byok: str  # "true" | "false" | "unknown" (field absent)
    credits: float
    llm_cost: float
    neo_cost: float
    steps: int
    tool_calls: int
    agent_triggers: int
    llm_time: float
    tool_time: float
    execution_time: float | None  # None when total_execution_ms is absent: not observed
    step_latency: float | None  # None when avg_step_latency_ms is null: not observed
    agent_breakdown: tuple[tuple[str, int], ...]
    tool_breakdown: tuple[tuple[str, int, float], ...]  # (tool, calls, seconds)
    tool_durations: tuple[tuple[str, float], ...]  # (tool, seconds), one per history entry
    invalid_details: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """A digest of every value that feeds a metric, to notice a row that changed later."""
        values = (
            self.model,
            self.status,
            self.byok,
            self.credits,
            self.llm_cost,
            self.neo_cost,
            self.steps,
            self.tool_calls,
            self.agent_triggers,
            self.llm_time,
            self.tool_time,
            self.execution_time,
            self.step_latency,
            self.agent_breakdown,
            self.tool_breakdown,
            self.tool_durations,
        )
        return hashlib.blake2b(repr(values).encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task row: a mutable sum over the task's streams, used for window gauges only."""

    task_id: str
    created_ts: float
    status: str
    credits: float
    llm_cost: float
    neo_cost: float
    stream_count: int


def parse_page(body: object) -> Page:
    """Check the `{"data": [...], "has_more": bool, "total": int}` shape of a list page."""
    if not isinstance(body, dict):
        raise PageError(f"expected a JSON object, got {type(body).__name__}")
    rows = body.get("data")
    if not isinstance(rows, list):
        raise PageError(f"'data' should be a list, got {type(rows).__name__}")
    has_more = body.get("has_more")
    if not isinstance(has_more, bool):
        raise PageError(f"'has_more' should be a boolean, got {type(has_more).__name__}")
    total = body.get("total")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise PageError(f"'total' should be a non-negative integer, got {total!r:.40}")
    return Page(rows=rows, has_more=has_more, total=total)


def parse_timestamp(value: object, field: str = "created_at") -> float:
    """ISO 8601 to Unix seconds; a timestamp without an offset is taken as UTC."""
    if not isinstance(value, str):
        raise RowError(REASON_WRONG_TYPE, f"{field} should be a string, got {_type(value)}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(REASON_BAD_TIMESTAMP, f"{field} is not ISO 8601: {text[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_timestamp(ts: float) -> str:
    """Unix seconds to the ISO 8601 form the API takes in `from` and `to`."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_stream(row: object) -> StreamRecord:
    """Turn one `/usage/streams` row into a record, or raise RowError."""
    obj = _object(row)
    stream_id = _identifier(obj, "stream_id")
    invalid: list[str] = []
    return StreamRecord(
        stream_id=stream_id,
        task_id=_identifier(obj, "task_id"),
        created_ts=parse_timestamp(_required(obj, "created_at")),
        model=_label(obj, "model"),
        status=_label(obj, "status").lower(),
        byok=_byok(obj),
        credits=_amount(obj, "neo_credits"),
        llm_cost=_amount(obj, "llm_cost"),
        neo_cost=_amount(obj, "neo_cost"),
        steps=_count(obj, "step_count", required=True),
        tool_calls=_count(obj, "tool_calls", required=True),
        agent_triggers=_count(obj, "agent_triggers", required=True),
        llm_time=_amount(obj, "llm_time_ms") / 1000.0,
        tool_time=_amount(obj, "tool_time_ms") / 1000.0,
        execution_time=_optional_seconds(obj, "total_execution_ms"),
        step_latency=_optional_seconds(obj, "avg_step_latency_ms"),
        agent_breakdown=_agent_breakdown(obj.get("agent_breakdown"), invalid),
        tool_breakdown=_tool_breakdown(obj.get("tool_breakdown"), invalid),
        tool_durations=_tool_history(obj.get("tool_call_history"), invalid),
        invalid_details=tuple(invalid),
    )


def parse_task(row: object) -> TaskRecord:
    """Turn one `/usage/tasks` row into a record, or raise RowError."""
    obj = _object(row)
    stream_count = obj.get("stream_count")
    return TaskRecord(
        task_id=_identifier(obj, "task_id"),
        created_ts=parse_timestamp(_required(obj, "created_at")),
        status=_label(obj, "status").lower(),
        credits=_amount(obj, "neo_credits"),
        llm_cost=_amount(obj, "llm_cost"),
        neo_cost=_amount(obj, "neo_cost"),
        stream_count=1 if stream_count is None else _count(obj, "stream_count", required=True),
    )


# --- field helpers -------------------------------------------------------------------


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _object(row: object) -> Mapping[str, object]:
    if not isinstance(row, dict):
        raise RowError(REASON_NOT_AN_OBJECT, f"row should be an object, got {_type(row)}")
    return row


def _required(obj: Mapping[str, object], field: str) -> object:
    value = obj.get(field)
    if value is None:
        raise RowError(REASON_MISSING_FIELD, f"{field} is missing")
    return value


def _identifier(obj: Mapping[str, object], field: str) -> str:
    value = _required(obj, field)
    if not isinstance(value, str):
        raise RowError(REASON_WRONG_TYPE, f"{field} should be a string, got {_type(value)}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise RowError(REASON_BAD_VALUE, f"{field} should be 1..{MAX_ID_LENGTH} characters")
    if not _encodable(value):
        # JSON can carry lone surrogates; no UTF-8 store (SQLite, the exposition) takes them.
        raise RowError(REASON_BAD_VALUE, f"{field} is not valid Unicode (lone surrogate)")
    return value


def _label(obj: Mapping[str, object], field: str) -> str:
    value = _required(obj, field)
    if not isinstance(value, str):
        raise RowError(REASON_WRONG_TYPE, f"{field} should be a string, got {_type(value)}")
    return clean_label(value)


def clean_label(value: str) -> str:
    """Bound a label value's length; an empty one reads as `unknown`.

    Lone surrogates (valid in JSON, not in UTF-8) become U+FFFD, so that the value can be
    stored and exposed; every other character is kept (the exposition escapes it).
    """
    if not _encodable(value):
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    value = value.strip()
    if not value:
        return UNKNOWN
    return value[:MAX_LABEL_LENGTH]


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _byok(obj: Mapping[str, object]) -> str:
    value = obj.get("is_byok")
    if value is None:
        return UNKNOWN
    if not isinstance(value, bool):
        raise RowError(REASON_WRONG_TYPE, f"is_byok should be a boolean, got {_type(value)}")
    return "true" if value else "false"


def _number(value: object, field: str) -> float:
    """A finite, non-negative number. Numeric strings are accepted: they are unambiguous."""
    # Fast path for what the API sends (tens of values per row); anything else is checked below.
    kind = type(value)
    if kind is float:
        if 0.0 <= value <= MAX_AMOUNT:  # type: ignore[operator]  # NaN fails both comparisons
            return value  # type: ignore[return-value]
    elif kind is int and 0 <= value <= MAX_AMOUNT:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    return _checked_number(value, field)


def _checked_number(value: object, field: str) -> float:
    if isinstance(value, bool):
        raise RowError(REASON_WRONG_TYPE, f"{field} should be a number, got bool")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise RowError(REASON_BAD_VALUE, f"{field} is out of range") from None
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise RowError(REASON_WRONG_TYPE, f"{field} is not a number: {value[:40]!r}") from None
    else:
        raise RowError(REASON_WRONG_TYPE, f"{field} should be a number, got {_type(value)}")
    if not math.isfinite(number):
        raise RowError(REASON_BAD_VALUE, f"{field} is not finite")
    if number < 0:
        # Counters cannot go down: a negative amount would need a correction we cannot express.
        raise RowError(REASON_BAD_VALUE, f"{field} is negative")
    if number > MAX_AMOUNT:
        raise RowError(REASON_BAD_VALUE, f"{field} is implausibly large (over {MAX_AMOUNT:g})")
    return number


def _amount(obj: Mapping[str, object], field: str) -> float:
    value = obj.get(field)
    return 0.0 if value is None else _number(value, field)


def _optional_seconds(obj: Mapping[str, object], field: str) -> float | None:
    value = obj.get(field)
    return None if value is None else _number(value, field) / 1000.0


def _count(obj: Mapping[str, object], field: str, *, required: bool) -> int:
    value = obj.get(field)
    if type(value) is int and 0 <= value <= MAX_AMOUNT:
        return value  # what float() and int() below would give back
    if value is None:
        if required:
            raise RowError(REASON_MISSING_FIELD, f"{field} is missing")
        return 0
    number = _number(value, field)
    if not number.is_integer():
        raise RowError(REASON_BAD_VALUE, f"{field} should be a whole number")
    return int(number)


def _agent_breakdown(value: object, invalid: list[str]) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        invalid.append("agent_breakdown")
        return ()
    items: list[tuple[str, int]] = []
    for name, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_AMOUNT:
            invalid.append("agent_breakdown")
            continue
        items.append((clean_label(name), count))
    return tuple(sorted(items))


def _tool_breakdown(value: object, invalid: list[str]) -> tuple[tuple[str, int, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        invalid.append("tool_breakdown")
        return ()
    items: list[tuple[str, int, float]] = []
    for name, entry in value.items():
        try:
            if not isinstance(entry, dict):
                raise RowError(REASON_WRONG_TYPE, "tool_breakdown entry should be an object")
            calls = _count(entry, "calls", required=False)
            seconds = _amount(entry, "duration_ms") / 1000.0
        except RowError:
            invalid.append("tool_breakdown")
            continue
        items.append((clean_label(name), calls, seconds))
    return tuple(sorted(items))


def _tool_history(value: object, invalid: list[str]) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        invalid.append("tool_call_history")
        return ()
    items: list[tuple[str, float]] = []
    for entry in value:
        try:
            if not isinstance(entry, dict):
                raise RowError(REASON_WRONG_TYPE, "tool_call_history entry should be an object")
            tool = entry.get("tool_name")
            # Inlined _label for the common case (a row has dozens of entries); ASCII
            # cannot hold a lone surrogate, anything else goes through clean_label.
            if type(tool) is str and tool.isascii() and (name := tool.strip()):
                tool = name[:MAX_LABEL_LENGTH]
            else:
                tool = _label(entry, "tool_name")
            seconds = _number(_required(entry, "duration_ms"), "duration_ms") / 1000.0
        except RowError:
            invalid.append("tool_call_history")
            continue
        items.append((tool, seconds))
    return tuple(items)
