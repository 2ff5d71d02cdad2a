from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import generics, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from content.models import Category, Content
from content.serializers import CategorySerializer, ContentSerializer
from resee.users import authenticated_user
from resee_perf import cache_aside
from review import ladder
from review.models import ReviewSchedule


class CategoryListView(generics.ListAPIView[Category]):
    """Every category, for a client to pick one; few enough not to paginate."""

    queryset = Category.objects.all()
    serializer_class = CategorySerializer
    pagination_class = None


class ContentViewSet(viewsets.ModelViewSet[Content]):
    """The user's own contents; another user's are not found."""

    serializer_class = ContentSerializer

    def get_queryset(self) -> QuerySet[Content]:
        user = authenticated_user(self.request)
        return Content.objects.filter(author=user).select_related("category")

    # One entry per user and page (``?page=``); any write to the user's contents, or a renamed
    # category they use, bumps the tag. Only the list is cached: a detail is one indexed row.
    @cache_aside("content:list:{user_id}:{page}", ttl=600, tags=["user:{user_id}:contents"])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer: BaseSerializer[Content]) -> None:
        user = authenticated_user(self.request)
        with transaction.atomic():
            content = serializer.save(author=user)
            ReviewSchedule.objects.create(
                user=user,
                content=content,
                interval_index=ladder.FIRST_STEP,
                next_review_date=ladder.first_review_date(timezone.localdate()),
            )
