"""The example project's invalidation wiring, through its API, on the real PostgreSQL and Redis:
each write invalidates the tags of the user it concerns, and only those."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from rest_framework.test import APIClient

from content.models import Category, Content
from review import ladder
from review.models import ReviewHistory, ReviewSchedule
from tests.example.conftest import ClientFor, MakeContent, MakeSchedule, MakeUser
from tests.test_invalidation import bumped, start

# Invalidation runs after commit: the tests must commit.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    caches["default"].clear()  # our own Redis database (REDIS_URL)
    yield
    caches["default"].clear()


def reviews(user: User) -> str:
    return f"user:{user.pk}:reviews"


def contents(user: User) -> str:
    return f"user:{user.pk}:contents"


def all_tags(*users: User) -> dict[str, int]:
    return start(*(tag for user in users for tag in (reviews(user), contents(user))))


def test_completing_a_review_invalidates_that_users_reviews_only(
    api: APIClient, user: User, other_user: User, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule(user)
    make_schedule(other_user)
    before = all_tags(user, other_user)

    response = api.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})

    assert response.status_code == 200
    assert bumped(before) == {reviews(user)}


def test_a_completion_that_fails_midway_invalidates_nothing(
    api: APIClient,
    user: User,
    make_schedule: MakeSchedule,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule = make_schedule(user)
    before = all_tags(user)

    def broken_ladder(*args: object, **kwargs: object) -> ladder.Step:
        raise RuntimeError("after the ReviewHistory insert, before the schedule update")

    monkeypatch.setattr(ladder, "review", broken_ladder)
    with pytest.raises(RuntimeError):
        api.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})

    assert not ReviewHistory.objects.exists()  # rolled back...
    assert bumped(before) == set()  # ...and nothing invalidated


def test_creating_content_invalidates_the_authors_contents_and_reviews(
    api: APIClient, user: User, other_user: User, category: Category
) -> None:
    before = all_tags(user, other_user)

    response = api.post(
        "/api/content/", {"title": "Generators", "body": "yield", "category": category.pk}
    )

    assert response.status_code == 201
    assert ReviewSchedule.objects.filter(user=user).exists()
    assert bumped(before) == {contents(user), reviews(user)}


def test_editing_content_invalidates_only_content_pages(
    api: APIClient, user: User, other_user: User, make_content: MakeContent
) -> None:
    content = make_content(user)
    before = all_tags(user, other_user)

    response = api.patch(f"/api/content/{content.pk}/", {"title": "Yield"}, format="json")

    assert response.status_code == 200
    assert bumped(before) == {contents(user)}


def test_deleting_content_invalidates_its_schedule_too(
    api: APIClient, user: User, other_user: User, make_schedule: MakeSchedule
) -> None:
    schedule = make_schedule(user)
    before = all_tags(user, other_user)

    response = api.delete(f"/api/content/{schedule.content_id}/")

    assert response.status_code == 204
    assert bumped(before) == {contents(user), reviews(user)}


def test_renaming_a_category_invalidates_the_content_pages_of_its_authors(
    user: User, make_user: MakeUser, make_content: MakeContent, category: Category
) -> None:
    elsewhere = make_user("carol")
    make_content(user)
    make_content(user)
    make_content(elsewhere, category=Category.objects.create(name="Go", slug="go"))
    before = all_tags(user, elsewhere)

    category.name = "Python 3"
    category.save()

    assert bumped(before) == {contents(user)}


def test_another_users_writes_leave_this_users_tags_alone(
    client_for: ClientFor, user: User, other_user: User, make_schedule: MakeSchedule
) -> None:
    theirs = make_schedule(other_user)
    before = all_tags(user)

    client_for(other_user).post(f"/api/review/complete/{theirs.pk}/", {"result": "forgot"})
    client_for(other_user).patch(
        f"/api/content/{theirs.content_id}/", {"title": "x"}, format="json"
    )

    assert bumped(before) == set()
    assert Content.objects.get(pk=theirs.content_id).title == "x"
