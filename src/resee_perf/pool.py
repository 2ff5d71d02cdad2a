"""Connection budget: how many PostgreSQL connections a deployment holds, per database server.

The model (docs/connections.md explains it with examples):

- A Django process opens one connection per database alias per thread, the first time that
  thread touches the alias. With persistent connections (``CONN_MAX_AGE`` != 0) the thread keeps
  it; with ``CONN_MAX_AGE = 0`` it closes it at the end of the request. Either way, when every
  thread is busy at once, each holds one connection per alias: the peak is the same, only the
  churn differs.
- With Django's native psycopg pool (``OPTIONS["pool"]``, Django 5.1+), each *process* has one
  pool per alias, and threads borrow from it. psycopg opens ``min_size`` connections up front and
  grows only while a thread waits, up to ``max_size``; so a process holds
  ``max(min_size, min(max_size, concurrency))`` connections to that alias. Before Django 5.1
  there is no such pool: Django hands ``OPTIONS["pool"]`` to psycopg as a connection parameter,
  which psycopg refuses, so a pool there is a configuration error (:class:`PoolUnavailable`),
  not a pool the budget could count.
- ``max_connections`` is per server (a PostgreSQL cluster), so aliases pointing at the same
  host and port add up, even with different database names.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal, cast

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from resee_perf._deployment import (
    DEFAULT_RESERVED,
    FIELDS,
    CeleryPool,
    Deployment,
    capacity_valid,
    count_valid,
    is_int,
    named_aliases,
    positive_valid,
)
from resee_perf.conf import conf

__all__ = [
    "ConnectionBudget",
    "Contribution",
    "Deployment",
    "PoolUnavailable",
    "ServerBudget",
    "ServerStatus",
    "ServerVerdict",
    "assess",
    "budget_from_settings",
    "connection_budget",
    "inspect_servers",
    "recommended_database",
]

ServerKind = Literal["primary", "replica", "pooler"]

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


# -- what one DATABASES alias costs ----------------------------------------------------------


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


@dataclass(frozen=True)
class Client:
    """One kind of process that talks to the databases: web workers, Celery, a cron job."""

    name: str
    processes: int
    concurrency: int
    """Threads (or greenlets, or concurrent ASGI requests) per process: each has its own
    Django connections."""
    aliases: tuple[str, ...] | None
    django: bool = True
    """False for clients that are not Django processes (an exporter, psql): no pool."""
    processes_text: str = ""
    unit: str = "thread"


def _clients(
    *,
    web_workers: int,
    threads_per_worker: int,
    asgi: bool,
    celery_workers: int,
    celery_concurrency: int,
    celery_pool: CeleryPool,
    extra_clients: Mapping[str, Any],
    web_aliases: Sequence[str] | None,
    celery_aliases: Sequence[str] | None,
) -> list[Client]:
    web = Client(
        "web",
        web_workers,
        threads_per_worker,
        _aliases(web_aliases),
        processes_text=_plural(web_workers, "worker"),
        unit="concurrent request" if asgi else "thread",
    )
    return [
        client
        for client in (
            web,
            _celery(celery_workers, celery_concurrency, celery_pool, celery_aliases),
            *(_extra(name, spec) for name, spec in extra_clients.items()),
        )
        if client.processes > 0
    ]


def _celery(
    workers: int, concurrency: int, pool: CeleryPool, aliases: Sequence[str] | None
) -> Client:
    if pool == "prefork":
        # Each prefork child is a process of its own, with its own connections (or pool).
        text = _plural(workers * concurrency, "process")
        if concurrency > 1:
            text += f" ({workers} x --concurrency {concurrency})"
        return Client("celery", workers * concurrency, 1, _aliases(aliases), processes_text=text)
    threads = 1 if pool == "solo" else concurrency
    return Client(
        "celery",
        workers,
        threads,
        _aliases(aliases),
        processes_text=f"{_plural(workers, 'worker')} (--pool {pool})",
        unit="greenlet" if pool in {"gevent", "eventlet"} else "thread",
    )


def _extra(name: str, spec: int | Mapping[str, Any]) -> Client:
    if isinstance(spec, int):
        spec = {"processes": spec}
    processes = spec.get("processes", 1)
    return Client(
        name,
        processes,
        spec.get("threads", 1),
        _aliases(spec.get("aliases")),
        django=spec.get("django", True),
        processes_text=_plural(processes, "process"),
    )


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}es" if noun.endswith("s") else f"{count} {noun}s"


def _aliases(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


# -- the budget -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contribution:
    """The connections one kind of client holds to one alias."""

    server: str
    alias: str
    client: str
    processes: int
    per_process: int
    how: str

    @property
    def connections(self) -> int:
        return self.processes * self.per_process


@dataclass(frozen=True)
class ServerBudget:
    server: str
    kind: ServerKind
    aliases: tuple[str, ...]
    subtotal: int
    needed: int
    """The subtotal plus the headroom, rounded up."""


@dataclass(frozen=True)
class ConnectionBudget:
    """The connections a deployment holds, per database server. Immutable."""

    contributions: tuple[Contribution, ...]
    servers: tuple[ServerBudget, ...]
    headroom: float
    notes: tuple[str, ...] = ()
    pool_mismatches: tuple[PoolMismatch, ...] = ()

    @property
    def per_server(self) -> Mapping[str, int]:
        """Connections needed per server (headroom included), keyed like ``host:port``."""
        return MappingProxyType({server.server: server.needed for server in self.servers})

    @property
    def total(self) -> int:
        return sum(server.needed for server in self.servers)

    def server_of(self, alias: str) -> str:
        for server in self.servers:
            if alias in server.aliases:
                return server.server
        raise KeyError(f"No server in this budget has the alias {alias!r}.")

    def capacities(
        self,
        max_connections: int | Mapping[str, int],
        reserved: int = DEFAULT_RESERVED,
        *,
        partial: bool = False,
    ) -> dict[str, int]:
        """Usable slots per server: ``max_connections`` minus ``reserved``.

        ``max_connections`` is one number for every server, or a mapping keyed by server
        (``host:port``) or by any alias on it; a server it leaves out is an error unless
        ``partial``.
        """
        if not count_valid(reserved):
            raise ValueError(f"reserved should be a non-negative integer, not {reserved!r}.")
        if not capacity_valid(max_connections) or max_connections is None:
            raise ValueError(
                "max_connections should be a positive integer or a dict of server or alias "
                f"to a positive integer, not {max_connections!r}."
            )
        capacities = {}
        for server in self.servers:
            limit = _limit_for(server, max_connections)
            if limit is None and partial:
                continue
            if limit is None:
                raise ValueError(
                    f"max_connections has no entry for server {server.server} "
                    f"(aliases {', '.join(server.aliases)}): key it by the server or one "
                    "of its aliases."
                )
            capacities[server.server] = limit - reserved
        return capacities

    def spare(
        self, max_connections: int | Mapping[str, int], reserved: int = DEFAULT_RESERVED
    ) -> Mapping[str, int]:
        """Slots left per server once the budget is met; negative when it does not fit."""
        capacities = self.capacities(max_connections, reserved)
        return MappingProxyType(
            {server.server: capacities[server.server] - server.needed for server in self.servers}
        )

    def fits(
        self, max_connections: int | Mapping[str, int], reserved: int = DEFAULT_RESERVED
    ) -> bool:
        """Whether every server can hold its share of the budget."""
        return all(spare >= 0 for spare in self.spare(max_connections, reserved).values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "headroom": self.headroom,
            "total": self.total,
            "per_server": dict(self.per_server),
            "servers": [
                {
                    "server": server.server,
                    "kind": server.kind,
                    "aliases": list(server.aliases),
                    "subtotal": server.subtotal,
                    "needed": server.needed,
                }
                for server in self.servers
            ],
            "contributions": [
                {
                    "server": item.server,
                    "alias": item.alias,
                    "client": item.client,
                    "processes": item.processes,
                    "per_process": item.per_process,
                    "connections": item.connections,
                    "how": item.how,
                }
                for item in self.contributions
            ],
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def __str__(self) -> str:
        rows: list[tuple[str, ...]] = [("server", "alias", "client", "connections", "how")]
        for server in self.servers:
            first = True
            for item in self.contributions:
                if item.server != server.server:
                    continue
                label = f"{server.server} ({server.kind})" if first else ""
                rows.append((label, item.alias, item.client, str(item.connections), item.how))
                first = False
            if first:
                rows.append((f"{server.server} ({server.kind})", "", "", "0", "nothing"))
            rows.append(("", "", "subtotal", str(server.subtotal), ""))
            rows.append(
                (
                    "",
                    "",
                    f"+{self.headroom:.0%} headroom",
                    str(server.needed - server.subtotal),
                    "rounded up",
                )
            )
            rows.append(("", "", "needed", str(server.needed), ""))
        lines = [_table(rows), f"total needed: {self.total} connections"]
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _limit_for(server: ServerBudget, max_connections: int | Mapping[str, int]) -> int | None:
    if is_int(max_connections):
        return cast(int, max_connections)
    limits = cast(Mapping[str, int], max_connections)
    for key in (server.server, *server.aliases):
        if key in limits:
            return limits[key]
    return None


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {i for i, title in enumerate(rows[0]) if title in _NUMERIC_COLUMNS}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


_NUMERIC_COLUMNS = frozenset(
    {"connections", "needed", "max_connections", "reserved", "usable", "others", "spare"}
)


def connection_budget(
    *,
    web_workers: int = 0,
    threads_per_worker: int = 1,
    asgi: bool | None = False,
    celery_workers: int = 0,
    celery_concurrency: int = 1,
    celery_pool: CeleryPool = "prefork",
    extra_clients: Mapping[str, Any] | None = None,
    web_aliases: Sequence[str] | None = None,
    celery_aliases: Sequence[str] | None = None,
    headroom: float = 0.2,
    transaction_pooled: Iterable[str] = (),
    databases: Mapping[str, Mapping[str, Any]] | None = None,
    replicas: Iterable[str] | None = None,
) -> ConnectionBudget:
    """The connections a deployment holds, per database server, each contribution itemised.

    ``databases`` defaults to ``settings.DATABASES`` and ``replicas`` to the router's
    ``RESEE_PERF['REPLICAS']``; the rest describes the processes (see docs/connections.md).
    Raises ValueError on impossible numbers and ImproperlyConfigured on an invalid pool.
    """
    arguments: dict[str, Any] = {
        "web_workers": web_workers,
        "threads_per_worker": threads_per_worker,
        "asgi": asgi,
        "celery_workers": celery_workers,
        "celery_concurrency": celery_concurrency,
        "celery_pool": celery_pool,
        "extra_clients": extra_clients or {},
        "web_aliases": web_aliases,
        "celery_aliases": celery_aliases,
        "headroom": headroom,
        "transaction_pooled": list(transaction_pooled),
    }
    for name, value in arguments.items():
        spec = FIELDS[name]
        if not spec.valid(value):
            raise ValueError(f"{name} should be {spec.expected}, not {value!r}. {spec.hint}")
    if databases is None:
        databases = settings.DATABASES
    if replicas is None:
        replicas = _configured_replicas()
    aliases, notes = read_databases(databases)
    clients = _clients(**{name: arguments[name] for name in _CLIENT_ARGUMENTS}, asgi=bool(asgi))
    _check_alias_names(arguments, databases)
    contributions = _contributions(aliases, clients)
    servers = _servers(
        aliases,
        contributions,
        headroom=headroom,
        replicas=set(replicas),
        pooled=set(arguments["transaction_pooled"]),
    )
    mismatches = _pool_mismatches(aliases, clients)
    notes.extend(_notes(aliases, asgi=bool(asgi), servers=servers))
    notes.extend(str(mismatch) for mismatch in mismatches)
    return ConnectionBudget(
        contributions=tuple(contributions),
        servers=tuple(servers),
        headroom=headroom,
        notes=tuple(notes),
        pool_mismatches=tuple(mismatches),
    )


_CLIENT_ARGUMENTS = (
    "web_workers",
    "threads_per_worker",
    "celery_workers",
    "celery_concurrency",
    "celery_pool",
    "extra_clients",
    "web_aliases",
    "celery_aliases",
)


def _configured_replicas() -> tuple[str, ...]:
    if not settings.configured:
        return ()  # explicit numbers and databases, outside a project (a notebook, a script)
    return tuple(conf.REPLICAS)


def _check_alias_names(arguments: Mapping[str, Any], databases: Mapping[str, Any]) -> None:
    for key, alias in named_aliases(arguments):
        if alias not in databases:
            raise ValueError(
                f"{key} names the database alias {alias!r}, which is not in DATABASES "
                f"(known: {', '.join(databases)})."
            )


def _touching(
    aliases: Sequence[AliasConnections], clients: Sequence[Client]
) -> Iterator[tuple[AliasConnections, Client]]:
    """Each (alias, client) pair where the client's processes use the alias, by alias."""
    for alias in aliases:
        for client in clients:
            if client.aliases is None or alias.alias in client.aliases:
                yield alias, client


def _contributions(
    aliases: Sequence[AliasConnections], clients: Sequence[Client]
) -> list[Contribution]:
    contributions = []
    for alias, client in _touching(aliases, clients):
        per_process, how = _per_process(alias, client)
        contributions.append(
            Contribution(
                server=alias.server,
                alias=alias.alias,
                client=client.name,
                processes=client.processes,
                per_process=per_process,
                how=f"{client.processes_text} x {how}",
            )
        )
    return contributions


def _per_process(alias: AliasConnections, client: Client) -> tuple[int, str]:
    concurrency = _plural(client.concurrency, client.unit)
    if alias.pool is None or not client.django:
        return client.concurrency, f"{concurrency} x 1 connection"
    pool = alias.pool
    peak = pool.peak(client.concurrency)
    return peak, (
        f"pool max(min_size {pool.min_size}, min(max_size {pool.max_size}, {concurrency})) = {peak}"
    )


def _servers(
    aliases: Sequence[AliasConnections],
    contributions: Sequence[Contribution],
    *,
    headroom: float,
    replicas: set[str],
    pooled: set[str],
) -> list[ServerBudget]:
    by_key: dict[str, list[AliasConnections]] = {}
    for alias in aliases:
        by_key.setdefault(alias.server_key, []).append(alias)
    servers = []
    for members in by_key.values():
        label = members[0].server
        names = tuple(alias.alias for alias in members)
        subtotal = sum(item.connections for item in contributions if item.alias in names)
        kind: ServerKind = (
            "pooler" if pooled & set(names) else "replica" if set(names) <= replicas else "primary"
        )
        servers.append(
            ServerBudget(
                server=label,
                kind=kind,
                aliases=names,
                subtotal=subtotal,
                needed=_with_headroom(subtotal, headroom),
            )
        )
    return servers


def _with_headroom(subtotal: int, headroom: float) -> int:
    # 15 * 1.2 is 18.000000000000004 in binary floating point: round before the ceiling.
    return math.ceil(round(subtotal * (1 + headroom), 9))


def _notes(
    aliases: Sequence[AliasConnections],
    *,
    asgi: bool,
    servers: Sequence[ServerBudget],
) -> list[str]:
    notes = []
    for server in servers:
        if len(server.aliases) > 1:
            notes.append(
                f"Aliases {', '.join(server.aliases)} are one server ({server.server}): "
                "each thread holds a connection per alias, and they add up."
            )
        if server.kind == "pooler":
            notes.append(
                f"{server.server} is a transaction pooler: these are its client connections "
                "(PgBouncer max_client_conn); PostgreSQL sees the pooler's own pool_size."
            )
    for alias in aliases:
        if asgi and alias.persistent:
            notes.append(
                f"Alias {alias.alias!r} keeps persistent connections under ASGI: Django runs "
                "each request's synchronous code in its own thread, so connections are not "
                "reused and can outlive the request. This count is a lower bound. "
                f"{asgi_advice()} (resee_perf.W031)."
            )
    return notes


def asgi_advice() -> str:
    """What bounds connections under ASGI with this Django: its native pool, or a pooler."""
    if django.VERSION < NATIVE_POOL_DJANGO:
        return (
            "Set CONN_MAX_AGE to 0, and put PgBouncer in front if a connection per request "
            "is too slow (Django's native OPTIONS['pool'] needs Django 5.1+)"
        )
    return "Set CONN_MAX_AGE to 0 and use OPTIONS['pool']"


@dataclass(frozen=True)
class PoolMismatch:
    """A pool sized for a different concurrency than a client's processes have."""

    alias: str
    client: str
    concurrency: int
    pool: PoolSize

    @property
    def idle(self) -> int:
        """Connections each process holds (min_size) but can never use."""
        return max(0, self.pool.min_size - self.concurrency)

    @property
    def waiting(self) -> int:
        """Threads of each process that can find the pool empty (and wait for it)."""
        return max(0, self.concurrency - self.pool.max_size)

    def __str__(self) -> str:
        where = f"Alias {self.alias!r}: each {self.client} process"
        if self.idle:
            return (
                f"{where} has {_plural(self.concurrency, 'thread')} but a pool with min_size "
                f"{self.pool.min_size}, so it holds {_plural(self.idle, 'connection')} it can "
                "never use: lower min_size."
            )
        return (
            f"{where} has {_plural(self.concurrency, 'thread')} but a pool with max_size "
            f"{self.pool.max_size}, so {_plural(self.waiting, 'thread')} can wait for a "
            "connection (up to the pool's timeout, then PoolTimeout): raise max_size."
        )


def _pool_mismatches(
    aliases: Sequence[AliasConnections], clients: Sequence[Client]
) -> list[PoolMismatch]:
    mismatches = []
    for alias, client in _touching(aliases, clients):
        if alias.pool is None or not client.django:
            continue
        mismatch = PoolMismatch(alias.alias, client.name, client.concurrency, alias.pool)
        if mismatch.idle or mismatch.waiting:
            mismatches.append(mismatch)
    return mismatches


def budget_from_settings(**overrides: Any) -> ConnectionBudget:
    """The budget of this project: ``RESEE_PERF['DEPLOYMENT']``, then ``overrides``."""
    deployment = conf.DEPLOYMENT or Deployment()
    arguments = {**deployment.budget_arguments(), **overrides}
    if arguments.get("asgi") is None:
        arguments["asgi"] = settings_look_asgi()
    return connection_budget(**arguments)


def settings_look_asgi() -> bool:
    """A project that names an ASGI application and no WSGI one is served by ASGI."""
    return bool(getattr(settings, "ASGI_APPLICATION", None)) and not getattr(
        settings, "WSGI_APPLICATION", None
    )


# -- the servers: what they allow and what they hold now -------------------------------------


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


def verdict_table(verdicts: Sequence[ServerVerdict]) -> str:
    rows: list[tuple[str, ...]] = [
        ("server", "needed", "max_connections", "reserved", "usable", "others", "spare", "verdict")
    ]
    for verdict in verdicts:
        status = verdict.status
        reserved = (
            str(status.superuser_reserved_connections + status.reserved_connections)
            if status
            else ""
        )
        if verdict.fits is None:
            outcome = f"unknown: {verdict.error or 'no max_connections given'}"
        else:
            outcome = (
                "fits"
                if verdict.fits
                else f"OVER BUDGET by {-cast(int, verdict.spare)} connections"
            )
        rows.append(
            (
                verdict.server,
                str(verdict.needed),
                str(status.max_connections) if status else "",
                reserved,
                "" if verdict.usable is None else str(verdict.usable),
                str(verdict.in_use_by_others),
                "" if verdict.spare is None else str(verdict.spare),
                f"{outcome} ({verdict.source})",
            )
        )
    return _table(rows)


# -- the recommended configuration ------------------------------------------------------------


def recommended_database(
    database: Mapping[str, Any],
    *,
    threads_per_worker: int,
    pool: bool = False,
    conn_max_age: int = 600,
    connect_timeout: int = 5,
    statement_timeout_ms: int | None = 30_000,
    pool_timeout: float = 10.0,
    max_connections: int | None = None,
    reserved: int = DEFAULT_RESERVED,
) -> dict[str, Any]:
    """A copy of one ``DATABASES`` entry with the connection settings we recommend.

    ``pool=False``: persistent connections (``CONN_MAX_AGE``) checked before reuse
    (``CONN_HEALTH_CHECKS``). ``pool=True`` (Django 5.1+, psycopg 3): a fixed pool of one
    connection per thread, so a process holds what the budget counts, and a thread that
    cannot get one fails after ``pool_timeout`` seconds instead of hanging. Both set
    libpq's ``connect_timeout`` and a server-side ``statement_timeout``.

    ``pool=True`` where the native pool cannot exist (Django before 5.1, or no psycopg_pool)
    raises :class:`PoolUnavailable` rather than quietly returning persistent connections: the
    budget of a pool and of persistent connections differ under ASGI and in single-threaded
    processes, so the caller must choose.
    """
    if not positive_valid(threads_per_worker):
        raise ValueError(
            f"threads_per_worker should be a positive integer, not {threads_per_worker!r}: "
            "pass gunicorn's --threads (1 for sync workers)."
        )
    if pool and (problem := native_pool_unavailable()):
        raise PoolUnavailable(
            f"recommended_database(pool=True): {problem} Pass pool=False for persistent "
            "connections checked before reuse, or put PgBouncer in front."
        )
    if max_connections is not None and threads_per_worker > max_connections - reserved:
        raise ValueError(
            f"A pool of {threads_per_worker} connections per process is larger than the "
            f"server ({max_connections} max_connections, {reserved} reserved): lower the "
            "threads per worker or raise max_connections."
        )
    result = dict(database)
    options = dict(result.get("OPTIONS") or {})
    options["connect_timeout"] = connect_timeout
    if statement_timeout_ms is not None:
        startup = str(options.get("options") or "")
        options["options"] = f"{startup} -c statement_timeout={statement_timeout_ms}".strip()
    if pool:
        options["pool"] = {
            "min_size": threads_per_worker,
            "max_size": threads_per_worker,
            "timeout": pool_timeout,
        }
        result["CONN_MAX_AGE"] = 0
    else:
        options.pop("pool", None)
        result["CONN_MAX_AGE"] = conn_max_age
    result["CONN_HEALTH_CHECKS"] = True
    result["OPTIONS"] = options
    return result
