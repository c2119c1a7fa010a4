"""A child process for test_crash: ingests a fixed run of streams into a state file, batch
by batch, until killed or done. It starts half a batch before the rows already committed,
so that every restart also re-reads rows counted before (as the exporter's reads overlap).

It prints BEGIN and COMMIT as SQLite starts them, so that the parent, after a SIGKILL, knows
from the last line whether the process died inside a transaction.
"""

from __future__ import annotations

import sys

from exporter.config import config_from_mapping
from exporter.models import StreamRecord, format_timestamp, parse_stream
from exporter.state import State
from exporter.state import open_state as open_configured_state

T0 = 1_795_000_000.0
DEFAULTS = config_from_mapping({"accounts": [{"name": "acme", "token": "t"}]}, {})
MODELS = ("claude-sonnet-4-5", "gpt-5", "gemini-2.5-pro")


def open_state(path: str) -> State:
    """The state as the exporter opens it with a default config."""
    return open_configured_state(DEFAULTS, path)


def record(n: int, version: int = 1) -> StreamRecord:
    """Stream n as the API lists it; version 2 is Neo's revision, with more credits and steps."""
    extra = version - 1
    return parse_stream(
        {
            "stream_id": f"stream-{n:06d}",
            "task_id": f"task-{n // 3}",
            "created_at": format_timestamp(T0 - 86400 + n),
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


def main(path: str, total: int, batch: int, version: int = 1) -> None:
    state = open_state(path)

    def trace(sql: str) -> None:
        word = sql.split(None, 1)[0].upper() if sql.strip() else ""
        if word in ("BEGIN", "COMMIT", "ROLLBACK"):
            print(word, flush=True)

    # The state's own connection: the only way to see where SQLite is when the kill lands.
    state._db.set_trace_callback(trace)
    # A revision run goes over every stream again; a first run resumes where it stopped.
    first = 0 if version > 1 else max(0, state.seen_streams("acme") - batch // 2)
    print("READY", flush=True)
    for start in range(first, total, batch):
        rows = [record(n, version) for n in range(start, min(total, start + batch))]
        state.ingest("acme", rows, T0)
    state.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:5]))
