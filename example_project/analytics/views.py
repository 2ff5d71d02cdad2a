from __future__ import annotations

from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.stats import learning_stats
from resee.users import authenticated_user
from resee_perf import cache_aside


class StatsView(APIView):
    """The user's learning statistics: totals, streak, per category, last 30 days."""

    # Same tags as today's reviews: statistics count reviews and name contents' categories.
    @cache_aside(
        "analytics:stats:{user_id}",
        ttl=300,
        tags=["user:{user_id}:reviews", "user:{user_id}:contents"],
    )
    def get(self, request: Request) -> Response:
        return Response(learning_stats(authenticated_user(request), timezone.localdate()))
