"""No stale read once Redis answers again, whatever happened to it: hung (SIGSTOP) during a
write, killed and restarted from a snapshot taken before the write, restarted empty, and the
queue of failed invalidations overflowing. Each test starts its own redis-server on a spare port
(tests.test_cache_redis_server.PrivateRedis); "another process" is a spawned one that sets
Django up and reads the same entries.

The source of truth is a JSON file: a committed write replaces it, then invalidates. A read is
stale when it returns something else than the file holds.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from resee_perf import _pending, cache_aside, invalidate_tags
from tests.fault_reader import ENTRIES, make_reader, read_elsewhere, stale_reads
from tests.test_cache_redis_server import PrivateRedis, commands

CHANGED_GROUPS = (0, 1)

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    # Real transactions: the invalidations run from on_commit, as after a request's write.
    pytest.mark.django_db(transaction=True),
]


def write(truth: Path, version: str, groups: tuple[int, ...], keys: tuple[int, ...] = ()) -> None:
    """A write: new rows for the entries of ``groups`` (and ``keys``)."""
    values = json.loads(truth.read_text()) if truth.exists() else {}
    for k, g in ENTRIES:
        if g in groups or k in keys:
            values[str(k)] = f"{k}:{version}"
    truth.write_text(json.dumps(values))


def stale_reads_in_another_process(server: PrivateRedis, resee: dict[str, Any], truth: Path) -> Any:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        job = pool.submit(read_elsewhere, server.cache_settings(), resee, str(truth))
        return job.result(timeout=120)


def wait_until_landed(alias: str = "private") -> None:
    deadline = time.monotonic() + 15
    while _pending.queue.pending(alias) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pending.queue.pending(alias) == ([], [])


def counted(metric: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


@pytest.fixture
def resee(settings: Any) -> dict[str, Any]:
    settings.RESEE_PERF = {
        "KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}",
        "CACHE_BREAKER_THRESHOLD": 2,
        "CACHE_BREAKER_COOLDOWN": 0.2,
        "INVALIDATION_RETRY_SECONDS": 0.5,
    }
    return settings.RESEE_PERF  # type: ignore[no-any-return]


@pytest.fixture
def server(settings: Any, tmp_path: Path, resee: dict[str, Any]) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    settings.CACHES = {**settings.CACHES, "private": server.cache_settings()}
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def truth(tmp_path: Path) -> Path:
    path = tmp_path / "truth.json"
    write(path, "v1", (0, 1, 2, 3))
    return path


def warm(read: Callable[[int, int], str]) -> None:
    for k, g in ENTRIES:
        read(k, g)


def test_a_write_while_redis_hangs_is_invalidated_once_it_answers(
    server: PrivateRedis, resee: dict[str, Any], truth: Path
) -> None:
    read = make_reader(truth)
    warm(read)
    server.pause()
    try:
        with transaction.atomic():
            write(truth, "v2", CHANGED_GROUPS)
            invalidate_tags(*(f"fault:{g}" for g in CHANGED_GROUPS), cache="private")
        # Committed, no exception. Bumping a tag twice is bumping it once: merged.
        invalidate_tags("fault:0", cache="private")
        # One entry by key: a tombstone, queued too.
        write(truth, "v3", (), keys=(2,))
        assert read.invalidate(2, 2) is False
        tags, keys = _pending.queue.pending("private")
        assert sorted(tags) == ["fault:0", "fault:1"]
        assert keys == [read.cache_key(2, 2)]
        assert stale_reads(read, truth) == []  # while hung
    finally:
        server.resume()
    # Before the retry lands (or after: either way), the writer's process serves nothing stale.
    assert stale_reads(read, truth) == []
    wait_until_landed()
    assert stale_reads_in_another_process(server, resee, truth) == []
    assert stale_reads(read, truth) == []
    assert (
        counted("resee_perf_invalidations_total", {"cache": "private", "result": "retried"})
        >= len(CHANGED_GROUPS) + 1
    )


def test_a_restart_from_a_snapshot_taken_before_the_write_serves_nothing_stale(
    server: PrivateRedis, resee: dict[str, Any], truth: Path
) -> None:
    read = make_reader(truth)
    warm(read)
    server.client().save()  # the snapshot: entries and generations from before the write
    with transaction.atomic():
        write(truth, "v2", CHANGED_GROUPS)
        invalidate_tags(*(f"fault:{g}" for g in CHANGED_GROUPS), cache="private")  # lands
    assert stale_reads(read, truth) == []
    restarts = counted(
        "resee_perf_cache_epoch_changes_total", {"cache": "private", "reason": "restart"}
    )

    # This process's pooled connections die with the server; redis-py reconnects without an
    # error, and the reconnect is where the restart is seen.
    server.kill()
    server.start()
    assert stale_reads(read, truth) == []
    assert stale_reads_in_another_process(server, resee, truth) == []
    assert (
        counted("resee_perf_cache_epoch_changes_total", {"cache": "private", "reason": "restart"})
        == restarts + 1
    )

    # Again from the same snapshot, a process that never saw the server before reads first.
    server.kill()
    server.start()
    assert stale_reads_in_another_process(server, resee, truth) == []
    assert stale_reads(read, truth) == []

    # Healthy again: a hit is still one round trip.
    admin = server.client()
    admin.config_resetstat()
    assert stale_reads(read, truth) == []
    assert commands(admin) == {"mget": len(ENTRIES)}


def test_an_empty_restart_serves_nothing_stale(
    server: PrivateRedis, resee: dict[str, Any], truth: Path
) -> None:
    read = make_reader(truth)
    warm(read)
    write(truth, "v2", CHANGED_GROUPS)
    invalidate_tags(*(f"fault:{g}" for g in CHANGED_GROUPS), cache="private")
    server.kill()
    server.start()  # no snapshot was taken: empty
    assert stale_reads(read, truth) == []
    assert stale_reads_in_another_process(server, resee, truth) == []


def test_an_overflowing_queue_falls_back_to_invalidating_everything(
    server: PrivateRedis, resee: dict[str, Any], truth: Path
) -> None:
    resee["INVALIDATION_QUEUE_SIZE"] = 3
    read = make_reader(truth)
    warm(read)
    before = counted("resee_perf_invalidation_overflows_total", {"cache": "private"})
    server.pause()
    try:
        write(truth, "v2", (0,))
        # Five tags over a bound of three: fault:0's own bump is dropped with the others...
        invalidate_tags("fault:0", "other:1", "other:2", "other:3", "other:4", cache="private")
        # ...for one bump of the epoch, which every entry carries.
        assert _pending.queue.pending("private") == ([], [])
        assert _pending.queue.epoch_pending("private")
        assert counted("resee_perf_invalidation_overflows_total", {"cache": "private"}) == (
            before + 5
        )
    finally:
        server.resume()
    # Until it lands this process bypasses the whole cache; after, nobody reads an old entry.
    assert stale_reads(read, truth) == []
    wait_until_landed()
    assert stale_reads_in_another_process(server, resee, truth) == []
    assert stale_reads(read, truth) == []


def test_a_failed_invalidation_never_fails_the_committed_write(
    server: PrivateRedis, truth: Path
) -> None:
    read = make_reader(truth)
    warm(read)
    server.pause()
    try:
        # invalidate_tags from on_commit and invalidate() again after the commit: both swallow
        # the timeout (logged, queued), so the request that wrote does not turn into a 500.
        with transaction.atomic():
            invalidate_tags("fault:0", cache="private")
            assert read.invalidate(0, 0) is False
    finally:
        server.resume()
    wait_until_landed()


def test_a_redis_that_refuses_info_still_caches_without_restart_detection(
    settings: Any, resee: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    server = PrivateRedis(options=("--rename-command", "INFO", ""))
    server.start()
    settings.CACHES = {**settings.CACHES, "private": server.cache_settings()}
    runs = []

    @cache_aside("noinfo:{k}", ttl=60, cache="private")
    def noinfo(k: int) -> int:
        runs.append(k)
        return k

    try:
        with caplog.at_level("ERROR", logger="resee_perf.cache"):
            assert [noinfo(1) for _ in range(3)] == [1, 1, 1]
            server.kill()
            server.start()
            assert [noinfo(1) for _ in range(3)] == [1, 1, 1]
    finally:
        server.stop()
    assert runs == [1, 1]  # cached before and after the restart (empty: one miss)
    assert caplog.text.count("cannot read the Redis run_id") == 1


def test_a_lock_left_while_redis_hangs_is_released_once_it_answers(
    server: PrivateRedis, resee: dict[str, Any]
) -> None:
    """Redis hangs while a recompute holds its key's lock: the store and the release time
    out, and the lock would stand for the rest of lock_timeout with no holder, every caller of
    the key waiting it out after Redis answers again. This process releases it at its first
    read that succeeds."""
    calls: list[int] = []

    @cache_aside("orphan:{n}", ttl=60, cache="private", lock_timeout=30)
    def body(n: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            server.pause()  # the lock is taken; its store and release will time out
        return n

    client = server.client()
    try:
        assert body(1) == 1
    finally:
        server.resume()
    (lock,) = client.keys("*:l:*")  # a lock nobody holds any more
    assert client.pttl(lock) > 20_000
    # The breaker opened on the timeouts: past its cooldown the next read succeeds, and
    # releases the lock this process left.
    time.sleep(resee["CACHE_BREAKER_COOLDOWN"] + 0.1)
    assert body(2) == 2
    assert client.keys("*:l:*") == []
    # No lock left to wait 30 s for: a hit (the timed-out store ran when Redis resumed) or a
    # recompute that stores at once.
    assert body(1) == 1
    assert body(1) == 1
    assert calls in ([1, 2], [1, 2, 1])
