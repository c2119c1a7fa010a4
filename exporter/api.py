"""Neo's usage API as the exporter reads it: the endpoints' names and paths, and paging.

The one place these are written; the reference they come from is in docs/neo-api/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# Endpoint names: the `endpoint` label of every metric about a read, and the key of each path.
STREAMS: Final = "streams"
TASKS: Final = "tasks"
SUMMARY: Final = "summary"
USER: Final = "user"
CREDITS: Final = "credits"

LISTINGS: Final = (STREAMS, TASKS)  # paged listings of rows, read by the poller
ACCOUNT_ENDPOINTS: Final = (SUMMARY, USER, CREDITS)  # one body each, read by account_info
ENDPOINTS: Final = (*LISTINGS, *ACCOUNT_ENDPOINTS)

PATHS: Final[Mapping[str, str]] = {
    STREAMS: "/api/v1/usage/streams",
    TASKS: "/api/v1/usage/tasks",
    SUMMARY: "/api/v1/usage/summary",
    USER: "/api/v1/user",
    CREDITS: "/api/v1/billing/credits",
}
STREAMS_PATH: Final = PATHS[STREAMS]
TASKS_PATH: Final = PATHS[TASKS]
SUMMARY_PATH: Final = PATHS[SUMMARY]
USER_PATH: Final = PATHS[USER]
CREDITS_PATH: Final = PATHS[CREDITS]

# An account-level endpoint answering these is not for this token (not an admin's) or plan.
UNAVAILABLE_STATUSES: Final = (403, 404)

# Paging.
DEFAULT_PAGE_SIZE: Final = 50  # rows a listing's page holds when `limit` is not given
MAX_PAGE_SIZE: Final = 200  # the API's limit on `limit`
SLICE_ROWS = 20_000  # rows per slice of a sweep: what a failure costs to read again
