"""deploy/: the Prometheus rules pass promtool's checks and unit tests, every alert has a
test that shows it firing and one that shows it silent, the Alertmanager config passes amtool,
and no expression (rules or dashboard) names a metric that nothing exports."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from resee_perf import metrics
from tests.promql import (
    ALERTMANAGER,
    RULE_TESTS,
    RULES,
    alerting_rules,
    dashboard_targets,
    metric_names,
    recording_rules,
)

# Metrics of the other exporters the stack runs (scripts/monitoring.sh): postgres_exporter,
# redis_exporter, and Prometheus' own `up`.
EXPORTER_PREFIXES = ("pg_", "redis_")
PROMETHEUS_SERIES = {"up"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: apt-get install prometheus prometheus-alertmanager "
            "(.ci/run does)"
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_slack_webhook_is_read_from_a_file_never_committed() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    slack = [c for r in config["receivers"] for c in r.get("slack_configs", [])]
    assert slack
    assert all("api_url_file" in c and "api_url" not in c for c in slack)
    assert "hooks.slack.com" not in ALERTMANAGER.read_text()


def _alert_tests() -> dict[str, dict[str, int]]:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    seen: dict[str, dict[str, int]] = {}
    for test in tests:
        for case in test.get("alert_rule_test", []):
            counts = seen.setdefault(case["alertname"], {"firing": 0, "silent": 0})
            counts["firing" if case.get("exp_alerts") else "silent"] += 1
    return seen


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tested = _alert_tests()
    for rule in alerting_rules():
        counts = tested.get(rule["alert"], {})
        assert counts.get("firing"), f"no test shows {rule['alert']} firing"
        assert counts.get("silent"), f"no test shows {rule['alert']} silent"


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_alerts_follow_the_mixin_conventions(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("ReseePerf")
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule.get("for")
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    anchor = annotations["runbook_url"].rsplit("#", 1)[1]
    assert anchor == rule["alert"].lower()
    docs = (RULES.parents[2] / "docs" / "observability.md").read_text()
    assert f"### {rule['alert']}" in docs, f"no runbook section for {rule['alert']}"


def exported(name: str) -> bool:
    if name in metrics.DEFINED or name in PROMETHEUS_SERIES or name.startswith(EXPORTER_PREFIXES):
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in metrics.DEFINED:
            return True
    return False


def all_expressions() -> list[tuple[str, str]]:
    expressions = [(f"record {name}", expr) for name, expr in recording_rules().items()]
    expressions += [(f"alert {rule['alert']}", rule["expr"]) for rule in alerting_rules()]
    expressions += [(f"panel {title}", expr) for title, expr in dashboard_targets()]
    return expressions


def test_no_expression_names_a_metric_we_do_not_export() -> None:
    recorded = set(recording_rules())
    unknown = {
        (where, name)
        for where, expr in all_expressions()
        for name in metric_names(expr)
        if name not in recorded and not exported(name)
    }
    assert not unknown


def test_metric_names_finds_the_metrics_and_nothing_else() -> None:
    expr = (
        'sum by (job, le) (rate(resee_perf_x_bucket{result=~"hit|miss"}[5m])) '
        "/ on (job) group_left up > 0.5 and job:rec:rate5m offset 1h"
    )
    assert metric_names(expr) == {"resee_perf_x_bucket", "up", "job:rec:rate5m"}
