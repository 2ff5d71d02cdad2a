from __future__ import annotations

from django.apps import apps
from django.urls import URLPattern, URLResolver, include, path

from resee.floor import MeView, PingView

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", include("content.urls")),
    path("api/", include("review.urls")),
    path("api/", include("analytics.urls")),
    path("api-auth/", include("rest_framework.urls")),
    # GET /metrics, for Prometheus (docs/observability.md).
    path("", include("resee_perf.urls")),
    # The floor of a cached request (benchmarks/resee_bench.py).
    path("api/ping/", PingView.as_view(), name="ping"),
    path("api/me/", MeView.as_view(), name="me"),
]

# The test settings leave the admin out.
if apps.is_installed("django.contrib.admin"):
    from django.contrib import admin

    urlpatterns.append(path("admin/", admin.site.urls))
