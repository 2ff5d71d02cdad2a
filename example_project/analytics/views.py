from __future__ import annotations

from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.stats import learning_stats
from resee.users import authenticated_user


class StatsView(APIView):
    """The user's learning statistics: totals, streak, per category, last 30 days."""

    def get(self, request: Request) -> Response:
        return Response(learning_stats(authenticated_user(request), timezone.localdate()))
