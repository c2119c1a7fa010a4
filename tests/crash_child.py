"""A child process for test_crash (run as `python -m tests.crash_child` from the root): it
ingests a fixed run of streams into a state file, batch by batch, until killed or done. It
starts half a batch before the rows already committed, so that every restart also re-reads
rows counted before (as the exporter's reads overlap).

It prints BEGIN and COMMIT as SQLite starts them, so that the parent, after a SIGKILL, knows
from the last line whether the process died inside a transaction.
"""

from __future__ import annotations

import sys

from tests.records import RUN_T0, numbered_stream, open_default_state


def main(path: str, total: int, batch: int, version: int = 1) -> None:
    state = open_default_state(path)

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
        rows = [numbered_stream(n, version) for n in range(start, min(total, start + batch))]
        state.ingest("acme", rows, RUN_T0)
    state.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:5]))
