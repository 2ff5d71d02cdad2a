"""Redis Cluster under a primary failover (issue #15): a PRIVATE 6-node cluster on 7100-7105
(scripts/redis_cluster.sh with a port base), never the shared test cluster on 7000-7005.

While reader threads call a tagged cache_aside function and a writer commits new values and
invalidates their tag, the replica of the primary that holds the tag's generation and the
entry's slot takes over (``CLUSTER FAILOVER``). Callers see no error (redirections are
followed; anything else fails open to the body), and no read that starts after a write's
invalidation returned sees an older value: the bound docs/scaling.md states for a manual
failover is zero.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings

from resee_perf import cache_aside, invalidate_tags
from resee_perf._store import store_for

pytestmark = [
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.version_independent,
    pytest.mark.django_db(transaction=True),
]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "redis_cluster.sh"
BASE = int(os.environ.get("RESEE_FAULT_CLUSTER_PORT", "7100"))


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[int]:
    subprocess.run(["bash", str(SCRIPT), str(BASE)], check=True, timeout=120)
    try:
        yield BASE
    finally:
        subprocess.run(["bash", str(SCRIPT), str(BASE), "stop"], check=False, timeout=60)


def node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def primary_and_replica(base: int, slot: int) -> tuple[int, int]:
    """The ports of the primary serving ``slot`` and of its replica."""
    nodes = node(base).execute_command(  # type: ignore[no-untyped-call]
        "CLUSTER NODES"
    )  # parsed by redis-py
    primaries: dict[str, tuple[int, list[list[str]]]] = {}
    replicas: dict[str, int] = {}
    for address, fields in nodes.items():
        port = int(address.rsplit(":", 1)[1])
        if "master" in fields["flags"]:
            primaries[fields["node_id"]] = (port, fields["slots"])
        else:
            replicas[fields["master_id"]] = port
    for node_id, (port, ranges) in primaries.items():
        if any(int(low) <= slot <= int(high) for low, high in ranges):
            return port, replicas[node_id]
    raise AssertionError(f"no primary serves slot {slot}")


def test_a_primary_failover_under_load_loses_no_invalidation_and_raises_nothing(
    private_cluster: int, settings: Any
) -> None:
    prefix = f"fo{uuid.uuid4().hex[:8]}"
    cluster_cache = {
        "BACKEND": "resee_perf.cluster.RedisClusterCache",
        "LOCATION": f"redis://127.0.0.1:{private_cluster}",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
    database = {"value": 0}
    committed = [0]
    errors: list[BaseException] = []
    stale: list[tuple[int, int]] = []
    reads = [0]
    stop = threading.Event()

    with override_settings(
        CACHES={**settings.CACHES, "failover": cluster_cache},
        RESEE_PERF={"CACHE_ALIAS": "failover", "KEY_PREFIX": prefix},
    ):

        @cache_aside("item:{pk}", ttl=60, tags=["fo:item"])
        def item(pk: int) -> int:
            return database["value"]

        def reader() -> None:
            while not stop.is_set():
                floor = committed[0]
                try:
                    value = item(1)
                except BaseException as error:  # what a caller would see
                    errors.append(error)
                    return
                reads[0] += 1
                if value < floor:
                    stale.append((floor, value))

        def writer() -> None:
            while not stop.is_set():
                try:
                    database["value"] += 1
                    invalidate_tags("fo:item")  # outside a transaction: at once
                    committed[0] = database["value"]
                except BaseException as error:
                    errors.append(error)
                    return
                time.sleep(0.005)

        item(1)
        store: Any = store_for("failover")
        entry_slot = store.client.keyslot(store.full_key(item.cache_key(1)))
        primary, replica = primary_and_replica(private_cluster, entry_slot)
        threads = [threading.Thread(target=reader) for _ in range(6)]
        threads.append(threading.Thread(target=writer))
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            before = reads[0]
            node(replica).execute_command("CLUSTER FAILOVER")  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 30
            while node(replica).info("replication")["role"] != "master":
                assert time.monotonic() < deadline, "the replica did not take over"
                time.sleep(0.05)
            time.sleep(1.5)  # load goes on against the new primary
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

        assert node(primary).info("replication")["role"] == "slave"
        assert errors == []
        assert stale == [], f"stale reads (floor, value): {stale[:5]}"
        assert committed[0] > 50
        assert reads[0] > before, "readers went on through the failover"
        # After the failover the cache serves again: a hit, from the new primary.
        assert item(1) == database["value"]
