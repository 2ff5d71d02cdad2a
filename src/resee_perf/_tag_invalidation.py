"""Tag invalidation by name: tag generation keys, and :func:`invalidate_tags`, which bumps them
once the current transaction commits. :mod:`resee_perf.invalidation` is its public face (and
adds the model signal receivers); its docstring tells the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from resee_perf import _generations, _keys, _pending
from resee_perf.conf import conf
from resee_perf.metrics import report_invalidation

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("resee_perf.invalidation")


# --- Tag generations -------------------------------------------------------------------------


def tag_key(tag: str) -> str:
    """The cache key (before the cache's own KEY_PREFIX/VERSION) holding ``tag``'s generation."""
    return _keys.tag_key(conf.KEY_PREFIX, tag)


def read_generations(cache: BaseCache, tags: Sequence[str]) -> dict[str, int]:
    """The current generation of each tag, creating the missing ones."""
    return dict(zip(tags, _generations.read(cache, [tag_key(tag) for tag in tags]), strict=True))


def bump_generations(cache: BaseCache, tags: Iterable[str]) -> None:
    """Invalidate every entry recorded under ``tags``: one INCR per tag.

    On Redis (django-redis's default or Sentinel client, or Django's own backend) all tags go
    in one script call, one round trip; other backends get one ``incr`` per tag. Errors of the
    cache propagate: :func:`invalidate_tags` logs and counts them.
    """
    _generations.bump(cache, [tag_key(tag) for tag in dict.fromkeys(tags)])


# --- invalidate_tags: after commit -----------------------------------------------------------


def invalidate_tags(*tags: str, using: str | None = None, cache: str | None = None) -> None:
    """Invalidate every entry cached under any of ``tags``.

    Inside ``transaction.atomic`` on the database ``using`` (default: ``"default"``), this runs
    after the transaction commits, and not at all if it (or the savepoint around this call)
    rolls back; outside a transaction it runs at once. ``cache`` is a cache alias (default:
    ``RESEE_PERF['CACHE_ALIAS']``). A cache error never reaches the caller: it is logged on
    ``resee_perf.invalidation`` and counted in ``resee_perf_invalidations_total``.
    """
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise TypeError(
                f"invalidate_tags() takes tags as separate non-empty strings, got {tag!r}; "
                "unpack a list with invalidate_tags(*tags)."
            )
    if cache is not None:
        check_cache_alias(cache)
    if tags:
        _after_commit(using, cache, tags)


class _PendingInvalidation:
    """The tags to invalidate when one transaction commits: an ``on_commit`` callback."""

    __slots__ = ("tags",)

    def __init__(self) -> None:
        # cache alias (None: RESEE_PERF['CACHE_ALIAS'] when it runs) -> tags, in order, once.
        self.tags: dict[str | None, dict[str, None]] = {}

    def add(self, cache: str | None, tags: Iterable[str]) -> None:
        self.tags.setdefault(cache, {}).update(dict.fromkeys(tags))

    def __call__(self) -> None:
        for cache, tags in self.tags.items():
            _bump_or_log(cache or conf.CACHE_ALIAS, list(tags))


def _after_commit(using: str | None, cache: str | None, tags: Iterable[str]) -> None:
    connection = transaction.get_connection(using)
    pending = _joinable(connection)
    if pending is None:
        pending = _PendingInvalidation()
        pending.add(cache, tags)
        # Runs pending at once when no transaction is open on this connection.
        transaction.on_commit(pending, using=using)
    else:
        pending.add(cache, tags)


def _joinable(connection: BaseDatabaseWrapper) -> _PendingInvalidation | None:
    """The pending invalidation that tags registered now can join, so that a transaction saving
    many rows costs one round trip after commit rather than one per row.

    Django keeps ``(savepoint ids, callback, robust)`` per ``on_commit`` callback and drops the
    callbacks of a savepoint that rolls back (``BaseDatabaseWrapper.on_commit``). A callback
    registered under the same savepoints shares the fate of one registered now, so joining it
    changes nothing but the number of round trips; joining only the last callback keeps the
    order relative to other ``on_commit`` callbacks.
    """
    if not connection.in_atomic_block or not connection.run_on_commit:
        return None
    last = connection.run_on_commit[-1]
    savepoint_ids, callback = last[0], last[1]
    if isinstance(callback, _PendingInvalidation) and savepoint_ids == set(
        connection.savepoint_ids
    ):
        return callback
    return None


def _bump_or_log(cache: str, tags: list[str]) -> None:
    try:
        _pending.bump_now(cache, tags)
    except Exception:
        # The write has committed and the database is the source of truth: a cache that is down
        # must not turn a successful write into an error. The bump waits in the pending queue,
        # retried until it lands; until then this process serves no entry under these tags
        # (docs/invalidation.md#faults gives the bounds for the others).
        logger.error(
            "Could not invalidate %d tag(s) in cache %r (%s); retrying in the background.",
            len(tags),
            cache,
            ", ".join(tags[:5]) + (", ..." if len(tags) > 5 else ""),
            exc_info=True,
        )
        report_invalidation(cache, "error", len(tags))
        _pending.add_tags(cache, tags)
    else:
        report_invalidation(cache, "ok", len(tags))


def check_cache_alias(cache: str) -> None:
    if cache not in settings.CACHES:
        raise ImproperlyConfigured(
            f"Cache {cache!r} is not in settings.CACHES; use one of: "
            f"{', '.join(sorted(settings.CACHES))}."
        )
