from __future__ import annotations

import datetime

import pytest
from django.contrib.auth.models import User
from pytest_django import DjangoAssertNumQueries
from rest_framework.test import APIClient

from content.models import Category
from review.models import ReviewHistory, ReviewSchedule
from review.queries import EXCERPT_LENGTH
from tests.example.conftest import MakeContent, MakeSchedule

DAY = datetime.timedelta(days=1)


def complete_url(schedule: ReviewSchedule | int) -> str:
    pk = schedule if isinstance(schedule, int) else schedule.pk
    return f"/api/review/complete/{pk}/"


class TestToday:
    def test_only_the_users_due_active_schedules_oldest_first(
        self,
        api: APIClient,
        user: User,
        other_user: User,
        make_schedule: MakeSchedule,
        today: datetime.date,
    ) -> None:
        due_today = make_schedule(user, next_review_date=today)
        overdue = make_schedule(user, next_review_date=today - 3 * DAY)
        make_schedule(user, next_review_date=today + DAY)
        make_schedule(user, next_review_date=today - DAY, is_active=False)
        make_schedule(other_user, next_review_date=today - DAY)

        response = api.get("/api/review/today/")

        assert response.status_code == 200
        body = response.json()
        assert body["date"] == today.isoformat()
        assert body["count"] == 2
        assert [item["id"] for item in body["results"]] == [overdue.pk, due_today.pk]

    def test_each_review_carries_its_content(
        self,
        api: APIClient,
        user: User,
        make_content: MakeContent,
        make_schedule: MakeSchedule,
        category: Category,
        today: datetime.date,
    ) -> None:
        content = make_content(user, title="Closures", body="x" * 1000)
        schedule = make_schedule(user, content=content, interval_index=2)

        [item] = api.get("/api/review/today/").json()["results"]

        assert item == {
            "id": schedule.pk,
            "content_id": content.pk,
            "title": "Closures",
            "excerpt": "x" * EXCERPT_LENGTH,
            "category": category.name,
            "interval_index": 2,
            "next_review_date": today.isoformat(),
            "is_active": True,
        }

    def test_is_one_query(
        self,
        api: APIClient,
        user: User,
        make_schedule: MakeSchedule,
        django_assert_num_queries: DjangoAssertNumQueries,
    ) -> None:
        for _ in range(5):
            make_schedule(user)
        with django_assert_num_queries(1):
            response = api.get("/api/review/today/")
        assert response.json()["count"] == 5

    def test_empty(self, api: APIClient) -> None:
        assert api.get("/api/review/today/").json()["results"] == []


class TestComplete:
    @pytest.mark.parametrize(
        ("index", "result", "new_index", "days"),
        [
            (0, "remembered", 1, 3),
            (2, "remembered", 3, 14),
            (4, "remembered", 4, 30),
            (3, "forgot", 0, 1),
            (0, "forgot", 0, 1),
        ],
    )
    def test_moves_the_schedule_on_the_ladder_and_writes_history(
        self,
        api: APIClient,
        user: User,
        make_schedule: MakeSchedule,
        today: datetime.date,
        index: int,
        result: str,
        new_index: int,
        days: int,
    ) -> None:
        schedule = make_schedule(user, interval_index=index, next_review_date=today - 2 * DAY)

        response = api.post(complete_url(schedule), {"result": result}, format="json")

        assert response.status_code == 200
        expected_date = today + datetime.timedelta(days=days)
        body = response.json()
        assert body["id"] == schedule.pk
        assert body["interval_index"] == new_index
        assert body["next_review_date"] == expected_date.isoformat()
        assert body["title"] == schedule.content.title
        schedule.refresh_from_db()
        assert (schedule.interval_index, schedule.next_review_date) == (new_index, expected_date)
        [review] = ReviewHistory.objects.all()
        assert (review.user, review.content, review.result) == (user, schedule.content, result)

    def test_a_completed_review_leaves_today(
        self, api: APIClient, user: User, make_schedule: MakeSchedule
    ) -> None:
        schedule = make_schedule(user)
        api.post(complete_url(schedule), {"result": "forgot"}, format="json")
        assert api.get("/api/review/today/").json()["count"] == 0

    def test_another_users_schedule_is_not_found(
        self, api: APIClient, other_user: User, make_schedule: MakeSchedule
    ) -> None:
        schedule = make_schedule(other_user, interval_index=1)

        response = api.post(complete_url(schedule), {"result": "remembered"}, format="json")

        assert response.status_code == 404
        schedule.refresh_from_db()
        assert schedule.interval_index == 1
        assert not ReviewHistory.objects.exists()

    @pytest.mark.usefixtures("user")
    def test_an_unknown_schedule_is_not_found(self, api: APIClient) -> None:
        response = api.post(complete_url(999_999), {"result": "remembered"}, format="json")
        assert response.status_code == 404
        assert "detail" in response.json()

    def test_an_inactive_schedule_is_not_found(
        self, api: APIClient, user: User, make_schedule: MakeSchedule
    ) -> None:
        schedule = make_schedule(user, is_active=False)
        response = api.post(complete_url(schedule), {"result": "remembered"}, format="json")
        assert response.status_code == 404

    @pytest.mark.parametrize("payload", [{"result": "maybe"}, {}, {"result": ""}, {"other": 1}])
    def test_a_bad_result_is_a_400_with_errors(
        self, api: APIClient, user: User, make_schedule: MakeSchedule, payload: dict[str, object]
    ) -> None:
        schedule = make_schedule(user)

        response = api.post(complete_url(schedule), payload, format="json")

        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert list(response.json()) == ["result"]
        assert not ReviewHistory.objects.exists()

    def test_malformed_json_is_a_400(
        self, api: APIClient, user: User, make_schedule: MakeSchedule
    ) -> None:
        schedule = make_schedule(user)
        response = api.post(complete_url(schedule), "{", content_type="application/json")
        assert response.status_code == 400
        assert "detail" in response.json()

    def test_locks_the_schedule_row(
        self,
        api: APIClient,
        user: User,
        make_schedule: MakeSchedule,
        django_assert_num_queries: DjangoAssertNumQueries,
    ) -> None:
        schedule = make_schedule(user)
        # savepoint, lock, insert, the old due date (invalidate_on's track: which day's list
        # the schedule leaves), update, release
        with django_assert_num_queries(6) as captured:
            api.post(complete_url(schedule), {"result": "remembered"}, format="json")
        [locking] = [q["sql"] for q in captured.captured_queries if "FOR UPDATE" in q["sql"]]
        assert locking.endswith('FOR UPDATE OF "review_reviewschedule"')
