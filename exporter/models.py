"""Pure parsing of Neo usage API bodies into typed records. No I/O here.

A stream row needs only a `stream_id` and a parsable `created_at` to be counted: every other
field the docs leave open (nulls, numbers or booleans sent as strings, `-1` for a time that
was not measured, inner keys of `tool_breakdown`) is repaired, never a reason to drop the
row's money. Each repair is named in the record's `repairs` (by API field, a bounded set that
becomes a label value of `neo_exporter_repaired_fields_total`):

- a null, empty or non-string `model` or `status` reads as `unknown`;
- `is_byok` absent reads as `unknown`; `"true"`/`"false"` strings read as booleans; anything
  else (null, a number) reads as `unknown`;
- a null, negative, non-finite, implausibly large or non-numeric amount, count or time is
  absent for that field only (adds nothing, observes nothing); a count must be whole;
  numbers sent as strings are read as numbers;
- per-tool calls and times come from `tool_call_history` (documented) where a row has it,
  else from `tool_breakdown` entries that have the guessed keys `calls` and `duration_ms`;
  an entry without them is dropped, not read as zero.

Only a row without a usable id or time is rejected, with a `RowError` whose `reason` is one
of a small fixed set (a label of `neo_exporter_skipped_records_total`) and whose `detail`
says what was wrong (for the log).

Speed: a page is split into its rows' raw JSON by msgspec (`decode_page`), and each row is
decoded on its own, so that a bad row is repaired or skipped alone. A row the docs describe
exactly (every field present, of its documented type and in range) is decoded and checked by
msgspec's typed decoder, in C (`_fast_stream`); any other row takes the general path above,
which gives the same record for every row the typed one accepts (a test holds them to it).
A record's `fingerprint` is a digest of the row's raw bytes, so that a re-read row can be
known unchanged before it is decoded at all.

The account-level bodies (`/usage/summary`, `/user`, `/billing/credits`) are parsed at the
end: a required field that is missing or malformed makes the body a `BodyError`; an optional
one is absent (None, never 0), logged at debug level.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from exporter import api
from exporter.catalogue import OTHER

log = logging.getLogger(__name__)

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

# Fields a row can have repaired (label values of neo_exporter_repaired_fields_total).
MONEY_FIELDS = ("neo_credits", "llm_cost", "neo_cost")
COUNT_FIELDS = ("step_count", "tool_calls", "agent_triggers")
TIME_FIELDS = ("llm_time_ms", "tool_time_ms", "total_execution_ms", "avg_step_latency_ms")
LABEL_FIELDS = ("model", "status", "is_byok")
DETAIL_FIELDS = ("agent_breakdown", "tool_breakdown", "tool_call_history")
REPAIR_FIELDS = (
    *LABEL_FIELDS,
    *MONEY_FIELDS,
    *COUNT_FIELDS,
    *TIME_FIELDS,
    *DETAIL_FIELDS,
    "stream_count",
)

# Long label values would bloat every scrape; no real model or tool name comes close.
MAX_LABEL_LENGTH = 120
MAX_ID_LENGTH = 256
MAX_TITLE_LENGTH = 200  # a task title kept for an alert's culprits, not a label
# No single stream costs anywhere near this; a larger value is a broken field, and summing it
# would wreck the counter's precision (or overflow it to +Inf) for good.
MAX_AMOUNT = 1e12
UNKNOWN = "unknown"
_BOOL_STRINGS = {"true": "true", "false": "false"}


class RowError(ValueError):
    """A row that cannot be counted: `reason` is a bounded label value, `detail` is for logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PageError(ValueError):
    """A response body that is not a usage list page; the client retries the request."""


class Page(msgspec.Struct, frozen=True):
    """A list page: its rows as raw JSON (`msgspec.Raw`), or as decoded values when the
    body needed the standard library's decoder (NaN, integers beyond 64 bits)."""

    rows: Sequence[object]
    has_more: bool
    total: int | None


class StreamRecord(msgspec.Struct, frozen=True, gc=False):
    """One stream row, in base units (seconds, USD, credits), ready to be counted.

    A field that is None was absent or repaired away: it adds nothing and observes nothing.
    `fingerprint` tells one version of the row from another (see `row_digest`).
    """

    stream_id: str
    created_ts: float
    model: str
    status: str
    byok: str  # "true" | "false" | "unknown"
    credits: float
    llm_cost: float
    neo_cost: float
    steps: int | None
    tool_calls: int | None
    agent_triggers: int | None
    llm_time: float | None
    tool_time: float | None
    execution_time: float | None
    step_latency: float | None
    agent_breakdown: tuple[tuple[str, int], ...]
    tool_usage: tuple[tuple[str, int, float], ...]  # (tool, calls, seconds), sorted by tool
    tool_durations: tuple[tuple[str, float], ...]  # (tool, seconds), one per history entry
    repairs: tuple[str, ...] = ()
    fingerprint: str = ""
    # Who and what spent it (for culprits, teams and budgets; never labels): the task, its
    # title and the member's email, each None when the row has none.
    task_id: str | None = None
    task_title: str | None = None
    email: str | None = None

    @property
    def ended_ts(self) -> float:
        """When the stream ended: created_at + total_execution_ms (created_at without one)."""
        return self.created_ts + (self.execution_time or 0.0)

    def __post_init__(self) -> None:
        if not self.fingerprint:  # built in code rather than parsed: its values' digest
            msgspec.structs.force_setattr(
                self, "fingerprint", row_digest(msgspec.structs.astuple(self))
            )


class TaskRecord(msgspec.Struct, frozen=True, gc=False):
    """One task row: a mutable sum over the task's streams, used for window gauges only."""

    task_id: str
    created_ts: float
    status: str
    credits: float
    llm_cost: float
    neo_cost: float
    stream_count: int
    repairs: tuple[str, ...] = ()


class _PageShape(msgspec.Struct):
    data: list[msgspec.Raw]
    has_more: bool
    total: Annotated[int, msgspec.Meta(ge=0)] | None = None


_PAGE_DECODER = msgspec.json.Decoder(_PageShape)


def decode_page(body: bytes) -> Page:
    """A response body as a list page whose rows are raw JSON, decoded one by one later.

    Raises PageError for a body that is not a page, ValueError for one that is not JSON.
    A body msgspec does not take (NaN, integers beyond 64 bits, a wrong shape) is read by
    the standard library, so the decoder never changes which rows are counted.
    """
    try:
        shape = _PAGE_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return parse_page(json.loads(body))
    return Page(rows=shape.data, has_more=shape.has_more, total=shape.total)


def row_digest(row: object) -> str:
    """The fingerprint of a row: a digest of its raw JSON (of its re-encoding if decoded)."""
    if type(row) is msgspec.Raw:
        raw: bytes | msgspec.Raw = row
    else:
        try:
            raw = msgspec.json.encode(row, order="sorted")
        except (TypeError, ValueError):  # a lone surrogate: no UTF-8 for it
            raw = repr(row).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


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


def raw_digest(row: object) -> str | None:
    """The fingerprint of a row still in raw JSON; None for a decoded one."""
    return row_digest(row) if type(row) is msgspec.Raw else None


def raw_stream_id(row: object) -> str | None:
    """The `stream_id` of a raw row, without decoding the rest of it; None for a decoded
    row or one without a string id (parse_stream says why)."""
    if type(row) is not msgspec.Raw:
        return None
    try:
        return _ID_DECODER.decode(row).stream_id
    except msgspec.ValidationError:
        return None


def row_created_ts(row: object) -> float | None:
    """A row's `created_at` in Unix seconds, raw or decoded, without decoding the rest of it;
    None for a row without a parsable one (parsing the row says why)."""
    try:
        if type(row) is msgspec.Raw:
            value: object = _CREATED_DECODER.decode(row).created_at
        else:
            value = row.get("created_at") if isinstance(row, dict) else None
        return parse_timestamp(value)
    except (msgspec.ValidationError, msgspec.DecodeError, RowError):
        return None


def parse_stream(row: object, fingerprint: str = "") -> StreamRecord:
    """Turn one `/usage/streams` row into a record, or raise RowError (no id or no time).

    `row` is the row's raw JSON (`msgspec.Raw`) or its decoded value; `fingerprint` its
    digest if already known (`raw_digest`).
    """
    if type(row) is msgspec.Raw:
        fingerprint = fingerprint or row_digest(row)
        try:
            return _fast_stream(_STREAM_DECODER.decode(row), fingerprint)
        except (msgspec.ValidationError, _NotPlain):
            row = row_value(row)
    obj = _object(row)
    stream_id = _identifier(obj, "stream_id")
    created_ts = parse_timestamp(_required(obj, "created_at"))
    fix = _Repairs()
    steps = fix.count(obj, "step_count")
    history = _tool_history(obj.get("tool_call_history"), fix)
    return StreamRecord(
        stream_id=stream_id,
        created_ts=created_ts,
        model=fix.label(obj, "model"),
        status=fix.label(obj, "status").lower(),
        byok=fix.byok(obj),
        credits=fix.amount(obj, "neo_credits") or 0.0,
        llm_cost=fix.amount(obj, "llm_cost") or 0.0,
        neo_cost=fix.amount(obj, "neo_cost") or 0.0,
        steps=steps,
        tool_calls=fix.count(obj, "tool_calls"),
        agent_triggers=fix.count(obj, "agent_triggers"),
        llm_time=fix.seconds(obj, "llm_time_ms"),
        tool_time=fix.seconds(obj, "tool_time_ms"),
        execution_time=fix.seconds(obj, "total_execution_ms"),
        step_latency=fix.seconds(obj, "avg_step_latency_ms", nullable=True),
        agent_breakdown=_agent_breakdown(obj.get("agent_breakdown"), fix),
        tool_usage=_usage_of(history) if history else _tool_breakdown(obj, fix),
        tool_durations=history,
        repairs=tuple(fix.fields),
        fingerprint=fingerprint or row_digest(obj),
        task_id=_text(obj.get("task_id"), MAX_ID_LENGTH),
        task_title=_text(obj.get("task_title"), MAX_TITLE_LENGTH),
        email=_text(obj.get("email"), MAX_ID_LENGTH),
    )


def _text(value: object, limit: int) -> str | None:
    """A string field kept as text (trimmed, at most `limit` characters); None otherwise."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text[:limit] if text else None


def parse_task(row: object) -> TaskRecord:
    """Turn one `/usage/tasks` row into a record, or raise RowError (no id or no time)."""
    if type(row) is msgspec.Raw:
        try:
            return _fast_task(_TASK_DECODER.decode(row))
        except (msgspec.ValidationError, _NotPlain):
            row = row_value(row)
    obj = _object(row)
    task_id = _identifier(obj, "task_id")
    created_ts = parse_timestamp(_required(obj, "created_at"))
    fix = _Repairs()
    stream_count = fix.count(obj, "stream_count")
    return TaskRecord(
        task_id=task_id,
        created_ts=created_ts,
        status=fix.label(obj, "status").lower(),
        credits=fix.amount(obj, "neo_credits") or 0.0,
        llm_cost=fix.amount(obj, "llm_cost") or 0.0,
        neo_cost=fix.amount(obj, "neo_cost") or 0.0,
        stream_count=1 if stream_count is None else stream_count,
        repairs=tuple(fix.fields),
    )


# --- the typed decoder: rows exactly as documented -----------------------------------
#
# Each rule below accepts a subset of what the general path accepts without a repair, and
# gives the same value for it; anything else raises and the row takes the general path.
# Rows and records hold no reference cycles, so they are kept out of the cyclic garbage
# collector (gc=False): tracking the many objects of a backfill cost it about a tenth.

_Amount = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_AMOUNT)]
_Whole = Annotated[int, msgspec.Meta(ge=0, le=int(MAX_AMOUNT))]


class _NotPlain(Exception):
    """A row the typed decoder read but whose values need the general path's care."""


class _ToolCall(msgspec.Struct, gc=False):
    tool_name: str
    duration_ms: _Amount


# A stream without tool calls: `tool_breakdown` absent, null or empty, and so no per-tool figures.
_NO_BREAKDOWN = msgspec.Raw(b"")
_EMPTY_BREAKDOWNS = (b"", b"null", b"{}")


class _StreamRow(msgspec.Struct, gc=False):
    stream_id: str
    created_at: str
    model: str
    status: str
    neo_credits: _Amount
    llm_cost: _Amount
    neo_cost: _Amount
    step_count: _Whole
    tool_calls: _Whole
    agent_triggers: _Whole
    llm_time_ms: _Amount
    tool_time_ms: _Amount
    total_execution_ms: _Amount
    avg_step_latency_ms: _Amount | None
    agent_breakdown: dict[str, _Whole]
    tool_call_history: list[_ToolCall]
    is_byok: bool | msgspec.UnsetType = msgspec.UNSET
    tool_breakdown: msgspec.Raw = _NO_BREAKDOWN  # kept raw: read only when the history is empty
    task_id: str | None = None
    task_title: str | None = None
    email: str | None = None


class _StreamId(msgspec.Struct, gc=False):
    stream_id: str


class _CreatedAt(msgspec.Struct, gc=False):
    created_at: str


class _TaskRow(msgspec.Struct, gc=False):
    task_id: str
    created_at: str
    status: str
    neo_credits: _Amount
    llm_cost: _Amount
    neo_cost: _Amount
    stream_count: _Whole


_STREAM_DECODER = msgspec.json.Decoder(_StreamRow)
_TASK_DECODER = msgspec.json.Decoder(_TaskRow)
_ID_DECODER = msgspec.json.Decoder(_StreamId)
_CREATED_DECODER = msgspec.json.Decoder(_CreatedAt)


def row_value(row: object) -> object:
    """A row as Python values: raw JSON decoded (by the standard library, as for a whole
    body: it takes what msgspec would not), anything else as it is."""
    return json.loads(bytes(row)) if type(row) is msgspec.Raw else row


def _plain_id(value: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH or not (value.isascii() or _encodable(value)):
        raise _NotPlain
    return value


def _plain_label(value: str) -> str:
    if value and value.isascii() and value.strip() == value:
        return value[:MAX_LABEL_LENGTH]
    raise _NotPlain


def _plain_names(names: Iterable[str]) -> bool:
    """Tool or agent names that are their own labels: no trimming, cleaning or cutting."""
    for name in names:
        if not (name and len(name) <= MAX_LABEL_LENGTH and name.isascii() and name.strip() == name):
            return False
    return True


def _fast_stream(row: _StreamRow, fingerprint: str) -> StreamRecord:
    calls = row.tool_call_history
    if not calls and bytes(row.tool_breakdown) not in _EMPTY_BREAKDOWNS:
        raise _NotPlain  # per-tool figures come from tool_breakdown then
    # One pass over the calls: durations in order, and per-tool [tool, calls, seconds] summed in
    # that order (as `_usage_of`). A name that needs cleaning takes the general path.
    durations: list[tuple[str, float]] = []
    usage: dict[str, list[Any]] = {}
    for call in calls:
        tool, seconds = call.tool_name, call.duration_ms / 1000.0
        durations.append((tool, seconds))
        slot = usage.get(tool)
        if slot is None:
            usage[tool] = [tool, 1, seconds]
        else:
            slot[1] += 1
            slot[2] += seconds
    agents = row.agent_breakdown
    # Plain names are their own labels, so no two of them fold together: nothing to merge.
    if not (_plain_names(usage) and _plain_names(agents)):
        raise _NotPlain
    byok = row.is_byok
    latency = row.avg_step_latency_ms
    # Positional: 23 keywords cost 2.6 us a record here, positions 0.4 us (of about 14 us).
    return StreamRecord(
        _plain_id(row.stream_id),  # stream_id
        parse_timestamp(row.created_at),  # created_ts
        _plain_label(row.model),  # model
        _plain_label(row.status).lower(),  # status
        UNKNOWN if byok is msgspec.UNSET else ("true" if byok else "false"),  # byok
        row.neo_credits,  # credits
        row.llm_cost,  # llm_cost
        row.neo_cost,  # neo_cost
        row.step_count,  # steps
        row.tool_calls,  # tool_calls
        row.agent_triggers,  # agent_triggers
        row.llm_time_ms / 1000.0,  # llm_time
        row.tool_time_ms / 1000.0,  # tool_time
        row.total_execution_ms / 1000.0,  # execution_time
        None if latency is None else latency / 1000.0,  # step_latency
        tuple(sorted(agents.items())),  # agent_breakdown
        tuple(sorted(map(tuple, usage.values()))),  # tool_usage: one entry per tool
        tuple(durations),  # tool_durations
        (),  # repairs
        fingerprint,  # fingerprint
        _text(row.task_id, MAX_ID_LENGTH),  # task_id
        _text(row.task_title, MAX_TITLE_LENGTH),  # task_title
        _text(row.email, MAX_ID_LENGTH),  # email
    )


def _fast_task(row: _TaskRow) -> TaskRecord:
    return TaskRecord(
        task_id=_plain_id(row.task_id),
        created_ts=parse_timestamp(row.created_at),
        status=_plain_label(row.status).lower(),
        credits=row.neo_credits,
        llm_cost=row.llm_cost,
        neo_cost=row.neo_cost,
        stream_count=row.stream_count,
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


def _number(value: object) -> float | None:
    """A finite number in [0, MAX_AMOUNT], numeric strings included; None if it is not one."""
    kind = type(value)
    if kind is float or kind is int:
        number = float(value)  # type: ignore[arg-type]  # exactly int or float here
    elif kind is str:
        try:
            number = float(value)  # type: ignore[arg-type]
        except ValueError:
            return None
    else:  # bool, null, containers
        return None
    if not 0.0 <= number <= MAX_AMOUNT:  # NaN fails both comparisons
        return None
    return number


class _Repairs:
    """Reads one row's optional fields, noting each field it had to repair."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: list[str] = []

    def label(self, obj: Mapping[str, object], field: str) -> str:
        value = obj.get(field)
        if type(value) is str and value and value.isascii() and value.strip() == value:
            return value[:MAX_LABEL_LENGTH]  # what the API sends, without clean_label's work
        if isinstance(value, str):
            cleaned = clean_label(value)
            if cleaned != UNKNOWN or value.strip().lower() == UNKNOWN:
                return cleaned
        self.fields.append(field)
        return UNKNOWN

    def byok(self, obj: Mapping[str, object]) -> str:
        if "is_byok" not in obj:  # optional in the docs: absent is not a repair
            return UNKNOWN
        value = obj["is_byok"]
        if value is True:
            return "true"
        if value is False:
            return "false"
        self.fields.append("is_byok")
        if isinstance(value, str):
            return _BOOL_STRINGS.get(value.strip().lower(), UNKNOWN)
        return UNKNOWN

    def amount(self, obj: Mapping[str, object], field: str) -> float | None:
        """A money amount or time: None when absent; repaired to None when unusable."""
        value = obj.get(field)
        kind = type(value)
        if kind is float:
            if 0.0 <= value <= MAX_AMOUNT:  # type: ignore[operator]  # the usual case, fast
                return value  # type: ignore[return-value]
        elif kind is int:
            if 0 <= value <= MAX_AMOUNT:  # type: ignore[operator]
                return float(value)  # type: ignore[arg-type]
        elif value is None and field not in obj:
            return None
        number = _number(value)
        self.fields.append(field)  # a string read as a number is noted too
        return number

    def seconds(
        self, obj: Mapping[str, object], field: str, *, nullable: bool = False
    ) -> float | None:
        """A `_ms` field in seconds; `nullable` fields may be null without a repair."""
        if nullable and obj.get(field, 0) is None:
            return None
        amount = self.amount(obj, field)
        return None if amount is None else amount / 1000.0

    def count(self, obj: Mapping[str, object], field: str) -> int | None:
        value = obj.get(field)
        if type(value) is int and 0 <= value <= MAX_AMOUNT:
            return value
        amount = self.amount(obj, field)
        if amount is None:
            return None
        if not amount.is_integer():
            if field not in self.fields:
                self.fields.append(field)
            return None
        return int(amount)


def _agent_breakdown(value: object, fix: _Repairs) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        fix.fields.append("agent_breakdown")
        return ()
    items: dict[str, int] = {}
    bad = False
    for name, count in value.items():
        number = count if type(count) is int and 0 <= count <= MAX_AMOUNT else _number(count)
        if number is None or not float(number).is_integer() or not isinstance(name, str):
            bad = True
            continue
        label = clean_label(name)
        items[label] = items.get(label, 0) + int(number)
    if bad:
        fix.fields.append("agent_breakdown")
    return tuple(sorted(items.items()))


def _tool_breakdown(obj: Mapping[str, object], fix: _Repairs) -> tuple[tuple[str, int, float], ...]:
    """Per-tool (calls, seconds) from `tool_breakdown`, whose inner keys are a guess."""
    value = obj.get("tool_breakdown")
    if value is None:
        return ()
    if not isinstance(value, dict):
        fix.fields.append("tool_breakdown")
        return ()
    items: dict[str, tuple[int, float]] = {}
    bad = False
    for name, entry in value.items():
        calls = duration = None
        if isinstance(entry, dict) and isinstance(name, str):
            calls, duration = _number(entry.get("calls")), _number(entry.get("duration_ms"))
        if calls is None or duration is None or not calls.is_integer():
            bad = True  # not a zero: an entry we cannot read says nothing
            continue
        label = clean_label(name)
        before_calls, before_seconds = items.get(label, (0, 0.0))
        items[label] = (before_calls + int(calls), before_seconds + duration / 1000.0)
    if bad:
        fix.fields.append("tool_breakdown")
    return tuple((tool, calls, seconds) for tool, (calls, seconds) in sorted(items.items()))


def _tool_history(value: object, fix: _Repairs) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        fix.fields.append("tool_call_history")
        return ()
    items: list[tuple[str, float]] = []
    bad = False
    for entry in value:
        if not isinstance(entry, dict):
            bad = True
            continue
        tool = entry.get("tool_name")
        # Inlined clean_label for the common case (a row has dozens of entries); ASCII
        # cannot hold a lone surrogate, anything else goes through clean_label.
        if type(tool) is str and tool.isascii() and (name := tool.strip()):
            tool = name[:MAX_LABEL_LENGTH]
        elif isinstance(tool, str) and (cleaned := clean_label(tool)) != UNKNOWN:
            tool = cleaned
        else:
            bad = True
            continue
        duration = entry.get("duration_ms")
        if type(duration) is not int or not 0 <= duration <= MAX_AMOUNT:
            duration = _number(duration)
            if duration is None:
                bad = True
                continue
        items.append((tool, duration / 1000.0))
    if bad:
        fix.fields.append("tool_call_history")
    return tuple(items)


def _usage_of(history: tuple[tuple[str, float], ...]) -> tuple[tuple[str, int, float], ...]:
    """Per-tool (calls, seconds) summed from the history, in history order per tool."""
    usage: dict[str, list[Any]] = {}
    for tool, seconds in history:
        slot = usage.get(tool)
        if slot is None:
            usage[tool] = [tool, 1, seconds]
        else:
            slot[1] += 1
            slot[2] += seconds
    return tuple([(slot[0], slot[1], slot[2]) for _, slot in sorted(usage.items())])


# --- account-level bodies: /usage/summary, /user, /billing/credits -----------------------

TITLE_MAX = 60  # characters of a task title kept in a label


@dataclass(frozen=True, slots=True)
class MemberSpend:
    """One member's spend over the window (`by_email` of the summary), or `other`."""

    email: str
    credits: float
    tasks: int


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """`/usage/summary` over the window, and the account's credit balance as it reports it.

    Optional fields are None when the API leaves them out (they are not documented for sure).
    """

    credits: float
    tasks_by_status: Mapping[str, int]
    byok_llm_cost: float | None = None
    byok_neo_cost: float | None = None
    byok_streams: int | None = None
    byok_tasks: int | None = None
    available_credits: float | None = None
    issued_credits: float | None = None
    credits_expire_at: float | None = None
    last_credit_reset: float | None = None
    credits_since_reset: float | None = None
    members: tuple[MemberSpend, ...] = ()  # empty unless metrics.members.enabled


@dataclass(frozen=True, slots=True)
class SpendingCap:
    """`cap` of `/user`, in USD."""

    limit: float
    used: float
    remaining: float


@dataclass(frozen=True, slots=True)
class CreditBalance:
    """`/billing/credits`; a field the API leaves out is None."""

    available: float | None
    issued: float | None
    used: float | None
    expires_at: float | None


class BodyError(ValueError):
    """A response body that does not have the documented shape."""


def _body_object(body: object, what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise BodyError(f"{what} should be a JSON object, got {type(body).__name__}")
    return body


def _field_number(obj: Mapping[str, Any], key: str, *, required: bool = False) -> float | None:
    """A finite number; None when absent, null or (for an optional field) malformed."""
    value = obj.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if required:
        raise BodyError(f"{key} should be a number, got {value!r:.40}")
    if value is not None:
        log.debug("ignoring %s: not a number (%.40r)", key, value)
    return None


def _field_count(obj: Mapping[str, Any], key: str) -> int | None:
    value = _field_number(obj, key)
    return None if value is None or value < 0 else int(value)


def _field_time(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    try:
        return parse_timestamp(value, key)
    except RowError as exc:
        log.debug("ignoring %s: %s", key, exc.detail)
        return None


def _largest_and_other(values: Mapping[str, float], limit: int) -> dict[str, float]:
    """The `limit` largest values by key, the rest summed under `other`."""
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:limit])
    rest = ranked[limit:]
    if rest:
        kept[OTHER] = kept.get(OTHER, 0.0) + math.fsum(v for _, v in rest)
    return kept


def _statuses(value: object, limit: int) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BodyError(f"by_status should be an object, got {type(value).__name__}")
    counts: dict[str, float] = {}
    for status, count in value.items():
        if isinstance(status, str) and isinstance(count, int) and count >= 0:
            label = clean_label(status).lower()
            counts[label] = counts.get(label, 0) + count
    return {k: int(v) for k, v in _largest_and_other(counts, limit).items()}


def _members(value: object, limit: int) -> tuple[MemberSpend, ...]:
    """`by_email`: the `limit` biggest spenders, the rest summed as `other`."""
    credits: dict[str, list[float]] = {}
    tasks: dict[str, int] = {}
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            continue
        email = clean_label(item["email"])
        credits.setdefault(email, []).append(_field_number(item, "neo_credits") or 0.0)
        tasks[email] = tasks.get(email, 0) + (_field_count(item, "tasks") or 0)
    totals = {email: math.fsum(values) for email, values in credits.items()}
    ranked = sorted(totals, key=lambda email: (-totals[email], email))
    kept = [MemberSpend(email, totals[email], tasks[email]) for email in ranked[:limit]]
    rest = ranked[limit:]
    if rest:
        kept.append(
            MemberSpend(OTHER, math.fsum(totals[e] for e in rest), sum(tasks[e] for e in rest))
        )
    return tuple(kept)


def parse_summary(
    body: object, *, status_limit: int, members_limit: int | None = None
) -> UsageSummary:
    """`/usage/summary`; `by_email` is read only when members_limit is given."""
    obj = _body_object(body, api.SUMMARY)
    credits = _field_number(obj, "total_neo_credits", required=True)
    assert credits is not None
    byok = obj.get("byok")
    if not isinstance(byok, dict):
        byok = {}
    return UsageSummary(
        credits=credits,
        tasks_by_status=_statuses(obj.get("by_status"), status_limit),
        byok_llm_cost=_field_number(byok, "total_llm_cost"),
        byok_neo_cost=_field_number(byok, "total_neo_cost"),
        byok_streams=_field_count(byok, "total_streams"),
        byok_tasks=_field_count(byok, "total_tasks"),
        available_credits=_field_number(obj, "total_available_neo_credits"),
        issued_credits=_field_number(obj, "total_issued_neo_credits"),
        credits_expire_at=_field_time(obj, "neo_credits_expires_at"),
        last_credit_reset=_field_time(obj, "last_credit_reset"),
        members=() if members_limit is None else _members(obj.get("by_email"), members_limit),
    )


def parse_summary_credits(body: object) -> float:
    """`total_neo_credits` of a `/usage/summary` body (the self-audit's one figure)."""
    credits = _field_number(_body_object(body, api.SUMMARY), "total_neo_credits", required=True)
    assert credits is not None
    return credits


def parse_cap(body: object) -> SpendingCap | None:
    """The `cap` of `/user`: None when there is none (null or absent)."""
    cap = _body_object(body, api.USER).get("cap")
    if cap is None:
        return None
    cap = _body_object(cap, "cap")
    limit = _field_number(cap, "limit", required=True)
    used = _field_number(cap, "used", required=True)
    assert limit is not None and used is not None
    remaining = _field_number(cap, "remaining")
    return SpendingCap(limit, used, max(0.0, limit - used) if remaining is None else remaining)


def parse_credits(body: object) -> CreditBalance:
    obj = _body_object(body, api.CREDITS)
    balance = CreditBalance(
        available=_field_number(obj, "available_credits"),
        issued=_field_number(obj, "issued_credits"),
        used=_field_number(obj, "used_credits"),
        expires_at=_field_time(obj, "expires_at"),
    )
    if balance.available is None and balance.issued is None and balance.used is None:
        raise BodyError("none of available_credits, issued_credits, used_credits is a number")
    return balance


def clean_title(value: object) -> str:
    """A task title fit for a label: control characters gone, spaces collapsed, truncated."""
    if not isinstance(value, str):
        return ""
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in value)
    text = " ".join(text.split())
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1] + "\u2026"
