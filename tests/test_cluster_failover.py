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
        # A range is [low, high], or [slot] alone.
        if any(int(r[0]) <= slot <= int(r[-1]) for r in ranges if r[0].isdigit()):
            return port, replicas[node_id]
    raise AssertionError(f"no primary serves slot {slot}")


def redirections(port: int) -> int:
    """MOVED and ASK replies the node has sent (Redis 7's INFO errorstats): proof that the
    clients met the change and followed it, rather than never touching the node."""
    stats = node(port).info("errorstats")
    return sum(int(stats.get(f"errorstat_{kind}", {}).get("count", 0)) for kind in ("MOVED", "ASK"))


def primary_ports(base: int) -> dict[str, int]:
    nodes = node(base).execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    return {
        fields["node_id"]: int(address.rsplit(":", 1)[1])
        for address, fields in nodes.items()
        if "master" in fields["flags"]
    }


class Load:
    """Six readers of a tagged cache_aside function and a writer that commits a new value and
    invalidates its tag, on the private cluster; every error a caller sees and every read
    older than the last invalidated write is kept."""

    def __init__(self, base: int) -> None:
        self.database = {"value": 0}
        self.committed = 0
        self.errors: list[BaseException] = []
        self.stale: list[tuple[int, int]] = []
        self.reads = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._reader) for _ in range(6)]
        self._threads.append(threading.Thread(target=self._writer))

        @cache_aside("item:{pk}", ttl=60, tags=["fo:item"])
        def item(pk: int) -> int:
            return self.database["value"]

        self.item = item

    def slot(self) -> int:
        """The slot of the entry (its lock and its bucket's epoch are in it too)."""
        store: Any = store_for("failover")
        return int(store.client.keyslot(store.full_key(self.item.cache_key(1))))

    def _reader(self) -> None:
        while not self._stop.is_set():
            floor = self.committed
            try:
                value = self.item(1)
            except BaseException as error:  # what a caller would see
                self.errors.append(error)
                return
            self.reads += 1
            if value < floor:
                self.stale.append((floor, value))

    def _writer(self) -> None:
        while not self._stop.is_set():
            try:
                self.database["value"] += 1
                invalidate_tags("fo:item")  # outside a transaction: at once
                self.committed = self.database["value"]
            except BaseException as error:
                self.errors.append(error)
                return
            time.sleep(0.005)

    def __enter__(self) -> Load:
        self.item(1)
        for thread in self._threads:
            thread.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *exc_info: object) -> None:
        time.sleep(1.5)  # load goes on after the change
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def check(self, reads_before: int) -> None:
        assert self.errors == []
        assert self.stale == [], f"stale reads (floor, value): {self.stale[:5]}"
        assert self.committed > 50
        assert self.reads > reads_before, "readers went on"
        assert self.item(1) == self.database["value"]  # served again, and current


@pytest.fixture
def on_private_cluster(private_cluster: int, settings: Any) -> Iterator[None]:
    cluster_cache = {
        "BACKEND": "resee_perf.cluster.RedisClusterCache",
        "LOCATION": f"redis://127.0.0.1:{private_cluster}",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
    with override_settings(
        CACHES={**settings.CACHES, "failover": cluster_cache},
        RESEE_PERF={"CACHE_ALIAS": "failover", "KEY_PREFIX": f"fo{uuid.uuid4().hex[:8]}"},
    ):
        yield


def test_a_primary_failover_under_load_loses_no_invalidation_and_raises_nothing(
    private_cluster: int, on_private_cluster: None
) -> None:
    with Load(private_cluster) as load:
        primary, replica = primary_and_replica(private_cluster, load.slot())
        before = load.reads
        redirected = redirections(primary)
        node(replica).execute_command("CLUSTER FAILOVER")  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        while node(replica).info("replication")["role"] != "master":
            assert time.monotonic() < deadline, "the replica did not take over"
            time.sleep(0.05)
    assert node(primary).info("replication")["role"] == "slave"
    load.check(before)
    assert redirections(primary) > redirected, "no client was sent to the new primary"


def test_a_slot_migrating_under_load_is_followed_and_loses_no_invalidation(
    private_cluster: int, on_private_cluster: None
) -> None:
    """The entry's slot moves to another primary key by key (MIGRATE, with ASK redirections
    while some keys have moved and others not), as ``redis-cli --cluster reshard`` does."""
    with Load(private_cluster) as load:
        slot = load.slot()
        source_port, _ = primary_and_replica(private_cluster, slot)
        ports = primary_ports(private_cluster)
        ids = {port: node_id for node_id, port in ports.items()}
        target_port = next(port for port in ports.values() if port != source_port)
        source, target = node(source_port), node(target_port)
        before = load.reads
        redirected = redirections(source_port)
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source_port])  # type: ignore[no-untyped-call]
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target_port])  # type: ignore[no-untyped-call]
        while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, 1):  # type: ignore[no-untyped-call]
            source.execute_command("MIGRATE", "127.0.0.1", target_port, keys[0], 0, 5000)  # type: ignore[no-untyped-call]
            time.sleep(0.2)  # readers meet the slot half moved
        for port in ports.values():
            node(port).execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target_port])  # type: ignore[no-untyped-call]
    assert primary_and_replica(private_cluster, slot)[0] == target_port
    load.check(before)
    assert redirections(source_port) > redirected, "no client met the slot half moved"
