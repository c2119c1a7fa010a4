"""The request log: every API request as the fake saw it, for tests to read back."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the fake saw it. The token itself is never kept."""

    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 when the connection was reset without a response
    auth: str  # "bearer", "x-api-key" or "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "auth": self.auth,
        }


class RequestLog:
    """The requests in the order they were answered (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
