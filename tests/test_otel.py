"""With opentelemetry-api installed and a MeterProvider configured, every measurement is also
an OpenTelemetry instrument of the same name (prometheus-client keeps recording)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from resee_perf import metrics

otel_metrics = pytest.importorskip("opentelemetry.metrics")
sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
sdk_export = pytest.importorskip("opentelemetry.sdk.metrics.export")


@pytest.fixture(scope="module")
def reader() -> Any:
    # The global provider can be set once per process; no other test sets one.
    reader = sdk_export.InMemoryMetricReader()
    otel_metrics.set_meter_provider(sdk_metrics.MeterProvider(metric_readers=[reader]))
    return reader


def points(reader: Any, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    found = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[frozenset(point.attributes.items())] = point
    return found


def test_counters_histograms_and_gauges_reach_the_meter_provider(reader: Any) -> None:
    prometheus_before = (
        REGISTRY.get_sample_value(
            "resee_perf_cache_requests_total", {"name": "otel.fn", "result": "hit"}
        )
        or 0.0
    )
    metrics.report_cache("otel.fn", "hit")
    metrics.report_cache("otel.fn", "hit")
    metrics.report_recompute("otel.fn", 0.003)
    metrics.report_breaker("otel-cache", is_open=True)
    metrics.report_http("otel/route/", "GET", 201, 0.002)

    hits = points(reader, "resee_perf_cache_requests")
    assert hits[frozenset({("name", "otel.fn"), ("result", "hit")})].value == 2
    recompute = points(reader, "resee_perf_cache_recompute_seconds")
    point = recompute[frozenset({("name", "otel.fn")})]
    assert point.count == 1
    assert tuple(point.explicit_bounds) == (
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    )  # fmt: skip
    breaker = points(reader, "resee_perf_cache_breaker_open")
    assert breaker[frozenset({("cache", "otel-cache")})].value == 1
    http = points(reader, "resee_perf_http_requests")
    assert (
        http[frozenset({("route", "otel/route/"), ("method", "GET"), ("status", "2xx")})].value == 1
    )
    # prometheus-client still counts, once per call.
    assert (
        REGISTRY.get_sample_value(
            "resee_perf_cache_requests_total", {"name": "otel.fn", "result": "hit"}
        )
        == prometheus_before + 2
    )
