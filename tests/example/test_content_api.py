from __future__ import annotations

import datetime

import pytest
from django.contrib.auth.models import User
from pytest_django import DjangoAssertNumQueries
from rest_framework.test import APIClient

from content.models import Category, Content
from review import ladder
from review.models import ReviewSchedule
from tests.example.conftest import MakeContent, MakeSchedule


@pytest.fixture
def other_category(db: None) -> Category:
    return Category.objects.create(name="Algorithms", slug="algorithms")


def test_categories_are_listed_by_name(
    api: APIClient, category: Category, other_category: Category
) -> None:
    response = api.get("/api/categories/")
    assert response.status_code == 200
    assert response.json() == [
        {"id": other_category.pk, "name": "Algorithms", "slug": "algorithms"},
        {"id": category.pk, "name": "Python", "slug": "python"},
    ]


class TestList:
    @pytest.fixture
    def contents(self, user: User, other_user: User, make_content: MakeContent) -> list[Content]:
        start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
        for i in range(3):
            make_content(other_user, title=f"theirs {i}")
        return [
            make_content(user, title=f"mine {i}", created_at=start + datetime.timedelta(hours=i))
            for i in range(25)
        ]

    def test_first_page_newest_first(self, api: APIClient, contents: list[Content]) -> None:
        response = api.get("/api/content/")

        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 25
        assert body["previous"] is None
        assert body["next"].endswith("/api/content/?page=2")
        assert [item["title"] for item in body["results"]] == [
            f"mine {i}" for i in range(24, 4, -1)
        ]

    def test_second_page(self, api: APIClient, contents: list[Content]) -> None:
        body = api.get("/api/content/", {"page": 2}).json()
        assert body["next"] is None
        assert [item["title"] for item in body["results"]] == [
            f"mine {i}" for i in range(4, -1, -1)
        ]

    @pytest.mark.parametrize("page", ["3", "0", "last-but-one"])
    def test_a_page_out_of_range_is_not_found(
        self, api: APIClient, contents: list[Content], page: str
    ) -> None:
        response = api.get("/api/content/", {"page": page})
        assert response.status_code == 404
        assert "detail" in response.json()

    def test_items(self, api: APIClient, contents: list[Content], category: Category) -> None:
        item = api.get("/api/content/").json()["results"][0]
        content = contents[-1]
        assert item == {
            "id": content.pk,
            "title": content.title,
            "body": content.body,
            "category": category.pk,
            "category_name": category.name,
            "created_at": "2024-01-02T00:00:00Z",
            "updated_at": item["updated_at"],
        }

    def test_is_two_queries(
        self,
        api: APIClient,
        contents: list[Content],
        django_assert_num_queries: DjangoAssertNumQueries,
    ) -> None:
        with django_assert_num_queries(2):  # the count and the page
            api.get("/api/content/")


class TestCreate:
    def test_creates_the_content_and_its_first_review_tomorrow(
        self, api: APIClient, user: User, category: Category, today: datetime.date
    ) -> None:
        response = api.post(
            "/api/content/",
            {"title": "Decorators", "body": "Functions of functions.", "category": category.pk},
            format="json",
        )

        assert response.status_code == 201
        body = response.json()
        assert (body["title"], body["category_name"]) == ("Decorators", "Python")
        content = Content.objects.get(pk=body["id"])
        assert (content.author, content.category) == (user, category)
        schedule = ReviewSchedule.objects.get(content=content)
        assert schedule.user == user
        assert schedule.interval_index == ladder.FIRST_STEP
        assert schedule.next_review_date == today + datetime.timedelta(days=1)
        assert schedule.is_active

    @pytest.mark.parametrize(
        ("payload", "fields"),
        [
            ({"body": "b", "category": "CATEGORY"}, ["title"]),
            ({"title": "", "body": "b", "category": "CATEGORY"}, ["title"]),
            ({"title": "t" * 201, "body": "b", "category": "CATEGORY"}, ["title"]),
            ({"title": "t", "body": "b", "category": 999_999}, ["category"]),
            ({"title": "t", "body": "b", "category": "python"}, ["category"]),
            ({}, ["body", "category", "title"]),
        ],
    )
    def test_invalid_content_is_a_400_with_errors(
        self, api: APIClient, category: Category, payload: dict[str, object], fields: list[str]
    ) -> None:
        payload = {k: category.pk if v == "CATEGORY" else v for k, v in payload.items()}

        response = api.post("/api/content/", payload, format="json")

        assert response.status_code == 400
        assert sorted(response.json()) == fields
        assert not Content.objects.exists()
        assert not ReviewSchedule.objects.exists()

    def test_the_author_is_the_user_whatever_the_payload_says(
        self, api: APIClient, user: User, other_user: User, category: Category
    ) -> None:
        payload = {"title": "t", "body": "b", "category": category.pk, "author": other_user.pk}
        response = api.post("/api/content/", payload, format="json")
        assert Content.objects.get(pk=response.json()["id"]).author == user


class TestDetail:
    @pytest.fixture
    def content(self, user: User, make_content: MakeContent) -> Content:
        return make_content(user, title="Generators")

    @pytest.fixture
    def theirs(self, other_user: User, make_content: MakeContent) -> Content:
        return make_content(other_user, title="Not yours")

    def test_get(self, api: APIClient, content: Content) -> None:
        response = api.get(f"/api/content/{content.pk}/")
        assert response.status_code == 200
        assert response.json()["title"] == "Generators"

    def test_put(self, api: APIClient, content: Content, other_category: Category) -> None:
        payload = {"title": "Iterators", "body": "new", "category": other_category.pk}

        response = api.put(f"/api/content/{content.pk}/", payload, format="json")

        assert response.status_code == 200
        assert response.json()["category_name"] == "Algorithms"
        content.refresh_from_db()
        assert (content.title, content.body, content.category) == (
            "Iterators",
            "new",
            other_category,
        )

    def test_patch(self, api: APIClient, content: Content) -> None:
        before = content.updated_at

        response = api.patch(f"/api/content/{content.pk}/", {"title": "Yield"}, format="json")

        assert response.status_code == 200
        content.refresh_from_db()
        assert (content.title, content.body) == ("Yield", "A body.")
        assert content.updated_at > before

    def test_an_invalid_update_is_a_400(self, api: APIClient, content: Content) -> None:
        response = api.patch(f"/api/content/{content.pk}/", {"category": None}, format="json")
        assert response.status_code == 400
        assert list(response.json()) == ["category"]

    def test_delete_removes_its_schedule_too(
        self, api: APIClient, user: User, content: Content, make_schedule: MakeSchedule
    ) -> None:
        make_schedule(user, content=content)

        response = api.delete(f"/api/content/{content.pk}/")

        assert response.status_code == 204
        assert not Content.objects.filter(pk=content.pk).exists()
        assert not ReviewSchedule.objects.exists()

    @pytest.mark.parametrize(
        ("method", "payload"),
        [
            ("get", None),
            ("put", {"title": "mine now", "body": "b", "category": "CATEGORY"}),
            ("patch", {"title": "mine now"}),
            ("delete", None),
        ],
    )
    def test_another_users_content_is_not_found(
        self,
        api: APIClient,
        theirs: Content,
        category: Category,
        method: str,
        payload: dict[str, object] | None,
    ) -> None:
        if payload:
            payload = {k: category.pk if v == "CATEGORY" else v for k, v in payload.items()}

        response = getattr(api, method)(f"/api/content/{theirs.pk}/", payload, format="json")

        assert response.status_code == 404
        theirs.refresh_from_db()
        assert theirs.title == "Not yours"

    def test_an_unknown_content_is_not_found(self, api: APIClient) -> None:
        assert api.get("/api/content/999999/").status_code == 404
