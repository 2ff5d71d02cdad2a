"""Django system checks. Every id is listed in docs/reference/checks.md.

- ``resee_perf.E001``: ``RESEE_PERF`` is not a dict.
- ``resee_perf.E002``: a ``RESEE_PERF`` value has the wrong type or range.
- ``resee_perf.E003``: ``RESEE_PERF`` has a key resee-perf does not know (a typo, usually).
- ``resee_perf.E004``: ``RESEE_PERF['CACHE_ALIAS']`` names no cache in ``settings.CACHES``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured

from resee_perf.conf import OPTIONS, SETTING_NAME, invalid_message


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    user = getattr(settings, SETTING_NAME, {})
    if not isinstance(user, Mapping):
        return [
            Error(
                f"settings.{SETTING_NAME} should be a dict, not {type(user).__name__}.",
                hint=f"Set {SETTING_NAME} to a dict of the options in the settings reference.",
                id="resee_perf.E001",
            )
        ]
    errors: list[CheckMessage] = []
    for name in user:
        if name not in OPTIONS:
            errors.append(_unknown_key(name))
    for name, option in OPTIONS.items():
        if name in user and not option.validate(user[name]):
            errors.append(
                Error(
                    invalid_message(name, user[name]),
                    hint=f"{option.doc} Default: {option.default!r}.",
                    id="resee_perf.E002",
                )
            )
    errors.extend(_check_cache_alias(user))
    return errors


def _unknown_key(name: Any) -> Error:
    close = difflib.get_close_matches(str(name), list(OPTIONS), n=1)
    hint = f"Did you mean {close[0]!r}?" if close else f"Known keys: {', '.join(sorted(OPTIONS))}."
    return Error(f"{SETTING_NAME} has an unknown key {name!r}.", hint=hint, id="resee_perf.E003")


def _check_cache_alias(user: Mapping[str, Any]) -> list[CheckMessage]:
    alias = user.get("CACHE_ALIAS", OPTIONS["CACHE_ALIAS"].default)
    if not OPTIONS["CACHE_ALIAS"].validate(alias) or alias in settings.CACHES:
        return []
    return [
        Error(
            f"{SETTING_NAME}['CACHE_ALIAS'] is {alias!r}, which is not a cache in settings.CACHES.",
            hint=f"Use one of: {', '.join(sorted(settings.CACHES))}.",
            id="resee_perf.E004",
        )
    ]


# -- Tag invalidation: resee_perf.W015-W019 ----------------------------------------------------


def check_invalidation_caches(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W015: a cache that tag invalidation uses increments by read-modify-write."""
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.filebased import FileBasedCache

    return [
        Warning(
            f"Tag invalidation uses cache {alias!r} ({type(cache).__name__}), whose increments "
            "are not atomic: two invalidations at once can be counted as one, and an entry "
            "computed between them then stays valid after the second write.",
            hint="Use Redis (django-redis or django.core.cache.backends.redis.RedisCache) or "
            "Memcached for RESEE_PERF['CACHE_ALIAS'] and the caches given to invalidate_on().",
            id="resee_perf.W015",
        )
        for alias, cache in _invalidation_caches()
        if isinstance(cache, DatabaseCache | FileBasedCache)
    ]


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
        aliases = {conf.CACHE_ALIAS, *registered_caches()}
    except ImproperlyConfigured:
        return []  # E001/E002 report it.
    return [(alias, caches[alias]) for alias in sorted(aliases) if alias in settings.CACHES]
