"""StickyReplicaRouter on the real primary and the real streaming replica (scripts/replica.sh).

Where a read went is proved twice: by the queries each connection ran, and by the data it saw
while the replica applies each commit two seconds late (a read from the replica misses a
write that the primary has). The same tests run with a naive router that sends every read to
the replica, and see stale data: they can fail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from content.models import Category
from resee_perf import _replicas
from resee_perf._freshness import WritePosition
from resee_perf.routers import (
    StickyReplicaRouter,
    choose_read_alias,
    note_write,
    routing_scope,
    use_primary,
)
from tests.replica import ALIAS, Replica, wait_caught_up

pytestmark = pytest.mark.django_db(
    transaction=True,
    databases=["default", "other", "replica", "replica2", "replica_unreachable"],
)

NAIVE = "tests.test_routers.NaiveReplicaRouter"
STICKY = "resee_perf.routers.StickyReplicaRouter"


class NaiveReplicaRouter:
    """What the Resee service ran before: every read on the replica, every write on the
    primary. The tests' proof that they can fail."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return ALIAS

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS


@pytest.fixture(params=[STICKY, NAIVE], ids=["sticky", "naive"])
def router_path(request: pytest.FixtureRequest) -> Iterator[str]:
    with override_settings(DATABASE_ROUTERS=[request.param]):
        yield request.param


def sees(name: str) -> bool:
    """Whether a routed read finds the category called ``name``."""
    return Category.objects.filter(name=name).exists()


def make_category(name: str) -> Category:
    return Category.objects.create(name=name, slug=name.lower().replace(" ", "-"))


@contextmanager
def queries_on(alias: str) -> Iterator[CaptureQueriesContext]:
    with CaptureQueriesContext(connections[alias]) as captured:
        yield captured


def routes(alias: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("resee_perf_db_routes_total", {"alias": alias, "reason": reason})
        or 0.0
    )


# -- reads, writes, migrations, relations ------------------------------------------------------


def test_reads_go_to_the_replica_and_writes_to_the_primary(replica: Replica) -> None:
    with routing_scope(), queries_on(DEFAULT_DB_ALIAS) as primary:
        category = make_category("Go")
    assert primary.captured_queries, "the write ran on the primary"
    wait_caught_up()

    with (
        routing_scope(),
        queries_on(ALIAS) as on_replica,
        queries_on(DEFAULT_DB_ALIAS) as on_primary,
    ):
        found = Category.objects.get(pk=category.pk)
    assert len(on_replica.captured_queries) == 1
    assert on_primary.captured_queries == []
    assert found._state.db == ALIAS


def test_migrations_only_on_the_primary() -> None:
    with override_settings(DATABASE_ROUTERS=[STICKY], RESEE_PERF={"REPLICAS": ["replica"]}):
        assert router.allow_migrate(DEFAULT_DB_ALIAS, "content", model_name="category")
        assert not router.allow_migrate(ALIAS, "content", model_name="category")
        # Other databases are someone else's to decide (Django's default: allowed).
        assert router.allow_migrate("other", "content", model_name="category")


def test_relations_across_primary_and_replica_are_allowed(replica: Replica) -> None:
    category = make_category("Rust")
    wait_caught_up()
    with routing_scope():
        from_replica = Category.objects.get(pk=category.pk)
    assert from_replica._state.db == ALIAS
    assert StickyReplicaRouter().allow_relation(from_replica, category) is True
    assert router.allow_relation(from_replica, category)
    other = Category(name="x")
    other._state.db = "elsewhere"
    assert StickyReplicaRouter().allow_relation(from_replica, other) is None


# -- within a request or task ------------------------------------------------------------------


def test_a_read_after_a_write_in_the_same_scope_sees_it(
    lagging_replica: Replica, router_path: str
) -> None:
    with routing_scope():
        make_category("Written")
        seen = sees("Written")
    assert seen == (router_path == STICKY)


def test_without_a_write_the_replica_is_stale_under_lag(lagging_replica: Replica) -> None:
    """The lag is real: a fresh scope reads from the replica, which has not replayed yet."""
    with routing_scope():
        make_category("Late")
    with routing_scope():
        assert not sees("Late")
    wait_caught_up()
    with routing_scope():
        assert sees("Late")


def test_reads_inside_atomic_on_the_primary_go_to_the_primary(
    lagging_replica: Replica, router_path: str
) -> None:
    # The write is raw SQL, which no router sees: only the atomic rule can send the read to
    # the connection that holds the uncommitted row.
    with routing_scope(), transaction.atomic():
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("INSERT INTO content_category (name, slug) VALUES ('Raw', 'raw')")
        seen = sees("Raw")
    assert seen == (router_path == STICKY)


def test_atomic_on_another_alias_does_not_pin(replica: Replica) -> None:
    with routing_scope(), transaction.atomic(using="other"):
        assert choose_read_alias() == (ALIAS, "replica")


def test_use_primary_as_context_manager_and_decorator(lagging_replica: Replica) -> None:
    with routing_scope():
        make_category("Forced")
    with routing_scope():
        assert not sees("Forced")
        with use_primary():
            assert sees("Forced")
            with use_primary():
                assert sees("Forced")
            assert sees("Forced")
        assert not sees("Forced")

    @use_primary
    def bare() -> bool:
        return sees("Forced")

    @use_primary()
    def called() -> bool:
        return sees("Forced")

    with routing_scope():
        assert bare()
        assert called()
        assert not sees("Forced")


def test_use_primary_decorates_coroutine_functions(lagging_replica: Replica) -> None:
    make_category("Async forced")

    @use_primary
    async def forced() -> bool:
        return await Category.objects.filter(name="Async forced").aexists()

    async def plain() -> bool:
        return await Category.objects.filter(name="Async forced").aexists()

    async def both() -> tuple[bool, bool]:
        with routing_scope():
            return await forced(), await plain()

    assert asyncio.run(both()) == (True, False)


def reads_go_to_the_replica(timeout: float = 15) -> None:
    """Wait until a plain read is routed to the replica: an earlier test may have stopped or
    restarted it, and the router keeps it out until a check passes again."""
    deadline = time.monotonic() + timeout
    while True:
        with routing_scope(), queries_on(ALIAS) as on_replica:
            sees("anything")
        if on_replica.captured_queries:
            return
        assert time.monotonic() < deadline, "reads never went back to the replica"
        time.sleep(0.1)


def test_note_write_pins_after_raw_sql(lagging_replica: Replica) -> None:
    reads_go_to_the_replica()
    with routing_scope():
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("INSERT INTO content_category (name, slug) VALUES ('Noted', 'noted')")
        assert not sees("Noted")
        note_write()
        assert sees("Noted")


def test_scopes_do_not_leak_into_each_other(replica: Replica) -> None:
    with routing_scope():
        make_category("Pinned")
        assert choose_read_alias() == (DEFAULT_DB_ALIAS, "pinned")
    with routing_scope():
        assert choose_read_alias() == (ALIAS, "replica")


# -- threads and async -------------------------------------------------------------------------


def _in_thread(target: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        try:
            return target()
        finally:
            connections.close_all()

    return run


def test_threads_pin_independently(lagging_replica: Replica) -> None:
    """A writer thread reads its write from the primary while a reader thread, at the same
    moment, keeps reading from the replica: pinning is per thread, not per process."""
    wrote = threading.Barrier(2, timeout=10)
    results: dict[str, Any] = {}

    def writer() -> None:
        make_category("Threaded")
        wrote.wait()
        results["writer"] = (sees("Threaded"), choose_read_alias())

    def reader() -> None:
        wrote.wait()
        results["reader"] = (sees("Threaded"), choose_read_alias())

    threads = [threading.Thread(target=_in_thread(f)) for f in (writer, reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results["writer"] == (True, (DEFAULT_DB_ALIAS, "pinned"))
    assert results["reader"] == (False, (ALIAS, "replica"))


def test_a_thread_pool_worker_starts_each_task_unpinned_in_a_routing_scope(
    replica: Replica,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def task(write: bool) -> tuple[str, str]:
        with routing_scope():
            if write:
                make_category("Task")
            return choose_read_alias()

    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_in_thread(lambda: task(True))).result()
        second = pool.submit(_in_thread(lambda: task(False))).result()
    assert first == (DEFAULT_DB_ALIAS, "pinned")
    assert second == (ALIAS, "replica")


def test_async_tasks_pin_independently(lagging_replica: Replica) -> None:
    """Two concurrent asyncio tasks: the one that wrote reads from the primary (the scope
    crosses sync_to_async into the ORM's thread and back); the other from the replica."""

    async def writer(ready: asyncio.Event) -> tuple[bool, tuple[str, str]]:
        with routing_scope():
            await Category.objects.acreate(name="Async", slug="async")
            ready.set()
            seen = await Category.objects.filter(name="Async").aexists()
            return seen, await sync_to_async(choose_read_alias)()

    async def reader(ready: asyncio.Event) -> tuple[bool, tuple[str, str]]:
        with routing_scope():
            await ready.wait()
            seen = await Category.objects.filter(name="Async").aexists()
            return seen, await sync_to_async(choose_read_alias)()

    async def main() -> list[tuple[bool, tuple[str, str]]]:
        ready = asyncio.Event()
        return list(await asyncio.gather(writer(ready), reader(ready)))

    writer_result, reader_result = asyncio.run(main())
    assert writer_result == (True, (DEFAULT_DB_ALIAS, "pinned"))
    assert reader_result == (False, (ALIAS, "replica"))


# -- across requests: the write position ---------------------------------------------------------


def test_a_replica_serves_a_client_once_it_has_replayed_its_write(
    lagging_replica: Replica,
) -> None:
    with routing_scope():
        make_category("Position")
    position = WritePosition(lsn=lagging_replica.primary_lsn(), written_at=0)
    with routing_scope(after=position):
        assert sees("Position")
        assert choose_read_alias() == (DEFAULT_DB_ALIAS, "catching_up")
    lagging_replica.lag(0)
    wait_caught_up()
    # Long before any time window (written_at is 1970): the position alone decides.
    with override_settings(RESEE_PERF={"REPLICAS": [ALIAS], "REPLICA_CHECK_INTERVAL": 0.01}):
        _replicas.forget()
        with routing_scope(after=position):
            assert choose_read_alias() == (ALIAS, "replica")
            assert sees("Position")


def test_the_time_window_where_the_position_is_unknown(replica: Replica) -> None:
    import time

    settings = {"REPLICAS": [ALIAS], "STICKY_SECONDS": 0.3, "REPLICA_CHECK_INTERVAL": 0.01}
    with override_settings(RESEE_PERF=settings):
        position = WritePosition(lsn=None, written_at=time.time())
        with routing_scope(after=position):
            assert choose_read_alias() == (DEFAULT_DB_ALIAS, "catching_up")
        time.sleep(0.35)
        with routing_scope(after=position):
            assert choose_read_alias() == (ALIAS, "replica")


def test_a_scope_that_started_on_the_primary_stays_there(replica: Replica) -> None:
    """Monotonic reads: a replica that catches up halfway through a request may lack what the
    primary has already shown, so the request keeps reading from the primary."""
    far_ahead = WritePosition(lsn=replica.primary_lsn() + 10**9, written_at=0)
    with routing_scope(after=far_ahead) as scope:
        assert choose_read_alias() == (DEFAULT_DB_ALIAS, "catching_up")
        scope.after = None
        assert choose_read_alias() == (DEFAULT_DB_ALIAS, "catching_up")


# -- failures ------------------------------------------------------------------------------------


def test_a_stopped_replica_sends_every_read_to_the_primary(replica_control: Replica) -> None:
    category = make_category("Survivor")
    wait_caught_up()
    with routing_scope():
        # An open connection to the replica, which the stop below breaks.
        assert Category.objects.get(pk=category.pk)._state.db == ALIAS
    before = routes(DEFAULT_DB_ALIAS, "no_replica")

    replica_control.stop()
    for _ in range(20):
        with routing_scope():
            found = Category.objects.get(pk=category.pk)
            assert found._state.db == DEFAULT_DB_ALIAS
    assert routes(DEFAULT_DB_ALIAS, "no_replica") - before == 20

    replica_control.start()
    # Rechecked after REPLICA_RETRY_SECONDS (0.2 s in these tests), then back in service.
    deadline = 50
    while deadline:
        with routing_scope():
            if Category.objects.get(pk=category.pk)._state.db == ALIAS:
                break
        deadline -= 1
        threading.Event().wait(0.05)
    assert deadline, "the replica did not get reads again after it came back"


def test_an_unreachable_replica_is_skipped_for_a_healthy_one(replica: Replica) -> None:
    category = make_category("Failover")
    wait_caught_up()
    settings = {"REPLICAS": ["replica_unreachable", ALIAS], "REPLICA_RETRY_SECONDS": 60}
    with override_settings(RESEE_PERF=settings):
        for _ in range(10):
            with routing_scope():
                assert Category.objects.get(pk=category.pk)._state.db == ALIAS
        assert not _replicas.status("replica_unreachable").up


def test_a_replica_lagging_beyond_the_limit_gets_no_reads(lagging_replica: Replica) -> None:
    make_category("Lagged")  # a commit the replica holds back for 2 s
    threading.Event().wait(1.2)
    settings = {"REPLICAS": [ALIAS], "REPLICA_MAX_LAG_SECONDS": 1, "REPLICA_CHECK_INTERVAL": 0.01}
    with override_settings(RESEE_PERF=settings), routing_scope():
        status = _replicas.status(ALIAS)
        assert status.up
        assert status.lag is not None
        assert status.lag > 1
        assert choose_read_alias() == (DEFAULT_DB_ALIAS, "no_replica")
        assert sees("Lagged")


def test_reads_are_spread_over_the_replicas(replica: Replica) -> None:
    with override_settings(RESEE_PERF={"REPLICAS": [ALIAS, "replica2"]}):
        chosen = set()
        for _ in range(40):
            with routing_scope():
                chosen.add(choose_read_alias()[0])
                # One replica per scope: the next read stays where the first went.
                assert choose_read_alias()[0] in chosen
    assert chosen == {ALIAS, "replica2"}


def test_replica_checks_are_one_query_per_interval_across_threads(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = 0
    real_check = _replicas._Replica.check

    def counting_check(self: _replicas._Replica) -> _replicas.ReplicaStatus:
        nonlocal checks
        checks += 1
        return real_check(self)

    monkeypatch.setattr(_replicas._Replica, "check", counting_check)
    start = threading.Barrier(8, timeout=10)

    def reader() -> None:
        start.wait()
        for _ in range(200):
            with routing_scope():
                choose_read_alias()

    with override_settings(RESEE_PERF={"REPLICAS": [ALIAS], "REPLICA_CHECK_INTERVAL": 60}):
        threads = [threading.Thread(target=_in_thread(reader)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert checks == 1


def test_no_replicas_configured_means_the_primary() -> None:
    with override_settings(RESEE_PERF={}), routing_scope():
        assert choose_read_alias() == (DEFAULT_DB_ALIAS, "no_replica")


def test_lsn_text_round_trip() -> None:
    assert _replicas.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert _replicas.format_lsn(_replicas.parse_lsn("16/B374D848")) == "16/B374D848"
    assert _replicas.parse_lsn("0/1") < _replicas.parse_lsn("1/0")
    with pytest.raises(ValueError, match="pg_lsn"):
        _replicas.parse_lsn("garbage")


def test_replica_health_gauges(replica: Replica) -> None:
    with override_settings(RESEE_PERF={"REPLICAS": [ALIAS, "replica_unreachable"]}):
        assert _replicas.status(ALIAS).up
        assert not _replicas.status("replica_unreachable").up

    def sample(name: str, alias: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"alias": alias})

    assert sample("resee_perf_replica_up", ALIAS) == 1
    assert sample("resee_perf_replica_up", "replica_unreachable") == 0
    lag = sample("resee_perf_replica_lag_seconds", ALIAS)
    assert lag is not None
    assert 0 <= lag < 5
