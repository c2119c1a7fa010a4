"""Rows and states built in memory for the tests: one stream record with any field changed,
and a fixed numbered run of streams as the API lists them (the crash test and its child).

Helpers only, no tests: test_state, test_collector, test_crash and tests/crash_child.py
build their inputs here.
"""

from __future__ import annotations

from typing import Any

from exporter.config import LabelLimits, config_from_mapping
from exporter.counting import STEP_LATENCY, STREAM_DURATION, TOOL_CALL_DURATION
from exporter.models import StreamRecord, format_timestamp, parse_stream
from exporter.state import State
from exporter.state import open_state as open_configured_state

BOUNDS = {
    TOOL_CALL_DURATION: (0.5, 1.0, 5.0),
    STREAM_DURATION: (10.0, 60.0),
    STEP_LATENCY: (1.0, 2.0),
}
LIMITS = LabelLimits(model=50, status=20, tool=100, agent=50)


def record(stream_id: str, **changes: Any) -> StreamRecord:
    # Built whole (not replaced) so that its fingerprint is of these values.
    values: dict[str, Any] = dict(
        stream_id=stream_id,
        created_ts=1000.0,
        model="gpt-5",
        status="completed",
        byok="false",
        credits=0.1,
        llm_cost=0.0,
        neo_cost=0.0,
        steps=3,
        tool_calls=1,
        agent_triggers=1,
        llm_time=1.0,
        tool_time=0.5,
        execution_time=20.0,
        step_latency=1.5,
        agent_breakdown=(("recon", 1),),
        tool_usage=(("nuclei", 1, 0.5),),
        tool_durations=(("nuclei", 0.5),),
    )
    return StreamRecord(**{**values, **changes})


# --- a numbered run of streams (tests/crash_child.py ingests it, test_crash checks it) ---

RUN_T0 = 1_795_000_000.0
DEFAULTS = config_from_mapping({"accounts": [{"name": "acme", "token": "t"}]}, {})
MODELS = ("claude-sonnet-4-5", "gpt-5", "gemini-2.5-pro")


def open_default_state(path: str) -> State:
    """The state as the exporter opens it with a default config."""
    return open_configured_state(DEFAULTS, path)


def numbered_stream(n: int, version: int = 1) -> StreamRecord:
    """Stream n as the API lists it; version 2 is Neo's revision, with more credits and steps."""
    extra = version - 1
    return parse_stream(
        {
            "stream_id": f"stream-{n:06d}",
            "task_id": f"task-{n // 3}",
            "created_at": format_timestamp(RUN_T0 - 86400 + n),
            "model": MODELS[n % 3],
            "status": "completed" if n % 7 else "error",
            "is_byok": n % 4 == 0,
            "neo_credits": round(0.01 * (n % 97) + 0.5 + 0.25 * extra, 2),
            "llm_cost": 0.001 * (n % 13),
            "step_count": n % 9 + extra,
            "tool_calls": n % 5,
            "agent_triggers": n % 3,
            "total_execution_ms": 1000 + n % 5000,
            "tool_breakdown": {"httpx": {"calls": n % 5, "duration_ms": 10 * (n % 5)}},
            "tool_call_history": [{"tool_name": "httpx", "duration_ms": 10}],
        }
    )
