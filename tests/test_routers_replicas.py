"""StickyReplicaRouter with several real streaming replicas (issue #15): the two shared ones
(5433, 5435) for read shares, two private ones (5450, 5451) to lag and stop one while the
other serves.

What a read saw is checked against the data, not only the alias: a lagging replica really
lacks the write (a read there without the position misses it), so the tests can fail.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import override_settings

from content.models import Category
from resee_perf import _replicas
from resee_perf._freshness import WritePosition
from resee_perf.routers import choose_read_alias, routing_scope
from tests.replica import ALIAS, PRIVATE, SHARED_B, ReplicaControl, fresh_context, primary_lsn

pytestmark = pytest.mark.django_db(
    transaction=True, databases=["default", ALIAS, SHARED_B, *PRIVATE]
)

ROUTER = "resee_perf.routers.StickyReplicaRouter"
P1, P2 = PRIVATE
# Injected lag: long enough that a loaded machine runs a test's reads before the lagging
# replica replays the write (each test also checks that it had not).
LAG_SECONDS = 4.0
CHECK_INTERVAL = 0.1
CHECK_TIMEOUT = 1.0


def private_settings(**resee_perf: object) -> override_settings:
    return override_settings(
        DATABASE_ROUTERS=[ROUTER],
        RESEE_PERF={
            "REPLICAS": [P1, P2],
            "REPLICA_CHECK_INTERVAL": CHECK_INTERVAL,
            "REPLICA_CHECK_TIMEOUT": CHECK_TIMEOUT,
            "REPLICA_RETRY_SECONDS": 0.3,
            **resee_perf,
        },
    )


def read(pk: int, after: WritePosition | None = None) -> tuple[str, bool]:
    """One request's read, as another worker thread with CONN_MAX_AGE = 0 would run it: a
    fresh context and scope, its connections closed at the end. (alias, whether it saw pk)."""

    def request() -> tuple[str, bool]:
        try:
            with routing_scope(after=after):
                found = Category.objects.filter(pk=pk).first()
                alias = choose_read_alias()[0]
            return (alias if found is None else str(found._state.db)), found is not None
        finally:
            connections.close_all()

    return fresh_context(request)


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def shares(reads: int, **resee_perf: object) -> Counter[str]:
    chosen: Counter[str] = Counter()
    with override_settings(RESEE_PERF={"REPLICAS": [ALIAS, SHARED_B], **resee_perf}):
        for _ in range(reads):
            with routing_scope():
                chosen[choose_read_alias()[0]] += 1
    return chosen


# -- read share ------------------------------------------------------------------------------------


def test_reads_are_spread_over_two_real_replicas(two_replicas: list[str]) -> None:
    category = Category.objects.create(name="Spread", slug="spread")
    primary = primary_lsn()
    for alias in two_replicas:
        ReplicaControl(alias).wait_caught_up(target=primary)
    served: Counter[str] = Counter()
    for _ in range(200):
        alias, seen = read(category.pk)
        assert seen
        served[alias] += 1
    # Both servers answered real queries (two ports, two standbys), in about equal shares.
    assert set(served) == {ALIAS, SHARED_B}
    assert min(served.values()) >= 60, served
    ports = set()
    for alias in two_replicas:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT inet_server_port(), pg_is_in_recovery()")
            port, in_recovery = cursor.fetchone()
        assert in_recovery
        ports.add(port)
    assert len(ports) == 2


def test_read_shares_follow_the_weights(two_replicas: list[str]) -> None:
    even = shares(1000)
    assert even.keys() <= {ALIAS, SHARED_B}
    assert 400 <= even[ALIAS] <= 600, even

    weighted = shares(1000, REPLICA_WEIGHTS={ALIAS: 3, SHARED_B: 1})
    assert 650 <= weighted[ALIAS] <= 850, weighted
    assert weighted[ALIAS] + weighted[SHARED_B] == 1000

    # Weight 0: out of rotation, not even checked.
    _replicas.forget()
    drained = shares(200, REPLICA_WEIGHTS={SHARED_B: 0})
    assert drained == Counter({ALIAS: 200})
    assert SHARED_B not in _replicas._replicas


# -- a dead replica --------------------------------------------------------------------------------


def test_a_stopped_replica_is_skipped_and_used_again_after_a_restart(
    private_replicas: tuple[ReplicaControl, ReplicaControl],
) -> None:
    p1, p2 = private_replicas
    category = Category.objects.create(name="Dead", slug="dead")
    primary = primary_lsn()
    p1.wait_caught_up(target=primary)
    p2.wait_caught_up(target=primary)
    with private_settings():
        before = Counter(read(category.pk)[0] for _ in range(60))
        assert set(before) == {P1, P2}, before

        p1.stop()
        stopped_at = time.monotonic()
        after: Counter[str] = Counter()
        while time.monotonic() - stopped_at < 1.0:
            alias, seen = read(category.pk)
            assert seen
            after[alias] += 1
        # Every read served, none by the stopped replica (a request that draws it fails to
        # connect, marks it down and reads from the other), and it is down within one
        # check interval (plus the check's own deadline).
        assert after.keys() == {P2}, after
        wait_for(lambda: not _replicas.status(P1).up, timeout=CHECK_INTERVAL + CHECK_TIMEOUT + 2)

        p1.start()
        p1.wait_caught_up(target=primary)
        # Back after REPLICA_RETRY_SECONDS (0.3 s here), with a check that finds it up.
        wait_for(lambda: read(category.pk)[0] == P1, timeout=5)
        again = Counter(read(category.pk)[0] for _ in range(60))
        assert set(again) == {P1, P2}, again


# -- a lagging replica -----------------------------------------------------------------------------


def test_read_your_writes_is_checked_against_the_replica_chosen(
    private_replicas: tuple[ReplicaControl, ReplicaControl],
) -> None:
    """One replica replays 4 s late: a client that wrote reads from the other (and sees its
    write) until the late one has replayed it; a client that did not write reads from both,
    and on the late one does not see it yet: the lag is real."""
    p1, p2 = private_replicas
    p1.wait_caught_up()
    p1.lag(LAG_SECONDS)
    # A lag limit above the injected lag: the late replica stays usable for other clients.
    with private_settings(REPLICA_MAX_LAG_SECONDS=30):
        category = Category.objects.create(name="Mine", slug="mine")
        position = WritePosition(lsn=primary_lsn(), written_at=0.0)
        assert position.lsn is not None
        p2.wait_caught_up(target=position.lsn)
        # Both replicas checked since p2 replayed the write.
        time.sleep(CHECK_INTERVAL * 2)

        writer = [read(category.pk, after=position) for _ in range(40)]
        anyone = [read(category.pk) for _ in range(40)]
        assert p1.replay_lsn() < position.lsn, "p1 replayed the write too early for this test"

        assert writer == [(P2, True)] * 40  # never p1, never stale, never the primary
        assert {alias for alias, _ in anyone} == {P1, P2}
        assert all(seen == (alias == P2) for alias, seen in anyone), anyone

        p1.wait_caught_up(target=position.lsn)
        wait_for(lambda: read(category.pk, after=position)[0] == P1, timeout=5)
        assert all(seen for _, seen in (read(category.pk, after=position) for _ in range(20)))


def test_a_replica_lagging_past_the_limit_is_skipped_until_it_recovers(
    private_replicas: tuple[ReplicaControl, ReplicaControl],
) -> None:
    p1, _ = private_replicas
    p1.wait_caught_up()
    p1.lag(LAG_SECONDS)
    with private_settings(REPLICA_MAX_LAG_SECONDS=1):
        category = Category.objects.create(name="Behind", slug="behind")
        written = primary_lsn()
        # Lagging more than 1 s from about 1 s after the write until it replays it.
        wait_for(lambda: (_replicas.status(P1).lag or 0) > 1, timeout=LAG_SECONDS)
        served = [read(category.pk) for _ in range(20)]
        assert p1.replay_lsn() < written, "p1 replayed the write too early for this test"
        assert served == [(P2, True)] * 20

        p1.lag(0)
        p1.wait_caught_up(target=written)
        wait_for(lambda: (_replicas.status(P1).lag or 0) <= 1, timeout=3)
        wait_for(lambda: read(category.pk) == (P1, True), timeout=5)


def test_a_scope_leaving_its_replica_does_not_go_back_in_time(
    private_replicas: tuple[ReplicaControl, ReplicaControl],
) -> None:
    """A request reading from p1 sees a write; p1 then dies. p2 is up but has not replayed
    that write: the rest of the request reads from the primary, never from p2 (where the row
    it has just seen would vanish)."""
    p1, p2 = private_replicas
    p2.wait_caught_up()
    p2.lag(10)
    with private_settings(REPLICA_MAX_LAG_SECONDS=30, REPLICA_WEIGHTS={P1: 1, P2: 1}):
        category = Category.objects.create(name="Seen", slug="seen")
        written = primary_lsn()
        p1.wait_caught_up(target=written)
        time.sleep(CHECK_INTERVAL * 2)
        try:
            with routing_scope() as scope:
                # p2 lacks the write, so a scope that sees it on a replica is on p1.
                scope.after = WritePosition(lsn=written, written_at=0.0)
                assert Category.objects.get(pk=category.pk)._state.db == P1
                scope.after = None
                assert scope.seen is not None
                assert scope.seen >= written

                p1.stop()
                wait_for(lambda: not _replicas.status(P1).up, timeout=CHECK_INTERVAL + 3)
                assert p2.replay_lsn() < written, "p2 replayed the write too early for this test"
                assert choose_read_alias() == (DEFAULT_DB_ALIAS, "catching_up")
                assert Category.objects.filter(pk=category.pk).exists()
        finally:
            connections.close_all()
