from __future__ import annotations

import datetime

import pytest
from django.contrib.auth.models import User
from pytest_django import DjangoAssertNumQueries
from rest_framework.test import APIClient

from analytics.stats import current_streak, last_days, learning_stats, success_rate
from content.models import Category
from tests.example.conftest import MakeContent, MakeReview

TODAY = datetime.date(2024, 3, 10)
DAY = datetime.timedelta(days=1)


def days_ago(*offsets: int) -> set[datetime.date]:
    return {TODAY - offset * DAY for offset in offsets}


@pytest.mark.parametrize(
    ("offsets", "streak"),
    [
        ((), 0),
        ((0,), 1),
        ((0, 1, 2), 3),
        ((1, 2), 2),  # nothing yet today: the streak runs to yesterday
        ((0, 2, 3), 1),
        ((2, 3, 4), 0),  # nothing today or yesterday: broken
        ((0, 1, 2, 4, 5), 3),
        ((-1, 0), 1),  # a review dated tomorrow (another time zone) does not count
    ],
)
def test_current_streak(offsets: tuple[int, ...], streak: int) -> None:
    assert current_streak(days_ago(*offsets), TODAY) == streak


def test_last_days() -> None:
    days = last_days(TODAY, 30)
    assert len(days) == 30
    assert (days[0], days[-1]) == (TODAY - 29 * DAY, TODAY)
    assert days == sorted(days)


@pytest.mark.parametrize(
    ("remembered", "reviews", "rate"), [(0, 0, None), (3, 4, 0.75), (2, 3, 0.6667), (5, 5, 1.0)]
)
def test_success_rate(remembered: int, reviews: int, rate: float | None) -> None:
    assert success_rate(remembered, reviews) == rate


class TestLearningStats:
    @pytest.fixture
    def fixture(
        self,
        user: User,
        other_user: User,
        category: Category,
        make_content: MakeContent,
        make_review: MakeReview,
        today: datetime.date,
    ) -> None:
        """Python: 4 reviews, 3 remembered. Algorithms: 3 reviews, 1 remembered.

        Days with reviews: today, yesterday, 2 days ago (a 3-day streak), 4 days ago,
        29 days ago (the oldest day of the window) and 30 days ago (outside it).
        """
        algorithms = Category.objects.create(name="Algorithms", slug="algorithms")
        python = make_content(user, category=category)
        sorting = make_content(user, category=algorithms)
        ago = [today - offset * DAY for offset in range(31)]
        make_review(user, ago[0], "remembered", python)
        make_review(user, ago[1], "remembered", python)
        make_review(user, ago[1], "forgot", sorting)
        make_review(user, ago[2], "forgot", python)
        make_review(user, ago[4], "remembered", sorting)
        make_review(user, ago[29], "remembered", python)
        make_review(user, ago[30], "forgot", sorting)
        theirs = make_content(other_user, category=algorithms)
        for _ in range(3):
            make_review(other_user, ago[0], "forgot", theirs)

    @pytest.mark.usefixtures("fixture")
    def test_against_hand_computed_numbers(
        self, user: User, category: Category, today: datetime.date
    ) -> None:
        stats = learning_stats(user, today)

        algorithms = Category.objects.get(name="Algorithms")
        assert stats["total_reviews"] == 7
        assert stats["remembered"] == 4
        assert stats["forgot"] == 3
        assert stats["success_rate"] == 0.5714
        assert stats["current_streak"] == 3
        assert stats["categories"] == [
            {
                "category_id": algorithms.pk,
                "name": "Algorithms",
                "reviews": 3,
                "remembered": 1,
                "success_rate": 0.3333,
            },
            {
                "category_id": category.pk,
                "name": "Python",
                "reviews": 4,
                "remembered": 3,
                "success_rate": 0.75,
            },
        ]
        daily = stats["daily"]
        assert [entry["date"] for entry in daily] == last_days(today, 30)
        counts = {
            (today - entry["date"]).days: (entry["reviews"], entry["remembered"])
            for entry in daily
            if entry["reviews"]
        }
        assert counts == {0: (1, 1), 1: (2, 1), 2: (1, 0), 4: (1, 1), 29: (1, 1)}
        assert sum(entry["reviews"] for entry in daily) == 6

    @pytest.mark.usefixtures("fixture")
    def test_the_streak_lasts_until_a_whole_day_without_reviews(
        self, user: User, today: datetime.date
    ) -> None:
        assert learning_stats(user, today + DAY)["current_streak"] == 3
        assert learning_stats(user, today + 2 * DAY)["current_streak"] == 0

    @pytest.mark.usefixtures("fixture")
    def test_two_queries(
        self,
        user: User,
        today: datetime.date,
        django_assert_num_queries: DjangoAssertNumQueries,
    ) -> None:
        with django_assert_num_queries(2):
            learning_stats(user, today)

    def test_a_user_without_reviews(self, user: User, today: datetime.date) -> None:
        stats = learning_stats(user, today)
        assert stats["total_reviews"] == stats["current_streak"] == 0
        assert stats["success_rate"] is None
        assert stats["categories"] == []
        assert len(stats["daily"]) == 30
        assert {entry["reviews"] for entry in stats["daily"]} == {0}

    @pytest.mark.usefixtures("fixture")
    def test_the_endpoint(self, api: APIClient, today: datetime.date) -> None:
        response = api.get("/api/analytics/stats/")

        assert response.status_code == 200
        body = response.json()
        assert (body["total_reviews"], body["remembered"], body["forgot"]) == (7, 4, 3)
        assert body["success_rate"] == 0.5714
        assert body["current_streak"] == 3
        assert [c["name"] for c in body["categories"]] == ["Algorithms", "Python"]
        assert len(body["daily"]) == 30
        assert body["daily"][-1] == {"date": today.isoformat(), "reviews": 1, "remembered": 1}
        assert body["daily"][0]["date"] == (today - 29 * DAY).isoformat()
