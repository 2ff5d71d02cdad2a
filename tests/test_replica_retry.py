"""A read whose replica connection dies under it runs again on the primary
(resee_perf._replica_retry), on our private replica (tests/replica.py's ``fault_replica``):
its backend terminated mid-query, or the whole server SIGSTOPped with a query sent to it.

Each query asks ``pg_is_in_recovery()``: true on the replica, false on the primary, so the
answer says which server gave it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, OperationalError, ProgrammingError, connections, transaction
from django.test import override_settings
from prometheus_client import REGISTRY

from content.models import Category
from resee_perf import _replicas
from resee_perf.routers import routing_scope
from tests.replica import FAULT_ALIAS, FaultReplica

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", FAULT_ALIAS])

ROUTER = "resee_perf.routers.StickyReplicaRouter"
MARKER = "resee-retry-test"
# The read the tests cut short: long enough for another thread to find it running.
SLOW_READ = f"SELECT /* {MARKER} */ pg_sleep(%s), pg_is_in_recovery(), %s"


def retries(alias: str = FAULT_ALIAS) -> float:
    value = REGISTRY.get_sample_value("resee_perf_replica_read_retries_total", {"alias": alias})
    return value or 0.0


def retry_settings(**resee_perf: Any) -> override_settings:
    # The execute wrapper is installed when a connection to a replica alias opens: one opened
    # before the alias was in REPLICAS has none.
    connections[FAULT_ALIAS].close()
    return override_settings(
        DATABASE_ROUTERS=[ROUTER],
        RESEE_PERF={
            "REPLICAS": [FAULT_ALIAS],
            "REPLICA_CHECK_INTERVAL": 0.3,
            "REPLICA_CHECK_TIMEOUT": 1.0,
            # Marked down stays down for the test: no check brings it back meanwhile.
            "REPLICA_RETRY_SECONDS": 60,
            **resee_perf,
        },
    )


def terminate_when_running(done: threading.Event) -> Callable[[], None]:
    """A thread's body: on a connection of its own to the replica, terminate the backend
    running the marked query as soon as it runs (a connection-level error for its client)."""

    def body() -> None:
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with connections[FAULT_ALIAS].cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE %s",
                        [f"%{MARKER}%pg_sleep%"],
                    )
                    if any(row[0] for row in cursor.fetchall()):
                        return
                time.sleep(0.02)
        finally:
            done.set()
            connections.close_all()

    return body


def run_with_terminator(call: Callable[[], Any]) -> Any:
    done = threading.Event()
    killer = threading.Thread(target=terminate_when_running(done))
    killer.start()
    try:
        return call()
    finally:
        killer.join(timeout=30)
        assert done.is_set()


def raw_read(sleep: float, tag: int) -> tuple[Any, ...]:
    with connections[FAULT_ALIAS].cursor() as cursor:
        cursor.execute(SLOW_READ, [sleep, tag])
        row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def test_a_read_whose_backend_is_terminated_runs_again_on_the_primary(
    fault_replica: FaultReplica,
) -> None:
    category = Category.objects.create(name="Retry", slug="retry")
    fault_replica.wait_caught_up()
    before = retries()
    with retry_settings():
        # Routed: the router sends it to the replica, which is up.
        with routing_scope():
            rows = run_with_terminator(
                lambda: list(
                    Category.objects.raw(
                        f"SELECT /* {MARKER} */ *, pg_sleep(2) AS slept, "
                        "pg_is_in_recovery() AS standby FROM content_category WHERE id = %s",
                        [category.pk],
                    )
                )
            )
        assert [(row.pk, row.name, row.standby) for row in rows] == [(category.pk, "Retry", False)]
        assert retries() == before + 1
        assert not _replicas.status(FAULT_ALIAS).up
        # The dead connection is gone: the next query on the alias opens a new one.
        assert connections[FAULT_ALIAS].connection is None
        assert raw_read(0, 2) == ("", True, 2)

        # Through a cursor on the alias, fetching after the retry.
        assert run_with_terminator(lambda: raw_read(2, 3)) == ("", False, 3)
        assert retries() == before + 2


def test_a_connection_terminated_between_two_reads_sends_the_second_to_the_primary(
    fault_replica: FaultReplica,
) -> None:
    before = retries()
    with retry_settings():
        assert raw_read(0, 1) == ("", True, 1)
        raw = connections[FAULT_ALIAS].connection
        assert raw is not None
        pid = raw.info.backend_pid
        terminated = threading.Event()

        def terminate() -> None:
            try:
                with connections[FAULT_ALIAS].cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                    terminated.set()
            finally:
                connections.close_all()

        killer = threading.Thread(target=terminate)
        killer.start()
        killer.join(timeout=30)
        assert terminated.is_set()
        assert raw_read(0, 2) == ("", False, 2)
        assert retries() == before + 1
        assert not _replicas.status(FAULT_ALIAS).up


def test_inside_a_transaction_the_error_propagates(fault_replica: FaultReplica) -> None:
    before = retries()
    with retry_settings():
        assert raw_read(0, 1) == ("", True, 1)

        def in_transaction() -> None:
            with transaction.atomic(using=FAULT_ALIAS):
                raw_read(2, 2)

        with pytest.raises(OperationalError):
            run_with_terminator(in_transaction)
        assert retries() == before
    connections[FAULT_ALIAS].close()


def test_a_server_side_cursor_is_not_retried(fault_replica: FaultReplica) -> None:
    """``QuerySet.iterator()`` declares a named cursor and fetches later, outside any execute
    wrapper: its rows cannot be swapped for the primary's."""
    Category.objects.create(name="Iterated", slug="iterated")
    fault_replica.wait_caught_up()
    before = retries()
    with retry_settings():
        assert raw_read(0, 1) == ("", True, 1)
        rows = Category.objects.using(FAULT_ALIAS).extra(
            select={"marker": f"'{MARKER}'", "slept": "pg_sleep(2)"}
        )
        with pytest.raises(OperationalError):
            run_with_terminator(lambda: list(rows.iterator(chunk_size=10)))
        assert retries() == before
    connections[FAULT_ALIAS].close()


def test_a_statement_error_propagates_and_the_replica_stays_up(
    fault_replica: FaultReplica,
) -> None:
    before = retries()
    with retry_settings():
        assert raw_read(0, 1) == ("", True, 1)
        with pytest.raises(ProgrammingError), connections[FAULT_ALIAS].cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM content_category")
        # statement_timeout's cancel (SQLSTATE 57014) is an OperationalError in psycopg, and
        # still the statement's error: the connection survives it.
        with connections[FAULT_ALIAS].cursor() as cursor:
            cursor.execute("SET statement_timeout = 100")
        with pytest.raises(OperationalError, match="statement timeout"):
            raw_read(2, 2)
        assert connections[FAULT_ALIAS].connection is not None
        with connections[FAULT_ALIAS].cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
        assert raw_read(0, 3) == ("", True, 3)
        assert retries() == before
        assert _replicas.status(FAULT_ALIAS).up
    connections[FAULT_ALIAS].close()


def test_without_retries_the_read_fails(fault_replica: FaultReplica) -> None:
    before = retries()
    with retry_settings(REPLICA_RETRY_READS=False):
        assert raw_read(0, 1) == ("", True, 1)
        with pytest.raises(OperationalError):
            run_with_terminator(lambda: raw_read(2, 2))
        assert retries() == before
    connections[FAULT_ALIAS].close()


def test_a_read_sent_to_a_hung_replica_returns_the_primarys_answer(
    fault_replica: FaultReplica,
) -> None:
    before = retries()
    with retry_settings(REPLICA_QUERY_TIMEOUT=1.0):
        assert raw_read(0, 1) == ("", True, 1)  # the connection is open
        fault_replica.hang()
        try:
            began = time.monotonic()
            assert raw_read(0, 2) == ("", False, 2)
            # The deadline, then the primary: generous, the machine is shared.
            assert time.monotonic() - began < 1.0 + 5
            assert not _replicas.status(FAULT_ALIAS).up
            assert retries() == before + 1
        finally:
            fault_replica.resume()
    with contextlib.suppress(DatabaseError):
        connections[FAULT_ALIAS].close()
