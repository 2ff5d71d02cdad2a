from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Content(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="contents",
        # content_author_created_idx starts with author, so it serves these lookups too.
        db_index=False,
    )
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="contents")
    # A default rather than auto_now_add, so that seed_demo can write historical dates.
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The content list: one author's contents, newest first.
            models.Index(fields=["author", "-created_at"], name="content_author_created_idx"),
        ]

    def __str__(self) -> str:
        return self.title
