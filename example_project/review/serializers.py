from __future__ import annotations

from rest_framework import serializers

from review.models import ReviewHistory, ReviewSchedule


class ScheduleSerializer(serializers.ModelSerializer[ReviewSchedule]):
    """A schedule with a summary of its content.

    Expects the queryset of :func:`review.queries.schedules_with_content`, which joins the
    content and category and annotates ``excerpt``.
    """

    content_id = serializers.IntegerField(read_only=True)
    title = serializers.CharField(source="content.title", read_only=True)
    excerpt = serializers.CharField(read_only=True)
    category = serializers.CharField(source="content.category.name", read_only=True)

    class Meta:
        model = ReviewSchedule
        fields = [
            "id",
            "content_id",
            "title",
            "excerpt",
            "category",
            "interval_index",
            "next_review_date",
            "is_active",
        ]
        read_only_fields = fields


class CompleteReviewSerializer(serializers.Serializer[None]):
    result = serializers.ChoiceField(choices=ReviewHistory.Result.choices)
