"""resee_perf._sentinel on the test Sentinel set (scripts/redis_sentinel.sh: service "resee",
sentinels 26380-26382), without a failover: tests/test_redis_sentinel_failover.py has those."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.cache import caches
from redis.sentinel import Sentinel, SentinelConnectionPool

from resee_perf._redis import client_for
from resee_perf._sentinel import NotThePrimary, _confirm, run_on_primary

ROOT = Path(__file__).resolve().parent.parent
SENTINELS = [
    (host, int(port))
    for host, port in (
        item.rsplit(":", 1)
        for item in os.environ.get(
            "RESEE_TEST_SENTINELS", "127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382"
        ).split(",")
    )
]


def _replica(sentinel: Sentinel) -> tuple[str, int]:
    host, port = sentinel.discover_slaves("resee")[0]
    return str(host), int(port)


def _pool(sentinel: Sentinel) -> SentinelConnectionPool:
    return SentinelConnectionPool("resee", sentinel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def sentinel() -> Sentinel:
    # Idempotent: a no-op when scripts/test.sh (or a developer) already started the set.
    subprocess.run(["bash", str(ROOT / "scripts" / "redis_sentinel.sh")], check=True, timeout=90)
    return Sentinel(SENTINELS, socket_timeout=1)


def test_outside_sentinel_the_operation_just_runs() -> None:
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"))
    assert run_on_primary(client, lambda used: used is client) is True


def test_a_write_a_replica_acknowledged_is_on_the_replica_when_it_returns(
    sentinel: Sentinel,
) -> None:
    client = sentinel.master_for("resee", socket_timeout=1, db=1)
    key = f"sentinel-test:{uuid.uuid4().hex}"
    try:
        assert run_on_primary(client, lambda primary: primary.incr(key)) == 1
        host, port = _replica(sentinel)
        assert redis.Redis(host=host, port=port, db=1).get(key) == b"1"
    finally:
        client.delete(key)


def test_a_write_no_sentinel_can_confirm_is_not_acknowledged() -> None:
    nobody = Sentinel([("127.0.0.1", 1)], socket_timeout=0.5)  # port 1: refused
    pool = _pool(nobody)
    with pytest.raises(NotThePrimary, match="no sentinel of 'resee' answered"):
        _confirm(pool, ("127.0.0.1", 6380))


def test_a_write_to_a_server_the_sentinels_do_not_name_is_not_acknowledged(
    sentinel: Sentinel,
) -> None:
    pool = _pool(sentinel)
    host, port = _replica(sentinel)
    with pytest.raises(NotThePrimary, match=f"went to {host}:{port}"):
        _confirm(pool, (host, port))
    primary = sentinel.discover_master("resee")
    _confirm(pool, (str(primary[0]), int(primary[1])))  # the named primary: no error


def test_the_library_writes_and_scripts_through_the_sentinels_primary(
    sentinel: Sentinel, settings: Any
) -> None:
    """client_for (every cache_aside read, lock, entry, bump and tombstone) takes the master pool
    of django-redis's Sentinel client, never the replica pool its cache-API reads use."""
    from tests.settings import SENTINEL_CACHE

    settings.CACHES = {**settings.CACHES, "sentinel": SENTINEL_CACHE}
    client = client_for(caches["sentinel"])
    assert client is not None
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.is_master
    assert client.config_get("port")["port"] == str(sentinel.discover_master("resee")[1])
