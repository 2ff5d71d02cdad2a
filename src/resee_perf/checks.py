"""Django system checks. Every id is listed in docs/reference/checks.md.

- ``resee_perf.E001``: ``RESEE_PERF`` is not a dict.
- ``resee_perf.E002``: a ``RESEE_PERF`` value has the wrong type or range.
- ``resee_perf.E003``: ``RESEE_PERF`` has a key resee-perf does not know (a typo, usually).
- ``resee_perf.E004``: ``RESEE_PERF['CACHE_ALIAS']`` names no cache in ``settings.CACHES``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, cast

from django.apps import AppConfig
from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from resee_perf import pool
from resee_perf._deployment import Deployment, deployment_problems
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


# -- Connection budget: resee_perf.E030-E039 / W030-W039 ---------------------------------------


def check_connections(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Connection settings that fail at the first query, or under load (every run)."""
    return connection_messages(
        settings.DATABASES, _resee_perf_dict(), settings_asgi=pool.settings_look_asgi()
    )


def check_connection_budget(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """The budget against each server's capacity (registered for ``check --deploy``)."""
    return connection_budget_messages(
        settings.DATABASES, _resee_perf_dict(), settings_asgi=pool.settings_look_asgi()
    )


def _resee_perf_dict() -> Mapping[str, Any]:
    user = getattr(settings, SETTING_NAME, {})
    return user if isinstance(user, Mapping) else {}  # E001 reports the rest.


def connection_messages(
    databases: Mapping[str, Mapping[str, Any]],
    user: Mapping[str, Any],
    *,
    settings_asgi: bool,
) -> list[CheckMessage]:
    """E030-E034 and W031-W034, from explicit settings (so tests need not override
    ``DATABASES``)."""
    deployment, messages = _deployment(databases, user)
    asgi = settings_asgi if deployment is None or deployment.asgi is None else deployment.asgi
    pooled = set(deployment.transaction_pooled) if deployment else set()
    for alias, settings_dict in databases.items():
        if "postgres" not in str(settings_dict.get("ENGINE", "")):
            continue
        try:
            described = pool.read_alias(alias, settings_dict)
        except pool.PoolUnavailable as error:
            # Nothing else about this pool matters (sizes, CONN_MAX_AGE): it cannot exist.
            hint = "Remove OPTIONS['pool'] and use CONN_MAX_AGE, or upgrade."
            messages.append(Error(str(error), hint=hint, id="resee_perf.E033"))
            continue
        except ImproperlyConfigured as error:
            hint = "psycopg_pool needs 0 <= min_size <= max_size and max_size >= 1."
            messages.append(Error(str(error), hint=hint, id="resee_perf.E032"))
            continue
        messages.extend(_alias_messages(described, asgi=asgi, pooled=pooled))
    if deployment is not None:
        messages.extend(_deployment_pool_messages(databases, deployment, asgi=asgi))
    return messages


def _deployment(
    databases: Mapping[str, Any], user: Mapping[str, Any]
) -> tuple[Deployment | None, list[CheckMessage]]:
    """``RESEE_PERF['DEPLOYMENT']`` parsed, or the E030 errors that prevent it."""
    value = user.get("DEPLOYMENT")
    if not isinstance(value, Mapping):
        return None, []  # None: no deployment given; anything else: E002 reports it.
    problems = deployment_problems(value)
    if not problems:
        deployment = Deployment.from_setting(value)
        problems = [
            f"RESEE_PERF['DEPLOYMENT'][{key!r}] names the database alias {alias!r}, which is "
            "not in settings.DATABASES."
            for key, alias in deployment.named_aliases()
            if alias not in databases
        ]
        problems += _unknown_capacity_keys(databases, deployment)
    if problems:
        hint = "See the DEPLOYMENT keys in docs/connections.md."
        return None, [Error(problem, hint=hint, id="resee_perf.E030") for problem in problems]
    return deployment, []


def _unknown_capacity_keys(databases: Mapping[str, Any], deployment: Deployment) -> list[str]:
    if not isinstance(deployment.max_connections, Mapping):
        return []
    servers = {pool.server_address(settings_dict)[0] for settings_dict in databases.values()}
    return [
        f"RESEE_PERF['DEPLOYMENT']['max_connections'] has the key {key!r}, which is neither a "
        f"database alias nor a server ({', '.join(sorted(servers))})."
        for key in deployment.max_connections
        if key not in databases and key not in servers
    ]


def _alias_messages(
    alias: pool.AliasConnections, *, asgi: bool, pooled: set[str]
) -> list[CheckMessage]:
    where = f"DATABASES[{alias.alias!r}]"
    messages: list[CheckMessage] = []
    if alias.pool is not None and alias.conn_max_age != 0:
        messages.append(
            Error(
                f"{where} sets both OPTIONS['pool'] and CONN_MAX_AGE={alias.conn_max_age!r}; "
                "Django refuses this at the first query (\"Pooling doesn't support "
                'persistent connections.").',
                hint="The pool keeps connections open already: set CONN_MAX_AGE to 0.",
                id="resee_perf.E031",
            )
        )
    if asgi and alias.persistent:
        messages.append(
            Warning(
                f"{where} uses persistent connections (CONN_MAX_AGE={alias.conn_max_age!r}) "
                "under ASGI, where Django runs each request's synchronous code in a new "
                "thread: connections are not reused and are not closed when the request ends.",
                hint=f"{pool.asgi_advice()}: Django's database documentation says to "
                "disable persistent connections under ASGI.",
                id="resee_perf.W031",
            )
        )
    if (alias.alias in pooled or alias.port == "6432") and alias.server_side_cursors:
        why = (
            "it is in RESEE_PERF['DEPLOYMENT']['transaction_pooled']"
            if alias.alias in pooled
            else "its port is 6432, PgBouncer's default"
        )
        messages.append(
            Warning(
                f"{where} goes through a transaction-mode pooler ({why}) with server-side "
                "cursors enabled: QuerySet.iterator() opens a cursor that the next "
                "transaction, on another server connection, cannot find.",
                hint=f"Set {where}['DISABLE_SERVER_SIDE_CURSORS'] = True. If the pooler runs "
                "in session mode, silence resee_perf.W032.",
                id="resee_perf.W032",
            )
        )
    return messages


def _deployment_pool_messages(
    databases: Mapping[str, Mapping[str, Any]], deployment: Deployment, *, asgi: bool
) -> list[CheckMessage]:
    try:
        budget = pool.connection_budget(
            **{**deployment.budget_arguments(), "asgi": asgi}, databases=databases
        )
    except ImproperlyConfigured:
        return []  # E032 or E033 reports the pool.
    hint = (
        "Size the pool to the threads of one process, as "
        "resee_perf.pool.recommended_database(..., pool=True) does."
    )
    messages: list[CheckMessage] = []
    for mismatch in budget.pool_mismatches:
        if mismatch.waiting:
            messages.append(Warning(str(mismatch), hint=hint, id="resee_perf.W033"))
        else:
            messages.append(Warning(str(mismatch), hint=hint, id="resee_perf.W034"))
    if deployment.max_connections is None:
        return messages
    usable = budget.capacities(deployment.max_connections, deployment.reserved, partial=True)
    for alias in pool.read_databases(databases)[0]:
        limit = usable.get(alias.server)
        if alias.pool is not None and limit is not None and alias.pool.max_size > limit:
            messages.append(
                Error(
                    f"DATABASES[{alias.alias!r}]['OPTIONS']['pool']['max_size'] is "
                    f"{alias.pool.max_size}, more than its server can ever give ({limit}: "
                    "RESEE_PERF['DEPLOYMENT'] max_connections minus reserved).",
                    hint="Size the pool to the threads of one process; the server must hold "
                    "one such pool per process.",
                    id="resee_perf.E034",
                )
            )
    return messages


def connection_budget_messages(
    databases: Mapping[str, Mapping[str, Any]],
    user: Mapping[str, Any],
    *,
    settings_asgi: bool,
    timeout: int = 2,
) -> list[CheckMessage]:
    """W030, W035 and W036, from explicit settings."""
    messages: list[CheckMessage] = []
    for alias, settings_dict in databases.items():
        conn_max_age = settings_dict.get("CONN_MAX_AGE", 0)
        if conn_max_age != 0 and not settings_dict.get("CONN_HEALTH_CHECKS", False):
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] keeps connections for CONN_MAX_AGE={conn_max_age!r} "
                    "seconds without CONN_HEALTH_CHECKS: after a database restart or failover, "
                    "the first query on each stale connection fails.",
                    hint=f"Set DATABASES[{alias!r}]['CONN_HEALTH_CHECKS'] = True.",
                    id="resee_perf.W035",
                )
            )
    deployment, errors = _deployment(databases, user)
    if deployment is None or errors:
        return messages
    asgi = settings_asgi if deployment.asgi is None else deployment.asgi
    try:
        budget = pool.connection_budget(
            **{**deployment.budget_arguments(), "asgi": asgi}, databases=databases
        )
    except ImproperlyConfigured:
        return messages  # E032 or E033 reports the pool.
    # Asking the servers is opt-in: `check --deploy` often runs where they are unreachable.
    statuses = (
        pool.inspect_servers(budget, databases=databases, timeout=timeout)
        if deployment.query_servers
        else {}
    )
    verdicts = pool.assess(
        budget,
        statuses=statuses,
        max_connections=deployment.max_connections,
        reserved=deployment.reserved,
    )
    for verdict in verdicts:
        if verdict.error is not None:
            messages.append(
                Warning(
                    f"Could not ask {verdict.server} for its connection limits: {verdict.error}",
                    hint="RESEE_PERF['DEPLOYMENT']['query_servers'] is on: run `check --deploy` "
                    "where the servers are reachable, or give max_connections.",
                    id="resee_perf.W036",
                )
            )
        if verdict.fits is False:
            others = " and other clients' connections" if verdict.source == "live" else ""
            messages.append(
                Warning(
                    f"The connection budget needs {verdict.needed} connections on "
                    f"{verdict.server}, which can give {verdict.available} ({verdict.source}: "
                    f"max_connections minus reserved slots{others}).",
                    hint="Run `manage.py connection_budget` for the itemised table; lower "
                    "workers, threads or pool sizes, put PgBouncer in front, or raise "
                    "max_connections.",
                    id="resee_perf.W030",
                )
            )
    return messages


# -- cache_aside: resee_perf.E010-E014 / W010-W014 ---------------------------------------------

# What each Redis backend calls its timeouts in OPTIONS (django-redis, then Django's own).
_REDIS_TIMEOUT_OPTIONS: dict[str, tuple[str, ...]] = {
    "django_redis.cache.RedisCache": ("SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT"),
    "django.core.cache.backends.redis.RedisCache": ("socket_connect_timeout", "socket_timeout"),
}


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
        aliases = {conf.CACHE_ALIAS, *declared.values()}
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


# -- Tag invalidation: resee_perf.W015-W019 ----------------------------------------------------


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
        aliases = {conf.CACHE_ALIAS, *registered_caches()}
    except ImproperlyConfigured:
        return []  # E001/E002 report it.
    return [(alias, caches[alias]) for alias in sorted(aliases) if alias in settings.CACHES]


# -- StickyReplicaRouter (docs/routing.md) ------------------------------------------------------

_ROUTER = "resee_perf.routers.StickyReplicaRouter"
_MIDDLEWARE = "resee_perf.middleware.StickyReadsMiddleware"
_SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


def _is_subclass_path(entry: Any, base: type) -> bool:
    """Whether a DATABASE_ROUTERS or MIDDLEWARE entry (a dotted path, a class or an instance)
    is ``base`` or a subclass of it."""
    if isinstance(entry, str):
        try:
            entry = import_string(entry)
        except ImportError:
            return False
    if isinstance(entry, type):
        return issubclass(entry, base)
    return isinstance(entry, base)


def check_router(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    from resee_perf.middleware import StickyReadsMiddleware
    from resee_perf.routers import PRIMARY, StickyReplicaRouter

    user = _resee_perf_dict()
    replicas = user.get("REPLICAS", [])
    if not OPTIONS["REPLICAS"].validate(replicas):
        return []  # E002 says so
    messages: list[CheckMessage] = []
    for alias in replicas:
        if alias == PRIMARY:
            messages.append(
                Error(
                    f"{SETTING_NAME}['REPLICAS'] lists {PRIMARY!r}, the primary.",
                    hint="List only the aliases of replicas; the primary is always 'default'.",
                    id="resee_perf.E021",
                )
            )
        elif alias not in settings.DATABASES:
            messages.append(
                Error(
                    f"{SETTING_NAME}['REPLICAS'] lists {alias!r}, which is not in "
                    "settings.DATABASES.",
                    hint=(
                        "Add it to DATABASES or use one of: "
                        f"{', '.join(sorted(settings.DATABASES))}."
                    ),
                    id="resee_perf.E020",
                )
            )
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    has_router = any(_is_subclass_path(r, StickyReplicaRouter) for r in settings.DATABASE_ROUTERS)
    positions = [i for i, m in enumerate(middleware) if _is_subclass_path(m, StickyReadsMiddleware)]
    if has_router and not positions:
        messages.append(
            Warning(
                f"{_ROUTER} is in DATABASE_ROUTERS but {_MIDDLEWARE} is not in MIDDLEWARE.",
                hint=(
                    "Without it a client's next request may read from a replica that has not "
                    "replayed its write, and a thread that wrote once reads from the primary "
                    "for good. Add it near the top of MIDDLEWARE."
                ),
                id="resee_perf.W020",
            )
        )
    if positions and not has_router:
        messages.append(
            Warning(
                f"{_MIDDLEWARE} is in MIDDLEWARE but {_ROUTER} is not in DATABASE_ROUTERS.",
                hint="The middleware only works with the router: add it, or remove the middleware.",
                id="resee_perf.W021",
            )
        )
    if has_router and not replicas:
        messages.append(
            Warning(
                f"{_ROUTER} is in DATABASE_ROUTERS but {SETTING_NAME}['REPLICAS'] is empty.",
                hint="Every query goes to 'default'. List the replicas' aliases in REPLICAS.",
                id="resee_perf.W022",
            )
        )
    session_position = (
        middleware.index(_SESSION_MIDDLEWARE) if _SESSION_MIDDLEWARE in middleware else None
    )
    if positions and session_position is not None and positions[0] > session_position:
        messages.append(
            Warning(
                f"{_MIDDLEWARE} comes after {_SESSION_MIDDLEWARE} in MIDDLEWARE.",
                hint=(
                    "The session is saved after the middleware has finished, so a login's "
                    "write is not remembered and the next request can read the session "
                    "from a replica that lacks it. Move it above SessionMiddleware."
                ),
                id="resee_perf.W023",
            )
        )
    return messages


# -- Query profiling: resee_perf.E060-E069 / W060-W069 -----------------------------------------


def check_profiling_deploy(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Profiling settings meant for development, found in a deployment (``check --deploy``)."""
    user = _resee_perf_dict()
    if settings.DEBUG:
        return []
    messages: list[CheckMessage] = []
    if user.get("NPLUSONE_RAISE") is True:
        messages.append(
            Warning(
                f"{SETTING_NAME}['NPLUSONE_RAISE'] is True with DEBUG off: a request that "
                "runs an N+1 fails with an error instead of being reported.",
                hint=f"Leave {SETTING_NAME}['NPLUSONE_RAISE'] to tests and development; "
                "in production the log record and resee_perf_nplusone_total report N+1s.",
                id="resee_perf.W060",
            )
        )
    if user.get("SERVER_TIMING") == "all":
        messages.append(
            Warning(
                f"{SETTING_NAME}['SERVER_TIMING'] is 'all' with DEBUG off: every client sees "
                "how long your database and cache took for its requests.",
                hint=f"Set {SETTING_NAME}['SERVER_TIMING'] to 'staff' (the default) or 'off'.",
                id="resee_perf.W061",
            )
        )
    return messages
