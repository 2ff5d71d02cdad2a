from __future__ import annotations

import base64
import hashlib
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, F, Q
from django.utils import timezone
from rest_framework.test import APIClient

from content.models import Category, Content
from resee import seeding
from review.models import ReviewHistory, ReviewSchedule

SMALL = {"users": 20, "contents": 500, "history": 5000, "categories": 8}

pytestmark = pytest.mark.django_db


def seed_demo(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out, **{**SMALL, **options})
    return out.getvalue()


def demo_users() -> Any:
    return User.objects.filter(username__regex=seeding.DEMO_USERNAME_REGEX)


def checksum() -> str:
    """A digest of every seeded row, by natural keys where ids could differ."""
    digest = hashlib.sha256()
    tables: list[tuple[Any, tuple[str, ...]]] = [
        (demo_users(), ("username", "email", "password", "date_joined", "is_active")),
        (Category.objects.all(), ("id", "name", "slug")),
        (
            Content.objects.all(),
            ("id", "title", "body", "author__username", "category__name", "created_at"),
        ),
        (
            ReviewSchedule.objects.all(),
            (
                "id",
                "user__username",
                "content_id",
                "interval_index",
                "next_review_date",
                "is_active",
            ),
        ),
        (
            ReviewHistory.objects.all(),
            ("id", "user__username", "content_id", "result", "reviewed_at"),
        ),
    ]
    for queryset, fields in tables:
        for row in queryset.order_by("id").values_list(*fields):
            digest.update(repr(row).encode())
    return digest.hexdigest()


def test_counts_and_summary() -> None:
    out = seed_demo()

    assert demo_users().count() == 20
    assert Category.objects.count() == 8
    assert Content.objects.count() == 500
    assert ReviewSchedule.objects.count() == 500
    assert ReviewHistory.objects.count() == 5000
    assert out.startswith(
        "Seeded 20 users, 8 categories, 500 contents, 500 schedules and 5000 reviews "
        "on postgresql (seed 42) in "
    )
    assert len(out.splitlines()) == 1


def test_deterministic() -> None:
    seed_demo()
    first = checksum()
    seed_demo("--flush")
    assert checksum() == first
    seed_demo("--flush", seed=7)
    assert checksum() != first


def test_bulk_create_writes_the_same_rows_as_copy() -> None:
    seed_demo()
    by_copy = checksum()
    seeding.flush()
    seeding.seed(seeding.Sizes(**SMALL), copy=False)
    assert checksum() == by_copy


def test_the_data_is_realistic() -> None:
    seed_demo()
    today = timezone.localdate()
    users_with_content = Content.objects.values("author").distinct().count()
    users_due = (
        ReviewSchedule.objects.filter(is_active=True, next_review_date__lte=today)
        .values("user")
        .distinct()
        .count()
    )
    assert users_due >= 0.8 * users_with_content
    # Each content is scheduled for its author.
    assert not ReviewSchedule.objects.exclude(user=F("content__author")).exists()
    assert not ReviewHistory.objects.exclude(user=F("content__author")).exists()
    totals = ReviewHistory.objects.aggregate(
        reviews=Count("id"), remembered=Count("id", filter=Q(result="remembered"))
    )
    assert 0.75 <= totals["remembered"] / totals["reviews"] <= 0.85
    span = today - timezone.localdate(ReviewHistory.objects.earliest("reviewed_at").reviewed_at)
    assert 80 <= span.days <= 90
    assert ReviewHistory.objects.latest("reviewed_at").reviewed_at < timezone.now()
    # Reviews are of contents that existed then.
    assert not ReviewHistory.objects.filter(reviewed_at__lt=F("content__created_at")).exists()


def test_a_demo_user_logs_in_and_has_reviews_today() -> None:
    seed_demo()
    user = User.objects.get(username="user0001")
    assert user.check_password("demo")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"user0001:demo").decode())

    response = client.get("/api/review/today/")

    assert response.status_code == 200
    expected = ReviewSchedule.objects.filter(
        user=user, is_active=True, next_review_date__lte=timezone.localdate()
    ).count()
    assert response.json()["count"] == expected


def test_the_id_sequences_continue_after_the_seeded_rows() -> None:
    seed_demo()
    user = User.objects.create_user("newcomer")
    category = Category.objects.create(name="New", slug="new")
    content = Content.objects.create(title="t", body="b", author=user, category=category)
    schedule = ReviewSchedule.objects.create(
        user=user, content=content, next_review_date=timezone.localdate()
    )
    review = ReviewHistory.objects.create(user=user, content=content, result="forgot")
    assert content.pk == 501
    assert (schedule.pk, review.pk) == (501, 5001)


def test_foreign_keys_are_back_after_seeding() -> None:
    def foreign_keys() -> list[tuple[str, str, str]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE contype = 'f' ORDER BY 1, 2"
            )
            keys: list[tuple[str, str, str]] = cursor.fetchall()
            return keys

    before = foreign_keys()
    seed_demo()
    assert foreign_keys() == before
    seeded = {"content_content", "review_reviewschedule", "review_reviewhistory"}
    assert len([key for key in before if key[0] in seeded]) == 6


def test_refuses_to_seed_over_demo_data() -> None:
    seed_demo()
    with pytest.raises(CommandError, match="--flush"):
        seed_demo()


def test_flush_keeps_other_users() -> None:
    admin = User.objects.create_superuser("admin", password="x")
    seed_demo()
    seed_demo("--flush", users=3, contents=10, history=20)
    assert demo_users().count() == 3
    assert User.objects.filter(pk=admin.pk).exists()


@pytest.mark.parametrize(
    "sizes",
    [
        {"users": -1},
        {"users": 0},
        {"categories": 0},
        {"contents": 0},
    ],
)
def test_impossible_sizes_are_refused(sizes: dict[str, int]) -> None:
    with pytest.raises(CommandError):
        seed_demo(**sizes)
    assert not Content.objects.exists()


def test_empty_sizes_are_fine() -> None:
    out = seed_demo(users=5, contents=0, history=0)
    assert "Seeded 5 users, 8 categories, 0 contents" in out
