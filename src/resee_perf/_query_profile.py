"""What one request (or one ``with`` block) ran against the databases, recorded by an
``execute_wrapper`` into the profile held in a context variable.

The context variable is what makes the attribution right: each thread, and each asyncio task,
has its own context, and asgiref's ``sync_to_async``/``async_to_sync`` carry it over to the
thread that runs a sync view or an ORM call for an async one. A connection is shared by no two
requests at once, but a profile is found through the context, never through the connection.

Policy (settings, logs, metrics) lives in :mod:`resee_perf.profiling`; this module only
counts, within fixed bounds: a request that runs 100,000 queries keeps at most ``max_shapes``
shapes, whatever their number.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import request_started
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from resee_perf._call_sites import call_site
from resee_perf._sql_shapes import is_read, shape


@dataclass(slots=True)
class ShapeStats:
    """One SQL shape run from one call site."""

    shape: str
    call_site: str
    read: bool
    count: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class SlowQuery:
    alias: str
    shape: str
    call_site: str
    seconds: float


@dataclass(slots=True)
class AliasStats:
    queries: int = 0
    seconds: float = 0.0


NPlusOneHook = Callable[["QueryProfile", ShapeStats], None]
SlowHook = Callable[["QueryProfile", SlowQuery, Any, Any], None]


@dataclass(slots=True, eq=False)
class QueryProfile:
    """Counts of one request or block. ``parent``: the enclosing profile (a test's
    ``assert_max_queries`` around a request), which sees the same queries."""

    threshold: int
    max_shapes: int
    is_allowed: Callable[[ShapeStats], bool]
    on_nplusone: NPlusOneHook | None = None
    slow_seconds: float | None = None
    on_slow: SlowHook | None = None
    parent: QueryProfile | None = None
    started: float = field(default_factory=time.perf_counter)
    queries: int = 0
    db_seconds: float = 0.0
    cache_seconds: float = 0.0
    aliases: dict[str, AliasStats] = field(default_factory=dict)
    shapes: dict[tuple[str, str], ShapeStats] = field(default_factory=dict)
    dropped: int = 0
    """Queries counted but not recorded by shape, past ``max_shapes``."""
    nplusone: list[ShapeStats] = field(default_factory=list)
    slow: int = 0
    paused: bool = False
    """Set while the profiler runs a query of its own (``EXPLAIN``)."""
    context: Mapping[str, Any] = field(default_factory=dict)
    task: Any = None
    """The asyncio task of an async request: where the call sites of its awaited ORM calls
    are (see :func:`resee_perf._call_sites.call_site`)."""

    def record(self, alias: str, shape_text: str, seconds: float, site: str) -> None:
        self.queries += 1
        self.db_seconds += seconds
        per_alias = self.aliases.get(alias)
        if per_alias is None:
            per_alias = self.aliases[alias] = AliasStats()
        per_alias.queries += 1
        per_alias.seconds += seconds
        key = (shape_text, site)
        stats = self.shapes.get(key)
        if stats is None:
            if len(self.shapes) >= self.max_shapes:
                self.dropped += 1
                return
            stats = self.shapes[key] = ShapeStats(shape_text, site, is_read(shape_text))
        stats.count += 1
        stats.seconds += seconds
        if stats.count == self.threshold and stats.read and not self.is_allowed(stats):
            self.nplusone.append(stats)
            if self.on_nplusone is not None:
                self.on_nplusone(self, stats)

    def record_slow(self, alias: str, shape_text: str, seconds: float, site: str) -> SlowQuery:
        self.slow += 1
        return SlowQuery(alias, shape_text, site, seconds)

    def repeated(self) -> list[ShapeStats]:
        """Shapes run more than once, the most frequent first."""
        return sorted(
            (stats for stats in self.shapes.values() if stats.count > 1),
            key=lambda stats: stats.count,
            reverse=True,
        )


current: ContextVar[QueryProfile | None] = ContextVar("resee_perf_query_profile", default=None)


def add_cache_time(seconds: float) -> None:
    """Called by ``cache_aside`` with the time of each cache round trip."""
    profile = current.get()
    while profile is not None:
        profile.cache_seconds += seconds
        profile = profile.parent


def execute_wrapper(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Installed first on every connection: a pass-through unless a profile is active."""
    profile = current.get()
    if profile is None or profile.paused:
        return execute(sql, params, many, context)
    started = time.perf_counter()
    try:
        result = execute(sql, params, many, context)
    except BaseException:
        # Counted all the same; but the query's own error is the one the caller must see,
        # not an N+1 raised by the hook (the profile still lists it).
        with contextlib.suppress(Exception):
            _record(profile, context, sql, params, time.perf_counter() - started)
        raise
    _record(profile, context, sql, params, time.perf_counter() - started)
    return result


def _record(
    profile: QueryProfile, context: dict[str, Any], sql: Any, params: Any, seconds: float
) -> None:
    connection = context["connection"]
    alias: str = connection.alias
    shape_text = shape(sql if isinstance(sql, str) else str(sql))
    # Start above _record and execute_wrapper: the rest are Django's frames or the caller's.
    site = call_site(sys._getframe(2), profile.task)
    slow_seconds = profile.slow_seconds
    is_slow = slow_seconds is not None and seconds >= slow_seconds
    each: QueryProfile | None = profile
    while each is not None:
        each.record(alias, shape_text, seconds, site)
        each = each.parent
    if is_slow and profile.on_slow is not None:
        slow = profile.record_slow(alias, shape_text, seconds, site)
        profile.on_slow(profile, slow, connection, (sql, params))


# -- Installing the wrapper --------------------------------------------------------------------
#
# ``connection.execute_wrapper()`` is a context manager on one connection object of one thread.
# Entered per request it would miss the thread an ASGI server runs a sync view in (and pay its
# cost on every alias of every request), so the wrapper is put on each connection object once,
# for good, and does nothing unless a profile is active in the caller's context. It goes first
# in the list: Django's context manager pops the last wrapper on exit, which stays the one it
# pushed even if ours was added meanwhile.

_installed = False
# Threads whose existing connections have been wrapped: after that, connection_created covers
# the connections they make. Checked on every request, so a thread-local flag, not a scan.
_scanned = threading.local()


def install() -> None:
    """Put the wrapper on the connections of this thread now, and on every connection any
    thread opens, or had open before its first request, from now on. Idempotent."""
    global _installed
    if not _installed:
        connection_created.connect(_on_connection_created, dispatch_uid=__name__)
        # Sent in the thread that runs the request's sync code (ASGI included): it wraps the
        # connections that thread opened before install() (a test's database connection).
        request_started.connect(_on_request_started, dispatch_uid=__name__)
        _installed = True
        wrap_connections()


def wrap_connections() -> None:
    _scanned.done = True
    for connection in connections.all(initialized_only=True):
        _wrap(connection)


def _wrap(connection: BaseDatabaseWrapper) -> None:
    if execute_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, execute_wrapper)


def _on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    _wrap(connection)


def _on_request_started(**kwargs: Any) -> None:
    if not getattr(_scanned, "done", False):
        wrap_connections()
