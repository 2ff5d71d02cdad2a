from __future__ import annotations

import datetime

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.db.models.functions import Left

from review.models import ReviewSchedule

EXCERPT_LENGTH = 200


def schedules_with_content(user: User) -> QuerySet[ReviewSchedule]:
    """The user's schedules, each with its content, category and body excerpt in one row."""
    return (
        ReviewSchedule.objects.filter(user=user)
        .select_related("content__category")
        # Cut the body in the database: the full bodies are most of the bytes otherwise.
        .annotate(excerpt=Left("content__body", EXCERPT_LENGTH))
        .defer("content__body")
    )


def due_schedules(user: User, today: datetime.date) -> QuerySet[ReviewSchedule]:
    """The user's active schedules due on or before ``today``, the most overdue first."""
    return (
        schedules_with_content(user)
        .filter(is_active=True, next_review_date__lte=today)
        .order_by("next_review_date", "id")
    )
