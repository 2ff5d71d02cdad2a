"""cache_aside and tag invalidation on Django cache backends other than Redis: the local-memory
cache, the database cache (on the real PostgreSQL) and memcached (a private memcached started by
the test, through pymemcache). They have no native client, so these exercise the generic path
built on Django's cache API: ``get_many`` for a hit, ``add`` for the lock and for new tag
generations, ``incr`` for invalidation."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from resee_perf import cache_aside, invalidate_tags
from tests.test_cache_redis_server import spare_port

# memcached and a private redis-server: nothing the Redis topology changes.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.single_redis]

BACKENDS = ["locmem", "database", "memcached"]


@pytest.fixture(scope="module")
def memcached_location() -> Iterator[str]:
    if shutil.which("memcached") is None:
        # The README promises the suite on PostgreSQL and Redis alone; CI (.ci/run installs
        # memcached) must not skip it.
        message = "memcached is not installed (Debian: apt-get install memcached)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = spare_port()
    process = subprocess.Popen(
        ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "nobody"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(params=BACKENDS)
def alias(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    """A cache alias of the backend under test, with a fresh resee-perf KEY_PREFIX."""
    backends: dict[str, dict[str, Any]] = {
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "database": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "resee_perf_test_cache",
        },
    }
    if request.param == "memcached":
        location = request.getfixturevalue("memcached_location")
        backends["memcached"] = {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": location,
        }
    caches_setting = {**settings.CACHES, "backend_under_test": backends[request.param]}
    with override_settings(
        CACHES=caches_setting, RESEE_PERF={"KEY_PREFIX": f"b{uuid.uuid4().hex[:10]}"}
    ):
        if request.param == "database":
            from django.core.management import call_command

            call_command("createcachetable", "resee_perf_test_cache", verbosity=0)
        wait_until_up("backend_under_test")
        yield "backend_under_test"


def wait_until_up(alias: str) -> None:
    for _ in range(100):
        try:
            caches[alias].set("ping", 1, 5)
            if caches[alias].get("ping") == 1:
                return
        except Exception:  # memcached still starting: any error means "not yet"
            pass
        time.sleep(0.02)
    raise RuntimeError(f"cache {alias} did not come up")


def test_hit_miss_and_none(alias: str) -> None:
    runs: list[int] = []

    @cache_aside("b:{x}", ttl=60, cache=alias)
    def compute(x: int) -> dict[str, Any] | None:
        runs.append(x)
        return None if x == 0 else {"x": x}

    assert compute(1) == {"x": 1}
    assert compute(1) == {"x": 1}
    assert compute(0) is None
    assert compute(0) is None
    assert runs == [1, 0]


def test_tag_invalidation(alias: str) -> None:
    source = {"value": "old"}

    @cache_aside("t:{user_id}", ttl=60, tags=["user:{user_id}"], cache=alias)
    def read(user_id: int) -> str:
        return f"{user_id}:{source['value']}"

    assert read(1) == "1:old"
    assert read(2) == "2:old"
    source["value"] = "new"
    invalidate_tags("user:1", cache=alias)
    assert read(1) == "1:new"
    assert read(2) == "2:old"  # another tag's entry stays cached


def test_invalidate_and_refresh(alias: str) -> None:
    source = {"value": 1}

    @cache_aside("r:{k}", ttl=60, cache=alias)
    def read(k: str) -> int:
        return source["value"]

    assert read("a") == 1
    source["value"] = 2
    assert read("a") == 1
    read.invalidate("a")
    assert read("a") == 2
    source["value"] = 3
    read.refresh("a")
    assert read("a") == 3


def test_one_recompute_for_concurrent_cold_callers(alias: str) -> None:
    runs: list[int] = []
    runs_lock = threading.Lock()

    @cache_aside("cold", ttl=60, cache=alias)
    def slow() -> str:
        with runs_lock:
            runs.append(1)
        time.sleep(0.2)
        return "value"

    results: list[str] = []

    def call() -> None:
        results.append(slow())

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["value"] * 10
    assert len(runs) == 1
