"""What each process knows about each replica: is it up, how far has it replayed, how far
behind is it. The router asks on every read, so the answer comes from memory; the database is
asked at most once per replica per ``REPLICA_CHECK_INTERVAL`` (``REPLICA_RETRY_SECONDS`` once a
replica has failed), by whichever thread first finds the answer too old, on a connection of
its own with short timeouts.

LSNs are PostgreSQL's WAL positions (``pg_lsn``) as integers, so that "has this replica
replayed that write" is one integer comparison.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend
from django.dispatch import receiver

from resee_perf.conf import SETTING_NAME, conf
from resee_perf.metrics import report_replica

# Lag is 0 while the replica has replayed everything it received: the age of the last
# replayed transaction would otherwise grow on an idle primary and look like lag.
_CHECK_SQL = """
SELECT pg_is_in_recovery(),
       pg_last_wal_replay_lsn()::text,
       CASE WHEN NOT pg_is_in_recovery()
              OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8
"""


# Process-wide and never reset, so that no generation is ever handed out twice.
_generations = itertools.count(1)


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> an integer that orders like the WAL position."""
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not a pg_lsn: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def primary_lsn(alias: str = DEFAULT_DB_ALIAS) -> int | None:
    """The primary's WAL position now, through Django's connection of this thread; None where
    unknown (not PostgreSQL, inside a transaction that has not committed, or an error).

    ``pg_current_wal_insert_lsn()`` rather than ``pg_current_wal_lsn()``: with
    ``synchronous_commit = off`` a commit can return before its record is written, and the
    write position would then lie before it. The insert position never does (GitLab's load
    balancer reads the same function).
    """
    connection = connections[alias]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            row = cursor.fetchone()
    except DatabaseError:
        return None
    return parse_lsn(row[0]) if row and row[0] else None


@dataclass(frozen=True)
class RoutingSettings:
    """The settings a routing decision reads, as one snapshot: read on every query, they are
    looked up once and forgotten when ``RESEE_PERF`` changes (``setting_changed``), instead of
    validated from the settings dict four times per query."""

    replicas: tuple[str, ...]
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


_settings: RoutingSettings | None = None


def routing_settings() -> RoutingSettings:
    global _settings
    current = _settings
    if current is None:
        current = _settings = RoutingSettings(
            replicas=tuple(conf.REPLICAS),
            max_lag=conf.REPLICA_MAX_LAG_SECONDS,
            sticky_seconds=conf.STICKY_SECONDS,
            check_interval=conf.REPLICA_CHECK_INTERVAL,
            retry_seconds=conf.REPLICA_RETRY_SECONDS,
            check_timeout=conf.REPLICA_CHECK_TIMEOUT,
        )
    return current


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    global _settings
    if setting == SETTING_NAME:
        _settings = None


@dataclass(frozen=True)
class ReplicaStatus:
    up: bool
    replay_lsn: int | None
    """None where unknown: not PostgreSQL, or not in recovery (then its LSNs are not ours)."""
    lag: float | None
    """Seconds; None where unknown."""
    checked_at: float
    """time.monotonic() of the check."""


class _Replica:
    """One replica's last status, the lock that lets one thread at a time re-check it, and the
    private connection those checks use."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.lock = threading.Lock()
        self.status: ReplicaStatus | None = None
        self.generation = next(_generations)
        """Changes on each failure (and when the statuses are forgotten): Django connections
        opened under an older generation may be broken, and are opened afresh."""
        self._wrapper: BaseDatabaseWrapper | None = None
        self._pid = 0

    def fresh(self, status: ReplicaStatus | None, now: float) -> bool:
        if status is None:
            return False
        settings = routing_settings()
        interval = settings.check_interval if status.up else settings.retry_seconds
        return now - status.checked_at < interval

    def check(self) -> ReplicaStatus:
        try:
            wrapper = self._connection()
            with wrapper.wrap_database_errors:
                raw = wrapper.connection
                assert raw is not None
                cursor = raw.cursor()
                try:
                    status = self._read(wrapper, cursor)
                finally:
                    cursor.close()
        except DatabaseError:
            # Down, refusing connections, timing out: "no reads here for now", never an
            # error for the caller.
            self._drop_connection()
            return self.fail()
        self.status = status
        report_replica(self.alias, up=True, lag=status.lag)
        return status

    def fail(self) -> ReplicaStatus:
        status = ReplicaStatus(up=False, replay_lsn=None, lag=None, checked_at=time.monotonic())
        if self.status is None or self.status.up:
            self.generation = next(_generations)
        self.status = status
        report_replica(self.alias, up=False, lag=None)
        return status

    def _read(self, wrapper: BaseDatabaseWrapper, cursor: Any) -> ReplicaStatus:
        now = time.monotonic()
        if wrapper.vendor != "postgresql":
            cursor.execute("SELECT 1")
            cursor.fetchone()
            return ReplicaStatus(up=True, replay_lsn=None, lag=None, checked_at=now)
        cursor.execute(_CHECK_SQL)
        in_recovery, replay_lsn, lag = cursor.fetchone()
        lsn = parse_lsn(replay_lsn) if in_recovery and replay_lsn else None
        return ReplicaStatus(up=True, replay_lsn=lsn, lag=float(lag), checked_at=now)

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
                timeout_ms = max(1, int(routing_settings().check_timeout * 1000))
                raw = self._wrapper.connection
                assert raw is not None
                with raw.cursor() as cursor:
                    cursor.execute(f"SET statement_timeout = {timeout_ms}")
        return self._wrapper

    def _new_wrapper(self) -> BaseDatabaseWrapper:
        # A connection of our own, not Django's per-thread one: the checks run in whichever
        # thread finds the status old, and must not touch that thread's transactions.
        settings_dict = copy.deepcopy(connections.settings[self.alias])
        options = settings_dict.setdefault("OPTIONS", {})
        options.pop("pool", None)
        if "postgresql" in settings_dict["ENGINE"]:
            # libpq's connect_timeout is whole seconds, 2 at least.
            options["connect_timeout"] = max(2, math.ceil(routing_settings().check_timeout))
        wrapper: BaseDatabaseWrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(
            settings_dict, self.alias
        )
        # Used under self.lock by whichever thread checks next.
        wrapper.inc_thread_sharing()
        return wrapper

    def _drop_connection(self) -> None:
        wrapper, self._wrapper = self._wrapper, None
        if wrapper is not None and self._pid == os.getpid():
            with contextlib.suppress(DatabaseError):
                wrapper.close()

    def close(self) -> None:
        with self.lock:
            self._drop_connection()


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


def status(alias: str) -> ReplicaStatus:
    """The replica's status, at most one check interval old.

    A thread that finds it old re-checks it; the others meanwhile use the previous status
    (WAL positions only grow, so an old position only ever sends a read to the primary).
    Only the very first check of a replica makes the other threads wait for it.
    """
    replica = _replica(alias)
    current = replica.status
    if replica.fresh(current, time.monotonic()):
        assert current is not None
        return current
    if not replica.lock.acquire(blocking=current is None):
        assert current is not None
        return current
    try:
        current = replica.status
        if replica.fresh(current, time.monotonic()):
            assert current is not None
            return current
        return replica.check()
    finally:
        replica.lock.release()


def generation(alias: str) -> int:
    return _replica(alias).generation


def mark_down(alias: str) -> None:
    """A connection to the replica failed: no reads there until it passes a check again."""
    replica = _replica(alias)
    with replica.lock:
        replica.fail()


def forget() -> None:
    """Drop every status and check connection (tests; settings that change the replicas)."""
    with _replicas_lock:
        replicas = list(_replicas.values())
        _replicas.clear()
    for replica in replicas:
        replica.close()
