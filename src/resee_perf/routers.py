"""StickyReplicaRouter: reads on replicas, writes on the primary, and read-your-writes.

Three rules decide where a read goes (docs/routing.md has the why of each):

1. Within one request or task (a *routing scope*), every read after the first write goes to
   the primary, and so does every read inside ``transaction.atomic`` on the primary or inside
   :func:`use_primary`.
2. Across requests, a client that wrote reads from a replica only once that replica has
   replayed the client's write: :class:`~resee_perf.middleware.StickyReadsMiddleware` keeps the
   primary's WAL position after the write in a signed cookie and opens each request's scope
   with it. Where the position is unknown (not PostgreSQL), the client reads from the primary
   for ``STICKY_SECONDS`` instead.
3. A replica that is down or lags more than ``REPLICA_MAX_LAG_SECONDS`` gets no reads; with no
   usable replica every read goes to the primary.
4. Among the usable replicas that have replayed what the read must see, one is drawn at random
   in proportion to ``REPLICA_WEIGHTS`` (1 each by default), once per scope.

The scope lives in a :class:`contextvars.ContextVar`: each thread, each asyncio task and each
request (the middleware opens one per request) has its own, and ``sync_to_async`` carries it
into the thread that runs the ORM for an async view.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from django.db import DatabaseError, connections
from django.db.models import Model

from resee_perf import _query_deadline, _replicas
from resee_perf._freshness import PRIMARY as PRIMARY
from resee_perf._freshness import (
    WritePosition,
    forced,
    has_replayed,
    use_primary,
)
from resee_perf._freshness import required as required_positions
from resee_perf.metrics import report_route

__all__ = [
    "StickyReplicaRouter",
    "note_write",
    "routing_scope",
    "use_primary",
]

P = ParamSpec("P")
R = TypeVar("R")


class RoutingScope:
    """The routing state of one request or task."""

    __slots__ = ("after", "choice", "seen", "wrote_at")

    def __init__(self, after: WritePosition | None = None) -> None:
        self.after = after
        """The client's last write, from an earlier request: replicas must have replayed it."""
        self.wrote_at: float | None = None
        """When this scope first wrote; from then on it reads from the primary."""
        self.choice: str | None = None
        """The alias this scope reads from, once chosen: one replica per scope, so that a
        request never sees data go back in time between two replicas."""
        self.seen: int | None = None
        """The replay position of the chosen replica when last routed to: should the scope
        have to leave it (down, lagging), the next replica must have replayed as much."""

    @property
    def wrote(self) -> bool:
        return self.wrote_at is not None


_scope: ContextVar[RoutingScope | None] = ContextVar("resee_perf_routing_scope", default=None)


def current_scope() -> RoutingScope:
    """The scope of the running request or task.

    Outside any scope (a management command, a thread of your own) one is created for the
    current context, so a thread that wrote keeps reading from the primary; wrap each task of
    a long-lived worker in :func:`routing_scope` so that this ends with the task.
    """
    scope = _scope.get()
    if scope is None:
        scope = RoutingScope()
        _scope.set(scope)
    return scope


@contextmanager
def routing_scope(after: WritePosition | None = None) -> Iterator[RoutingScope]:
    """A fresh routing state for one request or task (the middleware opens one per request).

    ``after``: a write the reads in this scope must see (from the client's cookie).
    """
    token = _scope.set(RoutingScope(after))
    try:
        scope = _scope.get()
        assert scope is not None
        yield scope
    finally:
        _scope.reset(token)


def _usable(status: _replicas.ReplicaStatus) -> bool:
    max_lag = _replicas.routing_settings().max_lag
    return status.up and (status.lag is None or status.lag <= max_lag)


# The generation of the replica's failures when this thread's Django connection to it opened:
# a connection older than the last failure may be broken (the replica restarted), so it is
# closed and opened afresh rather than used.
_GENERATION_ATTR = "_resee_perf_replica_generation"


def _connected(alias: str) -> bool:
    connection = connections[alias]
    generation = _replicas.generation(alias)
    if connection.connection is not None:
        if getattr(connection, _GENERATION_ATTR, generation) == generation:
            # CONN_HEALTH_CHECKS' ping, here under a deadline rather than at the first cursor:
            # a hung replica that fails it is marked down, and the read goes elsewhere.
            if _query_deadline.health_check(connection):
                return True
            if _replicas.generation(alias) != generation:
                return False
        with suppress(DatabaseError):
            connection.close()
    try:
        connection.ensure_connection()
    except DatabaseError:
        _replicas.mark_down(alias)
        return False
    setattr(connection, _GENERATION_ATTR, generation)
    return True


def _by_weight(aliases: list[str], weights: Mapping[str, float]) -> Iterator[str]:
    """``aliases`` in a random order where each comes first in proportion to its weight: the
    first is the choice, the others the fallbacks should its connection fail."""
    remaining = [(alias, weights.get(alias, 1.0)) for alias in aliases]
    while remaining:
        point = random.random() * sum(weight for _, weight in remaining)
        index = len(remaining) - 1
        for position, (_, weight) in enumerate(remaining):
            point -= weight
            if point < 0:
                index = position
                break
        yield remaining.pop(index)[0]


def _choose_replica(
    scope: RoutingScope, settings: _replicas.RoutingSettings, required: tuple[WritePosition, ...]
) -> tuple[str, str]:
    statuses = {alias: _replicas.status(alias) for alias in settings.in_rotation}
    usable = [alias for alias, status in statuses.items() if _usable(status)]
    if not usable:
        return PRIMARY, "no_replica"
    # Read-your-writes per replica: each is held to the client's write, the recompute's
    # positions, and what the scope has already seen on a replica it had to leave.
    floor = None if scope.seen is None else WritePosition(lsn=scope.seen, written_at=0.0)
    positions = (scope.after, floor, *required)
    caught_up = [alias for alias in usable if has_replayed(statuses[alias], positions)]
    if not caught_up:
        if not required:
            # Stay on the primary for the rest of the scope: a replica that catches up halfway
            # through a request may still lack what the primary has already shown it.
            scope.choice = PRIMARY
        return PRIMARY, "catching_up"
    for alias in _by_weight(caught_up, settings.weights):
        if _connected(alias):
            scope.choice = alias
            scope.seen = statuses[alias].replay_lsn
            return alias, "replica"
    return PRIMARY, "no_replica"


def choose_read_alias() -> tuple[str, str]:
    """Where the next read goes, and why (the ``reason`` label of the routing metric)."""
    if forced():
        return PRIMARY, "forced"
    scope = current_scope()
    if scope.wrote_at is not None:
        return PRIMARY, "pinned"
    settings = _replicas.routing_settings()
    if not settings.in_rotation:
        return PRIMARY, "no_replica"
    # Django routes each query on its own, so without this a read inside atomic() on the
    # primary would go to a replica that cannot see the transaction's uncommitted writes.
    if connections[PRIMARY].in_atomic_block:
        return PRIMARY, "atomic"
    required = required_positions()
    choice = scope.choice
    if choice == PRIMARY:
        return PRIMARY, "catching_up"
    if choice is not None and choice in settings.in_rotation:
        status = _replicas.status(choice)
        if _usable(status) and has_replayed(status, required):
            if status.replay_lsn is not None:
                scope.seen = status.replay_lsn
            return choice, "replica"
    return _choose_replica(scope, settings, required)


def note_write() -> None:
    """Record a write the router did not see (raw SQL on the primary): the rest of the scope
    reads from the primary, and the middleware makes the client's next requests wait for it."""
    scope = current_scope()
    if scope.wrote_at is None:
        scope.wrote_at = time.time()


class StickyReplicaRouter:
    """``DATABASE_ROUTERS = ["resee_perf.routers.StickyReplicaRouter"]``, with
    ``RESEE_PERF["REPLICAS"]`` naming the replicas of ``default`` and
    :class:`~resee_perf.middleware.StickyReadsMiddleware` in ``MIDDLEWARE``."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        alias, reason = choose_read_alias()
        report_route(alias, reason)
        return alias

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        note_write()
        report_route(PRIMARY, "write")
        return PRIMARY

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # Replicas hold the primary's rows, so objects read from any of them may be related.
        aliases = {PRIMARY, *_replicas.routing_settings().replicas}
        if obj1._state.db in aliases and obj2._state.db in aliases:
            return True
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        # Replicas replay the primary's migrations; None elsewhere lets other routers decide.
        if db in _replicas.routing_settings().replicas:
            return False
        return None
