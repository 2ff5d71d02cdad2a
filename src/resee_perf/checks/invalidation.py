"""Checks of tag invalidation (docs/invalidation.md): resee_perf.W015-W019, W045."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.checks import CheckMessage, Warning
from django.core.exceptions import ImproperlyConfigured
from django.db.models import deletion


def check_invalidation_caches(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W015/W017: a cache that tag invalidation uses cannot increment (atomically)."""
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.filebased import FileBasedCache

    messages: list[CheckMessage] = []
    for alias, cache in _invalidation_caches():
        if isinstance(cache, DatabaseCache | FileBasedCache):
            messages.append(
                Warning(
                    f"Tag invalidation uses cache {alias!r} ({type(cache).__name__}), whose "
                    "increments are not atomic: two invalidations at once can be counted as "
                    "one, and an entry computed between them then stays valid after the "
                    "second write.",
                    hint="Use Redis (django-redis or django.core.cache.backends.redis."
                    "RedisCache) or Memcached for RESEE_PERF['CACHE_ALIAS'] and the caches "
                    "given to invalidate_on().",
                    id="resee_perf.W015",
                )
            )
        elif _is_herd(cache):
            messages.append(
                Warning(
                    f"Tag invalidation uses cache {alias!r} with django-redis's HerdClient, "
                    "which cannot increment (its incr() raises NotImplementedError): every "
                    "invalidation would fail, and the entries stay valid until they expire.",
                    hint="Use django-redis's default client; cache_aside's lock already "
                    "prevents the stampede HerdClient is for.",
                    id="resee_perf.W017",
                )
            )
    return messages


def _is_herd(cache: BaseCache) -> bool:
    try:
        from django_redis.cache import RedisCache
        from django_redis.client import HerdClient
    except ImportError:  # pragma: no cover - the redis extra is not installed
        return False
    return isinstance(cache, RedisCache) and isinstance(cache.client, HerdClient)


def check_invalidation_caches_deploy(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W016 (``check --deploy``): a cache that tag invalidation uses lives in each process."""
    from django.core.cache.backends.locmem import LocMemCache

    return [
        Warning(
            f"Tag invalidation uses cache {alias!r} (LocMemCache), which each process keeps for "
            "itself: a write invalidates the entries of the process that made it, and the "
            "other processes serve theirs until they expire.",
            hint="Use a shared cache (Redis or Memcached) when more than one process serves "
            "requests.",
            id="resee_perf.W016",
        )
        for alias, cache in _invalidation_caches()
        if isinstance(cache, LocMemCache)
    ]


def _invalidation_caches() -> list[tuple[str, BaseCache]]:
    from resee_perf.conf import conf
    from resee_perf.invalidation import registered_caches

    try:
        aliases = {conf.get("CACHE_ALIAS"), *registered_caches()}
    except ImproperlyConfigured:
        return []  # E001/E002 report it.
    return [(alias, caches[alias]) for alias in sorted(aliases) if alias in settings.CACHES]


def check_database_on_delete(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W045: an invalidate_on() model whose foreign key lets the database delete or change its
    rows (Django 6.1's DB_CASCADE, DB_SET_NULL, DB_SET_DEFAULT): no signal tells the receivers."""
    from resee_perf._db_on_delete import database_on_delete_relations

    messages: list[CheckMessage] = []
    for model, field, covered in database_on_delete_relations():
        if covered:
            continue
        label = model._meta.label
        target = field.remote_field.model
        target_label = target._meta.label if isinstance(target, type) else str(target)
        on_delete = field.remote_field.on_delete
        effect = "deletes" if on_delete is getattr(deletion, "DB_CASCADE", None) else "updates"
        messages.append(
            Warning(
                f"invalidate_on({label}) misses the rows that {label}.{field.name} "
                f"(on_delete={on_delete}) lets the database change: deleting a {target_label} "
                f"{effect} its {label} rows in the database, with no signal, so their cached "
                "entries stay valid.",
                hint=(
                    f"Pass db_on_delete=True to invalidate_on({label}, ...) to invalidate them "
                    f"from {target_label}'s pre_delete (one query per deleted row), or use the "
                    "Python on_delete (CASCADE, SET_NULL, SET_DEFAULT)."
                ),
                obj=field,
                id="resee_perf.W045",
            )
        )
    return messages
