"""deploy/grafana/resee-perf.json is what deploy/grafana/dashboard.py generates, and it has
the panels the runbooks point at."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

from tests.promql import DASHBOARD, ROOT, dashboard_targets


def generator() -> ModuleType:
    path = ROOT / "deploy" / "grafana" / "dashboard.py"
    spec = importlib.util.spec_from_file_location("resee_perf_dashboard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_json_is_up_to_date() -> None:
    assert generator().render() == DASHBOARD.read_text(), (
        "regenerate: python deploy/grafana/dashboard.py > deploy/grafana/resee-perf.json"
    )


def test_the_dashboard_shows_what_the_runbooks_name() -> None:
    titles = {panel.get("title") for panel in json.loads(DASHBOARD.read_text())["panels"]}
    for title in (
        "Request rate by route",
        "Error rate (5xx ratio)",
        "Latency P50 / P95 / P99 by route",
        "Hit ratio by function",
        "Results by function",
        "Recompute time",
        "Lock waits",
        "Invalidations",
        "Router decisions",
        "Replica lag",
        "DB queries per request",
        "Connections vs budget",
        "PostgreSQL (postgres_exporter)",
        "Redis (redis_exporter)",
    ):
        assert title in titles


def test_every_query_uses_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard_targets()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
