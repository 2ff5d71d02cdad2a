from __future__ import annotations

from django.apps import apps
from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", include("content.urls")),
    path("api/", include("review.urls")),
    path("api/", include("analytics.urls")),
    path("api-auth/", include("rest_framework.urls")),
    # GET /metrics, for Prometheus (docs/observability.md).
    path("", include("resee_perf.urls")),
]

# The test settings leave the admin out.
if apps.is_installed("django.contrib.admin"):
    from django.contrib import admin

    urlpatterns.append(path("admin/", admin.site.urls))
