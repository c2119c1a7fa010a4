"""How an exact exporter reads a row's fields: the repair rules the truth and the fake share."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

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


UNKNOWN = "unknown"  # the label value of a model, status or is_byok that is not usable


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


def _label_of(value: object) -> str:
    return value.strip() if isinstance(value, str) and value.strip() else UNKNOWN


def _byok_of(value: object) -> str:
    flag = _flag(value)
    return UNKNOWN if flag is None else "true" if flag else "false"


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
