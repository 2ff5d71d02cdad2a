from __future__ import annotations

import datetime
import hashlib
import re

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models.functions import Left
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from resee.users import authenticated_user
from resee_perf import cache_aside
from review import ladder
from review.models import CompletionKey, ReviewHistory, ReviewSchedule
from review.queries import EXCERPT_LENGTH, due_schedules, schedules_with_content
from review.serializers import CompleteReviewSerializer, ScheduleSerializer


class TodayView(APIView):
    """The user's reviews due today (or overdue), in one query."""

    def get(self, request: Request) -> Response:
        return self.due_on(request, timezone.localdate())

    # The day is part of the key: at midnight (TIME_ZONE) the list changes with no write to
    # announce it, so the new day reads a new key instead of yesterday's list. The tags are
    # what the list shows: the schedules due on that day (a completion moves one out; a new
    # content's schedule, due tomorrow, does not come in) and the user's existing contents
    # (a title, body or category edited; review/invalidation.py, content/invalidation.py).
    # The TTL only bounds what neither catches: one hour, as Resee's plan has it.
    @cache_aside(
        "review:today:{user_id}:{day}",
        ttl=3600,
        tags=["user:{user_id}:due:{day}", "user:{user_id}:content-edits"],
    )
    def due_on(self, request: Request, day: datetime.date) -> Response:
        schedules = list(due_schedules(authenticated_user(request), day))
        return Response(
            {
                "date": day,
                "count": len(schedules),
                "results": ScheduleSerializer(schedules, many=True).data,
            }
        )


class NaiveTodayView(APIView):
    """Today's reviews the naive way, for the profiler's demo (docs/profiling.md): the same
    rows and serializer as :class:`TodayView`, without ``select_related``, so each schedule
    lazily loads its content and then its category: 1 + 2N queries. Uncached, and a 404
    unless ``settings.RESEE_DEMO_NAIVE`` (env ``RESEE_DEMO_NAIVE=1``)."""

    def get(self, request: Request) -> Response:
        if not getattr(settings, "RESEE_DEMO_NAIVE", False):
            raise Http404
        today = timezone.localdate()
        schedules = (
            ReviewSchedule.objects.filter(
                user=authenticated_user(request), is_active=True, next_review_date__lte=today
            )
            .annotate(excerpt=Left("content__body", EXCERPT_LENGTH))
            .order_by("next_review_date", "id")
        )
        results = ScheduleSerializer(schedules, many=True).data  # the lazy loads: N+1
        return Response({"date": today, "count": len(results), "results": results})


class CompleteView(APIView):
    """Record a review of one of the user's active schedules and move it on the ladder.

    With an ``Idempotency-Key`` header, a retry with the same key (a client that timed out
    and sent again) records nothing and gets the first response again, with
    ``Idempotent-Replayed: true``; the same key with another schedule or result is a 422.
    """

    def post(self, request: Request, schedule_id: int) -> Response:
        user = authenticated_user(request)
        key = idempotency_key(request)
        payload = CompleteReviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = ReviewHistory.Result(payload.validated_data["result"])
        fingerprint = hashlib.sha256(f"{schedule_id}:{result.value}".encode()).hexdigest()
        now = timezone.now()
        with transaction.atomic():
            if key is not None:
                # First, so that a retry racing this request waits here, at the constraint,
                # until this transaction ends: then it finds the answer or, if this one failed
                # and rolled back, records the review itself.
                claimed = _claim(user, key, fingerprint)
                if claimed is not None:
                    return _replay(claimed, fingerprint)
            # Lock only the schedule row, not the joined content and category: two
            # completions of one schedule (a double click) must apply one after the other.
            schedule = get_object_or_404(
                schedules_with_content(user).select_for_update(of=("self",)),
                pk=schedule_id,
                is_active=True,
            )
            ReviewHistory.objects.create(
                user=user, content_id=schedule.content_id, result=result, reviewed_at=now
            )
            step = ladder.review(
                schedule.interval_index,
                remembered=result == ReviewHistory.Result.REMEMBERED,
                on=timezone.localdate(now),
            )
            schedule.interval_index = step.interval_index
            schedule.next_review_date = step.next_review_date
            schedule.save(update_fields=["interval_index", "next_review_date"])
            data = ScheduleSerializer(schedule).data
            if key is not None:
                CompletionKey.objects.filter(user=user, key=key).update(response=data)
        return Response(data)


# Printable ASCII: what a client library puts there (a UUID, mostly), and nothing that could
# upset the database (NUL) or a log line.
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise ValidationError(
            {"Idempotency-Key": ["Should be 1 to 255 printable ASCII characters, e.g. a UUID."]}
        )
    return key


def _claim(user: User, key: str, fingerprint: str) -> CompletionKey | None:
    """Take ``key`` for this request, or return the completion that already holds it."""
    try:
        with transaction.atomic():
            CompletionKey.objects.create(user=user, key=key, fingerprint=fingerprint, response={})
    except IntegrityError:
        # Read committed: the statement sees the row the other transaction committed.
        return CompletionKey.objects.get(user=user, key=key)
    return None


def _replay(claimed: CompletionKey, fingerprint: str) -> Response:
    if claimed.fingerprint != fingerprint:
        return Response(
            {
                "detail": "This Idempotency-Key was used for another review completion: "
                "send a new key for a new request."
            },
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    return Response(claimed.response, headers={"Idempotent-Replayed": "true"})
