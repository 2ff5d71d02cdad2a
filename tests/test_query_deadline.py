"""The client-side deadline of queries on replica connections (resee_perf._query_deadline).

The fault test SIGSTOPs our private replica (tests/replica.py's ``fault_replica``, port 5440)
under threads that keep persistent connections to it open, as gunicorn threads with
``CONN_MAX_AGE`` do; it is one of the suite's deliberately bounded timing tests. The others
run on the shared replica, which they never stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import Warning
from django.db import DEFAULT_DB_ALIAS, OperationalError, close_old_connections, connections
from django.test import override_settings
from prometheus_client import REGISTRY

from content.models import Category
from resee_perf import _replicas
from resee_perf._query_deadline import QueryDeadline
from resee_perf.checks import check_replica_query_timeout
from resee_perf.routers import routing_scope
from tests.replica import ALIAS, FAULT_ALIAS, FaultReplica, Replica, fresh_context

ROUTER = "resee_perf.routers.StickyReplicaRouter"
QUERY_TIMEOUT = 1.0
CHECK_TIMEOUT = 1.0
# Each read sleeps this long on the server: the threads are inside a query most of the time,
# so the SIGSTOP finds queries in flight.
SLEEP = 0.3
THREADS = 4


def retries(alias: str) -> float:
    value = REGISTRY.get_sample_value("resee_perf_replica_read_retries_total", {"alias": alias})
    return value or 0.0


def timeouts(alias: str) -> float:
    value = REGISTRY.get_sample_value("resee_perf_replica_query_timeouts_total", {"alias": alias})
    return value or 0.0


@contextmanager
def persistent_connections(alias: str) -> Iterator[None]:
    """The alias's connections kept across requests and pinged before reuse, as
    recommended_database() configures them."""
    settings_dict = connections.settings[alias]
    saved = {key: settings_dict.get(key) for key in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")}
    settings_dict.update(CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True)
    connections[alias].close()
    try:
        yield
    finally:
        settings_dict.update(saved)
        connections[alias].close()


def deadline_settings(alias: str, **resee_perf: Any) -> override_settings:
    return override_settings(
        DATABASE_ROUTERS=[ROUTER],
        RESEE_PERF={
            "REPLICAS": [alias],
            "REPLICA_CHECK_INTERVAL": 0.3,
            "REPLICA_CHECK_TIMEOUT": CHECK_TIMEOUT,
            "REPLICA_RETRY_SECONDS": 0.5,
            "REPLICA_QUERY_TIMEOUT": QUERY_TIMEOUT,
            **resee_perf,
        },
    )


def slow_read(pk: int, seconds: float = SLEEP) -> str:
    """One request: a routed read that takes ``seconds`` on the server; the alias that served
    it. Connections are closed or kept at its boundaries as Django's request signals do."""
    close_old_connections()
    try:
        with routing_scope():
            rows = list(
                Category.objects.raw(
                    "SELECT *, pg_sleep(%s) FROM content_category WHERE id = %s", [seconds, pk]
                )
            )
        assert len(rows) == 1
        return str(rows[0]._state.db)
    finally:
        close_old_connections()


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True, databases=["default", FAULT_ALIAS])
def test_queries_in_flight_on_a_hung_replica_run_again_on_the_primary(
    fault_replica: FaultReplica,
) -> None:
    """Each fails past the deadline on the replica, and runs again on the primary
    (REPLICA_RETRY_READS, resee_perf._replica_retry): no read fails."""
    category = Category.objects.create(name="Deadline", slug="deadline")
    fault_replica.wait_caught_up()
    killed_before = timeouts(FAULT_ALIAS)
    retried_before = retries(FAULT_ALIAS)
    with persistent_connections(FAULT_ALIAS), deadline_settings(FAULT_ALIAS):
        assert slow_read(category.pk, 0) == FAULT_ALIAS
        # (began, seconds, alias, error) of every read after all threads were on the replica.
        results: list[tuple[float, float, str, BaseException | None]] = []
        stop = threading.Event()
        on_replica = threading.Barrier(THREADS + 1, timeout=20)

        def worker() -> None:
            try:
                # Every thread holds an open connection to the replica before it hangs.
                assert fresh_context(lambda: slow_read(category.pk)) == FAULT_ALIAS
                on_replica.wait()
                while not stop.is_set():
                    began = time.monotonic()
                    try:
                        alias = fresh_context(lambda: slow_read(category.pk))
                        error = None
                    except OperationalError as caught:
                        alias, error = "", caught
                    results.append((began, time.monotonic() - began, alias, error))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        on_replica.wait()
        time.sleep(SLEEP / 2)  # the threads are inside their next query on the replica
        fault_replica.hang()
        hung_at = time.monotonic()
        try:
            time.sleep(2 * QUERY_TIMEOUT + 2 * CHECK_TIMEOUT)
            # Down, and said so at once (no caller waits for the check stuck on it).
            began = time.monotonic()
            assert not _replicas.status(FAULT_ALIAS).up
            assert time.monotonic() - began < 0.5
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            fault_replica.resume()
        assert not any(thread.is_alive() for thread in threads), "a thread hung"

        failed = [error for _, _, _, error in results if error is not None]
        served = [(alias, seconds) for began, seconds, alias, error in results if began > hung_at]
        in_flight = [seconds for began, seconds, _, _ in results if began <= hung_at]
        # The queries in flight when it stopped: each ended once the deadline passed, and ran
        # again on the primary (SLEEP more), at most one per thread.
        assert failed == []
        retried = retries(FAULT_ALIAS) - retried_before
        assert 1 <= retried <= THREADS
        slowest_in_flight = max(in_flight)
        assert slowest_in_flight < QUERY_TIMEOUT + 2 * SLEEP + 1, f"{slowest_in_flight:.2f} s"
        # Counted, with the pings of threads that were between two requests (one each).
        assert retried <= timeouts(FAULT_ALIAS) - killed_before <= THREADS
        # Every read that began once it was stopped went to the primary, within twice the
        # bound, and none failed.
        assert len(served) >= THREADS
        assert {alias for alias, _ in served} == {DEFAULT_DB_ALIAS}
        slowest = max(seconds for _, seconds in served)
        assert slowest < 2 * max(QUERY_TIMEOUT, CHECK_TIMEOUT) + SLEEP, f"{slowest:.2f} s"

        # Back once it answers, on connections opened afresh.
        wait_for(lambda: _replicas.status(FAULT_ALIAS).up, timeout=CHECK_TIMEOUT + 5)
        wait_for(lambda: fresh_context(lambda: slow_read(category.pk, 0)) == FAULT_ALIAS, 5)


@pytest.mark.django_db(transaction=True, databases=["default", FAULT_ALIAS])
def test_a_reused_connection_to_a_hung_replica_sends_the_read_to_the_primary(
    fault_replica: FaultReplica,
) -> None:
    """Between requests: CONN_HEALTH_CHECKS' ping, run by the router under
    REPLICA_CHECK_TIMEOUT, fails, and the request reads from the primary without an error
    (REPLICA_QUERY_TIMEOUT unset: the ping has its own bound)."""
    category = Category.objects.create(name="Ping", slug="ping")
    fault_replica.wait_caught_up()
    killed_before = timeouts(FAULT_ALIAS)
    # Checked rarely: the ping, not a due check, has to find the hang.
    overrides = deadline_settings(
        FAULT_ALIAS, REPLICA_QUERY_TIMEOUT=None, REPLICA_CHECK_INTERVAL=60
    )
    with persistent_connections(FAULT_ALIAS), overrides:
        assert slow_read(category.pk, 0) == FAULT_ALIAS
        assert connections[FAULT_ALIAS].connection is not None  # kept for the next request
        fault_replica.hang()
        try:
            began = time.monotonic()
            assert slow_read(category.pk, 0) == DEFAULT_DB_ALIAS
            assert time.monotonic() - began < CHECK_TIMEOUT + 0.5
            assert not _replicas.status(FAULT_ALIAS).up
        finally:
            fault_replica.resume()
        assert timeouts(FAULT_ALIAS) - killed_before == 1
        wait_for(lambda: slow_read(category.pk, 0) == FAULT_ALIAS, timeout=CHECK_TIMEOUT + 5)


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_the_deadline_leaves_queries_on_a_healthy_replica_alone(replica: Replica) -> None:
    category = Category.objects.create(name="Healthy", slug="healthy")
    replica.wait_caught_up()
    killed_before = timeouts(ALIAS)
    errors: list[BaseException] = []
    served: list[str] = []

    def worker() -> None:
        try:
            for _ in range(3):
                # Half the deadline: untouched, on the replica, connection kept.
                served.append(fresh_context(lambda: slow_read(category.pk, QUERY_TIMEOUT / 2)))
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    with persistent_connections(ALIAS), deadline_settings(ALIAS):
        assert slow_read(category.pk, 0) == ALIAS  # checked and up before the threads start
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert served == [ALIAS] * (3 * THREADS)
        assert _replicas.status(ALIAS).up
        # Installed once per connection, however often it reconnects.
        assert slow_read(category.pk, 0) == ALIAS
        connections[ALIAS].close()
        assert slow_read(category.pk, 0) == ALIAS
        wrappers = connections[ALIAS].execute_wrappers
        assert sum(isinstance(wrapper, QueryDeadline) for wrapper in wrappers) == 1
    assert timeouts(ALIAS) == killed_before


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_a_query_longer_than_the_deadline_fails_and_the_next_read_goes_to_the_primary(
    replica: Replica,
) -> None:
    """The deadline cannot tell a long query from a hung server: keep it above the replica's
    statement_timeout (docs/routing.md)."""
    category = Category.objects.create(name="Long", slug="long")
    replica.wait_caught_up()
    # Without the retry on the primary, which would run it for its whole 5 s there.
    with deadline_settings(ALIAS, REPLICA_QUERY_TIMEOUT=0.3, REPLICA_RETRY_READS=False):
        began = time.monotonic()
        with routing_scope(), pytest.raises(OperationalError, match="REPLICA_QUERY_TIMEOUT"):
            list(
                Category.objects.raw(
                    "SELECT *, pg_sleep(5) FROM content_category WHERE id = %s", [category.pk]
                )
            )
        assert time.monotonic() - began < 0.3 + 1
        assert not _replicas.status(ALIAS).up
        assert slow_read(category.pk, 0) == DEFAULT_DB_ALIAS


@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_without_a_timeout_nothing_is_installed_for_other_aliases(replica: Replica) -> None:
    with deadline_settings(ALIAS, REPLICA_QUERY_TIMEOUT=None):
        connections[DEFAULT_DB_ALIAS].ensure_connection()
        wrappers = connections[DEFAULT_DB_ALIAS].execute_wrappers
        assert not any(isinstance(wrapper, QueryDeadline) for wrapper in wrappers)


# -- resee_perf.W025 ------------------------------------------------------------------------


def w025(monkeypatch: pytest.MonkeyPatch, database: dict[str, Any], **resee_perf: Any) -> list[str]:
    # Added to the DATABASES dict, not overridden: Django warns about overriding DATABASES.
    monkeypatch.setitem(settings.DATABASES, "r", database)
    with override_settings(RESEE_PERF={"REPLICAS": ["r"], **resee_perf}):
        messages = check_replica_query_timeout()
    assert all(isinstance(message, Warning) for message in messages)
    return [message.id or "" for message in messages]


POSTGRES = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}


def test_w025_persistent_replica_connections_without_a_query_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    persistent = {**POSTGRES, "CONN_MAX_AGE": 600}
    assert w025(monkeypatch, persistent) == ["resee_perf.W025"]
    assert w025(monkeypatch, {**POSTGRES, "CONN_MAX_AGE": None}) == ["resee_perf.W025"]
    assert w025(monkeypatch, {**POSTGRES, "OPTIONS": {"pool": True}}) == ["resee_perf.W025"]
    # A bound, a connection per request, or not PostgreSQL: nothing to say.
    assert w025(monkeypatch, persistent, REPLICA_QUERY_TIMEOUT=6) == []
    assert w025(monkeypatch, POSTGRES) == []
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x", "CONN_MAX_AGE": 600}
    assert w025(monkeypatch, sqlite) == []
