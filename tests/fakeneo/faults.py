"""Injected faults: which kinds there are, and the queue the next requests take them from."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from exporter.api import STREAMS_PATH

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


_HTML = b"<!doctype html><html><body><h1>502 Bad Gateway</h1><p>cloudflare</p></body></html>"


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


def _retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


class Faults:
    """Pending faults, used in the order they were injected (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_PendingFault] = []

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
        before answering, as if they arrived while the client pages).
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
            self._pending.append(_PendingFault(fault, count))

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self, path: str) -> Fault | None:
        """Use up one pending fault matching path, if any."""
        with self._lock:
            for pending in self._pending:
                if path.startswith(pending.fault.path):
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._pending.remove(pending)
                    return pending.fault
            return None
