"""The metric names a PromQL expression reads, and the expressions of our rules and dashboard:
shared by tests/test_deploy.py (offline) and tests/test_monitoring_stack.py (live)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "resee-perf.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "resee-perf.test.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "resee-perf.json"

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}  # fmt: skip
# Label lists (by (job, route)), matchers ({result="hit"}), ranges ([5m]) and strings.
_STRIP = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),
    re.compile(r"\{[^}]*\}"),
    re.compile(r"\[[^\]]*\]"),
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
]
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric (and recorded series) names of ``expr``: identifiers that are neither
    function calls, keywords, label names nor durations."""
    for pattern in _STRIP:
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def rule_groups() -> list[dict[str, Any]]:
    return list(yaml.safe_load(RULES.read_text())["groups"])


def recording_rules() -> dict[str, str]:
    return {
        rule["record"]: rule["expr"]
        for group in rule_groups()
        for rule in group["rules"]
        if "record" in rule
    }


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the committed dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    targets = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                targets.append((panel.get("title", ""), target["expr"]))
    return targets


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def instantiate(expr: str) -> str:
    """A dashboard expression as Prometheus can run it: Grafana's interval variables filled."""
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
