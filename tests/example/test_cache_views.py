"""The example project's cached GET endpoints (cache_aside on the views) through the API, on the
real PostgreSQL and Redis: a repeated GET runs no query, each user and page has its own entry,
and a write through the API is seen by the next GET (the tags the invalidation wiring bumps)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
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
