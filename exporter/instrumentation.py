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
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter import catalogue as m
from exporter.api import ACCOUNT_ENDPOINTS, LISTINGS, STREAMS, TASKS
from exporter.catalogue import Metric
from exporter.client import RETRY_REASONS
from exporter.config import AlertThresholds
from exporter.models import MONEY_FIELDS, REPAIR_FIELDS, ROW_REASONS

POLL_KINDS = ("incremental", "reconcile", TASKS, *ACCOUNT_ENDPOINTS)
# The fields each list endpoint's rows can have repaired (tasks: only what is read of them).
REPAIRABLE = {
    STREAMS: tuple(f for f in REPAIR_FIELDS if f != "stream_count"),
    TASKS: ("status", *MONEY_FIELDS, "stream_count"),
}


def process_registry() -> CollectorRegistry:
    """The `process_*` and `python_*` metrics every Prometheus client serves (CPU, memory,
    open files, start time, the garbage collector, the Python version), from
    prometheus_client's own collectors: read at each scrape, so on a registry of their own.
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _counter(metric: Metric, registry: CollectorRegistry) -> Counter:
    return Counter(metric.name, metric.help, metric.labels, registry=registry)


def _gauge(metric: Metric, registry: CollectorRegistry) -> Gauge:
    return Gauge(metric.name, metric.help, metric.labels, registry=registry)


class ExporterMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        accounts: tuple[str, ...],
        thresholds: Mapping[str, AlertThresholds] | None = None,
    ) -> None:
        """`thresholds` by account name; accounts left out get the defaults."""
        self.api_requests = _counter(m.API_REQUESTS, registry)
        self.api_retries = _counter(m.API_RETRIES, registry)
        self.state_writable = _gauge(m.STATE_WRITABLE, registry)
        self.state_writable.set(1)
        self.alert_threshold = _gauge(m.ALERT_THRESHOLD, registry)
        for account in accounts:
            values = (thresholds or {}).get(account, AlertThresholds())
            for item in dataclasses.fields(values):
                self.alert_threshold.labels(account, item.name).set(getattr(values, item.name))
        self.skipped_records = _counter(m.SKIPPED_RECORDS, registry)
        self.repaired_fields = _counter(m.REPAIRED_FIELDS, registry)
        self.incomplete_reads = _counter(m.INCOMPLETE_READS, registry)
        self.polls = _counter(m.POLLS, registry)
        # Known label sets start at 0 so that the first increment shows in increase().
        for account in accounts:
            for kind in POLL_KINDS:
                for result in ("success", "failure"):
                    self.polls.labels(account, kind, result)
            for kind in ACCOUNT_ENDPOINTS:
                self.polls.labels(account, kind, "unavailable")
            for endpoint in LISTINGS:
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
