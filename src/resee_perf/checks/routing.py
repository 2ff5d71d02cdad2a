"""Checks of ``StickyReplicaRouter`` and ``StickyReadsMiddleware`` (docs/routing.md):
resee_perf.E020-E029 / W020-W029, and E040-E041 / W040 for ``REPLICA_WEIGHTS``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from resee_perf.checks.settings import user_settings
from resee_perf.conf import OPTIONS, SETTING_NAME

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

    user = user_settings()
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
    messages.extend(_check_replica_connect_timeouts([a for a in replicas if a != PRIMARY]))
    messages.extend(_check_weights(user.get("REPLICA_WEIGHTS", {}), replicas))
    return messages


def _check_weights(weights: Any, replicas: Sequence[str]) -> list[CheckMessage]:
    """E040: a weight for an alias that is not in REPLICAS (a typo, or a replica removed from
    REPLICAS but not from the weights); E041: a weight that is not a non-negative number;
    W040: every replica weighs 0, so every read goes to the primary."""
    from resee_perf._replicas import weight_error

    if not OPTIONS["REPLICA_WEIGHTS"].validate(weights):
        return []  # E002 says so
    messages: list[CheckMessage] = []
    for alias, value in weights.items():
        if alias not in replicas:
            messages.append(
                Error(
                    f"{SETTING_NAME}['REPLICA_WEIGHTS'] has a weight for {alias!r}, which is "
                    f"not in {SETTING_NAME}['REPLICAS'].",
                    hint=(
                        "Weigh only the aliases listed in REPLICAS"
                        + (f" ({', '.join(replicas)})." if replicas else ".")
                    ),
                    id="resee_perf.E040",
                )
            )
        if problem := weight_error(alias, value):
            messages.append(
                Error(
                    problem,
                    hint=(
                        "Weights are relative shares of the reads, e.g. 3 and 1; 0 takes a "
                        "replica out of rotation."
                    ),
                    id="resee_perf.E041",
                )
            )
    valid = all(weight_error(alias, value) is None for alias, value in weights.items())
    if replicas and valid and all(weights.get(alias, 1) == 0 for alias in replicas):
        messages.append(
            Warning(
                f"{SETTING_NAME}['REPLICA_WEIGHTS'] gives every replica in "
                f"{SETTING_NAME}['REPLICAS'] the weight 0.",
                hint=(
                    "Every read goes to the primary. Give at least one replica a positive "
                    "weight, or empty REPLICAS if that is the intent."
                ),
                id="resee_perf.W040",
            )
        )
    return messages


def _check_replica_connect_timeouts(replicas: Sequence[str]) -> list[CheckMessage]:
    """W024: a PostgreSQL replica alias without OPTIONS['connect_timeout'].

    A request opens its connection to the replica it was routed to lazily, with Django's own
    settings: against a hung replica (stopped, frozen VM, full accept queue) libpq then waits
    forever, and the router never gets the error that marks the replica down."""
    messages: list[CheckMessage] = []
    for alias in replicas:
        database = settings.DATABASES.get(alias)
        if not isinstance(database, Mapping) or "postgresql" not in str(database.get("ENGINE", "")):
            continue  # E020 reports a missing alias; other engines have other options
        options = database.get("OPTIONS")
        if isinstance(options, Mapping) and options.get("connect_timeout"):
            continue
        messages.append(
            Warning(
                f"DATABASES[{alias!r}] is a replica in {SETTING_NAME}['REPLICAS'] without "
                "OPTIONS['connect_timeout'].",
                hint=(
                    f'Add "OPTIONS": {{"connect_timeout": 2}} to DATABASES[{alias!r}] '
                    "(whole seconds, 2 at least): without it a request routed to a hung "
                    "replica waits for it forever instead of falling back to the primary."
                ),
                id="resee_perf.W024",
            )
        )
    return messages


def check_replica_query_timeout(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W025: a PostgreSQL replica alias keeps connections open (``CONN_MAX_AGE`` other than 0,
    or a pool) while ``REPLICA_QUERY_TIMEOUT`` is None.

    A query in flight on an open connection to a replica that hangs waits until it resumes
    (the server, not the client, enforces statement_timeout); with persistent connections
    every thread that holds one is stuck with it."""
    user = user_settings()
    replicas = user.get("REPLICAS", [])
    timeout = user.get("REPLICA_QUERY_TIMEOUT")
    if timeout is not None or not OPTIONS["REPLICAS"].validate(replicas):
        return []  # set (E002 reports a wrong value), or REPLICAS is wrong (E002 again)
    messages: list[CheckMessage] = []
    for alias in replicas:
        database = settings.DATABASES.get(alias)
        if not isinstance(database, Mapping) or "postgresql" not in str(database.get("ENGINE", "")):
            continue  # E020 reports a missing alias
        options = database.get("OPTIONS")
        pooled = isinstance(options, Mapping) and bool(options.get("pool"))
        if database.get("CONN_MAX_AGE", 0) == 0 and not pooled:
            continue
        messages.append(
            Warning(
                f"DATABASES[{alias!r}] is a replica with persistent connections "
                f"(CONN_MAX_AGE or a pool) and {SETTING_NAME}['REPLICA_QUERY_TIMEOUT'] is None.",
                hint=(
                    f"Set {SETTING_NAME}['REPLICA_QUERY_TIMEOUT'] to a little more than the "
                    "replica's statement_timeout (e.g. 6 for 5000 ms): without it, a replica "
                    "that hangs holds every thread with a query in flight on it until it "
                    "resumes, instead of failing that query and reading from the primary."
                ),
                id="resee_perf.W025",
            )
        )
    return messages
