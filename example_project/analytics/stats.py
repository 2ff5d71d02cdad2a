"""A user's learning statistics, from two aggregate queries over their review history."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from typing import TypedDict

from django.contrib.auth.models import User
from django.db.models import Count, Q
from django.db.models.functions import TruncDate

from review.models import ReviewHistory

DAILY_DAYS = 30

_REMEMBERED = Count("id", filter=Q(result=ReviewHistory.Result.REMEMBERED))


class CategoryStats(TypedDict):
    category_id: int
    name: str
    reviews: int
    remembered: int
    success_rate: float


class DailyCount(TypedDict):
    date: datetime.date
    reviews: int
    remembered: int


class LearningStats(TypedDict):
    total_reviews: int
    remembered: int
    forgot: int
    success_rate: float | None
    current_streak: int
    categories: list[CategoryStats]
    daily: list[DailyCount]


def success_rate(remembered: int, reviews: int) -> float | None:
    """The share of reviews remembered, 0 to 1 to four places; ``None`` without reviews."""
    return round(remembered / reviews, 4) if reviews else None


def learning_stats(user: User, today: datetime.date) -> LearningStats:
    history = ReviewHistory.objects.filter(user=user)
    categories: list[CategoryStats] = [
        {
            "category_id": row["content__category_id"],
            "name": row["content__category__name"],
            "reviews": row["reviews"],
            "remembered": row["remembered"],
            "success_rate": round(row["remembered"] / row["reviews"], 4),
        }
        for row in history.values("content__category_id", "content__category__name")
        .annotate(reviews=Count("id"), remembered=_REMEMBERED)
        .order_by("content__category__name")
    ]
    # Days in the current time zone, as timezone.localdate() counts them.
    per_day = {
        row["day"]: (row["reviews"], row["remembered"])
        for row in history.annotate(day=TruncDate("reviewed_at"))
        .values("day")
        .annotate(reviews=Count("id"), remembered=_REMEMBERED)
        .order_by()
    }
    # Every review has a content and every content a category: the totals add up.
    total = sum(category["reviews"] for category in categories)
    remembered = sum(category["remembered"] for category in categories)
    return {
        "total_reviews": total,
        "remembered": remembered,
        "forgot": total - remembered,
        "success_rate": success_rate(remembered, total),
        "current_streak": current_streak(per_day.keys(), today),
        "categories": categories,
        "daily": [
            {"date": day, "reviews": counts[0], "remembered": counts[1]}
            for day in last_days(today, DAILY_DAYS)
            for counts in [per_day.get(day, (0, 0))]
        ],
    }


def current_streak(review_days: Collection[datetime.date], today: datetime.date) -> int:
    """Consecutive days with at least one review, ending today, or yesterday when there is
    no review yet today (the streak is not broken before the day is over)."""
    day = today if today in review_days else today - datetime.timedelta(days=1)
    streak = 0
    while day in review_days:
        streak += 1
        day -= datetime.timedelta(days=1)
    return streak


def last_days(today: datetime.date, count: int) -> list[datetime.date]:
    """The ``count`` days ending with ``today``, oldest first."""
    return [today - datetime.timedelta(days=offset) for offset in range(count - 1, -1, -1)]
