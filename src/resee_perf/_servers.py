"""What each database server allows and holds now, asked live, and the verdict of the
budget against it."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from django.conf import settings

from resee_perf._budget import ConnectionBudget, ServerBudget
from resee_perf._deployment import DEFAULT_RESERVED


@dataclass(frozen=True)
class ServerStatus:
    """One server's limits and current use, as it reports them."""

    server: str
    max_connections: int
    superuser_reserved_connections: int
    reserved_connections: int
    """PostgreSQL 16+'s slots for pg_use_reserved_connections; 0 before."""
    in_use: int
    """Client backends now, not counting the session that asked."""
    in_use_by_project: int
    """Of those, the ones on this project's databases as this project's roles."""
    server_version_num: int
    superuser: bool

    @property
    def usable(self) -> int:
        reserved = self.superuser_reserved_connections + self.reserved_connections
        return self.max_connections - reserved

    @property
    def in_use_by_others(self) -> int:
        return self.in_use - self.in_use_by_project


_LIMITS_SQL = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int,
       current_setting('server_version_num')::int,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       current_user
"""
# Client backends only: autovacuum, WAL senders and background workers have slots of their own
# (autovacuum_max_workers, max_wal_senders, max_worker_processes). An ordinary role sees
# backend_type as NULL on other roles' sessions (without pg_read_all_stats), but still their
# database and role, which background processes do not have.
_ACTIVITY_SQL = """
SELECT datname, usename, count(*)
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND (backend_type = 'client backend'
       OR (backend_type IS NULL AND datname IS NOT NULL AND usename IS NOT NULL))
GROUP BY datname, usename
"""


def inspect_servers(
    budget: ConnectionBudget,
    *,
    databases: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: int = 3,
) -> dict[str, ServerStatus | str]:
    """Ask each server of the budget for its limits and use; an error message if it can't."""
    if databases is None:
        databases = settings.DATABASES
    results: dict[str, ServerStatus | str] = {}
    for server in budget.servers:
        try:
            results[server.server] = _inspect(server, databases, timeout)
        except Exception as error:  # Any driver error means "could not ask": report it.
            results[server.server] = f"{type(error).__name__}: {str(error).strip()}"
    return results


def _inspect(
    server: ServerBudget, databases: Mapping[str, Mapping[str, Any]], timeout: int
) -> ServerStatus:
    from django.db.utils import DEFAULT_DB_ALIAS, ConnectionHandler

    alias = server.aliases[0]
    # A throwaway handler builds the driver's arguments exactly as Django would, without
    # touching this process's connection or opening the alias's pool. deepcopy, because
    # ConnectionHandler fills in defaults inside the nested dicts it is given.
    handler = ConnectionHandler({DEFAULT_DB_ALIAS: copy.deepcopy(dict(databases[alias]))})
    wrapper = handler[DEFAULT_DB_ALIAS]
    params = wrapper.get_connection_params()
    # libpq's connect_timeout counts whole seconds and treats 1 as 2.
    params["connect_timeout"] = max(2, timeout)
    driver: Any = cast(Any, wrapper).Database
    connection = driver.connect(**params)
    try:
        cursor = connection.cursor()
        cursor.execute(_LIMITS_SQL)
        max_conn, su_reserved, reserved, version, superuser, user = cursor.fetchone()
        cursor.execute(_ACTIVITY_SQL)
        activity = cursor.fetchall()
    finally:
        connection.close()
    ours = {
        (str(databases[name].get("NAME") or ""), str(databases[name].get("USER") or user))
        for name in server.aliases
    }
    return ServerStatus(
        server=server.server,
        max_connections=max_conn,
        superuser_reserved_connections=su_reserved,
        reserved_connections=reserved,
        in_use=sum(count for _, _, count in activity),
        in_use_by_project=sum(count for db, role, count in activity if (db, role) in ours),
        server_version_num=version,
        superuser=bool(superuser),
    )


@dataclass(frozen=True)
class ServerVerdict:
    """One server's share of the budget against what it can give."""

    server: str
    needed: int
    source: Literal["live", "configured", "unknown"]
    usable: int | None = None
    """max_connections minus the reserved slots."""
    in_use_by_others: int = 0
    status: ServerStatus | None = None
    error: str | None = None

    @property
    def available(self) -> int | None:
        return None if self.usable is None else self.usable - self.in_use_by_others

    @property
    def spare(self) -> int | None:
        return None if self.available is None else self.available - self.needed

    @property
    def fits(self) -> bool | None:
        return None if self.spare is None else self.spare >= 0

    def as_dict(self) -> dict[str, Any]:
        status = self.status
        return {
            "server": self.server,
            "needed": self.needed,
            "source": self.source,
            "max_connections": status.max_connections if status else None,
            "superuser_reserved_connections": (
                status.superuser_reserved_connections if status else None
            ),
            "reserved_connections": status.reserved_connections if status else None,
            "in_use": status.in_use if status else None,
            "in_use_by_project": status.in_use_by_project if status else None,
            "usable": self.usable,
            "in_use_by_others": self.in_use_by_others,
            "available": self.available,
            "spare": self.spare,
            "fits": self.fits,
            "error": self.error,
        }


def assess(
    budget: ConnectionBudget,
    *,
    statuses: Mapping[str, ServerStatus | str] | None = None,
    max_connections: int | Mapping[str, int] | None = None,
    reserved: int = DEFAULT_RESERVED,
) -> tuple[ServerVerdict, ...]:
    """Compare each server's share with its live status, else with the configured limit.

    Live, the connections that other applications hold now are subtracted; this project's
    own (same database and role) are not, since the budget already counts them.
    """
    configured: dict[str, int] = {}
    if max_connections is not None:
        configured = budget.capacities(max_connections, reserved, partial=True)
    verdicts = []
    for server in budget.servers:
        status = (statuses or {}).get(server.server)
        error = status if isinstance(status, str) else None
        verdict = ServerVerdict(server.server, server.needed, "unknown", error=error)
        if isinstance(status, ServerStatus):
            verdict = replace(
                verdict,
                source="live",
                usable=status.usable,
                in_use_by_others=status.in_use_by_others,
                status=status,
            )
        elif server.server in configured:
            verdict = replace(verdict, source="configured", usable=configured[server.server])
        verdicts.append(verdict)
    return tuple(verdicts)
