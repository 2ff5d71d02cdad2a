"""Checks of the connection budget (docs/connections.md): resee_perf.E030-E039 / W030-W039."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured

from resee_perf import _budget, _databases, _servers, pool
from resee_perf._deployment import Deployment, deployment_problems
from resee_perf.checks.settings import user_settings


def check_connections(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Connection settings that fail at the first query, or under load (every run)."""
    return connection_messages(
        settings.DATABASES, user_settings(), settings_asgi=_budget.settings_look_asgi()
    )


def check_connection_budget(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """The budget against each server's capacity (registered for ``check --deploy``)."""
    return connection_budget_messages(
        settings.DATABASES, user_settings(), settings_asgi=_budget.settings_look_asgi()
    )


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
            described = _databases.read_alias(alias, settings_dict)
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
    servers = {_databases.server_address(settings_dict)[0] for settings_dict in databases.values()}
    return [
        f"RESEE_PERF['DEPLOYMENT']['max_connections'] has the key {key!r}, which is neither a "
        f"database alias nor a server ({', '.join(sorted(servers))})."
        for key in deployment.max_connections
        if key not in databases and key not in servers
    ]


def _alias_messages(
    alias: _databases.AliasConnections, *, asgi: bool, pooled: set[str]
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
                hint=f"{_databases.asgi_advice()}: Django's database documentation says to "
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
    for alias in _databases.read_databases(databases)[0]:
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
        _servers.inspect_servers(budget, databases=databases, timeout=timeout)
        if deployment.query_servers
        else {}
    )
    verdicts = _servers.assess(
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
