from __future__ import annotations

from rest_framework import serializers

from content.models import Category, Content
from resee.api import StrictPrimaryKeyRelatedField


class CategorySerializer(serializers.ModelSerializer[Category]):
    class Meta:
        model = Category
        fields = ["id", "name", "slug"]


class ContentSerializer(serializers.ModelSerializer[Content]):
    category = StrictPrimaryKeyRelatedField(queryset=Category.objects.all())
    category_name = serializers.CharField(source="category.name", read_only=True)

    class Meta:
        model = Content
        fields = ["id", "title", "body", "category", "category_name", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
