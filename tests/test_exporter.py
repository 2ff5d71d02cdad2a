"""The exporter (``GET /metrics``), who may read it, and the request metrics of
MetricsMiddleware, through Django's test client on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.checks import Error, Warning
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import include, path
from prometheus_client import REGISTRY

from resee_perf import metrics
from resee_perf._request_metrics import QueryTally
from resee_perf.checks import check_metrics
from resee_perf.conf import OPTIONS

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def three_queries(request: HttpRequest, pk: int) -> HttpResponse:
    for _ in range(3):
        User.objects.filter(pk=pk).exists()
    return HttpResponse(b"ok")


def fails(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"no", status=503)


urlpatterns = [
    path("things/<int:pk>/", three_queries),
    path("fails/", fails),
    path("", include("resee_perf.urls")),
]

METRICS_SETTINGS = override_settings(
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["resee_perf.middleware.MetricsMiddleware"],
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _metrics_urls() -> Any:
    with METRICS_SETTINGS:
        yield


# -- who may read /metrics -------------------------------------------------------------------------


def test_loopback_reads_the_metrics_in_the_text_format() -> None:
    response = Client().get("/metrics")  # the test client's REMOTE_ADDR is 127.0.0.1
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE resee_perf_cache_requests_total counter" in response.content
    assert response["Cache-Control"] == "no-store"


def test_openmetrics_when_asked() -> None:
    response = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


def test_another_address_gets_an_empty_403() -> None:
    response = Client(REMOTE_ADDR="203.0.113.7").get("/metrics")
    assert response.status_code == 403
    assert response.content == b""


def test_ipv6_loopback_and_mapped_ipv4_are_loopback() -> None:
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::ffff:127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="not an address").get("/metrics").status_code == 403


@override_settings(RESEE_PERF={"METRICS_ALLOWED_NETWORKS": ["10.0.0.0/8"]})
def test_allowed_networks_replace_loopback() -> None:
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403


@override_settings(RESEE_PERF={"METRICS_TOKEN": "s3cret-token", "METRICS_ALLOWED_NETWORKS": []})
def test_the_token_opens_it_from_anywhere_and_a_wrong_one_from_nowhere() -> None:
    stranger = Client(REMOTE_ADDR="203.0.113.7")
    assert stranger.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    assert stranger.get("/metrics", HTTP_AUTHORIZATION="bearer s3cret-token").status_code == 200
    assert stranger.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-tokeN").status_code == 403
    assert stranger.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-token").status_code == 403
    assert stranger.get("/metrics").status_code == 403
    # No network is allowed: loopback needs the token too.
    assert Client().get("/metrics").status_code == 403


@override_settings(RESEE_PERF={"METRICS_TOKEN": "s3cret-token"})
def test_a_wrong_token_is_refused_even_from_loopback() -> None:
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    assert response.status_code == 403
    assert response.content == b""
    assert Client().get("/metrics").status_code == 200


def test_a_presented_token_without_one_configured_is_refused() -> None:
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 403


def test_only_get_and_a_stranger_learns_not_even_that() -> None:
    assert Client().post("/metrics").status_code == 405
    assert Client().head("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="203.0.113.7").post("/metrics").status_code == 403


# -- the request metrics ---------------------------------------------------------------------------


def test_requests_are_counted_by_route_pattern_never_by_path(django_user_model: Any) -> None:
    route = "things/<int:pk>/"
    before = value("resee_perf_http_requests_total", route=route, method="GET", status="2xx")
    client = Client()
    for pk in (1, 2, 3):
        assert client.get(f"/things/{pk}/").status_code == 200
    after = value("resee_perf_http_requests_total", route=route, method="GET", status="2xx")
    assert after - before == 3
    exposed = client.get("/metrics").content.decode()
    assert 'route="things/<int:pk>/"' in exposed
    assert not re.search(r'route="things/\d', exposed)
    # The other status classes of the route exist at 0, so an error ratio is defined.
    assert f'resee_perf_http_requests_total{{method="GET",route="{route}",status="5xx"}}' in exposed


def test_unmatched_paths_and_odd_methods_share_one_label_value() -> None:
    labels = {"route": "<unmatched>", "method": "other", "status": "4xx"}
    before = value("resee_perf_http_requests_total", **labels)
    client = Client()
    client.generic("PROPFIND", "/no/such/path/1")
    client.generic("BREW", "/no/such/path/2")
    assert value("resee_perf_http_requests_total", **labels) - before == 2


def test_status_classes_and_latency() -> None:
    before = value("resee_perf_http_requests_total", route="fails/", method="GET", status="5xx")
    count_before = value(
        "resee_perf_http_request_duration_seconds_count", route="fails/", method="GET"
    )
    Client().get("/fails/")
    assert (
        value("resee_perf_http_requests_total", route="fails/", method="GET", status="5xx") - before
        == 1
    )
    assert (
        value("resee_perf_http_request_duration_seconds_count", route="fails/", method="GET")
        - count_before
        == 1
    )
    # The default buckets: 0.5 ms to 10 s.
    assert (
        REGISTRY.get_sample_value(
            "resee_perf_http_request_duration_seconds_bucket",
            {"route": "fails/", "method": "GET", "le": "0.0005"},
        )
        is not None
    )


def test_queries_per_request_per_alias() -> None:
    count = value("resee_perf_db_request_queries_count", alias="default")
    queries = value("resee_perf_db_request_queries_sum", alias="default")
    seconds = value("resee_perf_db_request_query_seconds_sum", alias="default")
    Client().get("/things/7/")
    assert value("resee_perf_db_request_queries_count", alias="default") - count == 1
    assert value("resee_perf_db_request_queries_sum", alias="default") - queries == 3
    assert value("resee_perf_db_request_query_seconds_sum", alias="default") > seconds
    # The wrappers are gone after the request: a query outside one is not counted.
    User.objects.exists()
    assert value("resee_perf_db_request_queries_sum", alias="default") - queries == 3
    # (Other wrappers stay: the replica query deadline's is installed for good.)
    assert not any(
        isinstance(wrapper, QueryTally) for c in connections.all() for wrapper in c.execute_wrappers
    )


def test_connections_opened_per_alias() -> None:
    before = value("resee_perf_db_connections_opened_total", alias="other")
    other = connections["other"]
    other.close()
    other.ensure_connection()
    assert value("resee_perf_db_connections_opened_total", alias="other") - before == 1


@override_settings(RESEE_PERF={"METRICS_ENABLED": False})
def test_nothing_recorded_when_metrics_are_off() -> None:
    labels = {"route": "things/<int:pk>/", "method": "GET", "status": "2xx"}
    before = value("resee_perf_http_requests_total", **labels)
    Client().get("/things/1/")
    assert value("resee_perf_http_requests_total", **labels) == before


def test_async_requests_are_counted() -> None:
    labels = {"route": "fails/", "method": "GET", "status": "5xx"}
    before = value("resee_perf_http_requests_total", **labels)
    response = asyncio.run(AsyncClient().get("/fails/"))
    assert response.status_code == 503
    assert value("resee_perf_http_requests_total", **labels) - before == 1


# -- beside django-prometheus ----------------------------------------------------------------------


def test_every_metric_has_our_prefix_and_no_django_prometheus_name() -> None:
    # django-prometheus names all of its metrics django_*; ours are resee_perf_*, so both
    # register in one registry. The test below proves it where django-prometheus installs.
    assert all(name.startswith("resee_perf_") for name in metrics.DEFINED)


def test_beside_django_prometheus_in_one_registry() -> None:
    pytest.importorskip("django_prometheus", reason="django-prometheus needs Django<6.1")
    both = [
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        "resee_perf.middleware.MetricsMiddleware",
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ]
    with override_settings(MIDDLEWARE=both):
        client = Client()
        assert client.get("/things/1/").status_code == 200
        exposed = client.get("/metrics").content.decode()
    assert "django_http_requests_total_by_method_total" in exposed
    assert 'resee_perf_http_requests_total{method="GET",route="things/<int:pk>/"' in exposed
    names = [metric.name for metric in REGISTRY.collect()]
    assert len(names) == len(set(names))


# -- the checks ------------------------------------------------------------------------------------


def test_w050_under_gunicorn_without_the_multiprocess_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 3")
    [warning] = check_metrics()
    assert isinstance(warning, Warning)
    assert warning.id == "resee_perf.W050"
    assert "PROMETHEUS_MULTIPROC_DIR" in warning.msg
    with override_settings(RESEE_PERF={"METRICS_ENABLED": False}):
        assert check_metrics() == []


def test_no_warning_outside_gunicorn_or_with_the_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    monkeypatch.delitem(sys.modules, "gunicorn.arbiter", raising=False)
    assert check_metrics() == []
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 3")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert check_metrics() == []


def test_e050_multiprocess_directory_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    [error] = check_metrics()
    assert isinstance(error, Error)
    assert error.id == "resee_perf.E050"


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("METRICS_ALLOWED_NETWORKS", ["10.0.0.1/8"]),
        ("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ("METRICS_TOKEN", ""),
        ("METRICS_LATENCY_BUCKETS", [0.1, 0.05]),
        ("METRICS_LATENCY_BUCKETS", []),
    ],
)
def test_bad_metrics_settings_are_rejected(key: str, bad: Any) -> None:
    assert not OPTIONS[key].validate(bad)
    assert OPTIONS[key].validate(OPTIONS[key].default)


# -- psycopg pool gauges -------------------------------------------------------------------------


def test_pool_gauges_from_a_real_native_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    import django
    from django.db.backends.postgresql.base import DatabaseWrapper

    from resee_perf import _request_metrics

    if django.VERSION < (5, 1):
        pytest.skip("Django's native pool needs 5.1+")
    settings_dict = {
        **connections["default"].settings_dict,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"pool": {"min_size": 1, "max_size": 2}},
    }
    pooled = DatabaseWrapper(settings_dict, alias="pooled")
    # The pool is keyed by alias; this alias is not in DATABASES, so look it up here.
    monkeypatch.setattr(_request_metrics, "connections", {"pooled": pooled})
    monkeypatch.setattr(_request_metrics, "_next_pool_report", 0.0)
    try:
        # Its first connection ready: a request that finds the pool still opening it makes
        # the pool grow, and pool_size counts connections being opened.
        pooled.pool.open(wait=True, timeout=10)
        pooled.ensure_connection()  # one connection out of the pool, held
        _request_metrics.report_pools({"pooled": 1})
        assert value("resee_perf_db_pool_connections", alias="pooled", state="in_use") == 1
        assert value("resee_perf_db_pool_connections", alias="pooled", state="size") >= 1
        assert value("resee_perf_db_pool_connections", alias="pooled", state="waiting") == 0
    finally:
        pooled.close()
        pooled.close_pool()


# -- metrics never fail a request ------------------------------------------------------------------

_DURATION = "resee_perf_http_request_duration_seconds"


@pytest.fixture
def no_latency_histogram_yet(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The process as it starts: the latency histogram is made at the first request (its
    buckets are a setting). The one made so far is set aside and put back afterwards."""
    collectors = REGISTRY._names_to_collectors  # prometheus-client's name index
    old = collectors.get(_DURATION)
    if old is not None:
        REGISTRY.unregister(old)
    children = dict(metrics._http_children)
    metrics._http_children.clear()
    monkeypatch.setattr(metrics, "_http_duration", None)
    yield
    new = collectors.get(_DURATION)
    if new is not None:
        REGISTRY.unregister(new)
    if old is not None:
        REGISTRY.register(old)
    metrics._http_children.clear()
    metrics._http_children.update(children)


def test_threads_meeting_their_first_request_at_once_make_one_histogram(
    no_latency_histogram_yet: None,
) -> None:
    """Seen in CI: two gthread workers' first requests both created the histogram, and the
    second registration (DuplicateTimeseries) turned a response into a 500."""
    threads = 16
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def first_request() -> None:
        barrier.wait()
        try:
            metrics.report_http("race/", "GET", 200, 0.001)
        except BaseException as error:
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        workers = [threading.Thread(target=first_request) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert value(f"{_DURATION}_count", route="race/", method="GET") == threads


def test_a_failing_metric_is_logged_and_the_response_still_served(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> None:
        raise ValueError("the registry is broken")

    monkeypatch.setattr(metrics, "report_http", broken)
    response = Client().get("/fails/")
    assert response.status_code == 503  # the view's own answer, not a 500 of ours
    assert any(
        record.name == "resee_perf.metrics" and "/fails/" in record.getMessage()
        for record in caplog.records
    )
