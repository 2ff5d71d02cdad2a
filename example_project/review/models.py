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


class CompletionKey(models.Model):
    """A review completion already recorded under a client's ``Idempotency-Key``.

    A client that retries after a timeout sends the same key; the view finds this row and
    answers with the first response instead of recording a second review. A table with a
    unique constraint rather than Redis: two racing requests meet at the constraint (the second
    waits for the first's transaction), and the guarantee holds when Redis is down.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        # The unique constraint starts with user.
        db_index=False,
    )
    key = models.CharField(max_length=255)
    # A digest of what the key was first used for (schedule and result): the same key with
    # another request is the client's bug, refused rather than answered with the wrong reply.
    fingerprint = models.CharField(max_length=64)
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="review_completion_key_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}/{self.key}"
