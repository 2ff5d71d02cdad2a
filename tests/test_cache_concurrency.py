"""The concurrency claims of cache_aside, with real processes and threads on the real Redis:
one recompute for a cold stampede across processes, lock holders that die or overrun do not
wedge a key, and a hot key read continuously through its expiries is never read blocked.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from resee_perf import cache_aside, testing
from resee_perf._store import store_for

PROCESSES = 4
THREADS = 10
BODY_SECONDS = 0.2


def raw_redis() -> redis.Redis:
    """Where the tests count runs and clean up: the server of the default cache (REDIS_URL's,
    or the Sentinel primary); on a cluster, which has no one server, REDIS_URL's."""
    from django.core.cache import caches

    django_redis_client = getattr(caches["default"], "client", None)
    if hasattr(django_redis_client, "get_client"):
        return django_redis_client.get_client(write=True)  # type: ignore[union-attr,no-any-return]
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"))


@cache_aside("stampede:{runs_key}", ttl=60)
def slow_report(runs_key: str) -> dict[str, str]:
    raw_redis().incr(runs_key)  # counted where every process can see it
    time.sleep(BODY_SECONDS)
    return {"report": runs_key}


@cache_aside("dies:{runs_key}", ttl=60, lock_timeout=1.0)
def dies_holding_the_lock(runs_key: str, *, die: bool = False) -> str:
    raw_redis().incr(runs_key)
    if die:
        os._exit(3)  # killed mid-recompute: no finally, no release
    return "computed"


def _setup_child(prefix: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.RESEE_PERF = {"KEY_PREFIX": prefix}


def _stampede_process(prefix: str, runs_key: str, ready: Any, results: Any) -> None:
    _setup_child(prefix)
    values: list[dict[str, str]] = []
    together = threading.Barrier(THREADS)

    def call() -> None:
        together.wait()
        values.append(slow_report(runs_key))

    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    ready.wait()  # every process is up before any thread calls
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(values)


def _die_process(prefix: str, runs_key: str) -> None:
    _setup_child(prefix)
    dies_holding_the_lock(runs_key, die=True)


@pytest.fixture
def prefix(settings: Any) -> Iterator[str]:
    value = f"t{uuid.uuid4().hex[:12]}"
    settings.RESEE_PERF = {"KEY_PREFIX": value}
    yield value
    for key in raw_redis().scan_iter(f"*{value}*"):
        raw_redis().delete(key)


def runs(key: str) -> int:
    return int(raw_redis().get(key) or 0)


def counted(name: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "resee_perf_cache_requests_total", {"name": name, "result": result}
    )
    return value or 0.0


@pytest.mark.slow
@pytest.mark.version_independent
def test_forty_callers_in_four_processes_run_a_cold_body_once(prefix: str) -> None:
    runs_key = f"{prefix}:runs"
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=_stampede_process, args=(prefix, runs_key, ready, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    values = [value for _ in processes for value in results.get(timeout=60)]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0

    assert runs(runs_key) == 1
    assert values == [{"report": runs_key}] * (PROCESSES * THREADS)


def test_a_lock_holder_that_dies_does_not_wedge_the_key(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    runs_key = f"{prefix}:runs"
    child = multiprocessing.get_context("spawn").Process(
        target=_die_process, args=(prefix, runs_key)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 3
    store: Any = store_for("default")  # its keys are hash-tagged on a cluster
    lock_key = store.full_key(dies_holding_the_lock.cache_key(runs_key).replace(":c:", ":l:", 1))
    assert store.client.pttl(lock_key) > 0  # the dead process still "holds" it

    name = dies_holding_the_lock._aside.name
    misses = counted(name, "miss")
    with caplog.at_level("WARNING", logger="resee_perf.cache"):
        assert dies_holding_the_lock(runs_key) == "computed"
    assert counted(name, "miss") == misses + 1  # this caller took the expired lock...
    assert "computing without it" not in caplog.text  # ...rather than giving up on it
    assert dies_holding_the_lock(runs_key) == "computed"
    assert runs(runs_key) == 2  # the dead one and ours


def test_a_lock_holder_that_overruns_lock_timeout_is_taken_over(prefix: str) -> None:
    release = threading.Event()
    bodies: list[str] = []

    @cache_aside("overrun", ttl=60, lock_timeout=0.3)
    def overrun() -> str:
        bodies.append(threading.current_thread().name)
        if len(bodies) == 1:
            release.wait(30)  # the first holder hangs far past lock_timeout
        return f"run {len(bodies)}"

    holder = threading.Thread(target=overrun, name="holder")
    holder.start()
    while not bodies:
        time.sleep(0.005)
    assert overrun() == "run 2"  # did not wait for the holder, which still hangs
    assert holder.is_alive()
    release.set()
    holder.join(10)
    assert bodies == ["holder", threading.current_thread().name]


def test_releasing_an_expired_lock_never_deletes_the_next_holders(prefix: str) -> None:
    store = store_for("default")
    assert store.acquire("lk", "first", 0.05)
    assert not store.acquire("lk", "second", 10)
    time.sleep(0.1)  # the first holder overran its lock
    assert store.acquire("lk", "second", 10)
    store.release("lk", "first")  # late release by the first holder: a no-op
    assert not store.acquire("lk", "third", 10)
    store.release("lk", "second")
    assert store.acquire("lk", "third", 10)


TTL = 1.0
HOT_BODY = 0.1
READERS = 8
HOT_SECONDS = 3.0


@pytest.mark.slow
@pytest.mark.version_independent
@pytest.mark.parametrize(
    "options",
    [{"stale_ttl": 10.0, "beta": 0.0}, {"beta": 1.0}],
    ids=["stale-while-revalidate", "xfetch"],
)
def test_a_hot_key_is_never_read_blocked_at_expiry(prefix: str, options: dict[str, Any]) -> None:
    """8 threads read one key continuously through its expiries (TTL 1 s, 100 ms body). No
    reader runs the body or waits for it: every recompute after the first runs in a refresh
    thread while readers get the current (or stale) value. With stale-while-revalidate there
    is at most one recompute per TTL period."""
    bodies: list[tuple[float, str]] = []

    @cache_aside("hot", ttl=TTL, **options)
    def hot() -> float:
        bodies.append((time.time(), threading.current_thread().name))
        time.sleep(HOT_BODY)
        return time.time()

    name = hot._aside.name
    hot()  # warm: the one cold miss
    before = {result: counted(name, result) for result in ("wait", "miss", "error")}
    deadline = time.monotonic() + HOT_SECONDS
    slowest = [0.0] * READERS

    def read(index: int) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            hot()
            slowest[index] = max(slowest[index], time.perf_counter() - started)

    readers = [threading.Thread(target=read, args=(i,)) for i in range(READERS)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    testing.wait_for_background_refreshes(10)

    refreshes = bodies[1:]
    report = f"{len(refreshes)} refreshes, slowest read {max(slowest) * 1000:.1f} ms"
    assert refreshes, report
    assert all(thread.startswith("resee-refresh") for _, thread in refreshes), report
    for result, count in before.items():
        assert counted(name, result) == count, f"{result}: {report}"
    if "stale_ttl" in options:
        starts = [started for started, _ in bodies]
        assert all(b - a >= TTL for a, b in itertools.pairwise(starts)), report
        assert len(refreshes) <= HOT_SECONDS / TTL + 1, report


STALE_HOT_SECONDS = 5.0


@pytest.mark.slow
@pytest.mark.version_independent
def test_a_hot_key_with_stale_ttl_and_default_beta_refreshes_once_per_ttl(prefix: str) -> None:
    """8 threads read one key (TTL 1 s, 100 ms body, ``stale_ttl=30``, ``beta`` not given) for
    5 s. ``stale_ttl`` turns XFetch off by default: with it on, this recomputed 13-17 times in
    6 s. At most 1.3 recomputes per TTL period after the first fill, and no read waits."""
    bodies: list[str] = []

    @cache_aside("hot-stale", ttl=TTL, stale_ttl=30)
    def hot() -> float:
        bodies.append(threading.current_thread().name)
        time.sleep(HOT_BODY)
        return time.time()

    name = hot._aside.name
    assert hot._aside.options.beta == 0.0
    hot()  # warm: the one cold miss
    before = {result: counted(name, result) for result in ("wait", "miss", "error")}
    reads = [0] * READERS
    deadline = time.monotonic() + STALE_HOT_SECONDS

    def read(index: int) -> None:
        while time.monotonic() < deadline:
            hot()
            reads[index] += 1

    readers = [threading.Thread(target=read, args=(i,)) for i in range(READERS)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    testing.wait_for_background_refreshes(10)

    refreshes = bodies[1:]
    blocked = {result: counted(name, result) - count for result, count in before.items()}
    report = f"{len(refreshes)} refreshes in {sum(reads)} reads, blocked {blocked}"
    assert refreshes, report
    assert len(refreshes) <= 1.3 * STALE_HOT_SECONDS / TTL + 1, report
    assert all(thread.startswith("resee-refresh") for thread in refreshes), report
    assert blocked == dict.fromkeys(before, 0.0), report
