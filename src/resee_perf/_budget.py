"""The connection budget: the connections a deployment holds, per database server.

Pure arithmetic over ``DATABASES`` and a :class:`~resee_perf._deployment.Deployment`: it
asks no server (``_servers`` does).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, cast

from django.conf import settings

from resee_perf._clients import Client, clients_of, plural
from resee_perf._databases import (
    AliasConnections,
    PoolSize,
    asgi_advice,
    read_databases,
)
from resee_perf._deployment import (
    BUDGET_FIELDS,
    DEFAULT_RESERVED,
    FIELDS,
    Deployment,
    capacity_valid,
    count_valid,
    named_aliases,
)
from resee_perf._render import budget_text
from resee_perf._validators import is_int
from resee_perf.conf import conf

ServerKind = Literal["primary", "replica", "pooler"]


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
        return budget_text(self)


def _limit_for(server: ServerBudget, max_connections: int | Mapping[str, int]) -> int | None:
    if is_int(max_connections):
        return cast(int, max_connections)
    limits = cast(Mapping[str, int], max_connections)
    for key in (server.server, *server.aliases):
        if key in limits:
            return limits[key]
    return None


def connection_budget(
    deployment: Deployment | None = None,
    *,
    databases: Mapping[str, Mapping[str, Any]] | None = None,
    replicas: Iterable[str] | None = None,
    **fields: Any,
) -> ConnectionBudget:
    """The connections a deployment holds, per database server, each contribution itemised.

    ``deployment`` describes the processes (see docs/connections.md); keyword ``fields`` of
    it (``web_workers=4``...) override it or stand alone. ``asgi`` None counts as WSGI here
    (:func:`budget_from_settings` decides it from the settings). ``databases`` defaults to
    ``settings.DATABASES`` and ``replicas`` to the router's ``RESEE_PERF['REPLICAS']``.
    Raises ValueError on impossible numbers and ImproperlyConfigured on an invalid pool.
    """
    for name in fields:
        if name not in BUDGET_FIELDS:
            raise TypeError(f"connection_budget() got an unexpected keyword argument {name!r}")
    values = {**(deployment or Deployment()).budget_arguments(), **fields}
    values["extra_clients"] = values["extra_clients"] or {}
    values["transaction_pooled"] = list(values["transaction_pooled"])
    for name in BUDGET_FIELDS:
        spec = FIELDS[name]
        if not spec.valid(values[name]):
            raise ValueError(f"{name} should be {spec.expected}, not {values[name]!r}. {spec.hint}")
    asgi = bool(values["asgi"])
    processes = dataclasses.replace(
        deployment or Deployment(),
        **{**values, "asgi": asgi, "transaction_pooled": tuple(values["transaction_pooled"])},
    )
    if databases is None:
        databases = settings.DATABASES
    if replicas is None:
        replicas = _configured_replicas()
    aliases, notes = read_databases(databases)
    clients = clients_of(processes)
    _check_alias_names(values, databases)
    contributions = _contributions(aliases, clients, replicas=set(replicas))
    servers = _servers(
        aliases,
        contributions,
        headroom=processes.headroom,
        replicas=set(replicas),
        pooled=set(processes.transaction_pooled),
    )
    mismatches = _pool_mismatches(aliases, clients)
    notes.extend(_notes(aliases, asgi=asgi, servers=servers))
    notes.extend(str(mismatch) for mismatch in mismatches)
    return ConnectionBudget(
        contributions=tuple(contributions),
        servers=tuple(servers),
        headroom=processes.headroom,
        notes=tuple(notes),
        pool_mismatches=tuple(mismatches),
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
    aliases: Sequence[AliasConnections], clients: Sequence[Client], *, replicas: set[str]
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
        if alias.alias in replicas and client.django:
            # The router's health check of each replica runs on a connection of its own, one
            # per replica alias per process, outside the threads' connections and any pool.
            contributions.append(
                Contribution(
                    server=alias.server,
                    alias=alias.alias,
                    client=f"{client.name} (replica check)",
                    processes=client.processes,
                    per_process=1,
                    how=f"{client.processes_text} x 1 check connection",
                )
            )
    return contributions


def _per_process(alias: AliasConnections, client: Client) -> tuple[int, str]:
    concurrency = plural(client.concurrency, client.unit)
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
                f"{where} has {plural(self.concurrency, 'thread')} but a pool with min_size "
                f"{self.pool.min_size}, so it holds {plural(self.idle, 'connection')} it can "
                "never use: lower min_size."
            )
        return (
            f"{where} has {plural(self.concurrency, 'thread')} but a pool with max_size "
            f"{self.pool.max_size}, so {plural(self.waiting, 'thread')} can wait for a "
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
    arguments = {**(conf.DEPLOYMENT or Deployment()).budget_arguments(), **overrides}
    if arguments.get("asgi") is None:
        arguments["asgi"] = settings_look_asgi()
    return connection_budget(**arguments)


def settings_look_asgi() -> bool:
    """A project that names an ASGI application and no WSGI one is served by ASGI."""
    return bool(getattr(settings, "ASGI_APPLICATION", None)) and not getattr(
        settings, "WSGI_APPLICATION", None
    )
