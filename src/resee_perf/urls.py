"""The exporter's URL: ``path("", include("resee_perf.urls"))`` serves ``GET /metrics``."""

from __future__ import annotations

from django.urls import URLPattern, path

from resee_perf.exporter import metrics

__all__ = ["app_name", "urlpatterns"]

app_name = "resee_perf"
urlpatterns: list[URLPattern] = [path("metrics", metrics, name="metrics")]
