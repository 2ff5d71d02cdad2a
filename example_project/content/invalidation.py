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

import logging
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models.signals import post_delete, post_save

from content.models import Category, Content
from resee_perf import invalidate_on, invalidate_tags

logger = logging.getLogger(__name__)


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
    return [f"user:{author}:{tag}" for author in authors for tag in ("contents", "content-edits")]


def edited_content(
    sender: type[Content], instance: Content, using: str, created: bool = False, **kwargs: Any
) -> None:
    """An existing content saved or deleted (not a new one: ``invalidate_on``'s tag functions
    do not see ``created``, so this one is a plain receiver; after commit all the same)."""
    if not created:
        invalidate_tags(f"user:{instance.author_id}:content-edits", using=using)


class _RenamedCategories:
    """The categories one transaction saved: an ``on_commit`` callback that finds their
    authors in one query, however many were saved (``invalidate_on`` would ask per row: an
    N+1 the profiler reports for a request saving five categories)."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.ids: set[int] = set()

    def __call__(self) -> None:
        # After the commit, outside any transaction: invalidate_tags bumps at once. The write
        # has committed, so a failing read of the authors is logged rather than turning it
        # into a 500 (on_commit's robust=True, which Django 4.2 lacks).
        try:
            tags = category_contents(self.ids, using=self.using)
        except DatabaseError:
            logger.exception("could not read the authors of categories %s", sorted(self.ids))
            return
        if tags:
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
        # At once outside a transaction.
        transaction.on_commit(batch, using=using)
    else:
        batch.ids.add(instance.pk)


def connect() -> None:
    invalidate_on(Content, tags=author_contents)
    post_save.connect(category_saved, sender=Category, dispatch_uid=__name__)
    post_save.connect(edited_content, sender=Content, dispatch_uid="content.edited_content:save")
    post_delete.connect(
        edited_content, sender=Content, dispatch_uid="content.edited_content:delete"
    )
