from __future__ import annotations

from rest_framework import serializers

from content.models import Category, Content


class CategorySerializer(serializers.ModelSerializer[Category]):
    class Meta:
        model = Category
        fields = ["id", "name", "slug"]


class ContentSerializer(serializers.ModelSerializer[Content]):
    category = serializers.PrimaryKeyRelatedField(queryset=Category.objects.all())
    category_name = serializers.CharField(source="category.name", read_only=True)

    class Meta:
        model = Content
        fields = ["id", "title", "body", "category", "category_name", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
