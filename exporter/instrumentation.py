"""The exporter's own doings (requests, retries, skipped rows, polls) as standard metrics.

These are plain `prometheus_client` counters on the run's own registry: they describe this
process, so they start at zero with it. Business metrics come from the snapshot instead.
Also here, because they come from this process rather than from the API: the alert
thresholds of the config, and whether the state can be written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.client import RETRY_REASONS
from exporter.config import AlertThresholds
from exporter.models import MONEY_FIELDS, REPAIR_FIELDS, ROW_REASONS
from exporter.snapshot import ACCOUNT_ENDPOINTS

ENDPOINTS = ("streams", "tasks")
POLL_KINDS = ("incremental", "reconcile", "tasks", *ACCOUNT_ENDPOINTS)
# The fields each list endpoint's rows can have repaired (tasks: only what is read of them).
REPAIRABLE = {
    "streams": tuple(f for f in REPAIR_FIELDS if f != "stream_count"),
    "tasks": ("status", *MONEY_FIELDS, "stream_count"),
}


class ExporterMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        accounts: tuple[str, ...],
        thresholds: Mapping[str, AlertThresholds] | None = None,
    ) -> None:
        """`thresholds` by account name; accounts left out get the defaults."""
        self.api_requests = Counter(
            "neo_exporter_api_requests",
            "Requests made to the Neo API, by endpoint and HTTP status code; when no status "
            "came back: dns_error, connection_refused, tls_error, timeout or connection_error.",
            ["account", "endpoint", "code"],
            registry=registry,
        )
        self.api_retries = Counter(
            "neo_exporter_api_retries",
            "Requests to the Neo API that were retried, by reason (429, 5xx, timeout, "
            "dns_error, connection_refused, tls_error, connection_error, invalid_body).",
            ["account", "endpoint", "reason"],
            registry=registry,
        )
        self.state_writable = Gauge(
            "neo_exporter_state_writable",
            "1 while the state file can be written, 0 after a write to it failed (nothing new "
            "is counted then; the last committed values are still served) until one succeeds.",
            registry=registry,
        )
        self.state_writable.set(1)
        self.alert_threshold = Gauge(
            "neo_alert_threshold",
            "What the shipped alerts compare each account against (alerts.thresholds and "
            "accounts[].alert_thresholds of the config); ratios are shares, _seconds in seconds.",
            ["account", "threshold"],
            registry=registry,
        )
        for account in accounts:
            values = (thresholds or {}).get(account, AlertThresholds())
            for item in dataclasses.fields(values):
                self.alert_threshold.labels(account, item.name).set(getattr(values, item.name))
        self.skipped_records = Counter(
            "neo_exporter_skipped_records",
            "Rows returned by the API that could not be counted, by reason; a row that stays "
            "bad is counted again at every read that returns it.",
            ["account", "endpoint", "reason"],
            registry=registry,
        )
        self.repaired_fields = Counter(
            "neo_exporter_repaired_fields",
            "Fields of counted rows that were null, malformed, negative or sent as strings, "
            "read as absent, `unknown` or the number in the string; the row itself was "
            "counted. Streams: once per stream counted or revised; tasks: per read.",
            ["account", "endpoint", "field"],
            registry=registry,
        )
        self.incomplete_reads = Counter(
            "neo_exporter_incomplete_reads",
            "Reads that ended holding fewer rows than the API's own total for their span, "
            "after reading the missing parts again within the read's budget.",
            ["account", "endpoint"],
            registry=registry,
        )
        self.polls = Counter(
            "neo_exporter_polls",
            "Reads of the Neo API by kind (incremental lookback, reconcile of the whole "
            "window, tasks, summary, user, credits) and result (success, failure, and "
            "unavailable: a 403 or 404 of an account-level endpoint).",
            ["account", "kind", "result"],
            registry=registry,
        )
        # Known label sets start at 0 so that the first increment shows in increase().
        for account in accounts:
            for kind in POLL_KINDS:
                for result in ("success", "failure"):
                    self.polls.labels(account, kind, result)
            for kind in ACCOUNT_ENDPOINTS:
                self.polls.labels(account, kind, "unavailable")
            for endpoint in ENDPOINTS:
                for reason in ROW_REASONS:
                    self.skipped_records.labels(account, endpoint, reason)
                for reason in RETRY_REASONS:
                    self.api_retries.labels(account, endpoint, reason)
                self.incomplete_reads.labels(account, endpoint)
                for field in REPAIRABLE[endpoint]:
                    self.repaired_fields.labels(account, endpoint, field)

    def request_hook(self, account: str) -> Callable[[str, str], None]:
        """For the client: count one request by endpoint and code."""

        def hook(endpoint: str, code: str) -> None:
            self.api_requests.labels(account, endpoint, code).inc()

        return hook

    def retry_hook(self, account: str) -> Callable[[str, str], None]:
        """For the client: count one retry by endpoint and reason."""

        def hook(endpoint: str, reason: str) -> None:
            self.api_retries.labels(account, endpoint, reason).inc()

        return hook
