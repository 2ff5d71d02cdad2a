"""What the content app's writes invalidate; connected in :meth:`ContentConfig.ready`.

A user's content list, today's reviews and statistics (which show titles and category names)
are cached under ``user:{user_id}:contents`` (see the views).
"""

from __future__ import annotations

from content.models import Category, Content
from resee_perf import invalidate_on


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
    return [f"user:{author}:contents" for author in authors]


def connect() -> None:
    invalidate_on(Content, tags=author_contents)
    invalidate_on(Category, tags=category_contents)
