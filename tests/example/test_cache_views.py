"""The example project's cached GET endpoints (cache_aside on the views) through the API, on the
real PostgreSQL and Redis: a repeated GET runs no query, each user and page has its own entry,
and a write through the API is seen by the next GET (the tags the invalidation wiring bumps)."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries
from rest_framework.test import APIClient

from content.models import Content
from tests.example.conftest import ClientFor, MakeContent, MakeSchedule

# Invalidation runs after commit: the tests must commit.
pytestmark = pytest.mark.django_db(transaction=True)


def test_todays_reviews_are_cached_until_a_completion(
    api: APIClient,
    user: User,
    make_schedule: MakeSchedule,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    first, second = make_schedule(user), make_schedule(user)
    before = api.get("/api/review/today/").json()
    assert before["count"] == 2

    with django_assert_num_queries(0):
        assert api.get("/api/review/today/").json() == before

    response = api.post(f"/api/review/complete/{first.pk}/", {"result": "remembered"})
    assert response.status_code == 200
    after = api.get("/api/review/today/").json()
    assert [item["id"] for item in after["results"]] == [second.pk]


SetNow = Callable[[datetime.datetime], None]


@pytest.fixture
def set_now(monkeypatch: pytest.MonkeyPatch) -> SetNow:
    """Freezes Django's clock (``timezone.now``, so ``localdate`` too) at the moment given. The
    cache's own clock keeps running: an entry stored "at 23:59" is still fresh "at 00:01"."""

    def freeze(moment: datetime.datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: moment)

    return freeze


def test_todays_reviews_cached_at_2359_are_not_served_at_0001_and_still_follow_writes(
    api: APIClient,
    user: User,
    make_schedule: MakeSchedule,
    set_now: SetNow,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    zone = timezone.get_current_timezone()
    set_now(datetime.datetime(2026, 12, 3, 23, 59, tzinfo=zone))
    overdue = make_schedule(user, next_review_date=datetime.date(2026, 12, 3))
    tomorrows = make_schedule(user, next_review_date=datetime.date(2026, 12, 4))
    evening = api.get("/api/review/today/").json()
    assert evening["date"] == "2026-12-03"
    assert [item["id"] for item in evening["results"]] == [overdue.pk]
    with django_assert_num_queries(0):
        assert api.get("/api/review/today/").json() == evening

    # No write announces midnight; the entry is well within its TTL, but the day is in the key.
    set_now(datetime.datetime(2026, 12, 4, 0, 1, tzinfo=zone))
    morning = api.get("/api/review/today/").json()
    assert morning["date"] == "2026-12-04"
    assert [item["id"] for item in morning["results"]] == [overdue.pk, tomorrows.pk]
    with django_assert_num_queries(0):
        assert api.get("/api/review/today/").json() == morning

    response = api.post(f"/api/review/complete/{tomorrows.pk}/", {"result": "remembered"})
    assert response.status_code == 200
    after = api.get("/api/review/today/").json()
    assert [item["id"] for item in after["results"]] == [overdue.pk]


def test_stats_cached_at_2359_are_not_served_at_0001(
    api: APIClient,
    user: User,
    set_now: SetNow,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    zone = timezone.get_current_timezone()
    set_now(datetime.datetime(2026, 12, 3, 23, 59, tzinfo=zone))
    evening = api.get("/api/analytics/stats/").json()
    assert evening["daily"][-1]["date"] == "2026-12-03"
    with django_assert_num_queries(0):
        assert api.get("/api/analytics/stats/").json() == evening

    # The last 30 days end today: no write announces midnight, but the day is in the key.
    set_now(datetime.datetime(2026, 12, 4, 0, 1, tzinfo=zone))
    morning = api.get("/api/analytics/stats/").json()
    assert morning["daily"][-1]["date"] == "2026-12-04"
    assert morning["daily"][-2] == evening["daily"][-1]


def test_stats_are_cached_per_user_until_a_review(
    api: APIClient,
    user: User,
    other_user: User,
    client_for: ClientFor,
    make_schedule: MakeSchedule,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    schedule = make_schedule(user)
    mine = api.get("/api/analytics/stats/").json()
    theirs = client_for(other_user).get("/api/analytics/stats/").json()
    with django_assert_num_queries(0):
        assert api.get("/api/analytics/stats/").json() == mine
        assert client_for(other_user).get("/api/analytics/stats/").json() == theirs

    api.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})
    assert api.get("/api/analytics/stats/").json() != mine
    with django_assert_num_queries(0):
        assert client_for(other_user).get("/api/analytics/stats/").json() == theirs


def test_the_content_list_is_cached_per_page_until_a_write(
    api: APIClient,
    user: User,
    make_content: MakeContent,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    for number in range(25):  # two pages of 20
        make_content(user, title=f"Content {number}")
    page_one = api.get("/api/content/").json()
    page_two = api.get("/api/content/?page=2").json()
    assert len(page_one["results"]) == 20
    assert len(page_two["results"]) == 5
    with django_assert_num_queries(0):
        assert api.get("/api/content/").json() == page_one
        assert api.get("/api/content/?page=2").json() == page_two

    newest = Content.objects.filter(author=user).latest("created_at")
    response = api.patch(f"/api/content/{newest.pk}/", {"title": "Renamed"})
    assert response.status_code == 200
    assert api.get("/api/content/").json()["results"][0]["title"] == "Renamed"
