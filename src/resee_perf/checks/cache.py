"""Checks of ``cache_aside`` (docs/cache.md): resee_perf.E010-E014 / W010-W014."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured

# What each Redis backend calls its timeouts in OPTIONS (django-redis, then Django's own).
_REDIS_TIMEOUT_OPTIONS: dict[str, tuple[str, ...]] = {
    "django_redis.cache.RedisCache": ("SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT"),
    "django.core.cache.backends.redis.RedisCache": ("socket_connect_timeout", "socket_timeout"),
    "resee_perf.cluster.RedisClusterCache": ("socket_connect_timeout", "socket_timeout"),
}
_CLUSTER_BACKEND = "resee_perf.cluster.RedisClusterCache"


def check_cache_aside(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E010: a cache_aside function names a cache that settings.CACHES lacks.
    W010: a Redis cache that cache_aside uses has no socket timeouts."""
    from resee_perf.cache import declared_aliases
    from resee_perf.conf import conf

    messages: list[CheckMessage] = []
    declared = declared_aliases()
    for name, alias in sorted(declared.items()):
        if alias not in settings.CACHES:
            messages.append(
                Error(
                    f"cache_aside on {name} uses cache {alias!r}, which is not in settings.CACHES.",
                    hint=f"Use one of: {', '.join(sorted(settings.CACHES))}.",
                    id="resee_perf.E010",
                )
            )
    try:
        aliases = {conf.get("CACHE_ALIAS"), *declared.values()}
    except ImproperlyConfigured:
        aliases = set(declared.values())  # E001/E002 report the setting
    for alias in sorted(aliases & set(settings.CACHES)):
        config = cast("Mapping[str, Any]", settings.CACHES[alias])
        names = _REDIS_TIMEOUT_OPTIONS.get(config.get("BACKEND", ""), ())
        options: Mapping[str, Any] = config.get("OPTIONS", {})
        missing = [name for name in names if options.get(name) is None]
        if missing:
            messages.append(
                Warning(
                    f"CACHES[{alias!r}] has no {' or '.join(missing)}: when Redis hangs or its "
                    "host is unreachable, cache_aside calls wait for the operating system's TCP "
                    "timeout (minutes) before they fall back to the database.",
                    hint=f"Set OPTIONS {', '.join(f'{n!r}' for n in names)} to a fraction of a "
                    "second (0.1 to 0.5 on a local network).",
                    id="resee_perf.W010",
                )
            )
    return messages


def check_cache_entries(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E011: RESEE_PERF['CACHE_SERIALIZER'] cannot be loaded or has no dumps()/loads().
    W011: entries are pickled without RESEE_PERF['CACHE_SIGNING_KEY']."""
    from resee_perf.cache import serializer_for
    from resee_perf.conf import conf

    try:
        setting = conf.get("CACHE_SERIALIZER")
        signed = conf.get("CACHE_SIGNING_KEY") is not None
    except ImproperlyConfigured:
        return []  # E001/E002 report the setting
    try:
        serializer_for(setting)
    except (ImportError, ImproperlyConfigured, TypeError) as error:
        return [
            Error(
                f"RESEE_PERF['CACHE_SERIALIZER'] = {setting!r} cannot be used: {error}",
                hint='Use "json" (the default), "pickle", or the dotted path of a class with '
                "dumps(value) -> bytes and loads(bytes) methods.",
                id="resee_perf.E011",
            )
        ]
    if setting == "pickle" and not signed:
        return [
            Warning(
                "RESEE_PERF['CACHE_SERIALIZER'] is 'pickle' and RESEE_PERF['CACHE_SIGNING_KEY'] "
                "is not set: whoever can write to the cache can run code in every worker that "
                "reads an entry.",
                hint="Set RESEE_PERF['CACHE_SIGNING_KEY'] to a secret of your own, or use the "
                '"json" serializer.',
                id="resee_perf.W011",
            )
        ]
    return []


def check_cluster_key_prefix(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W012: a brace in a Redis Cluster cache's key prefix. Redis hashes only what is between
    the first ``{`` and the next ``}`` of a key: a prefix holding one gives every key of the
    cache (entries, locks, tags) one slot, so one primary takes all of it."""
    from resee_perf.conf import conf

    try:
        ours = str(conf.get("KEY_PREFIX"))
    except ImproperlyConfigured:
        ours = ""  # E001/E002 report the setting
    messages: list[CheckMessage] = []
    for alias, config in sorted(cast("Mapping[str, Mapping[str, Any]]", settings.CACHES).items()):
        if config.get("BACKEND") != _CLUSTER_BACKEND:
            continue
        prefixes = {
            f"CACHES[{alias!r}]['KEY_PREFIX']": str(config.get("KEY_PREFIX", "")),
            "RESEE_PERF['KEY_PREFIX']": ours,
        }
        for name, value in prefixes.items():
            if "{" in value or "}" in value:
                messages.append(
                    Warning(
                        f"{name} = {value!r} holds a brace, and CACHES[{alias!r}] is a Redis "
                        "Cluster: Redis hashes the text between the first '{' and the next "
                        "'}' of a key, so every key of the cache lands in one slot, on one "
                        "primary.",
                        hint="Remove the braces from the prefix; resee-perf adds its own hash "
                        "tags (docs/scaling.md, How the keys are laid out).",
                        id="resee_perf.W012",
                    )
                )
    return messages
