"""resee_perf.cluster and the cluster store, on the test cluster of scripts/redis_cluster.sh
(3 primaries + 3 replicas on 7000-7005; RESEE_TEST_CLUSTER_URL): the backend's multi-key
commands across slots, the key layout (one slot per script, tags spread), and what a hit and
an invalidation cost in commands per node (seen with MONITOR, kept to each test's key prefix)."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.test import override_settings

from resee_perf import cache_aside, invalidate_tags
from resee_perf._keys import tag_key
from resee_perf._store import store_for

LOCATION = os.environ.get("RESEE_TEST_CLUSTER_URL", "redis://127.0.0.1:7000,redis://127.0.0.1:7001")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cluster(settings: Any) -> Iterator[Any]:
    cache = {"BACKEND": "resee_perf.cluster.RedisClusterCache", "LOCATION": LOCATION}
    with override_settings(
        CACHES={**settings.CACHES, "cluster": cache},
        RESEE_PERF={"CACHE_ALIAS": "cluster", "KEY_PREFIX": f"c{uuid.uuid4().hex[:8]}"},
    ):
        yield caches["cluster"]


def cluster_prefix() -> str:
    from resee_perf.conf import conf

    return str(conf.KEY_PREFIX)


def primaries(cache: Any) -> list[redis.Redis]:
    client = cache._cache.get_client()
    return [redis.Redis(host=n.host, port=n.port) for n in client.get_primaries()]


def monitored(nodes: list[redis.Redis], action: Callable[[], object]) -> list[tuple[int, str]]:
    """(node index, command) of what clients sent to ``nodes`` while ``action`` ran (MONITOR;
    not what scripts ran inside), whoever sent it: callers keep their test's key prefix, so
    a replica's REPLCONF or another thread's traffic cannot make a count flaky."""
    marker = f"end-{uuid.uuid4().hex}"
    seen: list[tuple[int, str]] = []
    monitors = [node.monitor() for node in nodes]  # type: ignore[no-untyped-call]
    for monitor in monitors:
        monitor.__enter__()  # MONITOR is on once this returns

    def collect(index: int, monitor: Any) -> None:
        while marker not in (command := monitor.next_command())["command"]:
            if command["client_type"] != "lua":
                seen.append((index, command["command"]))

    threads = [threading.Thread(target=collect, args=pair) for pair in enumerate(monitors)]
    for thread in threads:
        thread.start()
    try:
        action()
    finally:
        for node in nodes:
            node.echo(marker)
        for thread in threads:
            thread.join(10)
        for monitor in monitors:
            monitor.__exit__()
    return seen


def test_multi_key_commands_span_slots_and_clear_empties_every_primary(cluster: Any) -> None:
    data = {f"k{i}": i for i in range(30)}  # over every primary
    cluster.set_many(data, 60)
    assert cluster.get_many([*data, "missing"]) == data
    cluster.delete_many(["k0", "k1"])
    assert cluster.get_many(["k0", "k1", "k2"]) == {"k2": 2}
    assert cluster.incr("k2") == 3
    nodes = primaries(cluster)
    assert len(nodes) == 3
    assert all(node.dbsize() > 0 for node in nodes)
    assert cluster.clear()
    assert [node.dbsize() for node in nodes] == [0, 0, 0]


def test_an_entry_its_lock_and_its_epoch_share_a_slot_and_tags_spread(cluster: Any) -> None:
    @cache_aside("e:{pk}", ttl=60)
    def entry(pk: int) -> int:
        return pk

    store: Any = store_for("cluster")
    client = store.client
    for pk in range(20):
        key = entry.cache_key(pk)
        lock = key.replace(":c:", ":l:", 1)
        call = entry._aside.prepare((pk,), {})
        assert call is not None
        slots = {
            client.keyslot(store.full_key(key)),
            client.keyslot(store.full_key(lock)),
            client.keyslot(cluster.make_key(call.tag_keys[-1])),
        }
        assert len(slots) == 1, (key, slots)
    tag_slots = {client.keyslot(cluster.make_key(tag_key("p", f"tag:{i}"))) for i in range(100)}
    owners = {client.nodes_manager.get_node_from_slot(slot).name for slot in tag_slots}
    assert len(tag_slots) > 90
    assert len(owners) == 3, "tag generations are spread over every primary"


def test_a_hit_is_one_mget_per_node_touched_and_one_without_tags(cluster: Any) -> None:
    @cache_aside("u:{pk}", ttl=60)
    def untagged(pk: int) -> int:
        return pk

    @cache_aside("t:{pk}", ttl=60, tags=["a:{pk}", "b:{pk}"])
    def tagged(pk: int) -> int:
        return pk

    nodes = primaries(cluster)
    prefix = cluster_prefix()
    for pk in range(30):
        untagged(pk)
        tagged(pk)

    def hit(function: Callable[[int], int], pk: int) -> list[tuple[int, str]]:
        sent = monitored(nodes, lambda: function(pk))
        return [
            (node, command.split(" ", 1)[0].upper()) for node, command in sent if prefix in command
        ]

    for pk in range(30):
        assert [name for _, name in hit(untagged, pk)] == ["MGET"]
        sent = hit(tagged, pk)
        # One pipelined read per node; at most one MGET per slot (the entry's and each tag's).
        assert {name for _, name in sent} == {"MGET"}, sent
        assert len(sent) <= 3
        assert 1 <= len({node for node, _ in sent}) <= 3


def test_invalidating_a_tag_is_one_script_call_per_tag_and_no_scan(cluster: Any) -> None:
    @cache_aside("i:{pk}", ttl=60, tags=["inv:{pk}"])
    def item(pk: int) -> int:
        return pk

    for pk in range(200):
        item(pk)
    prefix = cluster_prefix()
    sent = [c for _, c in monitored(primaries(cluster), lambda: invalidate_tags("inv:1", "inv:2"))]
    ours = [command for command in sent if prefix in command]
    bumps = [command for command in ours if f"{prefix}:t:" in command]
    # One script per tag, given that tag's generation key alone: numkeys 1, then the key.
    assert len(bumps) == 2, ours
    assert all(command.startswith("EVAL") for command in bumps), bumps
    given = [re.search(rf" 1 \S*{prefix}:t:(inv:\d) ", command) for command in bumps]
    assert sorted(match.group(1) for match in given if match) == ["inv:1", "inv:2"], bumps
    names = {command.split(" ", 1)[0].strip('"').upper() for command in sent}
    assert not names & {"SCAN", "KEYS", "FLUSHDB", "FLUSHALL"}, names


def test_a_lock_left_by_a_timed_out_call_is_released_at_the_next_read(cluster: Any) -> None:
    from resee_perf import _orphans

    store: Any = store_for("cluster")
    prefix = f"{uuid.uuid4().hex[:8]}:"
    locks = [f"{prefix}l:{i}" for i in range(10)]  # over several slots
    for lock in locks:
        assert store.acquire(lock, "token", 60)
        _orphans.note("cluster", store.full_key(lock), "token")
    store.read(f"{prefix}c:any", [])
    assert [store.client.get(store.full_key(lock)) for lock in locks] == [None] * 10


def test_a_bump_of_the_cache_epoch_turns_every_entry_into_a_miss(cluster: Any) -> None:
    """What the durable invalidation queue does when it overflows: on a cluster the epoch is
    one key per slot bucket, and a bump must reach every one of them."""
    from resee_perf import _generations
    from resee_perf._keys import epoch_key
    from resee_perf.conf import conf

    runs: list[int] = []

    @cache_aside("ep:{pk}", ttl=60)
    def entry(pk: int) -> int:
        runs.append(pk)
        return pk

    for pk in range(50):
        entry(pk)
        entry(pk)
    assert len(runs) == 50
    _generations.bump(cluster, [epoch_key(conf.KEY_PREFIX)])
    for pk in range(50):
        entry(pk)
    assert len(runs) == 100
