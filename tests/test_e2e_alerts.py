"""The whole alert path, as a user runs it: the fake Neo API, the exporter, a real Prometheus
with the shipped rules and a real Alertmanager with the shipped config.

The rules are loaded from a test copy whose only change is `for:` (1s, so that a condition
that holds shows up as an alert within the test); Alertmanager runs the shipped config with
only its receivers' URLs pointed at a webhook in this test. On one stack, in order:

1. a fresh install reading a day of history raises no spend alert, pending or firing;
2. Neo lists at once 6,000 streams created 1.5 to 6 hours before (each ended by then, so
   none is current spend), with the exporter running throughout: the counters jump by
   thousands of credits, and still no spend alert is ever pending;
3. 3,000 streams of one new task end within 10 seconds: a spend alert reaches `neo-spend`,
   and its description and culprits name that task and link the dashboard;
4. the exporter stops: `NeoExporterDown` reaches `neo-exporter-ops`.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import select
from tests.processes import (
    ROOT,
    Proc,
    Webhook,
    fake_api,
    free_port,
    metrics,
    require_tool,
    start_exporter,
    wait_until,
    webhook,
    with_receiver_urls,
)
from tests.processes import prometheus_query as query
from tests.repo_files import ALERTMANAGER_CONFIG, ALERTMANAGER_TEMPLATES, RULE_FILES

pytestmark = pytest.mark.e2e

ACCOUNT = "acme"
ARTIFACTS = ROOT / "artifacts" / "e2e"
SPEND, OPS = "neo-spend", "neo-exporter-ops"
GRAFANA = "https://grafana.example.com"
SPEND_ALERTS = 'ALERTS{category="spend"}'
# A day of history and live traffic at about the same pace: the recent spend stays near the
# window's average until the spike.
FAKE_ARGS = ("--seed", "5", "--streams", "2400", "--history", "1d", "--live-rate", "100",
             "--late-fraction", "0", "--latency-ms", "0")  # fmt: skip
BACKLOG = 6000
BURST = 3000


@dataclass
class Stack:
    fake_url: str
    exporter_url: str
    prometheus_url: str
    exporter: Proc
    hook: Webhook


def spend_alerts_ever(prometheus_url: str) -> list[dict[str, Any]]:
    """Every spend alert Prometheus held, pending or firing, since it started."""
    return query(prometheus_url, f"max_over_time({SPEND_ALERTS}[1h])")


def streams_counted(exporter_url: str) -> float:
    counted = select(metrics(exporter_url), "neo_streams_total", account=ACCOUNT)
    assert counted, "no neo_streams_total series yet"
    return math.fsum(counted.values())


def rules_with_short_for(tmp: Path) -> list[Path]:
    """Copies of the shipped rule files, with every `for:` at 1s and nothing else changed."""
    copies = []
    for path in RULE_FILES:
        text = path.read_text()
        shortened = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 1s", text)
        changed = [
            old for old, new in zip(text.splitlines(), shortened.splitlines(), strict=True)
            if old != new
        ]  # fmt: skip
        assert all(old.strip().startswith("for:") for old in changed), changed
        copy = tmp / path.name
        copy.write_text(shortened)
        copies.append(copy)
    return copies


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    alertmanager = require_tool("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e-alerts")
    servers: list[subprocess.Popen[bytes]] = []
    exporter: Proc | None = None
    with fake_api(*FAKE_ARGS) as (_, fake_url), webhook() as hook:
        try:
            am_port, prom_port, exporter_port = free_port(), free_port(), free_port()
            am_dir = tmp / "alertmanager"
            am_dir.mkdir()
            shipped = ALERTMANAGER_CONFIG.read_text()
            urls = {SPEND: f"{hook.url}/{SPEND}", OPS: f"{hook.url}/{OPS}"}
            (am_dir / ALERTMANAGER_CONFIG.name).write_text(with_receiver_urls(shipped, urls))
            (am_dir / ALERTMANAGER_TEMPLATES.name).write_bytes(ALERTMANAGER_TEMPLATES.read_bytes())
            servers.append(
                start(
                    [
                        alertmanager,
                        f"--config.file={am_dir / ALERTMANAGER_CONFIG.name}",
                        f"--storage.path={am_dir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{am_port}",
                        "--cluster.listen-address=",
                    ],
                    tmp / "alertmanager.log",
                )
            )
            exporter_config = tmp / "exporter.yaml"
            exporter_config.write_text(
                yaml.safe_dump(
                    {
                        "accounts": [
                            {"name": ACCOUNT, "base_url": fake_url, "token": "fake-admin-token"}
                        ],
                        # A backlog listed late is found by the reads of the window (every
                        # 5 s here), as in life by the hourly one.
                        "polling": {"interval": "1s", "lookback": "5m", "window": "1d",
                                    "reconcile_interval": "5s", "tasks_interval": "5s"},
                        "metrics": {"members": {"enabled": True}},
                        "http": {"backoff_base": "50ms", "backoff_max": "200ms"},
                        "state": {"path": str(tmp / "state.db")},
                    }
                )
            )  # fmt: skip
            prometheus_config = tmp / "prometheus.yml"
            prometheus_config.write_text(
                yaml.safe_dump(
                    {
                        "global": {
                            "scrape_interval": "1s",
                            "evaluation_interval": "1s",
                            "external_labels": {"grafana_url": GRAFANA},
                        },
                        "rule_files": [str(p) for p in rules_with_short_for(tmp)],
                        "alerting": {
                            "alertmanagers": [
                                {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                            ]
                        },
                        "scrape_configs": [
                            {
                                "job_name": "neo-exporter",
                                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                            }
                        ],
                    }
                )
            )
            servers.append(
                start(
                    [
                        prometheus,
                        f"--config.file={prometheus_config}",
                        f"--storage.tsdb.path={tmp / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                        "--log.level=warn",
                    ],
                    tmp / "prometheus.log",
                )
            )
            prometheus_url = f"http://127.0.0.1:{prom_port}"
            exporter, exporter_url = start_exporter(
                "--config.file",
                str(exporter_config),
                "--web.listen-address",
                f"127.0.0.1:{exporter_port}",
            )
            wait_until(lambda: query(prometheus_url, "neo_recent_credits"), 60, "recent spend")
            yield Stack(fake_url, exporter_url, prometheus_url, exporter, hook)
        finally:
            if exporter is not None:
                exporter.stop()
            for server in servers:
                server.terminate()
                server.wait(10)


JUMP = "sum(increase(neo_credits_total[2m]))"


def test_a_fresh_install_then_a_late_backlog_raise_no_spend_alert(stack: Stack) -> None:
    # The day of history is read and published; rules have been evaluated on it for a while.
    wait_until(
        lambda: query(stack.prometheus_url, 'count_over_time(up{job="neo-exporter"}[1h]) > 10'),
        30,
        "ten scrapes",
    )
    assert spend_alerts_ever(stack.prometheus_url) == []
    before = streams_counted(stack.exporter_url)
    now = time.time()
    # Neo lists at once streams created 1.5 to 6 hours ago; every one ended by 1.5 hours ago.
    added = requests.post(
        f"{stack.fake_url}/_fake/populate",
        json={"count": BACKLOG, "start": now - 6 * 3600, "end": now - 1.5 * 3600},
        timeout=30,
    ).json()["added"]
    assert added == BACKLOG
    wait_until(
        lambda: streams_counted(stack.exporter_url) >= before + BACKLOG, 60, "the backlog counted"
    )
    # The counters jumped by the backlog's spend: a rate of thousands of credits an hour
    # against an average near 50, which rules on the counters' increase took for a spike...
    # (once Prometheus has scraped them since: a second or so, more on a loaded machine).
    wait_until(
        lambda: any(float(r["value"][1]) > 500 for r in query(stack.prometheus_url, JUMP)),
        30,
        "Prometheus to see the counters' jump",
    )
    time.sleep(8)  # ...and eight more rule evaluations on the jumped counters
    raised = spend_alerts_ever(stack.prometheus_url)
    assert raised == [], [a["metric"]["alertname"] for a in raised]
    assert stack.hook.of(SPEND) == []


def test_a_genuine_spike_reaches_neo_spend_naming_its_task(stack: Stack) -> None:
    burst = requests.post(
        f"{stack.fake_url}/_fake/burst", json={"count": BURST, "seconds": 10}, timeout=30
    ).json()
    task_id = burst["task_id"]
    assert burst["added"] == BURST and task_id

    def named() -> list[dict[str, Any]]:
        return [
            alert
            for body in stack.hook.of(SPEND)
            for alert in body["alerts"]
            if task_id in alert["annotations"].get("description", "")
        ]

    # Alertmanager waits group_wait (30 s in the shipped config) before the first message.
    alerts = wait_until(named, 90, f"a spend alert naming task {task_id} at {SPEND}")
    # Alertmanager's notification as the webhook got it, for a person (and amtool) to read.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    body = next(b for b in stack.hook.of(SPEND) if alerts[0] in b["alerts"])
    (ARTIFACTS / "spike-notification.json").write_text(json.dumps(body, ensure_ascii=False))
    alert = alerts[0]
    assert alert["labels"]["account"] == ACCOUNT
    assert alert["labels"]["category"] == "spend"
    culprits = alert["annotations"]["culprits"].splitlines()
    assert culprits[0].startswith(f"task {task_id}")
    assert any(line.startswith("model ") for line in culprits)
    assert any(line.startswith("member ") for line in culprits)  # members are enabled
    dashboard = alert["annotations"]["dashboard"]
    assert dashboard == f"{GRAFANA}/d/neo-spend-overview/?var-account={ACCOUNT}"
    assert not [b for b in stack.hook.of(OPS) for a in b["alerts"]
                if a["labels"].get("category") == "spend"]  # fmt: skip


def test_a_stopped_exporter_sends_exporter_down_to_the_operators(stack: Stack) -> None:
    assert stack.exporter.stop() == 0

    def down() -> list[dict[str, Any]]:
        return [
            alert
            for body in stack.hook.of(OPS)
            for alert in body["alerts"]
            if alert["labels"]["alertname"] == "NeoExporterDown" and alert["status"] == "firing"
        ]

    alerts = wait_until(down, 90, f"NeoExporterDown at {OPS}")
    assert alerts[0]["labels"]["job"] == "neo-exporter"
    assert not [b for b in stack.hook.of(SPEND) for a in b["alerts"]
                if a["labels"]["alertname"] == "NeoExporterDown"]  # fmt: skip
