"""What each process knows about each replica: is it up, how far has it replayed, how far
behind is it. The router asks on every read, so the answer comes from memory; the database is
asked at most once per replica per ``REPLICA_CHECK_INTERVAL`` (``REPLICA_RETRY_SECONDS`` once a
replica has failed), on a connection of its own.

The check runs on a thread of its own, started by whichever request thread first finds the
answer too old; that thread waits for it at most ``REPLICA_CHECK_TIMEOUT`` and then marks the
replica down. The bound has to be on the client: a hung server (stopped, swapping, a frozen
VM) enforces no ``statement_timeout``, and its kernel keeps ACKing, so TCP keepalives and
``tcp_user_timeout`` never fire either. Other threads never wait for a check: while one is in
flight they use the last known status.

What one check asks and concludes (the query, the lag arithmetic) is in
:mod:`resee_perf._replica_check`; WAL positions in :mod:`resee_perf._lsn`, re-exported here
for the router, the middleware and the cache.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend

from resee_perf._lsn import format_lsn, parse_lsn, primary_lsn, primary_position_for_check
from resee_perf._replica_check import (
    PrimaryHistory,
    ReplicaStatus,
    check_connection_options,
    read_status,
)
from resee_perf._validators import non_negative_number
from resee_perf.conf import SETTING_NAME, Snapshot, derived
from resee_perf.metrics import report_replica

__all__ = [
    "ReplicaStatus",
    "RoutingSettings",
    "forget",
    "format_lsn",
    "generation",
    "mark_down",
    "parse_lsn",
    "primary_lsn",
    "routing_settings",
    "status",
    "weight_error",
]

# Process-wide and never reset, so that no generation is ever handed out twice.
_generations = itertools.count(1)


@dataclass(frozen=True)
class RoutingSettings:
    """The settings a routing decision reads, under the router's names: a view of
    :func:`resee_perf.conf.snapshot`, built once per snapshot (:func:`resee_perf.conf.derived`)
    and dropped with it when the settings change."""

    replicas: tuple[str, ...]
    weights: Mapping[str, float]
    """Every alias of ``replicas`` with its weight (1 unless ``REPLICA_WEIGHTS`` says)."""
    in_rotation: tuple[str, ...]
    """The replicas that get reads: those of positive weight."""
    max_lag: float
    sticky_seconds: float
    check_interval: float
    retry_seconds: float
    check_timeout: float

    @property
    def write_memory(self) -> float:
        """How long a write is remembered (the cookie, the positions of invalidated tags): a
        replica within ``REPLICA_MAX_LAG_SECONDS`` has replayed it by then, and
        ``STICKY_SECONDS`` is the window where its position is unknown."""
        return max(self.sticky_seconds, self.max_lag)


def weight_error(alias: str, value: Any) -> str | None:
    """What is wrong with ``REPLICA_WEIGHTS[alias]``, or None (resee_perf.E041)."""
    if non_negative_number(value):
        return None
    return (
        f"{SETTING_NAME}['REPLICA_WEIGHTS'][{alias!r}] should be a non-negative number, "
        f"not {value!r}."
    )


def _weights(settings: Snapshot) -> dict[str, float]:
    given = settings.REPLICA_WEIGHTS
    for alias, value in given.items():
        if problem := weight_error(alias, value):
            raise ImproperlyConfigured(problem)
    return {alias: float(given.get(alias, 1.0)) for alias in settings.REPLICAS}


def _routing_view(settings: Snapshot) -> RoutingSettings:
    weights = _weights(settings)
    return RoutingSettings(
        replicas=settings.REPLICAS,
        weights=weights,
        in_rotation=tuple(alias for alias in settings.REPLICAS if weights[alias] > 0),
        max_lag=settings.REPLICA_MAX_LAG_SECONDS,
        sticky_seconds=settings.STICKY_SECONDS,
        check_interval=settings.REPLICA_CHECK_INTERVAL,
        retry_seconds=settings.REPLICA_RETRY_SECONDS,
        check_timeout=settings.REPLICA_CHECK_TIMEOUT,
    )


def routing_settings() -> RoutingSettings:
    return derived(_routing_view)


class _Replica:
    """One replica's last status, the lock that lets one check at a time run, and the private
    connection those checks use."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.lock = threading.Lock()
        """Held from the start of a check to its end, by the check's own thread at the end: a
        check stuck on a hung replica keeps it, and no second check piles up behind it."""
        self.status: ReplicaStatus | None = None
        self.generation = next(_generations)
        """Changes on each failure (and when the statuses are forgotten): Django connections
        opened under an older generation may be broken, and are opened afresh."""
        self._wrapper: BaseDatabaseWrapper | None = None
        self._pid = 0
        self._abandoned = False
        """Set when the running check overran its deadline: its thread then drops its
        connection when (if ever) the server answers."""
        self._forgotten = False
        """Set by :func:`forget`: a check still running reports nothing, and closes."""
        self.history = PrimaryHistory()

    def fresh(self, status: ReplicaStatus | None, now: float) -> bool:
        if status is None:
            return False
        settings = routing_settings()
        interval = settings.check_interval if status.up else settings.retry_seconds
        return now - status.checked_at < interval

    def check_within_deadline(self) -> ReplicaStatus:
        """Check on a thread of its own and wait for it at most ``REPLICA_CHECK_TIMEOUT``;
        past that the replica is down. Called holding ``self.lock``, which passes to the check's
        thread: it releases it when the check ends, however late."""
        done = threading.Event()
        try:
            timeout = routing_settings().check_timeout
            # The primary's position, read by the calling thread on its own Django connection
            # (a request's, counted in its connection budget) once per check, never per read.
            primary = primary_position_for_check()
            if primary is not None:
                self.history.note(time.monotonic(), primary)
            self._abandoned = False
            thread = threading.Thread(
                target=self._run_check,
                args=(done,),
                name=f"resee_perf replica check {self.alias}",
                daemon=True,
            )
            thread.start()
        except BaseException:
            # No check thread to release it: a lock kept here would stop the checks for good.
            self.lock.release()
            raise
        if done.wait(timeout):
            current = self.status
            return current if current is not None else self.fail()
        # The server did not answer in time: stopped, overloaded, or the network is gone. The
        # check's thread keeps its connection (and the lock) until the server answers.
        self._abandoned = True
        return self.fail()

    def _run_check(self, done: threading.Event) -> None:
        try:
            self.check()
        finally:
            if self._abandoned or self._forgotten:
                self._drop_connection()
            done.set()
            self.lock.release()

    def check(self) -> ReplicaStatus:
        try:
            wrapper = self._connection()
            with wrapper.wrap_database_errors:
                raw = wrapper.connection
                assert raw is not None
                cursor = raw.cursor()
                try:
                    status = read_status(wrapper, cursor, self.history)
                finally:
                    cursor.close()
        except DatabaseError:
            # Down, refusing connections, timing out: "no reads here for now", never an
            # error for the caller.
            self._drop_connection()
            return self.fail()
        if self._forgotten:
            return status
        self.status = status
        report_replica(self.alias, up=True, lag=status.lag)
        return status

    def fail(self) -> ReplicaStatus:
        status = ReplicaStatus(up=False, replay_lsn=None, lag=None, checked_at=time.monotonic())
        if self.status is None or self.status.up:
            self.generation = next(_generations)
        if self._forgotten:
            return status
        self.status = status
        report_replica(self.alias, up=False, lag=None)
        return status

    def _connection(self) -> BaseDatabaseWrapper:
        if self._wrapper is not None and self._pid != os.getpid():
            # Inherited through fork (gunicorn --preload): the socket is the parent's. Forget
            # it without closing, which would end the parent's session.
            self._wrapper = None
        if self._wrapper is None or self._wrapper.connection is None:
            self._wrapper = self._new_wrapper()
            self._pid = os.getpid()
            self._wrapper.ensure_connection()
            if self._wrapper.vendor == "postgresql":
                # The server's own bound, for a slow (not hung) replica: the check's thread
                # then ends, and its connection stays usable.
                timeout_ms = max(1, int(routing_settings().check_timeout * 1000))
                raw = self._wrapper.connection
                assert raw is not None
                with raw.cursor() as cursor:
                    cursor.execute(f"SET statement_timeout = {timeout_ms}")
        return self._wrapper

    def _new_wrapper(self) -> BaseDatabaseWrapper:
        # A connection of our own, not Django's per-thread one: the checks run on threads that
        # come and go, and must not touch a request's transactions.
        settings_dict = copy.deepcopy(connections.settings[self.alias])
        options = settings_dict.setdefault("OPTIONS", {})
        options.pop("pool", None)
        if "postgresql" in settings_dict["ENGINE"]:
            options.update(check_connection_options(routing_settings().check_timeout))
        wrapper: BaseDatabaseWrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(
            settings_dict, self.alias
        )
        # Used under self.lock by whichever check thread runs next.
        wrapper.inc_thread_sharing()
        return wrapper

    def _drop_connection(self) -> None:
        wrapper, self._wrapper = self._wrapper, None
        if wrapper is not None and self._pid == os.getpid():
            with contextlib.suppress(DatabaseError):
                wrapper.close()

    def close(self) -> None:
        self._forgotten = True
        # A check stuck on a hung replica holds the lock: its thread closes the connection
        # when it ends (_run_check), and nobody waits for it here.
        if self.lock.acquire(blocking=False):
            try:
                self._drop_connection()
            finally:
                self.lock.release()


# Process-wide on purpose: one status and one check connection per replica per process is
# what bounds the checks to one query per interval, whatever the number of threads.
_replicas: dict[str, _Replica] = {}
_replicas_lock = threading.Lock()


def _replica(alias: str) -> _Replica:
    replica = _replicas.get(alias)
    if replica is None:
        with _replicas_lock:
            replica = _replicas.setdefault(alias, _Replica(alias))
    return replica


# Replicas inherited through fork (gunicorn --preload), kept alive but never used: a check in
# flight in the parent holds its replica's lock in the child for good, and freeing the
# parent's connection would end its session.
_inherited: list[dict[str, _Replica]] = []


def _start_afresh_in_child() -> None:
    global _replicas_lock
    _inherited.append(dict(_replicas))
    _replicas.clear()
    _replicas_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX only; elsewhere nothing forks
    os.register_at_fork(after_in_child=_start_afresh_in_child)


def _unknown() -> ReplicaStatus:
    return ReplicaStatus(up=False, replay_lsn=None, lag=None, checked_at=time.monotonic())


def status(alias: str) -> ReplicaStatus:
    """The replica's status, at most one check interval old (plus the check's deadline).

    A thread that finds it old starts a check and waits for it at most
    ``REPLICA_CHECK_TIMEOUT``; the others meanwhile use the previous status (WAL positions
    only grow, so an old position only ever sends a read to the primary), or, before the
    first check has answered, treat the replica as unusable. Nobody waits for another
    thread's check.
    """
    replica = _replica(alias)
    current = replica.status
    if replica.fresh(current, time.monotonic()):
        assert current is not None
        return current
    if not replica.lock.acquire(blocking=False):
        return current if current is not None else _unknown()
    handed_over = False
    try:
        current = replica.status
        if replica.fresh(current, time.monotonic()):
            assert current is not None
            return current
        handed_over = True
        return replica.check_within_deadline()
    finally:
        if not handed_over:
            replica.lock.release()


def generation(alias: str) -> int:
    return _replica(alias).generation


def mark_down(alias: str) -> None:
    """A connection to the replica failed: no reads there until it passes a check again.

    Without the check's lock: a check stuck on the same hung replica holds it."""
    _replica(alias).fail()


def forget() -> None:
    """Drop every status and check connection (tests; settings that change the replicas)."""
    with _replicas_lock:
        replicas = list(_replicas.values())
        _replicas.clear()
    for replica in replicas:
        replica.close()
