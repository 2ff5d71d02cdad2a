"""What the content app's writes invalidate; connected in :meth:`ContentConfig.ready`.

- ``user:{user_id}:contents``: the user's content list, which every write of their contents
  changes (a new one comes first).
- ``user:{user_id}:content-edits``: what today's reviews and the statistics show of contents
  that already exist (title, excerpt, category name). Bumped when an existing content is
  saved or deleted, or its category renamed, not when a content is created: a new content has
  no review yet and its first review is due tomorrow (review/invalidation.py), so neither view
  shows it. The list's tag alone made every new content miss three entries instead of one.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from content.models import Category, Content
from resee_perf import invalidate_on, invalidate_tags


def author_contents(content: Content) -> list[str]:
    # A content never changes author, so the old state needs no tracking.
    return [f"user:{content.author_id}:contents"]


def category_contents(category: Category) -> list[str]:
    """A renamed category shows in the cached pages of every author with contents in it."""
    authors = (
        Content.objects.filter(category=category)
        .order_by()  # Content's default ordering would make DISTINCT per (author, created_at)
        .values_list("author_id", flat=True)
        .distinct()
    )
    return [f"user:{author}:{tag}" for author in authors for tag in ("contents", "content-edits")]


def edited_content(
    sender: type[Content], instance: Content, using: str, created: bool = False, **kwargs: Any
) -> None:
    """An existing content saved or deleted (not a new one: ``invalidate_on``'s tag functions
    do not see ``created``, so this one is a plain receiver; after commit all the same)."""
    if not created:
        invalidate_tags(f"user:{instance.author_id}:content-edits", using=using)


def connect() -> None:
    invalidate_on(Content, tags=author_contents)
    invalidate_on(Category, tags=category_contents)
    post_save.connect(edited_content, sender=Content, dispatch_uid="content.edited_content:save")
    post_delete.connect(
        edited_content, sender=Content, dispatch_uid="content.edited_content:delete"
    )
