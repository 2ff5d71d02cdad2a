from __future__ import annotations

from django.urls import path

from analytics.views import StatsView

urlpatterns = [
    path("analytics/stats/", StatsView.as_view(), name="analytics-stats"),
]
