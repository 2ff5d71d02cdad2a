from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from content.models import Content


class ReviewSchedule(models.Model):
    """When ``user`` reviews ``content`` next, and where it stands on the ladder."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="review_schedules",
        # Both the unique constraint and review_due_idx start with user.
        db_index=False,
    )
    content = models.ForeignKey(Content, on_delete=models.CASCADE, related_name="schedules")
    interval_index = models.PositiveSmallIntegerField(default=0)
    next_review_date = models.DateField()
    is_active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "content"], name="review_schedule_user_content")
        ]
        indexes = [
            # Today's reviews: a user's active schedules due on or before a date.
            models.Index(
                fields=["user", "next_review_date"],
                name="review_due_idx",
                condition=models.Q(is_active=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}/{self.content_id} on {self.next_review_date}"


class ReviewHistory(models.Model):
    """One review: did ``user`` remember ``content`` at ``reviewed_at``."""

    class Result(models.TextChoices):
        REMEMBERED = "remembered", "Remembered"
        FORGOT = "forgot", "Forgot"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="review_history",
        # review_history_user_time_idx starts with user.
        db_index=False,
    )
    content = models.ForeignKey(Content, on_delete=models.CASCADE, related_name="review_history")
    result = models.CharField(max_length=10, choices=Result.choices)
    reviewed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "review history"
        indexes = [
            # The statistics: one user's reviews, by time.
            models.Index(fields=["user", "reviewed_at"], name="review_history_user_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}/{self.content_id} {self.result} at {self.reviewed_at}"
