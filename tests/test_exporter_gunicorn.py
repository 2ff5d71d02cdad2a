"""Acceptance of the exporter under gunicorn: three workers with PROMETHEUS_MULTIPROC_DIR,
N requests to a cached endpoint, and one scrape counts all N, whichever workers served them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.live_site import example_env, get, gunicorn, scrape, session_cookie, total
from tests.test_cache_redis_server import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 60
STATS = "analytics.views.StatsView.for_day"
ROUTE = "api/analytics/stats/"


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_three_workers_every_request_counted_once(
    tmp_path: Path, django_user_model: Any, redis_server: PrivateRedis
) -> None:
    cookie = session_cookie(django_user_model.objects.create_user("prom", password="unused-pw"))
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    # A file a previous run left behind: when_ready must remove it, or it would be counted.
    (multiproc / "counter_1.db").write_bytes(b"\0" * 16)
    env = example_env(
        f"redis://127.0.0.1:{redis_server.port}/0", PROMETHEUS_MULTIPROC_DIR=str(multiproc)
    )
    with gunicorn(env, 3, tmp_path / "gunicorn.log") as base:
        url = f"{base}/{ROUTE}"
        # Concurrent clients without keep-alive: the workers' accepts share the requests.
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: get(url, cookie), range(N)))
        assert statuses == [200] * N
        samples = scrape(f"{base}/metrics")

    workers = {path.name.split("_")[1] for path in multiproc.glob("counter_*.db")}
    assert len(workers) >= 2, f"one worker served everything: {workers}"
    assert "1.db" not in workers
    assert total(samples, "resee_perf_cache_requests_total", name=STATS) == N
    assert total(samples, "resee_perf_cache_requests_total", name=STATS, result="miss") >= 1
    assert total(samples, "resee_perf_http_requests_total", route=ROUTE, method="GET") == N
    assert (
        total(samples, "resee_perf_http_requests_total", route=ROUTE, method="GET", status="2xx")
        == N
    )
    # The gauge of a live worker is merged (livemax), not one series per pid.
    breaker = [key for key in samples if key[0] == "resee_perf_cache_breaker_open"]
    assert breaker
    assert all("pid" not in dict(labels) for _, labels in breaker)
