"""The concurrency properties of tag invalidation, on the real PostgreSQL and Redis:

1. Invalidating a tag costs the same Redis commands whether 10 or 100,000 entries are cached
   under it (counted with INFO commandstats on a private redis-server, since the shared one
   sees everybody's traffic).
2. No stale-set race: writers and readers in threads of this process and of spawned processes,
   a reader body that sleeps between its database read and its return; after a write has
   committed (and its invalidation run), no later read returns an older value: with tag
   invalidation, and with the per-entry ``CachedFunction.invalidate()``. The same harness with a
   naive get/set-and-delete cache, or with cache_aside invalidated by a plain DEL of its key,
   does see stale reads, so the harness can fail.
4. With Redis unreachable during the write, the write commits and the entry written before
   cannot outlive its ttl + stale_ttl.

The models are imported inside functions: spawned processes import this module (for the
worker function) before they have set Django up.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis
from django.core.cache import caches
from django.db import connections
from django.test import override_settings

from resee_perf import invalidate_on, invalidate_tags
from resee_perf._tag_invalidation import read_generations, tag_key
from resee_perf.cache import CachedFunction

# --- a private redis-server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_redis() -> Iterator[redis.Redis]:
    """A redis-server of our own: its command counters see only this module's traffic, and it
    can be paused without disturbing anyone."""
    # Imported here: spawned workers import this module before Django is set up.
    from tests.test_cache_redis_server import PrivateRedis

    server = PrivateRedis()
    server.start()
    client = server.client()
    try:
        yield client
    finally:
        client.close()
        server.stop()


@pytest.fixture
def private_cache(private_redis: redis.Redis, settings: Any) -> Iterator[str]:
    from tests.test_cache_redis_server import redis_cache

    port = private_redis.connection_pool.connection_kwargs["port"]
    private_redis.flushdb()
    with override_settings(
        CACHES={**settings.CACHES, "private": redis_cache(f"redis://127.0.0.1:{port}/0")}
    ):
        yield "private"


def commands(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, without the measuring ones."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    return {name: n for name, n in calls.items() if name not in {"info", "config|resetstat"}}


def counted(client: redis.Redis, action: Callable[[], object]) -> dict[str, int]:
    client.config_resetstat()
    action()
    return commands(client)


# --- 1. O(1) invalidation ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.version_independent
@pytest.mark.django_db(transaction=True)  # so that invalidation runs at once
@pytest.mark.single_redis  # a private redis-server
def test_invalidating_100000_entries_costs_what_invalidating_10_does(
    private_redis: redis.Redis, private_cache: str
) -> None:
    from resee_perf.cache import cache_aside

    runs: list[str] = []

    @cache_aside(key="o1:{group}:{n}", ttl=600, tags=["group:{group}"], cache=private_cache)
    def entry(group: str, n: int) -> str:
        runs.append(group)
        return group

    for n in range(10):
        entry("small", n)
    entry("big", 0)
    # 99,999 more entries of "big": copies of the one cache_aside stored, under the keys it
    # would use (calling it 100,000 times would take a minute for the same Redis state).
    cache = caches[private_cache]
    blob = private_redis.get(cache.make_key(entry.cache_key("big", 0)))
    assert blob is not None
    for start in range(1, 100_000, 10_000):
        with private_redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + 10_000, 100_000)):
                pipe.set(cache.make_key(entry.cache_key("big", n)), blob, px=600_000)
            pipe.execute()
    keys_before = private_redis.dbsize()
    assert keys_before >= 100_010
    sample = random.sample(range(100_000), 50)
    runs.clear()
    for n in sample:
        entry("big", n)
    assert runs == [], "the copied entries are real hits"

    # The first script call of a server loads the script (NOSCRIPT, SCRIPT LOAD, EVALSHA).
    invalidate_tags("warm-up", cache=private_cache)
    keys_before = private_redis.dbsize()
    small = counted(private_redis, lambda: invalidate_tags("group:small", cache=private_cache))
    big = counted(private_redis, lambda: invalidate_tags("group:big", cache=private_cache))
    assert small == big
    assert big == {"evalsha": 1, "exists": 1, "incr": 1}  # EXISTS and INCR run in the script
    assert not {"keys", "scan", "del", "unlink"} & set(big)
    # Nothing was deleted: the entries are dead because their generation moved on.
    assert private_redis.dbsize() == keys_before
    for n in sample[:10]:
        entry("big", n)
    entry("small", 3)
    assert runs == ["big"] * 10 + ["small"]

    many = [f"group:{n}" for n in range(50)]
    tags = counted(private_redis, lambda: invalidate_tags(*many, cache=private_cache))
    assert tags["evalsha"] == 1, "one round trip for all the tags of an invalidation"


# --- 4. Redis unreachable during the write -------------------------------------------------


@pytest.mark.slow
@pytest.mark.version_independent
@pytest.mark.django_db(transaction=True)
@pytest.mark.single_redis  # a private redis-server
def test_redis_unreachable_during_a_write_the_invalidation_is_retried_until_it_lands(
    private_redis: redis.Redis, private_cache: str, caplog: Any
) -> None:
    from content.models import Category
    from resee_perf import _pending
    from resee_perf.cache import cache_aside

    category = Category.objects.create(name="before", slug="bound")

    @cache_aside(key="bound:{pk}", ttl=60, tags=["bound:{pk}"], cache=private_cache)
    def name(pk: int) -> str:
        return Category.objects.get(pk=pk).name

    invalidate_on(Category, tags=lambda c: [f"bound:{c.pk}"], cache=private_cache, dispatch_uid="b")
    assert name(category.pk) == "before"
    stored_at = time.monotonic()
    # Write commands block (the script that bumps the generation is one) until the
    # client's socket timeout, 0.3 s; reads go on.
    private_redis.client_pause(1500, all=False)
    category.name = "after"
    category.save()  # no exception
    assert Category.objects.get(pk=category.pk).name == "after"
    assert any("Could not invalidate" in r.getMessage() for r in caplog.records)
    assert _pending.queue.pending(private_cache)[0] == [f"bound:{category.pk}"]
    # Redis still reads the old entry, but this process does not serve it.
    assert name(category.pk) == "after"
    time.sleep(max(0.0, stored_at + 1.6 - time.monotonic()))  # the pause is over
    deadline = time.monotonic() + 10
    while _pending.queue.pending(private_cache)[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pending.queue.pending(private_cache) == ([], [])  # the retry landed
    assert name(category.pk) == "after"


# --- 2. the stale-set race --------------------------------------------------------------------

BODY_SLEEP = 0.004  # between the reader's database read and its return: the race window
WRITE_PAUSE = 0.002
READERS_PER_PROCESS = 2
PROCESSES = 2


@dataclass
class Tally:
    reads: int = 0
    stale: int = 0
    computed: int = 0
    writes: int = 0
    examples: list[tuple[int, int]] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.reads += other.reads
        self.stale += other.stale
        self.computed += other.computed
        self.writes += other.writes
        self.examples += other.examples[:5]


@dataclass
class Shared:
    """What the workers of every process share: the versions each writer has published after
    its write committed, the writes left to make, and the start and stop signals."""

    published: Any  # multiprocessing RawArray of int64, one slot per writer
    remaining: Any  # multiprocessing Value
    go: Any
    stop: Any


_computed = itertools.count()  # body runs in this process (next() is atomic under the GIL)


def _body(category_id: int) -> int:
    from content.models import Category

    value = int(Category.objects.get(pk=category_id).name)
    time.sleep(random.uniform(0, BODY_SLEEP))
    next(_computed)
    return value


_readers: dict[str, Callable[[int], int]] = {}

# The variants whose reader is cache_aside without tags, invalidated per entry after the write:
# by CachedFunction.invalidate(), or by a DEL of its key (what invalidate() used to do).
PER_ENTRY = ("invalidate", "delete")


def _reader_for(variant: str) -> Callable[[int], int]:
    """The cached read under test, made once per process (after Django is set up)."""
    if variant not in _readers:
        if variant == "generations":
            from resee_perf.cache import cache_aside

            _readers[variant] = cache_aside(
                key="race:{category_id}", ttl=60, tags=["race:{category_id}"]
            )(_body)
        elif variant in PER_ENTRY:
            from resee_perf.cache import cache_aside

            _readers[variant] = cache_aside(key=f"race-{variant}:{{category_id}}", ttl=60)(_body)
        elif variant == "generations-after-body":

            def late(category_id: int) -> int:
                cache, tag = caches["default"], f"race:{category_id}"
                found = cache.get_many([f"late:{category_id}", tag_key(tag)])
                entry = found.get(f"late:{category_id}")
                if entry is not None and entry[0] == found.get(tag_key(tag)):
                    return int(entry[1])
                value = _body(category_id)
                generation = read_generations(cache, [tag])[tag]  # the bug: after the body
                cache.set(f"late:{category_id}", (generation, value), 60)
                return value

            _readers[variant] = late
        else:

            def naive(category_id: int) -> int:
                cache = caches["default"]
                value = cache.get(f"naive:{category_id}")
                if value is None:
                    value = _body(category_id)
                    cache.set(f"naive:{category_id}", value, 60)
                return int(value)

            _readers[variant] = naive
    return _readers[variant]


def _register_writer_invalidation(variant: str) -> None:
    if variant.startswith("generations"):
        from content.models import Category

        invalidate_on(Category, tags=lambda c: [f"race:{c.pk}"], dispatch_uid="race")


def _write(variant: str, category_id: int) -> int:
    from django.db import transaction

    from content.models import Category

    with transaction.atomic():
        category = Category.objects.select_for_update().get(pk=category_id)
        category.name = str(int(category.name) + 1)
        category.save(update_fields=["name"])
    # Here the commit is done, and so is the on_commit invalidation of the generations variant.
    if variant == "naive":
        caches["default"].delete(f"naive:{category_id}")
    elif variant in PER_ENTRY:
        cached = cast(CachedFunction[[int], int], _reader_for(variant))
        if variant == "invalidate":
            cached.invalidate(category_id)
        else:
            caches["default"].delete(cached.cache_key(category_id))
    return int(category.name)


def _writer(variant: str, category_id: int, shared: Shared, slot: int, tally: Tally) -> None:
    try:
        shared.go.wait()
        while True:
            with shared.remaining.get_lock():
                if shared.remaining.value <= 0:
                    return
                shared.remaining.value -= 1
            shared.published[slot] = _write(variant, category_id)
            tally.writes += 1
            time.sleep(random.uniform(0, WRITE_PAUSE))
    finally:
        connections.close_all()


def _reader(variant: str, category_id: int, shared: Shared, tally: Tally) -> None:
    read = _reader_for(variant)
    try:
        shared.go.wait()
        while not shared.stop.is_set():
            floor = max(shared.published)  # committed and invalidated before this read began
            value = read(category_id)
            tally.reads += 1
            if value < floor:
                tally.stale += 1
                tally.examples.append((floor, value))
    finally:
        connections.close_all()


def _run_workers(variant: str, category_id: int, shared: Shared, slot: int) -> Tally:
    """One writer and READERS_PER_PROCESS readers in threads of this process."""
    computed_before = next(_computed)
    tallies = [Tally() for _ in range(READERS_PER_PROCESS + 1)]
    threads = [
        threading.Thread(target=_writer, args=(variant, category_id, shared, slot, tallies[0])),
        *(
            threading.Thread(target=_reader, args=(variant, category_id, shared, tally))
            for tally in tallies[1:]
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Tally()
    for tally in tallies:
        total.add(tally)
    total.computed = next(_computed) - computed_before - 1
    return total


def _process_main(
    variant: str,
    databases: dict[str, str],
    category_id: int,
    shared: Shared,
    slot: int,
    results: Any,
) -> None:
    """A spawned process: set Django up on the test database, then run the workers."""
    try:
        import django
        from django.conf import settings

        for alias, name in databases.items():
            settings.DATABASES[alias]["NAME"] = name
        django.setup()
        _register_writer_invalidation(variant)
        _reader_for(variant)
        results.put(("ready", slot))
        results.put(("tally", _run_workers(variant, category_id, shared, slot)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def race(variant: str, writes: int) -> tuple[Tally, Tally]:
    """Run the harness; the tallies of this process's threads and of the spawned processes."""
    from content.models import Category

    category = Category.objects.create(name="0", slug=f"race-{variant}")
    _register_writer_invalidation(variant)
    context = multiprocessing.get_context("spawn")
    shared = Shared(
        published=context.RawArray("q", PROCESSES + 1),
        remaining=context.Value("q", writes),
        go=context.Event(),
        stop=context.Event(),
    )
    results = context.Queue()
    databases = {alias: connections[alias].settings_dict["NAME"] for alias in connections}
    processes = [
        context.Process(
            target=_process_main,
            args=(variant, databases, category.pk, shared, slot, results),
        )
        for slot in range(1, PROCESSES + 1)
    ]
    for process in processes:
        process.start()
    here = Tally()
    there = Tally()
    try:
        for _ in processes:
            kind, payload = results.get(timeout=120)
            assert kind == "ready", payload
        worker = threading.Thread(
            target=lambda: here.add(_run_workers(variant, category.pk, shared, 0))
        )
        worker.start()
        shared.go.set()
        deadline = time.monotonic() + 120
        while shared.remaining.value > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # let the readers read after the last write too
        shared.stop.set()
        worker.join()
        for _ in processes:
            kind, payload = results.get(timeout=60)
            assert kind == "tally", payload
            there.add(payload)
    finally:
        shared.go.set()
        shared.stop.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    return here, there


@pytest.mark.slow
@pytest.mark.version_independent
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "variant",
    [
        # invalidate_on: the write's tags are bumped after its commit.
        "generations",
        # today_reviews.invalidate(pk) after the commit: a tombstone, and compare-and-set stores.
        "invalidate",
    ],
)
def test_no_stale_read_after_a_committed_write_threads_and_processes(variant: str) -> None:
    here, there = race(variant, writes=1000)
    total = Tally()
    total.add(here)
    total.add(there)
    assert total.writes == 1000
    assert here.writes > 0
    assert there.writes > 0, "the processes wrote too"
    assert here.reads > 0
    assert there.reads > 0
    assert total.reads >= 1000
    assert total.stale == 0, f"stale reads (floor, value): {total.examples}"
    # A cache that never served anything would pass trivially: most reads must be served from
    # it (waiting on another reader's recompute counts as served).
    assert total.computed < total.reads / 2, (total.computed, total.reads)


@pytest.mark.slow
@pytest.mark.version_independent
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "variant",
    [
        # get, compute, set; delete after the write commits: a reader that loaded the old row
        # before the commit stores it after the delete, and later readers get it.
        "naive",
        # Generations and the same after-commit invalidation, but read after the body instead
        # of before: the old value is stored under the new generation and looks current.
        "generations-after-body",
        # cache_aside, its key deleted after the commit (invalidate() before tombstones): a
        # reader that found no entry and loaded the old row stores it after the delete.
        "delete",
    ],
)
def test_the_same_harness_catches_a_cache_with_the_race(variant: str) -> None:
    here, there = race(variant, writes=300)
    assert here.stale + there.stale > 0
