"""What one check of a replica asks and concludes: the query, the status it reads, the lag
arithmetic against the primary's positions, and the options of the check's own connection.
No state of its own: :mod:`resee_perf._replicas` keeps the statuses and runs the checks."""

from __future__ import annotations

import importlib
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from resee_perf._lsn import parse_lsn

# The lag is measured against the primary's position (read just before, see PrimaryHistory.lag), not
# against what the replica itself received: a replica cut off from its primary has replayed
# all it received and would look 0 s behind forever. The WAL receiver's presence (its pid is
# visible without pg_read_all_stats, the other columns are not) only serves where the
# primary's position is unknown.
_CHECK_SQL = """
SELECT pg_is_in_recovery(),
       pg_last_wal_replay_lsn()::text,
       pg_last_wal_receive_lsn()::text,
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE pid IS NOT NULL)
"""

# How many (time, primary position) samples each replica keeps to date its replay position:
# with one sample per check, REPLICA_CHECK_INTERVAL x 64 seconds of history (32 s by default).
# Older samples only make the lag estimate larger, never smaller (see PrimaryHistory.lag).
_POSITION_SAMPLES = 64


@dataclass(frozen=True)
class ReplicaStatus:
    up: bool
    replay_lsn: int | None
    """None where unknown: not PostgreSQL, or not in recovery (then its LSNs are not ours)."""
    lag: float | None
    """Seconds; None where unknown."""
    checked_at: float
    """time.monotonic() of the check."""


class PrimaryHistory:
    """The primary's positions as the checks of one replica saw them, to date what the replica
    has replayed. Not thread-safe: one replica's checks run one at a time (its lock)."""

    def __init__(self) -> None:
        self._positions: deque[tuple[float, int]] = deque(maxlen=_POSITION_SAMPLES)
        """(time.monotonic(), primary position then), the latest time each position was seen."""

    def note(self, at: float, lsn: int) -> None:
        positions = self._positions
        if positions and positions[-1][1] == lsn:
            positions[-1] = (at, lsn)
        else:
            positions.append((at, lsn))

    def lag(
        self, replay: int, receive: int | None, replay_age: float | None, receiving: bool
    ) -> float:
        """Seconds the replica's data is behind the primary's.

        Where it has replayed the primary's last known position: 0 (an idle primary with an
        up-to-date replica is not lagging, however old its last transaction). Behind it, the
        smaller of two upper bounds: the age of the last transaction it replayed (anything
        it lacks was written after that), and the time since the primary was last seen at a
        position it has replayed. A replica cut off from its primary thus lags from the first
        write it misses on, whether or not its WAL receiver runs.
        """
        now = time.monotonic()
        positions = list(self._positions)
        if positions:
            if replay >= positions[-1][1]:
                return 0.0
            bounds = [now - at for at, lsn in positions if lsn <= replay]
            if replay_age is not None:
                bounds.append(replay_age)
            # Nothing in the window and no transaction replayed: behind all the history kept.
            return max(0.0, min(bounds)) if bounds else now - positions[0][0]
        # The primary's position is unknown (not PostgreSQL, or read inside a transaction):
        # only a running WAL receiver that has replayed all it received counts as current.
        if receiving and receive is not None and receive == replay:
            return 0.0
        return max(0.0, replay_age or 0.0)


def read_status(
    wrapper: BaseDatabaseWrapper, cursor: Any, history: PrimaryHistory
) -> ReplicaStatus:
    """One check's query on the replica's ``cursor``, and the status it means."""
    if wrapper.vendor != "postgresql":
        cursor.execute("SELECT 1")
        cursor.fetchone()
        return ReplicaStatus(up=True, replay_lsn=None, lag=None, checked_at=time.monotonic())
    cursor.execute(_CHECK_SQL)
    in_recovery, replay_text, receive_text, replay_age, receiving = cursor.fetchone()
    now = time.monotonic()
    if not in_recovery or not replay_text:
        # Not a standby (or one that has replayed nothing yet): its positions are not ours.
        return ReplicaStatus(up=True, replay_lsn=None, lag=0.0, checked_at=now)
    replay = parse_lsn(replay_text)
    receive = parse_lsn(receive_text) if receive_text else None
    age = None if replay_age is None else float(replay_age)
    lag = history.lag(replay, receive, age, bool(receiving))
    return ReplicaStatus(up=True, replay_lsn=replay, lag=lag, checked_at=now)


def _libpq_version() -> int:
    """The libpq the PostgreSQL driver runs on (e.g. 160002), 0 where unknown."""
    try:
        import psycopg

        return int(psycopg.pq.version())
    except ImportError:
        pass
    try:
        # Imported by name: psycopg2 ships no type stubs.
        extensions = importlib.import_module("psycopg2.extensions")
    except ImportError:
        return 0
    return int(extensions.libpq_version())


def check_connection_options(timeout: float) -> dict[str, Any]:
    """libpq options of the check's own connection: bounded connects, and dead peers found.

    Keepalives and ``tcp_user_timeout`` end a check stuck on a host that went away (the
    kernel stops ACKing); the deadline of ``_replicas._Replica.check_within_deadline`` covers
    the hung server whose kernel still ACKs. libpq's connect_timeout is whole seconds, 2 at least.
    """
    seconds = max(1, math.ceil(timeout))
    options: dict[str, Any] = {
        "connect_timeout": max(2, seconds),
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": 1,
        "keepalives_count": 3,
    }
    if _libpq_version() >= 120000:  # older libpq refuses the unknown option
        options["tcp_user_timeout"] = max(1000, int(timeout * 1000))
    return options
