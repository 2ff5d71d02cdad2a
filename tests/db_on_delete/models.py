from __future__ import annotations

from django.db import models


class Shelf(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    """Deleted by PostgreSQL with its shelf: no pre/post_delete."""

    shelf = models.ForeignKey(Shelf, on_delete=models.DB_CASCADE, related_name="books")
    title = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.title


class Note(models.Model):
    """Unshelved by PostgreSQL (shelf set to NULL) when its shelf is deleted: no post_save."""

    shelf = models.ForeignKey(Shelf, null=True, on_delete=models.DB_SET_NULL, related_name="notes")
    text = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.text
