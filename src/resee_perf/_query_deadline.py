"""A client-side deadline for queries on replica connections.

A query already sent on an open connection to a replica that hangs (a stopped process, a
frozen VM) waits for as long as the server is stopped: its kernel keeps ACKing, so TCP
keepalives and ``tcp_user_timeout`` never fire, and ``statement_timeout`` is enforced by the
very server that no longer runs. With persistent connections every thread that had one open
would hang with it. So each query on a replica alias registers a deadline with one watchdog
thread; past it the watchdog shuts the connection's socket down (the blocked driver call then
fails at once with ``OperationalError``), marks the replica down, and counts it. The same
wrapper runs a read whose connection failed so again on the primary
(:mod:`resee_perf._replica_retry`, ``REPLICA_RETRY_READS``).

Covered: queries through Django's cursors on ``RESEE_PERF['REPLICAS']`` aliases (an execute
wrapper installed on each of their connections, bound ``REPLICA_QUERY_TIMEOUT``), and Django's
``CONN_HEALTH_CHECKS`` ping of a reused connection, which the router runs through
:func:`health_check` (bound ``REPLICA_CHECK_TIMEOUT``: a ``SELECT 1`` answers in
milliseconds on any live server). Not covered: fetches of server-side cursors
(``QuerySet.iterator()``), commits and rollbacks, and what Django runs on a new connection.

psycopg 3 and psycopg2 alike: both wait for the server in a poll on the socket, which a
``shutdown()`` ends.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.db import DatabaseError, OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import receiver

from resee_perf import _replica_retry, _replicas
from resee_perf.conf import SETTING_NAME, conf
from resee_perf.metrics import report_replica_query_timeout

logger = logging.getLogger("resee_perf.routers")


@dataclass(frozen=True)
class _Settings:
    replicas: frozenset[str]
    query_timeout: float | None
    check_timeout: float
    retry_reads: bool


_settings: _Settings | None = None


def _current() -> _Settings:
    # Read on every replica query: looked up once and forgotten when RESEE_PERF changes.
    global _settings
    current = _settings
    if current is None:
        timeout = conf.REPLICA_QUERY_TIMEOUT
        current = _settings = _Settings(
            replicas=frozenset(conf.REPLICAS),
            query_timeout=None if timeout is None else float(timeout),
            check_timeout=conf.REPLICA_CHECK_TIMEOUT,
            retry_reads=conf.REPLICA_RETRY_READS,
        )
    return current


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    global _settings
    if setting == SETTING_NAME:
        _settings = None


class _Slot:
    """The one query in flight on one Django connection (a connection runs one at a time)."""

    __slots__ = ("alias", "deadline", "fired", "queued_in", "raw")

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.deadline: float | None = None
        self.raw: Any = None
        """The driver's connection while a query runs: its socket is what the watchdog shuts."""
        self.fired = False
        self.queued_in: _Watchdog | None = None
        """The watchdog whose heap holds this slot: at most one entry per slot, so the heap
        stays as small as the number of replica connections, however many queries run."""


def _shut_down(raw: Any) -> None:
    """End the blocked driver call: its poll on the socket sees the connection closed."""
    try:
        pgconn = getattr(raw, "pgconn", None)
        fd = pgconn.socket if pgconn is not None else raw.fileno()  # psycopg 3 / psycopg2
        # A duplicate, shut down and closed: the driver keeps its own descriptor, and closes
        # it when Django discards the connection.
        sock = socket.socket(fileno=os.dup(fd))
    except Exception:
        return  # already closed: nothing waits on it
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class _Watchdog:
    """A heap of deadlines and the thread that enforces them.

    Process-wide on purpose: one thread for every replica connection of every request thread,
    rather than a timer per query (a thread start per query would cost more than the query).
    """

    def __init__(self) -> None:
        # arm() and disarm() take the bare lock (cheaper than entering the condition).
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Slot]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, slot: _Slot, raw: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._lock:
            slot.raw = raw
            slot.deadline = deadline
            slot.fired = False
            if slot.queued_in is not self:
                # Otherwise the slot is in the heap under an earlier deadline already, and the
                # watchdog moves it to this one when that passes.
                slot.queued_in = self
                heapq.heappush(self._heap, (deadline, next(self._order), slot))
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="resee_perf replica query deadline", daemon=True
                    )
                    self._thread.start()
                elif self._heap[0][2] is slot:
                    self._condition.notify()

    def disarm(self, slot: _Slot) -> bool:
        """The query has ended; True if the watchdog had shut its connection down."""
        with self._lock:
            fired = slot.fired
            slot.deadline = None
            slot.raw = None
            slot.fired = False
        return fired

    def _run(self) -> None:
        condition = self._condition
        with condition:
            while True:
                fired = self._expire(time.monotonic())
                if fired:
                    condition.release()
                    try:
                        for alias in fired:
                            logger.warning(
                                "A query on the replica %r outran its deadline: its connection "
                                "was shut down and the replica marked down.",
                                alias,
                            )
                            report_replica_query_timeout(alias)
                    except Exception:
                        # The watchdog must outlive a broken metrics or logging setup.
                        logger.exception("Reporting a replica query deadline failed")
                    finally:
                        condition.acquire()
                    continue
                condition.wait(self._heap[0][0] - time.monotonic() if self._heap else None)

    def _expire(self, now: float) -> list[str]:
        """Shut down the connections whose query is past its deadline, holding the lock so
        that the query cannot end, and its connection close, meanwhile. The replica is marked
        down first: the failed query's caller must find it down when it reads again."""
        fired: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, slot = heapq.heappop(heap)
            deadline = slot.deadline
            if deadline is None:
                slot.queued_in = None
            elif deadline > now:
                heapq.heappush(heap, (deadline, next(self._order), slot))
            else:
                slot.queued_in = None
                slot.deadline = None
                slot.fired = True
                try:
                    _replicas.mark_down(slot.alias)
                except Exception:
                    # Still shut down: a query left hanging is the worse failure.
                    logger.exception("Marking the replica %r down failed", slot.alias)
                _shut_down(slot.raw)
                fired.append(slot.alias)
        return fired


_watchdog = _Watchdog()


def _start_afresh_in_child() -> None:
    # The parent's thread does not exist in a forked child (gunicorn --preload).
    global _watchdog
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):  # POSIX only; elsewhere nothing forks
    os.register_at_fork(after_in_child=_start_afresh_in_child)


class QueryDeadline:
    """The execute wrapper installed on each replica connection (``execute_wrappers``)."""

    def __init__(self, alias: str) -> None:
        self.slot = _Slot(alias)

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: Any,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        current = _current()
        seconds = current.query_timeout
        # Installed for good: the alias may have left REPLICAS since (override_settings).
        if self.slot.alias not in current.replicas:
            return execute(sql, params, many, context)
        try:
            if seconds is None:
                return execute(sql, params, many, context)
            return self.run(context["connection"], seconds, execute, sql, params, many, context)
        except DatabaseError as error:
            if not current.retry_reads or not _replica_retry.retryable(error, sql, many, context):
                raise
            # Should the primary fail too, its error names the replica's as its context.
            return _replica_retry.run_on_primary(sql, params, context)

    def run(
        self, connection: BaseDatabaseWrapper, seconds: float, call: Callable[..., Any], *args: Any
    ) -> Any:
        watchdog = _watchdog
        watchdog.arm(self.slot, connection.connection, seconds)
        try:
            result = call(*args)
        except DatabaseError as error:
            if watchdog.disarm(self.slot):
                raise OperationalError(
                    f"The replica {connection.alias!r} did not answer within {seconds:g} s "
                    f"({SETTING_NAME}['REPLICA_QUERY_TIMEOUT']); it is marked down and the "
                    "next reads go elsewhere."
                ) from error
            raise
        except BaseException:
            watchdog.disarm(self.slot)
            raise
        if watchdog.disarm(self.slot):
            # The answer came just as the deadline passed: the query stands, the connection
            # is gone. Django discards it at the end of the request.
            connection.errors_occurred = True
        return result


def _installed(connection: BaseDatabaseWrapper) -> QueryDeadline | None:
    for wrapper in connection.execute_wrappers:
        if isinstance(wrapper, QueryDeadline):
            return wrapper
    return None


def install(connection: BaseDatabaseWrapper) -> QueryDeadline | None:
    """Put the deadline on a replica alias's connection, once; None for other aliases."""
    if connection.alias not in _current().replicas:
        return None
    deadline = _installed(connection)
    if deadline is None:
        deadline = QueryDeadline(connection.alias)
        connection.execute_wrappers.append(deadline)
    return deadline


@receiver(connection_created)
def _on_connection_created(*, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    install(connection)


def health_check(connection: BaseDatabaseWrapper) -> bool:
    """Django's ``CONN_HEALTH_CHECKS`` ping of a reused replica connection, now and under
    ``REPLICA_CHECK_TIMEOUT``; False when the connection failed it (it is then closed, and if
    the deadline passed, the replica is marked down).

    Django would run it at the first cursor of the request, after the router has chosen the
    replica: a replica that fails it there fails the query. Run by the router, a failure only
    sends the read elsewhere.
    """
    # Attributes django-stubs does not declare (Django 4.1+).
    enabled = getattr(connection, "health_check_enabled", False)
    if (
        connection.connection is None
        or not enabled
        or getattr(connection, "health_check_done", True)
    ):
        return connection.connection is not None
    deadline = install(connection)
    if deadline is None:
        connection.close_if_health_check_failed()
        return connection.connection is not None
    fired = False
    watchdog = _watchdog
    watchdog.arm(deadline.slot, connection.connection, _current().check_timeout)
    try:
        connection.close_if_health_check_failed()
    finally:
        fired = watchdog.disarm(deadline.slot)
    if fired and connection.connection is not None:
        with contextlib.suppress(DatabaseError):
            connection.close()
    return connection.connection is not None
