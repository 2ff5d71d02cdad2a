"""The admin. ``ModelAdmin`` is generic only in django-stubs: subscripting it at run time
would need django_stubs_ext.monkeypatch(), which the example does not depend on."""

from __future__ import annotations

from django.contrib import admin

from review.models import ReviewHistory, ReviewSchedule


@admin.register(ReviewSchedule)
class ReviewScheduleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "content", "interval_index", "next_review_date", "is_active"]
    list_filter = ["is_active", "interval_index"]
    list_select_related = ["user", "content"]
    # Select boxes over every user and content would render whole tables.
    raw_id_fields = ["user", "content"]


@admin.register(ReviewHistory)
class ReviewHistoryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "content", "result", "reviewed_at"]
    list_filter = ["result"]
    list_select_related = ["user", "content"]
    raw_id_fields = ["user", "content"]
