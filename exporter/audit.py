"""The self-audit: Neo's own totals beside what the exporter counted, for one account.

Every `audit.interval`, for the window less the lookback (rows younger than that may still
arrive): Neo's count of streams (`total` of the listing) and credits (`/usage/summary`)
against the state's. Half-second bounds, so that no row with a whole-second `created_at`
sits on one, whichever of the API's bounds is inclusive.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from exporter.api import STREAMS, STREAMS_PATH, SUMMARY, SUMMARY_PATH, UNAVAILABLE_STATUSES
from exporter.client import ApiError, NeoClient, Stopped
from exporter.config import PollingConfig
from exporter.models import BodyError, format_timestamp, parse_summary_credits
from exporter.snapshot import AuditResult
from exporter.state import State

log = logging.getLogger(__name__)


class SelfAudit:
    """Compares Neo's totals with the state's for one account; `run()` once per interval."""

    def __init__(
        self,
        account: str,
        client: NeoClient,
        state: State,
        polling: PollingConfig,
        clock: Callable[[], float],
    ) -> None:
        self.name = account
        self._client = client
        self._state = state
        self._polling = polling
        self._clock = clock

    def run(self) -> AuditResult | None:
        """Compare Neo's totals for the window less the lookback with the state's; None
        when the window is shorter than the lookback, or the audit failed (logged)."""
        now = self._clock()
        # Half-second bounds: no row with a whole-second created_at sits on one, whichever
        # of the API's bounds is inclusive.
        start = math.floor(now - self._polling.window) + 0.5
        end = math.floor(now - self._polling.lookback) + 0.5
        if end <= start:
            return None
        period = {"from": format_timestamp(start), "to": format_timestamp(end)}
        try:
            neo_streams = self._client.count(STREAMS_PATH, STREAMS, start, end)
            try:
                neo_credits: float | None = parse_summary_credits(
                    self._client.get_json(SUMMARY_PATH, period, SUMMARY)
                )
            except ApiError as exc:
                if exc.status not in UNAVAILABLE_STATUSES:
                    raise
                neo_credits = None  # a token that may not read the summary: streams only
            except BodyError as exc:
                log.warning("account=%s audit: summary not usable (%s)", self.name, exc)
                neo_credits = None
        except Stopped:
            return None
        except ApiError as exc:
            log.warning("account=%s audit failed: %s", self.name, exc)
            return None
        counted, credits = self._state.counted_in(self.name, start, end)
        result = AuditResult(now, start, end, neo_streams, counted, neo_credits, credits)
        missing, drift = result.streams_missing, result.credits_drift
        exact = not missing and (drift is None or abs(drift) < 1e-6)
        log.log(
            logging.INFO if exact else logging.WARNING,
            "account=%s audit of %s..%s: Neo counts %s streams and %s credits; the exporter "
            "counted %d streams and %.6f credits (missing %s, credits drift %s)",
            self.name,
            period["from"],
            period["to"],
            neo_streams,
            "?" if neo_credits is None else f"{neo_credits:.6f}",
            counted,
            credits,
            missing,
            "?" if drift is None else f"{drift:.6f}",
        )
        return result
