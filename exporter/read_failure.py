"""How a read that failed is told, the same for every poller: the endpoint's error, or a stop.

A read raises what its parts raise: `Stopped` (the stop event), `ApiError` (the client gave
up; its message is safe to show), `StateError` (the state cannot be written), `BodyError`
(a body the models cannot use), or anything else, which is a bug: it is logged with its
traceback and must not end the poller's thread.
"""

from __future__ import annotations

import logging

from exporter.client import ApiError, Stopped
from exporter.models import BodyError
from exporter.state import StateError

log = logging.getLogger(__name__)


def read_error(exc: Exception, account: str, endpoint: str) -> str | None:
    """The error a failed read of `endpoint` shows (`neo_up` 0, the status page); None when
    the read was stopped, which is no failure."""
    if isinstance(exc, Stopped):
        return None
    if isinstance(exc, ApiError | StateError):  # the state's: reported, not a traceback
        return str(exc)
    if isinstance(exc, BodyError):
        return f"{endpoint}: invalid response body: {exc}"
    log.error("account=%s %s read failed unexpectedly", account, endpoint, exc_info=exc)
    return f"internal error: {type(exc).__name__}"
