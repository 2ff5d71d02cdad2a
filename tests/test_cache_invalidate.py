"""``CachedFunction.invalidate()`` without the stale-set race, on the real Redis (and locmem
for Django's cache API): tombstones, the compare-and-set of every store, ``refresh()`` and
background refreshes that read the database before an invalidation, and ``invalidate()``
inside a transaction.

Each race is run deterministically: the body reads the "database", then waits while the test
writes and invalidates, then returns the old value. The harness with real processes is in
test_invalidation_race.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from django.core.cache import caches
from django.db import connections, transaction
from prometheus_client import REGISTRY

from resee_perf import cache as cache_module
from resee_perf import cache_aside, testing
from resee_perf._store import TOMBSTONE, new_tombstone, store_for, tombstone_position
from resee_perf.routers import routing_scope
from tests.replica import Replica
from tests.test_cache import Counter, FakeClock

T = TypeVar("T")

ALIASES = ["default", "locmem"]  # RedisStore (compare-and-set script), DjangoStore (add, get/set)


@pytest.fixture(autouse=True)
def prefix(settings: Any) -> str:
    value = f"t{uuid.uuid4().hex[:12]}"
    settings.RESEE_PERF = {"KEY_PREFIX": value}
    return value


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    testing.set_clock(fake)
    return fake


def skipped(name: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "resee_perf_cache_stores_skipped_total", {"name": name, "reason": reason}
    )
    return value or 0.0


def raw_value(alias: str, key: str) -> Any:
    cache = caches[alias]
    if alias == "default":
        store: Any = store_for(alias)
        return store.client.get(store.full_key(key))
    return cache.get(key)


class Database:
    """The row a body reads. ``hold()`` makes the next body run wait between its read and its
    return until the test has written (and invalidated): the stale-set race, made certain."""

    def __init__(self) -> None:
        self.title = "old"
        self.runs = Counter()
        self._read = threading.Event()
        self._written = threading.Event()
        self._hold = False

    def hold(self) -> None:
        self._read.clear()
        self._written.clear()
        self._hold = True

    def read(self) -> str:
        title = self.title
        self.runs()
        if self._hold:
            self._hold = False
            self._read.set()
            self._written.wait(5)
        return title

    def race(self, call: Callable[[], T], invalidate: Callable[[], object]) -> T:
        """Run ``call`` in a thread; when its body has read, write "new" and ``invalidate``;
        return what ``call`` returned."""
        self.hold()
        results: list[T] = []
        thread = threading.Thread(target=lambda: results.append(call()))
        thread.start()
        assert self._read.wait(5), "the body did not run"
        self.title = "new"
        invalidate()
        self._written.set()
        thread.join(5)
        assert results, "the call did not return"
        return results[0]


def wait_for_release(alias: str, lock_key: str) -> None:
    """A background refresh releases the lock after its store: then it is done."""
    deadline = time.monotonic() + 5
    while caches[alias].has_key(lock_key):
        assert time.monotonic() < deadline, "the refresh did not finish"
        time.sleep(0.01)


# --- tombstones --------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
def test_invalidate_leaves_a_fresh_tombstone_that_reads_as_a_miss(
    alias: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database()

    @cache_aside("tomb:{pk}", ttl=60, cache=alias)
    def title(pk: int) -> str:
        return database.read()

    name = title._aside.name
    # Every result of a function exists at 0 from its first call (metrics.report_cache).
    errors = (
        REGISTRY.get_sample_value(
            "resee_perf_cache_requests_total", {"name": name, "result": "error"}
        )
        or 0.0
    )
    assert title(1) == "old"
    assert title.invalidate(1) is True
    first = raw_value(alias, title.cache_key(1))
    assert first.startswith(TOMBSTONE)
    assert title.invalidate(1) is False  # a tombstone is no entry
    second = raw_value(alias, title.cache_key(1))
    assert second.startswith(TOMBSTONE)
    assert second != first  # a fresh token each time
    database.title = "new"
    with caplog.at_level("WARNING", logger="resee_perf.cache"):
        assert title(1) == "new"  # a miss, not garbage
    assert title(1) == "new"
    assert database.runs.runs == 2
    assert caplog.text == ""
    assert (
        REGISTRY.get_sample_value(
            "resee_perf_cache_requests_total", {"name": name, "result": "error"}
        )
        == errors
    )


def test_a_tombstone_lives_twice_lock_timeout() -> None:
    @cache_aside("ttl:{pk}", ttl=3600, lock_timeout=4)
    def value(pk: int) -> int:
        return pk

    value(1)
    value.invalidate(1)
    store: Any = store_for("default")
    pttl = store.client.pttl(store.full_key(value.cache_key(1)))
    assert 7_000 < pttl <= 8_000


# --- the store of a recompute that read before an invalidation --------------------------------


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("before", ["nothing", "a tombstone", "an expired entry"])
def test_a_miss_that_read_before_invalidate_returns_its_value_but_does_not_store_it(
    alias: str, before: str, clock: FakeClock
) -> None:
    database = Database()

    @cache_aside("miss:{pk}", ttl=10, beta=0, cache=alias)
    def title(pk: int) -> str:
        return database.read()

    name = title._aside.name
    if before == "a tombstone":
        title.invalidate(1)
    elif before == "an expired entry":
        assert title(1) == "old"
        clock.now += 11
    runs = database.runs.runs
    changed = skipped(name, "changed")

    # The caller gets what its body read, and the cache does not.
    assert database.race(lambda: title(1), lambda: title.invalidate(1)) == "old"
    assert skipped(name, "changed") == changed + 1
    assert title(1) == "new"  # the tombstone stayed: the next read recomputes
    assert title(1) == "new"
    assert database.runs.runs == runs + 2


@pytest.mark.parametrize("alias", ALIASES)
def test_without_an_invalidation_the_recompute_is_stored(alias: str) -> None:
    database = Database()

    @cache_aside("plain:{pk}", ttl=60, cache=alias)
    def title(pk: int) -> str:
        return database.read()

    title.invalidate(1)
    assert database.race(lambda: title(1), lambda: None) == "old"
    assert title(1) == "old"  # stored over the tombstone it saw (nothing invalidated it)
    assert database.runs.runs == 1


@pytest.mark.parametrize("alias", ALIASES)
def test_refresh_that_read_before_invalidate_does_not_store(alias: str) -> None:
    database = Database()

    @cache_aside("refresh:{pk}", ttl=60, cache=alias)
    def title(pk: int) -> str:
        return database.read()

    assert title(1) == "old"

    assert database.race(lambda: title.refresh(1), lambda: title.invalidate(1)) == "old"
    assert title(1) == "new"
    assert title.refresh(1) == "new"  # and without a race, refresh() stores
    database.title = "newer"
    assert title(1) == "new"


@pytest.mark.parametrize("alias", ALIASES)
def test_a_background_refresh_that_read_before_invalidate_does_not_store(
    alias: str, clock: FakeClock
) -> None:
    database = Database()

    @cache_aside("swr:{pk}", ttl=10, stale_ttl=30, beta=0, cache=alias)
    def title(pk: int) -> str:
        return database.read()

    name = title._aside.name
    assert title(1) == "old"
    clock.now += 11
    changed = skipped(name, "changed")

    # The caller is served the stale entry at once; the refresh runs in a pool thread.
    assert database.race(lambda: title(1), lambda: title.invalidate(1)) == "old"
    wait_for_release(alias, title.cache_key(1).replace(":c:", ":l:", 1))
    assert skipped(name, "changed") == changed + 1
    assert title(1) == "new"  # invalidated: never served stale


def test_an_early_refresh_that_read_before_invalidate_does_not_store(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database()

    @cache_aside("early:{pk}", ttl=10, beta=1.0)
    def title(pk: int) -> str:
        clock.now += 0.5  # delta = 0.5 s
        return database.read()

    assert title(1) == "old"
    clock.now += 9  # 0.5 s before expiry; draw 0.999: -0.5 * ln(0.001) = 3.5 s of head start
    testing.set_random(lambda: 0.999)

    assert database.race(lambda: title(1), lambda: title.invalidate(1)) == "old"
    wait_for_release("default", title.cache_key(1).replace(":c:", ":l:", 1))
    testing.set_random(lambda: 0.0)
    assert title(1) == "new"


@pytest.mark.parametrize("alias", ALIASES)
def test_callers_without_the_lock_store_once_and_count_the_rest(alias: str) -> None:
    together = threading.Barrier(4)

    @cache_aside("nolock", ttl=60, lock=False, cache=alias)
    def nolock() -> str:
        together.wait(5)
        return threading.current_thread().name

    name = nolock._aside.name
    changed = skipped(name, "changed")
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(nolock())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(set(results)) == 4  # each returned its own value...
    assert skipped(name, "changed") == changed + 3  # ...one was stored
    assert nolock() in results


def test_a_body_slower_than_lock_timeout_does_not_store_over_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past a tombstone's life (2 x lock_timeout) an absent key proves nothing: a tombstone
    written after the read may have expired. A tombstone seen is unique, so it still does."""
    count = Counter()

    @cache_aside("slow:{pk}", ttl=60, lock_timeout=0.1)
    def slow(pk: int) -> int:
        time.sleep(0.15)
        return count()

    name = slow._aside.name
    before = skipped(name, "slow")
    with caplog.at_level("WARNING", logger="resee_perf.cache"):
        assert slow(1) == 1
    assert skipped(name, "slow") == before + 1
    assert "not storing" in caplog.text
    assert slow(1) == 2  # not stored

    slow.invalidate(1)
    assert slow(1) == 3
    assert slow(1) == 3  # stored over the tombstone it saw


# --- the stores themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
def test_store_write_is_a_compare_and_set_and_bury_replaces(alias: str, prefix: str) -> None:
    store = store_for(alias)
    key = f"{prefix}:cas"
    assert store.write(key, b"a", 10, None) is True  # absent, as seen
    assert store.write(key, b"x", 10, None) is False  # no longer absent
    assert store.write(key, b"b", 10, b"a") is True
    assert store.write(key, b"x", 10, b"a") is False  # holds b, not a
    assert raw_value(alias, key) == b"b"
    assert store.bury(key, TOMBSTONE + b"1", 10) is True
    assert store.bury(key, TOMBSTONE + b"2", 10) is False  # it held a tombstone
    assert store.write(key, b"x", 10, TOMBSTONE + b"1") is False  # another tombstone since
    assert store.write(key, b"c", 10, TOMBSTONE + b"2") is True
    assert raw_value(alias, key) == b"c"


def test_a_tombstone_may_hold_a_write_position() -> None:
    assert tombstone_position(new_tombstone(123456789)) == 123456789
    assert tombstone_position(new_tombstone()) is None
    assert tombstone_position(b"rp\x01" + b"1" * 30) is None  # an entry
    assert tombstone_position(None) is None


# --- invalidate() inside a transaction ----------------------------------------------------------


def in_thread(call: Callable[[], T]) -> T:
    """``call`` on another database connection (its own thread), as another request would."""
    results: list[T] = []

    def run() -> None:
        try:
            results.append(call())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return results[0]


@pytest.fixture
def category() -> int:
    from content.models import Category

    row = Category.objects.create(name="old", slug=f"inv-{uuid.uuid4().hex[:8]}")
    return row.pk


@pytest.mark.django_db(transaction=True)
def test_invalidate_inside_a_transaction_runs_again_after_the_commit(category: int) -> None:
    from content.models import Category

    count = Counter()

    @cache_aside("category:{pk}", ttl=60)
    def name(pk: int) -> str:
        count()
        return Category.objects.get(pk=pk).name

    assert name(category) == "old"
    with transaction.atomic():
        Category.objects.filter(pk=category).update(name="new")
        assert name.invalidate(category) is True
        # Another request, before the commit: it reads the committed row and stores it over
        # the tombstone it found.
        assert in_thread(lambda: name(category)) == "old"
    assert name(category) == "new"
    assert count.runs == 3

    def rolled_back() -> None:
        with transaction.atomic():
            Category.objects.filter(pk=category).update(name="rolled back")
            name.invalidate(category)
            assert in_thread(lambda: name(category)) == "new"
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rolled_back()
    assert name(category) == "new"  # no second invalidation after a rollback: still cached
    assert count.runs == 4


# --- with replicas ------------------------------------------------------------------------------


@cache_aside("test:untagged-category-names", ttl=300)
def category_names() -> list[str]:
    from content.models import Category

    return sorted(Category.objects.values_list("name", flat=True))


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
@pytest.mark.parametrize("positions", [True, False], ids=["positions", "no-positions"])
def test_after_invalidate_a_lagging_replica_does_not_refill_the_entry(
    lagging_replica: Replica,
    positions: bool,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    prefix: str,
) -> None:
    """The tombstone holds the primary's WAL position after the write: the recompute that finds
    it reads from the primary until the replica has replayed it. Without the position (the
    proof that the test can fail) the replica's old rows are stored over the tombstone."""
    from content.models import Category

    settings.RESEE_PERF = {**settings.RESEE_PERF, "KEY_PREFIX": prefix}  # the replica's settings
    if not positions:
        monkeypatch.setattr(cache_module, "primary_position", lambda: None)
    with routing_scope():
        assert category_names() == []
    with routing_scope():
        Category.objects.create(name="New", slug="new-untagged")
        assert category_names.invalidate() is True
    position = tombstone_position(raw_value("default", category_names.cache_key()))
    assert (position is not None and position <= lagging_replica.primary_lsn()) is positions
    # Another request, with no write of its own.
    with routing_scope():
        assert category_names() == (["New"] if positions else [])
