"""Account-level reads: the usage summary, the spending cap and the credit balance.

Three endpoints, each read on its own interval (`polling.summary_interval`, `user_interval`,
`credits_interval`) by one `AccountInfoPoller` per account, in a thread of its own:

- `/api/v1/usage/summary` over the window (`polling.window`), then again from the last
  credit reset, for the credits used since then;
- `/api/v1/user`, for its spending `cap` (absent, not zero, when the API returns none);
- `/api/v1/billing/credits`, the balance.

An endpoint that answers 403 (not an admin) or 404 (not on a plan) is logged once, shown as
unavailable on the landing page, and tried again only every
`polling.unavailable_retry_interval`; other failures are retried at the normal interval and
keep the last values.

The bodies are parsed in `exporter.models`; this module only reads and publishes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from exporter.api import (
    ACCOUNT_ENDPOINTS,
    CREDITS,
    CREDITS_PATH,
    PATHS,
    SUMMARY,
    SUMMARY_PATH,
    UNAVAILABLE_STATUSES,
    USER,
    USER_PATH,
)
from exporter.client import (
    ApiError,
    NeoClient,
)
from exporter.config import MetricsConfig, PollingConfig, format_duration
from exporter.instrumentation import ExporterMetrics
from exporter.models import (
    format_timestamp,
    parse_cap,
    parse_credits,
    parse_summary,
    parse_summary_credits,
)
from exporter.read_failure import read_error
from exporter.snapshot import (
    AccountInfo,
    EndpointHealth,
    SnapshotStore,
)

log = logging.getLogger(__name__)

InfoChange = Callable[[AccountInfo], AccountInfo]


# --- polling ----------------------------------------------------------------------------------

SUCCESS, UNAVAILABLE, FAILURE, STOPPED = "success", "unavailable", "failure", "stopped"


class AccountInfoPoller:
    """Reads one account's summary, user and credits endpoints, each on its own interval."""

    def __init__(
        self,
        account_name: str,
        polling: PollingConfig,
        metrics_config: MetricsConfig,
        client: NeoClient,
        store: SnapshotStore,
        metrics: ExporterMetrics,
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = account_name
        self._intervals = {
            SUMMARY: polling.summary_interval,
            USER: polling.user_interval,
            CREDITS: polling.credits_interval,
        }
        self._retry_unavailable = polling.unavailable_retry_interval
        self._window = polling.window
        self._status_limit = metrics_config.label_limits.status
        members = metrics_config.members
        self._members_limit = members.limit if members.enabled else None
        self._client = client
        self._store = store
        self._metrics = metrics
        self._stop = stop
        self._clock = clock
        self._due = dict.fromkeys(ACCOUNT_ENDPOINTS, -math.inf)  # everything is due at start
        self._info = AccountInfo()
        self._readers: dict[str, Callable[[float], InfoChange]] = {
            SUMMARY: self._read_summary,
            USER: self._read_user,
            CREDITS: self._read_credits,
        }

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll_due()
            self._stop.wait(max(0.0, self.next_due() - self._clock()))

    def next_due(self) -> float:
        return min(self._due.values())

    def poll_due(self) -> dict[str, str]:
        """Read every endpoint whose time has come; returns each one's result."""
        results = {}
        for endpoint in ACCOUNT_ENDPOINTS:
            if self._stop.is_set():
                break
            if self._clock() >= self._due[endpoint]:
                results[endpoint] = self.poll(endpoint)
        return results

    def poll_once(self) -> bool:
        """Read every endpoint now; True unless one failed (unavailable is not a failure)."""
        results = [self.poll(endpoint) for endpoint in ACCOUNT_ENDPOINTS]
        return all(result in (SUCCESS, UNAVAILABLE) for result in results)

    def poll(self, endpoint: str) -> str:
        now = self._clock()
        try:
            change = self._readers[endpoint](now)
        except Exception as exc:
            if isinstance(exc, ApiError) and exc.status in UNAVAILABLE_STATUSES:
                return self._unavailable(endpoint, exc.status, now)
            error = read_error(exc, self.name, endpoint)  # the poller's words, the same ladder
            return STOPPED if error is None else self._failed(endpoint, error, now)
        self._due[endpoint] = now + self._intervals[endpoint]
        if endpoint in self._info.unavailable_until:
            log.info("account=%s %s is available again", self.name, PATHS[endpoint])
        self._update(
            endpoint,
            SUCCESS,
            EndpointHealth(True, now, None),
            available=True,
            change=change,
        )
        return SUCCESS

    # --- the three reads -----------------------------------------------------------------

    def _read_summary(self, now: float) -> InfoChange:
        body = self._client.get_json(
            SUMMARY_PATH,
            {"from": format_timestamp(now - self._window), "to": format_timestamp(now)},
            SUMMARY,
        )
        summary = parse_summary(
            body, status_limit=self._status_limit, members_limit=self._members_limit
        )
        reset = summary.last_credit_reset
        if reset is not None and reset <= now:
            # Credits used since the reset: the summary's total over [reset, now].
            since = self._client.get_json(
                SUMMARY_PATH,
                {"from": format_timestamp(reset), "to": format_timestamp(now)},
                SUMMARY,
            )
            summary = replace(summary, credits_since_reset=parse_summary_credits(since))
        return lambda info: replace(info, summary=summary)

    def _read_user(self, now: float) -> InfoChange:
        cap = parse_cap(self._client.get_json(USER_PATH, {}, USER))
        return lambda info: replace(info, cap=cap)

    def _read_credits(self, now: float) -> InfoChange:
        credits = parse_credits(self._client.get_json(CREDITS_PATH, {}, CREDITS))
        return lambda info: replace(info, credits=credits)

    # --- outcomes ------------------------------------------------------------------------

    def _unavailable(self, endpoint: str, status: int | None, now: float) -> str:
        retry = now + self._retry_unavailable
        self._due[endpoint] = retry
        reason = f"HTTP {status}: " + (
            "the token is not a team admin's" if status == 403 else "no plan includes it"
        )
        # Logged once when it becomes unavailable, not at every rare retry.
        level = logging.DEBUG if endpoint in self._info.unavailable_until else logging.WARNING
        log.log(
            level,
            "account=%s %s is unavailable to this token (%s); trying again every %s",
            self.name,
            PATHS[endpoint],
            reason,
            format_duration(self._retry_unavailable),
        )
        # What the endpoint said before no longer holds for this token.
        cleared: dict[str, InfoChange] = {
            SUMMARY: lambda info: replace(info, summary=None),
            USER: lambda info: replace(info, cap=None),
            CREDITS: lambda info: replace(info, credits=None),
        }
        previous = self._info.endpoints.get(endpoint, EndpointHealth())
        health = EndpointHealth(False, previous.last_success, f"unavailable ({reason})")
        self._update(
            endpoint, UNAVAILABLE, health, available=False, retry=retry, change=cleared[endpoint]
        )
        return UNAVAILABLE

    def _failed(self, endpoint: str, message: str, now: float) -> str:
        self._due[endpoint] = now + self._intervals[endpoint]
        log.error("account=%s %s read failed: %s", self.name, endpoint, message)
        previous = self._info.endpoints.get(endpoint, EndpointHealth())
        health = EndpointHealth(False, previous.last_success, message)
        self._update(endpoint, FAILURE, health, available=None)
        return FAILURE

    def _update(
        self,
        endpoint: str,
        result: str,
        health: EndpointHealth,
        *,
        available: bool | None,
        retry: float | None = None,
        change: InfoChange | None = None,
    ) -> None:
        """Record the result and publish; `available` None leaves availability as it was."""
        self._metrics.polls.labels(self.name, endpoint, result).inc()
        unavailable = dict(self._info.unavailable_until)
        if available is True:
            unavailable.pop(endpoint, None)
        elif available is False and retry is not None:
            unavailable[endpoint] = retry
        self._info = replace(
            self._info,
            endpoints={**self._info.endpoints, endpoint: health},
            unavailable_until=unavailable,
        )
        if change is not None:
            self._info = change(self._info)
        info = self._info
        self._store.update(self.name, lambda a: replace(a, info=info))
