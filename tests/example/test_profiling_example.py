"""The example project under the profiler: the naive variant of today's reviews is reported
(both lazy loads, with their count and call site), the real endpoint is not."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import django
import pytest
from django.contrib.auth.models import User

from resee_perf.profiling import profile_queries
from review.models import ReviewSchedule
from tests.example.conftest import ClientFor, MakeSchedule

VIEWS = Path(__file__).resolve().parents[2] / "example_project" / "review" / "views.py"
NAIVE = "/api/review/today/naive/"
TODAY = "/api/review/today/"
SCHEDULES = 6


def naive_call_site() -> str:
    lines = VIEWS.read_text().splitlines()
    number = next(n for n, line in enumerate(lines, 1) if "# the lazy loads: N+1" in line)
    return f"review/views.py:{number}"


@pytest.fixture
def profiled(settings: Any) -> None:
    settings.MIDDLEWARE = ["resee_perf.middleware.QueryProfileMiddleware", *settings.MIDDLEWARE]
    settings.RESEE_DEMO_NAIVE = True


@pytest.fixture
def due(user: User, make_schedule: MakeSchedule) -> list[ReviewSchedule]:
    return [make_schedule(user) for _ in range(SCHEDULES)]


def reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "resee_perf.profiling" and record.getMessage().startswith("N+1")
    ]


@pytest.mark.usefixtures("profiled", "due")
def test_the_naive_endpoint_is_reported_with_count_and_call_site(
    client_for: ClientFor, user: User, caplog: pytest.LogCaptureFixture
) -> None:
    response = client_for(user).get(NAIVE)
    assert response.status_code == 200
    assert response.json()["count"] == SCHEDULES
    found = {(r.shape.split(" FROM ")[1].split()[0], r.count, r.call_site) for r in reports(caplog)}  # type: ignore[attr-defined]
    assert found == {
        ('"content_content"', SCHEDULES, naive_call_site()),
        ('"content_category"', SCHEDULES, naive_call_site()),
    }
    assert {r.route for r in reports(caplog)} == {"api/review/today/naive/"}  # type: ignore[attr-defined]


@pytest.mark.usefixtures("profiled", "due")
def test_the_real_endpoint_is_not_reported(
    client_for: ClientFor, user: User, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(user)
    with profile_queries() as miss:
        assert client.get(TODAY).json()["count"] == SCHEDULES
    with profile_queries() as hit:
        assert client.get(TODAY).json()["count"] == SCHEDULES
    assert reports(caplog) == []
    assert miss.queries == 1  # the schedules with their contents, in one query
    assert hit.queries == 0
    assert hit.cache_seconds > 0


@pytest.mark.usefixtures("due")
def test_the_naive_endpoint_is_off_by_default(client_for: ClientFor, user: User) -> None:
    assert client_for(user).get(NAIVE).status_code == 404


@pytest.mark.skipif(django.VERSION < (6, 1), reason="QuerySet.fetch_mode() is new in Django 6.1")
@pytest.mark.usefixtures("due")
def test_fetch_peers_removes_the_nplusone_the_profiler_finds(user: User) -> None:
    """The two complement each other: the profiler finds the loop and its line, FETCH_PEERS
    (on the queryset, or as the default of a model's manager) makes each lazy load fetch the
    relation for every instance of the queryset in one query."""
    from django.db.models import FETCH_PEERS  # type: ignore[attr-defined,unused-ignore]

    def titles(schedules: Any) -> list[str]:
        return [f"{s.content.title}/{s.content.category.name}" for s in schedules]  # the loop

    queryset = ReviewSchedule.objects.filter(user=user)
    with profile_queries() as lazy:
        naive = titles(queryset)
    assert {stats.count for stats in lazy.nplusone} == {SCHEDULES}
    assert len(lazy.nplusone) == 2
    with profile_queries() as peers:
        fetched = titles(queryset.fetch_mode(FETCH_PEERS))
    assert fetched == naive
    assert peers.nplusone == []
    assert peers.queries == 3  # the schedules, then every content, then every category
