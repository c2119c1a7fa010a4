"""The shipped Alertmanager config and templates, with Debian's real amtool and Alertmanager.

amtool checks the config, routes every alert of the rule files (with the rule's own labels)
and renders every template with sample alerts. The e2e test runs a real Alertmanager on the
shipped config, changed only in its receivers' URLs, which point at a webhook in this test:
alerts posted to its API arrive at the right receiver, grouped by account, and
NeoExporterDown silences its own target's other alerts, not another target's.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.processes import Proc, free_port, require_tool, wait_until, webhook, with_receiver_urls
from tests.repo_files import ALERTMANAGER_CONFIG, ALERTMANAGER_TEMPLATES, rules

SPEND, OPS = "neo-spend", "neo-exporter-ops"
CATEGORIES = {"spend": SPEND, "usage": SPEND, "exporter": OPS}
# Named in docs/alerting.md for the budget alerts to come: they go to neo-spend too.
BUDGET_ALERTS = ("NeoBudgetForecastOverrun", "NeoBudgetExceeded")
UNICODE_TITLE = 'Nightly scan <prod> & 夜間スキャン 🔍 "v2"'


def amtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [require_tool("amtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    return data


def receiver_of(labels: dict[str, str]) -> str:
    """The receiver amtool resolves these labels to, from the shipped file."""
    output = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        *(f"{name}={value}" for name, value in labels.items()),
    )
    return output.strip()


def rule_labels(rule: dict[str, Any]) -> dict[str, str]:
    """What an alert of this rule carries: its name, its rule's labels and the labels its
    expression keeps (an account; job and instance as a scrape adds them)."""
    labels = {"alertname": rule["alert"], **rule["labels"], "account": "acme"}
    if "job" in rule["expr"]:
        labels |= {"job": "neo-exporter", "instance": "neo-exporter:9636"}
    return labels


# --- config and routes --------------------------------------------------------------------


def test_shipped_config_and_its_templates_pass_amtool_check_config() -> None:
    output = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert "1 templates" in output, output  # neo.tmpl was found (next to the file) and parsed
    assert config()["templates"] == [ALERTMANAGER_TEMPLATES.name]


def test_every_alert_has_a_category_and_exactly_the_exporter_alerts_are_exporter() -> None:
    for rule in alert_rules():
        category = rule["labels"].get("category")
        assert category in CATEGORIES, f"{rule['alert']}: category {category!r}"
        assert (category == "exporter") == rule["alert"].startswith("NeoExporter"), rule["alert"]


def test_every_alert_of_the_rule_files_reaches_its_receiver() -> None:
    assert alert_rules()
    for rule in alert_rules():
        labels = rule_labels(rule)
        assert receiver_of(labels) == CATEGORIES[rule["labels"]["category"]], labels


def test_an_exporter_alert_without_its_category_still_reaches_the_operators() -> None:
    assert receiver_of({"alertname": "NeoExporterSomethingNew", "instance": "x"}) == OPS
    # Nothing is dropped: an alert that is not neo-exporter's goes to the default receiver.
    assert receiver_of({"alertname": "Watchdog"}) == OPS


def test_budget_alerts_reach_neo_spend_with_or_without_their_category() -> None:
    for name in BUDGET_ALERTS:
        labels = {"alertname": name, "account": "acme", "team": "red", "budget": "monthly"}
        assert receiver_of({**labels, "severity": "warning", "category": "spend"}) == SPEND
        assert receiver_of(labels) == SPEND


def test_spend_is_grouped_by_account_and_the_exporter_by_target() -> None:
    routes = config()["route"]["routes"]
    for route in routes:
        if route["receiver"] == SPEND:
            assert set(route["group_by"]) == {"account", "alertname"}
        else:
            assert set(route["group_by"]) == {"alertname", "job", "instance"}
    assert {route["receiver"] for route in routes} == {SPEND, OPS}
    assert {r["name"] for r in config()["receivers"]} == {SPEND, OPS}


def test_exporter_down_inhibits_the_other_exporter_alerts_of_its_target() -> None:
    (rule,) = [
        r
        for r in config()["inhibit_rules"]
        if r["source_matchers"] == ['alertname="NeoExporterDown"']
    ]
    assert rule["target_matchers"] == ['category="exporter"', 'alertname!="NeoExporterDown"']
    assert rule["equal"] == ["job", "instance"]
    # The targets carry job and instance, or equal would never hold (an alert that keeps
    # them: `by (job, instance, ...)`, or up{job=...} itself).
    for alert in alert_rules():
        if alert["labels"]["category"] == "exporter":
            assert re.search(r"by \(job, instance\b|^up\{", alert["expr"]), alert["alert"]


# --- templates ------------------------------------------------------------------------------


def sample_alert(annotations: dict[str, str], status: str = "firing", **labels: str) -> Any:
    return {
        "status": status,
        "labels": {
            "alertname": "NeoCreditSpendSpike",
            "account": "acme",
            "severity": "warning",
            "category": "spend",
            **labels,
        },
        "annotations": annotations,
        "startsAt": "2025-06-01T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "0123456789abcdef",
    }


def sample_data(*alerts: dict[str, Any]) -> dict[str, Any]:
    """Alertmanager's template data (template.Data) for one notification of these alerts."""
    labels = [a["labels"] for a in alerts]
    annotations = [a["annotations"] for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(lab.get(k) == v for lab in labels)}
    common_ann = {
        k: v for k, v in annotations[0].items() if all(a.get(k) == v for a in annotations)
    }
    return {
        "receiver": SPEND,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"account": common["account"], "alertname": common["alertname"]},
        "commonLabels": common,
        "commonAnnotations": common_ann,
        "externalURL": "http://alertmanager:9093",
    }


SPIKE = {
    "summary": "Account acme spends 6000 credits/h, 100.0 times its average (credit spend spike)",
    "description": "Account acme spent credits at 100.0 times its average rate over the "
    "exporter's window for 5 minutes (6000.0 credits/h over the last 15m; thresholds: 5x and "
    "100 credits/h).",
    "culprits": f'task 3f2a9c1e "{UNICODE_TITLE}" 412.5 credits\n'
    'task 77b01d2e "Überprüfung der Zertifikate" 88 credits\n'
    "model claude-sonnet-4 61% of the credits\n"
    "member ana@example.com 70% of the credits\n",
    "dashboard": "https://grafana.example.com/d/neo-spend-overview?var-account=acme",
    "runbook_url": "https://neo-exporter.invalid/docs/dashboards.md#neocreditspendspike",
}


def render(tmp_path: Path, template: str, data: dict[str, Any], html: bool = False) -> str:
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data, ensure_ascii=False))
    return amtool(
        "template",
        "render",
        f"--template.glob={ALERTMANAGER_TEMPLATES}",
        f'--template.text={{{{ template "{template}" . }}}}',
        f"--template.data={data_file}",
        *(["--template.type=html"] if html else []),
    ).rstrip("\n")


def test_slack_message_names_account_and_amount_lists_culprits_and_links(tmp_path: Path) -> None:
    data = sample_data(sample_alert(SPIKE))
    title = render(tmp_path, "neo.slack.title", data)
    assert title == f"[FIRING:1] {SPIKE['summary']}"
    assert "acme" in title and "6000 credits/h" in title
    assert render(tmp_path, "neo.slack.color", data) == "warning"
    assert render(tmp_path, "neo.dashboard_url", data) == SPIKE["dashboard"]
    text = render(tmp_path, "neo.slack.text", data)
    # Slack's control characters in a title are escaped; the rest of it is as written.
    escaped = UNICODE_TITLE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert text.splitlines() == [
        SPIKE["description"],
        "*Behind it:*",
        f'• task 3f2a9c1e "{escaped}" 412.5 credits',
        '• task 77b01d2e "Überprüfung der Zertifikate" 88 credits',
        "• model claude-sonnet-4 61% of the credits",
        "• member ana@example.com 70% of the credits",
        f"<{SPIKE['dashboard']}|Dashboard> · <{SPIKE['runbook_url']}|Runbook>",
    ]


def test_slack_message_without_culprits_or_dashboard_leaves_them_out(tmp_path: Path) -> None:
    bare = {**SPIKE, "culprits": ""}
    del bare["dashboard"]
    data = sample_data(sample_alert(bare, severity="critical"))
    text = render(tmp_path, "neo.slack.text", data)
    assert text.splitlines() == [SPIKE["description"], f"<{SPIKE['runbook_url']}|Runbook>"]
    assert render(tmp_path, "neo.slack.color", data) == "danger"
    assert render(tmp_path, "neo.dashboard_url", data) == ""
    # Only a summary: still a message.
    data = sample_data(sample_alert({"summary": "Account acme spent 1200 credits"}))
    assert render(tmp_path, "neo.slack.text", data) == ""
    assert render(tmp_path, "neo.slack.title", data) == "[FIRING:1] Account acme spent 1200 credits"


def test_slack_message_of_a_group_says_how_many_and_gives_each_its_summary(
    tmp_path: Path,
) -> None:
    first = sample_alert(SPIKE, team="red", budget="monthly")
    second = sample_alert({**SPIKE, "summary": "Team blue", "culprits": ""}, team="blue")
    data = sample_data(first, second)
    assert render(tmp_path, "neo.slack.title", data) == (
        "[FIRING:2] NeoCreditSpendSpike on account acme: 2 alerts"
    )
    text = render(tmp_path, "neo.slack.text", data)
    assert text.count(SPIKE["description"]) == 2
    assert f"*{SPIKE['summary']}*" in text and "*Team blue*" in text
    assert text.count("• ") == 4  # the first alert's culprits only


def test_resolved_notification_says_so(tmp_path: Path) -> None:
    data = sample_data(sample_alert(SPIKE, status="resolved"))
    assert render(tmp_path, "neo.slack.title", data).startswith("[RESOLVED] Account acme")
    assert render(tmp_path, "neo.slack.color", data) == "good"
    assert render(tmp_path, "neo.slack.text", data).startswith("_Resolved._ Account acme")
    assert render(tmp_path, "neo.email.text", data).startswith("RESOLVED: Account acme")


def test_email_text_and_html_carry_the_same_parts(tmp_path: Path) -> None:
    data = sample_data(sample_alert(SPIKE))
    assert render(tmp_path, "neo.email.subject", data) == f"[FIRING:1] {SPIKE['summary']}"
    assert render(tmp_path, "neo.email.text", data).splitlines() == [
        SPIKE["summary"],
        SPIKE["description"],
        "",
        "Behind it:",
        f'  - task 3f2a9c1e "{UNICODE_TITLE}" 412.5 credits',
        '  - task 77b01d2e "Überprüfung der Zertifikate" 88 credits',
        "  - model claude-sonnet-4 61% of the credits",
        "  - member ana@example.com 70% of the credits",
        f"Dashboard: {SPIKE['dashboard']}",
        f"Runbook: {SPIKE['runbook_url']}",
    ]
    html = render(tmp_path, "neo.email.html", data, html=True)
    assert "夜間スキャン 🔍" in html and "Überprüfung" in html
    assert "&lt;prod&gt; &amp;" in html and "<prod>" not in html  # escaped by html/template
    assert f'<a href="{SPIKE["dashboard"]}">Dashboard</a>' in html
    bare = sample_data(sample_alert({**SPIKE, "culprits": "", "dashboard": ""}))
    assert "Behind it" not in render(tmp_path, "neo.email.html", bare, html=True)
    assert render(tmp_path, "neo.email.text", bare).splitlines() == [
        SPIKE["summary"],
        SPIKE["description"],
        f"Runbook: {SPIKE['runbook_url']}",
    ]


# --- a real Alertmanager ----------------------------------------------------------------


def post_alert(am_url: str, labels: dict[str, str], annotations: dict[str, str]) -> None:
    alert = {"labels": labels, "annotations": annotations}
    response = requests.post(f"{am_url}/api/v2/alerts", json=[alert], timeout=5)
    assert response.status_code == 200, response.text


@pytest.mark.e2e
def test_real_alertmanager_routes_groups_and_inhibits_with_the_shipped_config(
    tmp_path: Path,
) -> None:
    binary = require_tool("prometheus-alertmanager")
    shipped = ALERTMANAGER_CONFIG.read_text()
    group_wait = float(config()["route"]["group_wait"].rstrip("s"))
    with webhook() as hook:
        text = with_receiver_urls(shipped, {SPEND: f"{hook.url}/{SPEND}", OPS: f"{hook.url}/{OPS}"})
        changed = [
            (a, b) for a, b in zip(shipped.splitlines(), text.splitlines(), strict=True) if a != b
        ]
        assert len(changed) == 2 and all("url:" in a for a, _ in changed), changed
        (tmp_path / ALERTMANAGER_CONFIG.name).write_text(text)
        (tmp_path / ALERTMANAGER_TEMPLATES.name).write_bytes(ALERTMANAGER_TEMPLATES.read_bytes())
        port = free_port()
        am = f"http://127.0.0.1:{port}"
        popen = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / ALERTMANAGER_CONFIG.name}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc = Proc(popen)
        proc.start_reader()
        try:
            wait_until(
                lambda: requests.get(f"{am}/-/ready", timeout=2).ok, 30, "Alertmanager ready"
            )
            by_name = {rule["alert"]: rule for rule in alert_rules()}
            spike = rule_labels(by_name["NeoCreditSpendSpike"])
            for account in ("acme", "beta"):
                post_alert(am, {**spike, "account": account}, {**SPIKE, "summary": account})
            target = {"job": "neo-exporter", "instance": "neo-exporter:9636"}
            down = {**rule_labels(by_name["NeoExporterDown"]), **target}
            del down["account"]  # up{job="neo-exporter"} == 0 keeps job and instance only
            polls = {**rule_labels(by_name["NeoExporterPollsFailing"]), **target, "kind": "poll"}
            other = {**polls, "instance": "other:9636"}
            for labels in (down, polls, other):
                post_alert(am, labels, {"summary": labels["alertname"]})

            def delivered() -> bool:
                spend_accounts = {b["groupLabels"].get("account") for b in hook.of(SPEND)}
                ops = {
                    (a["labels"]["alertname"], a["labels"]["instance"])
                    for b in hook.of(OPS)
                    for a in b["alerts"]
                }
                return spend_accounts == {"acme", "beta"} and len(ops) >= 2

            wait_until(delivered, group_wait + 30, "the notifications")
            time.sleep(2)  # the inhibited alert's group was due at the same time

            for body in hook.of(SPEND):
                account = body["groupLabels"]["account"]
                assert body["groupLabels"] == {
                    "account": account,
                    "alertname": "NeoCreditSpendSpike",
                }
                (alert,) = body["alerts"]
                assert alert["labels"]["account"] == account
                assert alert["annotations"]["culprits"] == SPIKE["culprits"]  # Unicode intact
            sent_to_ops = sorted(
                (a["labels"]["alertname"], a["labels"]["instance"])
                for body in hook.of(OPS)
                for a in body["alerts"]
            )
            assert sent_to_ops == [
                ("NeoExporterDown", "neo-exporter:9636"),
                ("NeoExporterPollsFailing", "other:9636"),
            ]
            # Alertmanager itself says why the third was not sent.
            alerts = requests.get(f"{am}/api/v2/alerts", timeout=5).json()
            (inhibited,) = [a for a in alerts if a["labels"] == polls]
            assert inhibited["status"]["state"] == "suppressed"
            assert inhibited["status"]["inhibitedBy"]
        finally:
            code = proc.stop()
        assert code == 0, proc.output
