from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from content.models import Category, Content
from review.models import ReviewHistory, ReviewSchedule

PASSWORD = "s3cret-pass"

MakeUser = Callable[[str], User]
MakeContent = Callable[..., Content]
MakeSchedule = Callable[..., ReviewSchedule]
MakeReview = Callable[..., ReviewHistory]
ClientFor = Callable[[User], APIClient]


@pytest.fixture(autouse=True)
def _own_cache_namespace(settings: Any) -> None:
    """The API views are cached (cache_aside) in the shared Redis database; user ids restart
    with every --create-db, so an entry left by an earlier run could answer for a different
    user. A fresh KEY_PREFIX per test keeps tests apart without flushing anything."""
    settings.RESEE_PERF = {**settings.RESEE_PERF, "KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}"}


@pytest.fixture
def today() -> datetime.date:
    return timezone.localdate()


@pytest.fixture
def make_user(db: None) -> MakeUser:
    def make(username: str) -> User:
        return User.objects.create_user(username=username, password=PASSWORD)

    return make


@pytest.fixture
def user(make_user: MakeUser) -> User:
    return make_user("alice")


@pytest.fixture
def other_user(make_user: MakeUser) -> User:
    return make_user("bob")


@pytest.fixture
def client_for() -> ClientFor:
    def make(user: User) -> APIClient:
        client = APIClient()
        client.force_authenticate(user=user)
        return client

    return make


@pytest.fixture
def api(client_for: ClientFor, user: User) -> APIClient:
    """A client logged in as ``user``."""
    return client_for(user)


@pytest.fixture
def category(db: None) -> Category:
    return Category.objects.create(name="Python", slug="python")


@pytest.fixture
def make_content(category: Category) -> MakeContent:
    def make(author: User, **fields: Any) -> Content:
        fields.setdefault("title", "A title")
        fields.setdefault("body", "A body.")
        fields.setdefault("category", category)
        return Content.objects.create(author=author, **fields)

    return make


@pytest.fixture
def make_schedule(make_content: MakeContent, today: datetime.date) -> MakeSchedule:
    def make(user: User, **fields: Any) -> ReviewSchedule:
        content = fields.pop("content", None) or make_content(user)
        fields.setdefault("next_review_date", today)
        return ReviewSchedule.objects.create(user=user, content=content, **fields)

    return make


@pytest.fixture
def make_review(make_content: MakeContent) -> MakeReview:
    def make(
        user: User,
        day: datetime.date,
        result: str = ReviewHistory.Result.REMEMBERED,
        content: Content | None = None,
    ) -> ReviewHistory:
        midday = datetime.datetime.combine(
            day, datetime.time(12), tzinfo=timezone.get_current_timezone()
        )
        return ReviewHistory.objects.create(
            user=user, content=content or make_content(user), result=result, reviewed_at=midday
        )

    return make
