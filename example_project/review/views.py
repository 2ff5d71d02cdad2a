from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from resee.users import authenticated_user
from resee_perf import cache_aside
from review import ladder
from review.models import ReviewHistory
from review.queries import due_schedules, schedules_with_content
from review.serializers import CompleteReviewSerializer, ScheduleSerializer


class TodayView(APIView):
    """The user's reviews due today (or overdue), in one query."""

    # Writes to the user's schedules, reviews or contents bump these tags (review/invalidation.py,
    # content/invalidation.py). The TTL bounds the one thing no write announces: the date
    # changing at midnight.
    @cache_aside(
        "review:today:{user_id}",
        ttl=300,
        tags=["user:{user_id}:reviews", "user:{user_id}:contents"],
    )
    def get(self, request: Request) -> Response:
        today = timezone.localdate()
        schedules = list(due_schedules(authenticated_user(request), today))
        return Response(
            {
                "date": today,
                "count": len(schedules),
                "results": ScheduleSerializer(schedules, many=True).data,
            }
        )


class CompleteView(APIView):
    """Record a review of one of the user's active schedules and move it on the ladder."""

    def post(self, request: Request, schedule_id: int) -> Response:
        user = authenticated_user(request)
        payload = CompleteReviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = ReviewHistory.Result(payload.validated_data["result"])
        now = timezone.now()
        with transaction.atomic():
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
        return Response(ScheduleSerializer(schedule).data)
