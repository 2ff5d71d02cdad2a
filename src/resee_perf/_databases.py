"""What each ``DATABASES`` alias costs: its server, its pool, its connection settings.

Also whether Django's native pool can exist here at all (Django 5.1+ with psycopg_pool).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import django
from django.core.exceptions import ImproperlyConfigured

from resee_perf._validators import is_int

# psycopg_pool.ConnectionPool's defaults: min_size=4, max_size=None (meaning min_size).
PSYCOPG_POOL_MIN_SIZE = 4
_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
NATIVE_POOL_DJANGO = (5, 1)


class PoolUnavailable(ImproperlyConfigured):
    """Django's native pool is configured or asked for where it cannot exist."""


def native_pool_unavailable() -> str | None:
    """Why Django's native psycopg pool cannot work in this environment, or None."""
    if django.VERSION < NATIVE_POOL_DJANGO:
        # Django before 5.1 passes OPTIONS["pool"] through to psycopg.connect(), which
        # refuses it at the first query: 'invalid connection option "pool"'.
        return f"Django's native pool needs Django 5.1 or newer (this is {django.get_version()})."
    if importlib.util.find_spec("psycopg_pool") is None:
        return "psycopg_pool is not installed (pip install 'resee-perf[postgres]')."
    return None


@dataclass(frozen=True)
class PoolSize:
    """The sizes of Django's native psycopg pool for one alias (one pool per process)."""

    min_size: int
    max_size: int

    def peak(self, concurrency: int) -> int:
        # psycopg opens min_size at once and grows one connection at a time, only while a
        # client waits, so it never holds more than the concurrency it serves (or min_size).
        return max(self.min_size, min(self.max_size, concurrency))


@dataclass(frozen=True)
class AliasConnections:
    """What the budget needs to know about one alias in ``DATABASES``."""

    alias: str
    server: str
    """Display name of the server: ``host:port`` as the first alias on it spells it."""
    server_key: str
    """Identity of the server: loopback names and Unix sockets are the same local host."""
    pool: PoolSize | None
    conn_max_age: float | None
    health_checks: bool
    server_side_cursors: bool
    port: str

    @property
    def persistent(self) -> bool:
        return self.pool is None and self.conn_max_age != 0


def read_alias(alias: str, settings_dict: Mapping[str, Any]) -> AliasConnections:
    """Describe one ``DATABASES`` entry; raise ImproperlyConfigured if its pool is invalid."""
    options = settings_dict.get("OPTIONS") or {}
    label, key, port = server_address(settings_dict)
    return AliasConnections(
        alias=alias,
        server=label,
        server_key=key,
        pool=read_pool(alias, options.get("pool")),
        conn_max_age=settings_dict.get("CONN_MAX_AGE", 0),
        health_checks=bool(settings_dict.get("CONN_HEALTH_CHECKS", False)),
        server_side_cursors=not settings_dict.get("DISABLE_SERVER_SIDE_CURSORS", False),
        port=port,
    )


def server_address(settings_dict: Mapping[str, Any]) -> tuple[str, str, str]:
    """(display name, identity, port) of the server a ``DATABASES`` entry connects to."""
    options = settings_dict.get("OPTIONS") or {}
    host = str(settings_dict.get("HOST") or options.get("host") or "")
    port = str(settings_dict.get("PORT") or options.get("port") or "5432")
    service = options.get("service")
    if not host and service:
        # pg_service.conf decides the host; the service name is the best identity we have.
        return f"service={service}", f"service={service}", port
    local = host in _LOCAL_HOSTS or host.startswith("/")
    return f"{host or 'localhost'}:{port}", f"{'local' if local else host.lower()}:{port}", port


def read_pool(alias: str, value: Any) -> PoolSize | None:
    """``OPTIONS["pool"]`` as Django reads it: falsy is no pool, True is psycopg's defaults.

    Raises :class:`PoolUnavailable` for a pool this environment cannot create (Django before
    5.1, or no psycopg_pool): Django would fail at the first query, so there is nothing to count.
    """
    if not value:
        return None
    where = f"DATABASES[{alias!r}]['OPTIONS']['pool']"
    if problem := native_pool_unavailable():
        raise PoolUnavailable(f"{where} is set, but {problem}")
    if value is True:
        return PoolSize(PSYCOPG_POOL_MIN_SIZE, PSYCOPG_POOL_MIN_SIZE)
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"{where} should be True or a dict of psycopg_pool.ConnectionPool arguments, "
            f"not {value!r}."
        )
    min_size = value.get("min_size", PSYCOPG_POOL_MIN_SIZE)
    if not is_int(min_size) or min_size < 0:
        raise ImproperlyConfigured(
            f"{where}['min_size'] should be a non-negative integer, not {min_size!r}."
        )
    max_size = value.get("max_size")
    if max_size is None:
        max_size = min_size
    if not is_int(max_size) or max_size < max(min_size, 1):
        raise ImproperlyConfigured(
            f"{where}['max_size'] should be an integer of at least 1 and at least min_size "
            f"({min_size}), not {max_size!r}: a pool can never hold more than max_size "
            "connections, so size it to the threads of one process."
        )
    return PoolSize(min_size, max_size)


def read_databases(
    databases: Mapping[str, Mapping[str, Any]],
) -> tuple[list[AliasConnections], list[str]]:
    """The aliases that hold server connections, and notes about the ones that do not."""
    aliases: list[AliasConnections] = []
    notes: list[str] = []
    for alias, settings_dict in databases.items():
        if "sqlite" in str(settings_dict.get("ENGINE", "")):
            notes.append(f"Alias {alias!r} is SQLite: it holds no server connections.")
            continue
        aliases.append(read_alias(alias, settings_dict))
    # One server, one name: the first alias's spelling (127.0.0.1 and localhost are the same).
    labels: dict[str, str] = {}
    aliases = [
        replace(alias, server=labels.setdefault(alias.server_key, alias.server))
        for alias in aliases
    ]
    return aliases, notes


def asgi_advice() -> str:
    """What bounds connections under ASGI with this Django: its native pool, or a pooler."""
    if django.VERSION < NATIVE_POOL_DJANGO:
        return (
            "Set CONN_MAX_AGE to 0, and put PgBouncer in front if a connection per request "
            "is too slow (Django's native OPTIONS['pool'] needs Django 5.1+)"
        )
    return "Set CONN_MAX_AGE to 0 and use OPTIONS['pool']"
