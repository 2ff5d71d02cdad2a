"""StickyReplicaRouter under faults, on a private replica of our own (tests/replica.py's
``fault_replica``, port 5440): a replica whose processes are all SIGSTOPped (its kernel still
accepts connections and ACKs queries, so only a client-side bound ends the wait), and a
replica cut off from its primary (it keeps answering, with data that no longer moves).

These are the suite's deliberately bounded timing tests: each asserts the bound the router
promises (docs/routing.md, "Failure modes").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from content.models import Category
from resee_perf import _replicas
from resee_perf._replica_check import PrimaryHistory
from resee_perf.cache import cache_aside
from resee_perf.routers import choose_read_alias, routing_scope
from tests.replica import FAULT_ALIAS, FaultReplica, fresh_context

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", FAULT_ALIAS])

ROUTER = "resee_perf.routers.StickyReplicaRouter"
CHECK_TIMEOUT = 1.0
# The alias's OPTIONS['connect_timeout'] (tests/settings.py), the larger of the two bounds: a
# routed read waits at most this long for the hung replica before reading from the primary.
BOUND = 2.0


def fault_settings(**resee_perf: Any) -> override_settings:
    return override_settings(
        DATABASE_ROUTERS=[ROUTER],
        RESEE_PERF={
            "REPLICAS": [FAULT_ALIAS],
            "REPLICA_CHECK_INTERVAL": 0.3,
            "REPLICA_CHECK_TIMEOUT": CHECK_TIMEOUT,
            "REPLICA_RETRY_SECONDS": 0.5,
            **resee_perf,
        },
    )


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def read_category(pk: int) -> str:
    """One routed read in a request-like scope of its own; the alias that served it."""
    with routing_scope():
        found: Category = Category.objects.get(pk=pk)
    return str(found._state.db)


def test_a_hung_replica_costs_reads_at_most_the_bound(fault_replica: FaultReplica) -> None:
    category = Category.objects.create(name="Hung", slug="hung")
    fault_replica.wait_caught_up()
    with fault_settings():
        # Up, checked, with an open check connection: the state in which a SIGSTOP used to
        # hang the check (server-side statement_timeout only) and everyone behind its lock.
        assert read_category(category.pk) == FAULT_ALIAS
        connections[FAULT_ALIAS].close()

        served: list[tuple[str, float]] = []
        start = threading.Barrier(8, timeout=10)

        def reader() -> None:
            # Long enough for several checks and retries to fall due while it hangs.
            until = time.monotonic() + 2 * BOUND
            try:
                start.wait()
                while time.monotonic() < until:
                    began = time.monotonic()
                    alias = fresh_context(lambda: read_category(category.pk))
                    served.append((alias, time.monotonic() - began))
                    time.sleep(0.02)
            finally:
                connections.close_all()

        fault_replica.hang()
        try:
            threads = [threading.Thread(target=reader) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=4 * BOUND + 10)
            assert not any(thread.is_alive() for thread in threads), "a read hung"
            assert len(served) > 8 * 10
            assert {alias for alias, _ in served} == {DEFAULT_DB_ALIAS}
            slowest = max(seconds for _, seconds in served)
            assert slowest < 2 * BOUND, f"a read took {slowest:.2f} s"
            # Down, and no caller waits for the check still stuck on the stopped server.
            began = time.monotonic()
            assert not _replicas.status(FAULT_ALIAS).up
            assert time.monotonic() - began < 0.5
        finally:
            fault_replica.resume()
        # Back once it answers: the stuck check completes, or the next retry succeeds.
        wait_for(lambda: _replicas.status(FAULT_ALIAS).up, timeout=0.5 + CHECK_TIMEOUT + 3)
        wait_for(lambda: read_category(category.pk) == FAULT_ALIAS, timeout=3)


@cache_aside("test:faults:category-count", ttl=300, tags=["fault-categories"])
def category_count() -> int:
    return Category.objects.filter(slug__startswith="cut-off").count()


def test_a_replica_cut_off_from_its_primary_lags_and_gets_no_reads(
    fault_replica: FaultReplica,
) -> None:
    caches["default"].clear()  # our own Redis database (REDIS_URL)
    fault_replica.wait_caught_up()
    with fault_settings(REPLICA_MAX_LAG_SECONDS=1, REPLICA_CHECK_INTERVAL=0.05):
        assert _replicas.status(FAULT_ALIAS).up
        cut_at = time.monotonic()
        fault_replica.disconnect()
        try:
            category = Category.objects.create(name="Cut off", slug="cut-off-1")
            # Its received and replayed positions are equal and it answers: before, lag 0.
            wait_for(lambda: (_replicas.status(FAULT_ALIAS).lag or 0) > 1, timeout=1 + 3)
            status = _replicas.status(FAULT_ALIAS)
            assert status.up
            # Dated from the first write it missed (the shared primary writes all the time, so
            # maybe before ours), never from an old transaction of an idle period.
            assert status.lag is not None
            assert status.lag <= time.monotonic() - cut_at + 0.5
            with routing_scope():
                assert choose_read_alias() == (DEFAULT_DB_ALIAS, "no_replica")
            # Reads, and the cache fill after a flush, come from the primary, which has the
            # write; the frozen replica would say 0.
            with CaptureQueriesContext(connections[FAULT_ALIAS]) as on_replica:
                assert read_category(category.pk) == DEFAULT_DB_ALIAS
                assert fresh_context(lambda: _in_scope(category_count)) == 1
            assert on_replica.captured_queries == []
            with connections[FAULT_ALIAS].cursor() as cursor:
                cursor.execute("SELECT count(*) FROM content_category WHERE slug = 'cut-off-1'")
                assert cursor.fetchone()[0] == 0, "the replica was not cut off"
        finally:
            fault_replica.reconnect()
        fault_replica.wait_caught_up()
        wait_for(lambda: (_replicas.status(FAULT_ALIAS).lag or 0) <= 1, timeout=3)
        wait_for(lambda: read_category(category.pk) == FAULT_ALIAS, timeout=3)
    caches["default"].clear()


def _in_scope(call: Callable[[], int]) -> int:
    with routing_scope():
        return call()


def test_the_lag_is_dated_against_the_primarys_position() -> None:
    """The lag arithmetic, on positions the checks would have read."""
    replica = PrimaryHistory()
    now = time.monotonic()
    replica.note(now - 10, 100)
    # The primary's last known position replayed: 0, however old its last transaction (an
    # idle primary), and whether or not it still receives WAL.
    assert replica.lag(100, 100, replay_age=3600.0, receiving=False) == 0
    # Behind it: the time since the primary was last seen at a position it has replayed...
    replica.note(now - 3, 200)
    assert 10 <= replica.lag(100, 100, replay_age=3600.0, receiving=True) < 11
    # ... or the age of its last replayed transaction, the smaller of the two.
    assert replica.lag(100, 100, replay_age=2.0, receiving=True) == 2.0
    # A position seen again is dated by its latest sighting.
    replica.note(now - 1, 200)
    assert replica.lag(150, 150, replay_age=None, receiving=False) >= 10
    assert replica.lag(200, 200, replay_age=None, receiving=False) == 0

    # The primary's position unknown: only a running receiver with nothing left to replay.
    blind = PrimaryHistory()
    assert blind.lag(100, 100, replay_age=30.0, receiving=True) == 0
    assert blind.lag(100, 100, replay_age=30.0, receiving=False) == 30.0
    assert blind.lag(100, 150, replay_age=30.0, receiving=True) == 30.0
