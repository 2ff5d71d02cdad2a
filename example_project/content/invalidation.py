"""What the content app's writes invalidate; connected in :meth:`ContentConfig.ready`.

A user's content list, today's reviews and statistics (which show titles and category names)
are cached under ``user:{user_id}:contents`` (see the views).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save

from content.models import Category, Content
from resee_perf import invalidate_on, invalidate_tags


def author_contents(content: Content) -> list[str]:
    # A content never changes author, so the old state needs no tracking.
    return [f"user:{content.author_id}:contents"]


def category_contents(categories: Iterable[int], *, using: str) -> list[str]:
    """A renamed category shows in the cached pages of every author with contents in it: the
    authors of all ``categories`` in one query."""
    authors = (
        Content.objects.using(using)
        .filter(category__in=categories)
        .order_by()  # Content's default ordering would make DISTINCT per (author, created_at)
        .values_list("author_id", flat=True)
        .distinct()
    )
    return [f"user:{author}:contents" for author in authors]


class _RenamedCategories:
    """The categories one transaction saved: an ``on_commit`` callback that finds their
    authors in one query, however many were saved (``invalidate_on`` would ask per row: an
    N+1 the profiler reports for a request saving five categories)."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.ids: set[int] = set()

    def __call__(self) -> None:
        # After the commit, outside any transaction: invalidate_tags bumps at once.
        if tags := category_contents(self.ids, using=self.using):
            invalidate_tags(*tags, using=self.using)


def _joinable(using: str) -> _RenamedCategories | None:
    """The batch of this transaction, if it is the last on_commit callback registered under
    the current savepoints (Django drops a rolled-back savepoint's callbacks; joining only
    such a batch shares its fate, as resee_perf's own invalidate_tags does)."""
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block or not connection.run_on_commit:
        return None
    savepoint_ids, callback = connection.run_on_commit[-1][:2]
    if isinstance(callback, _RenamedCategories) and savepoint_ids == set(connection.savepoint_ids):
        return callback
    return None


def category_saved(
    sender: Any, instance: Category, created: bool, using: str, **kwargs: Any
) -> None:
    if created:
        return  # a new category has no contents yet
    batch = _joinable(using)
    if batch is None:
        batch = _RenamedCategories(using)
        batch.ids.add(instance.pk)
        # At once outside a transaction. Robust: the write has committed, so a failing read
        # of the authors is logged (django.db.backends.base) rather than turning it into a 500.
        transaction.on_commit(batch, using=using, robust=True)
    else:
        batch.ids.add(instance.pk)


def connect() -> None:
    invalidate_on(Content, tags=author_contents)
    post_save.connect(category_saved, sender=Category, dispatch_uid=__name__)
