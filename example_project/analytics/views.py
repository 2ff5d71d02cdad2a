from __future__ import annotations

import datetime

from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.stats import learning_stats
from resee.users import authenticated_user
from resee_perf import cache_aside


class StatsView(APIView):
    """The user's learning statistics: totals, streak, per category, last 30 days."""

    def get(self, request: Request) -> Response:
        return self.for_day(request, timezone.localdate())

    # The day is part of the key, as in today's reviews: the streak and the last 30 days end
    # today, and at midnight (TIME_ZONE) they change with no write to announce it.
    # What the statistics show: the user's reviews (history) and the categories of the
    # reviewed contents (an edited content or a renamed category). A completion bumps the
    # history; a new content (no review yet) or a schedule changes nothing here.
    @cache_aside(
        "analytics:stats:{user_id}:{day}",
        ttl=300,
        tags=["user:{user_id}:history", "user:{user_id}:content-edits"],
    )
    def for_day(self, request: Request, day: datetime.date) -> Response:
        return Response(learning_stats(authenticated_user(request), day))
