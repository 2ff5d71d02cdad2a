"""Correct under faults (issue #9): the example project under concurrent load while its
replica or its Redis hangs, is cut off, is killed and restored from a snapshot, or comes back
empty. Real processes (this suite's own replica and redis-server, see conftest.py), real
gunicorn, real HTTP.

Each scenario runs the load healthy for a few seconds, injects the fault, recovers, reads for
a few seconds, writes again, then asserts that nobody got a 5xx, waited past the bound, read a
stale answer after their own write, or lost a write (docs/failure-modes.md says what each
fault costs). Run them with ``pytest -m faults -s``: each prints a summary line with its
counts per phase (before/during/after the fault).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import pytest

from tests.faults.conftest import THREADS, WORKERS, WRITE_MEMORY_SECONDS, App, PrivateReplica
from tests.faults.load import BOUND_SECONDS, PHASES, Counts, Load, lost_writes, max_history_id
from tests.test_cache_redis_server import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.version_independent]

USERS_PER_SCENARIO = 4
BEFORE_SECONDS = 3.0
FAULT_SECONDS = 6.0
# After the fault: reads only (what the users wrote before and during it must show), then
# writes again. Longer than the example's breaker cooldown here (conftest.py), so that the
# reads go through the cache again, not around it.
READ_ONLY_SECONDS = 2.5
AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class Outcome:
    name: str
    counts: Counts
    lost: list[str]
    cache_hits: int  # before the fault
    replica_transactions: int  # before the fault

    def total(self, kind: str) -> int:
        return sum(getattr(self.counts, kind).values())

    def summary(self) -> str:
        parts = []
        for kind in ("requests", "five_xx", "slow", "in_flight", "stale"):
            per_phase = "/".join(str(getattr(self.counts, kind)[phase]) for phase in PHASES)
            parts.append(f"{kind} {self.total(kind)} ({per_phase})")
        return (
            f"FAULT {self.name}: {', '.join(parts)}, lost {len(self.lost)} "
            f"[before the fault: {self.cache_hits} cache hits, "
            f"{self.replica_transactions} replica transactions]"
        )


def run_scenario(name: str, app: App, inject: Callable[[Load], None]) -> Outcome:
    """Load before, during and after ``inject(load)`` (which breaks a service, waits, and
    repairs it); then look for every acknowledged write in the primary."""
    site, redis, replica = app.site, app.redis, app.replica
    history_before = max_history_id(site.conninfo)
    load = Load(app.url, site.take_users(USERS_PER_SCENARIO))
    hits, replica_reads = cache_hits(redis), replica_transactions(replica)
    with load.running():
        time.sleep(BEFORE_SECONDS)
        # The suite proves nothing unless the load goes through the cache and the replica.
        used = (cache_hits(redis) - hits, replica_transactions(replica) - replica_reads)
        load.phase = "during"
        inject(load)
        load.phase = "after"
        load.writing.clear()
        time.sleep(READ_ONLY_SECONDS)
        load.writing.set()
        time.sleep(AFTER_SECONDS - READ_ONLY_SECONDS)
    outcome = Outcome(
        name, load.counts, lost_writes(site.conninfo, load.written(), history_before), *used
    )
    # -s or -rP shows it; the lead records these figures.
    print(outcome.summary())
    for example in [*load.counts.examples, *outcome.lost[:5]]:
        print(f"    {example}")
    return outcome


def assert_correct(outcome: Outcome, *, in_flight_allowed: int = 0) -> None:
    """All 0, but for up to ``in_flight_allowed`` requests caught mid-query by the fault,
    which may fail (a 5xx) or wait for the server (docs/failure-modes.md)."""
    counts = outcome.counts
    assert counts.requests["during"] > 0, "no request was made during the fault"
    assert outcome.cache_hits > 0, "the load did not use the cache"
    # Each worker's router checks the replica every REPLICA_CHECK_INTERVAL (0.5 s): reads must
    # be well beyond what those checks alone make.
    checks = WORKERS * (BEFORE_SECONDS / 0.5 + 1)
    assert outcome.replica_transactions > 2 * checks, "the load did not read from the replica"
    assert outcome.lost == [], outcome.summary()
    assert outcome.total("stale") == 0, outcome.summary()
    assert outcome.total("slow") == 0, f"{outcome.summary()} (bound {BOUND_SECONDS} s)"
    assert outcome.total("in_flight") <= in_flight_allowed, outcome.summary()
    assert outcome.total("five_xx") <= in_flight_allowed, outcome.summary()


def cache_hits(redis: PrivateRedis) -> int:
    return int(redis.client().info("stats")["keyspace_hits"])


def replica_transactions(replica: PrivateReplica) -> int:
    """Transactions in the suite's database on the replica (the router's reads, its checks)."""
    with psycopg.connect(replica.conninfo, autocommit=True) as connection:
        row = connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def hold(seconds: float) -> None:
    time.sleep(seconds)


# -- the replica ---------------------------------------------------------------------------


def test_a_hung_replica(app: App) -> None:
    """SIGSTOP of the replica's postmaster and every child: connections stay open and nothing
    answers. Reads must leave it within the bound; a query that was already running on it
    when it hung may fail or wait for it, at most one per web thread (docs/failure-modes.md).
    """

    def inject(load: Load) -> None:
        app.replica.hang()
        load.fault_at = time.monotonic()
        try:
            hold(FAULT_SECONDS)
        finally:
            app.replica.resume()

    outcome = run_scenario("replica hung", app, inject)
    assert_correct(outcome, in_flight_allowed=WORKERS * THREADS)


def test_a_replica_cut_off_from_the_primary(app: App) -> None:
    """The replica answers, but replays nothing: its data ages while the users write. Then
    they only read, for longer than their writes are remembered (their sticky cookies): a
    replica that looks caught up (it has replayed all it received) would serve their reads
    without what they wrote."""

    def inject(load: Load) -> None:
        app.replica.disconnect()
        try:
            hold(FAULT_SECONDS / 3)
            load.writing.clear()
            hold(WRITE_MEMORY_SECONDS + 1.5)
        finally:
            app.replica.reconnect()

    assert_correct(run_scenario("replica disconnected", app, inject))


# -- Redis ---------------------------------------------------------------------------------


def test_a_hung_redis(app: App) -> None:
    """SIGSTOP of redis-server: every command waits for the socket timeout, and the
    invalidations of the writes made meanwhile cannot reach it."""

    def inject(load: Load) -> None:
        app.redis.pause()
        try:
            hold(FAULT_SECONDS)
        finally:
            app.redis.resume()

    assert_correct(run_scenario("redis hung", app, inject))


def test_a_redis_killed_and_restored_from_a_snapshot(app: App) -> None:
    """SAVE, more writes (their invalidations reach the server, not the snapshot), SIGKILL,
    restart from the snapshot: the cache comes back as it was before those writes."""

    def inject(load: Load) -> None:
        # Reads only for a moment first, so that every user's entries are in the snapshot and
        # current: the writes after it are what the restore undoes.
        load.writing.clear()
        hold(1.0)
        app.redis.client().save()
        load.writing.set()
        hold(FAULT_SECONDS / 2)
        app.redis.kill()
        try:
            hold(FAULT_SECONDS / 2)
        finally:
            app.redis.start()  # loads dump.rdb

    assert_correct(run_scenario("redis restored from a snapshot", app, inject))


def test_a_redis_that_comes_back_empty(app: App) -> None:
    """SIGKILL, then a restart without any snapshot: every entry and tag version is gone."""

    def inject(load: Load) -> None:
        app.redis.kill()
        try:
            hold(FAULT_SECONDS / 2)
        finally:
            assert app.redis.directory is not None
            (app.redis.directory / "dump.rdb").unlink(missing_ok=True)
            app.redis.start()

    assert_correct(run_scenario("redis emptied", app, inject))
