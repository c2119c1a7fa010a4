"""The shipped Prometheus rules: promtool accepts them, and every alert is unit-tested."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from exporter.config import AlertThresholds
from tests.processes import ROOT, require_tool
from tests.repo_files import RULE_FILES, documented_metrics, metric_names, rule_groups, rules

UNIT_TEST_DIR = ROOT / "prometheus" / "tests"
# The alerts' unit tests; the budget alerts' run at a coarser evaluation interval.
UNIT_TESTS = sorted(UNIT_TEST_DIR.glob("*.test.yml"))
EXAMPLE_CONFIG = ROOT / "prometheus" / "prometheus.yml"
DOCS = ROOT / "docs" / "dashboards.md"
THRESHOLD_PREFIX = "neo:threshold:"
RUNBOOK_SCRIPT = ROOT / "prometheus" / "set_runbook_base.py"


def runbook_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("set_runbook_base", RUNBOOK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def run_promtool(*args: str, cwd: Path | None = None) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_rule_files_pass_promtool_check() -> None:
    run_promtool("check", "rules", *map(str, RULE_FILES))


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    assert len(UNIT_TESTS) == 2
    run_promtool("test", "rules", *(path.name for path in UNIT_TESTS), cwd=UNIT_TEST_DIR)


def test_example_prometheus_config_passes_promtool_check() -> None:
    run_promtool("check", "config", str(EXAMPLE_CONFIG), cwd=EXAMPLE_CONFIG.parent)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        tests = yaml.safe_load(path.read_text())
        assert {str(Path(f).name) for f in tests["rule_files"]} == {p.name for p in RULE_FILES}
        for case in tests["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a test where they must not fire"


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", DOCS.read_text(), flags=re.MULTILINE)
    }
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = alert["annotations"]
        assert annotations["summary"], name
        # The description quotes the numbers: the value, and the threshold where there is one.
        assert "$value" in annotations["description"], name
        runbook = annotations["runbook_url"]
        base = runbook_script().PLACEHOLDER
        assert runbook == f"{base}/dashboards.md#{name.lower()}", name
        assert name.lower() in anchors, f"no section '{name}' in docs/dashboards.md"


def test_thresholds_come_from_the_exporter_and_each_account_has_its_own() -> None:
    # Numbers in alert expressions other than 0 (a count) and 3600 (per second -> per hour)
    # would be thresholds outside the config, where users set them.
    for alert in alerts():
        expr = re.sub(r"\[[^\]]*\]", "", alert["expr"])  # range durations are not thresholds
        expr = re.sub(r'"[^"]*"', "", expr)  # neither are label values
        numbers = set(re.findall(r"(?<![\w:.])\d+(?:\.\d+)?(?![\w:])", expr))
        assert numbers <= {"0", "3600"}, f"{alert['alert']}: literal thresholds {numbers}"
        # Each comparison with a threshold is one account against its own (group_left where
        # the exporter's alerts keep job and instance, for NeoExporterDown's inhibition).
        for threshold in re.findall(rf"{THRESHOLD_PREFIX}\w+", alert["expr"]):
            pattern = rf"[<>]=? on \(account\) (group_left )?{threshold}\b"
            assert re.search(pattern, alert["expr"]), threshold
    group = next(g for g in rule_groups() if g["name"] == "neo-alert-thresholds")
    names = {f.name for f in dataclasses.fields(AlertThresholds)}
    for rule in group["rules"]:
        name = rule["record"].removeprefix(THRESHOLD_PREFIX)
        assert name in names, rule["record"]
        assert rule["expr"] == f'max by (account) (neo_alert_threshold{{threshold="{name}"}})'
    thresholds = {r["record"] for r in group["rules"]}
    assert thresholds == {THRESHOLD_PREFIX + name for name in names}
    used = {t for a in alerts() for t in re.findall(rf"{THRESHOLD_PREFIX}\w+", a["expr"])}
    assert used == thresholds, "every threshold is used, and every used one is defined"


def test_runbook_urls_are_absolute_and_share_one_base_that_one_command_sets(
    tmp_path: Path,
) -> None:
    script = runbook_script()
    assert script.bases(script.files()) == {script.PLACEHOLDER}
    assert script.PLACEHOLDER.startswith("https://")
    for path in script.files():
        (tmp_path / path.parent.name).mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / path.parent.name / path.name)
    copies = script.files(tmp_path)
    base = "https://git.example.com/ops/neo-exporter/-/blob/main/docs"
    changed = script.set_base(copies, base)
    assert changed == sum(p.read_text().count("runbook_url") for p in copies)
    assert script.bases(copies) == {base}
    for path, copy in zip(script.files(), copies, strict=True):
        for url in re.findall(r"runbook_url: \"?(\S+?)\"?$", copy.read_text(), re.MULTILINE):
            assert re.fullmatch(rf"{re.escape(base)}/dashboards\.md#neo[a-z]+", url), url
        # Only the base changed, in the rules and in the tests' expected annotations alike.
        assert copy.read_text() == path.read_text().replace(script.PLACEHOLDER, base)
    # So the rewritten tests still pass against the rewritten rules: one file shows it (all
    # of them would take promtool as long again as test_promtool_unit_tests_of_the_alerts_pass).
    budget_tests = tmp_path / "tests" / "neo-budget-alerts.test.yml"
    run_promtool("test", "rules", str(budget_tests), cwd=budget_tests.parent)


def test_rules_only_use_documented_metric_names() -> None:
    known = documented_metrics()
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_recording_rules_cover_hourly_and_daily_spend_per_account_and_model() -> None:
    recorded = {r["record"]: r["expr"] for r in rules() if "record" in r}
    for metric in ("neo_credits", "neo_llm_cost_usd", "neo_platform_cost_usd"):
        for window in ("1h", "1d"):
            expr = recorded[f"account_model:{metric}:increase{window}"]
            # USD is BYOK spend: rows known not to be BYOK are left out (docs/metrics.md).
            selector = "" if metric == "neo_credits" else '{byok!="false"}'
            assert f"sum by (account, model) (increase({metric}_total{selector}[{window}]))" in expr
