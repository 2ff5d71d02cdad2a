from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from content.views import CategoryListView, ContentViewSet

router = SimpleRouter()
router.register("content", ContentViewSet, basename="content")

urlpatterns = [
    path("categories/", CategoryListView.as_view(), name="category-list"),
    *router.urls,
]
