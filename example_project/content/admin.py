"""The admin. ``ModelAdmin`` is generic only in django-stubs: subscripting it at run time
would need django_stubs_ext.monkeypatch(), which the example does not depend on."""

from __future__ import annotations

from django.contrib import admin

from content.models import Category, Content


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name"]


@admin.register(Content)
class ContentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["title", "author", "category", "created_at"]
    list_filter = ["category"]
    list_select_related = ["author", "category"]
    # A select box over every user would render the whole table.
    raw_id_fields = ["author"]
    search_fields = ["title"]
