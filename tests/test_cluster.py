"""resee_perf.cluster and the cluster store, on the test cluster of scripts/redis_cluster.sh
(3 primaries + 3 replicas on 7000-7005; RESEE_TEST_CLUSTER_URL): the backend's multi-key
commands across slots, the key layout (one slot per script, tags spread), and what a hit and
an invalidation cost in commands per node."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


def primaries(cache: Any) -> list[redis.Redis]:
    client = cache._cache.get_client()
    return [redis.Redis(host=n.host, port=n.port) for n in client.get_primaries()]


def commands(nodes: list[redis.Redis]) -> list[dict[str, int]]:
    """Calls per command on each node since the last CONFIG RESETSTAT, but the replicas' own
    (REPLCONF ACK every second) and this helper's."""
    found = []
    for node in nodes:
        stats = node.info("commandstats")
        found.append(
            {
                name.removeprefix("cmdstat_"): int(value["calls"])
                for name, value in stats.items()
                if name
                not in {
                    "cmdstat_info",
                    "cmdstat_config|resetstat",
                    "cmdstat_replconf",
                }
            }
        )
    return found


def reset(nodes: list[redis.Redis]) -> None:
    for node in nodes:
        node.config_resetstat()


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
    for pk in range(30):
        untagged(pk)
        tagged(pk)
    for pk in range(30):
        reset(nodes)
        assert untagged(pk) == pk
        per_node = [found for found in commands(nodes) if found]
        assert per_node == [{"mget": 1}], per_node
        reset(nodes)
        assert tagged(pk) == pk
        per_node = [found for found in commands(nodes) if found]
        # One pipelined read per node; at most one MGET per slot (the entry's and each tag's).
        assert 1 <= len(per_node) <= 3
        assert all(set(found) == {"mget"} for found in per_node), per_node
        assert sum(found["mget"] for found in per_node) <= 3


def test_invalidating_a_tag_is_one_script_call_per_tag_and_no_scan(cluster: Any) -> None:
    @cache_aside("i:{pk}", ttl=60, tags=["inv:{pk}"])
    def item(pk: int) -> int:
        return pk

    for pk in range(200):
        item(pk)
    nodes = primaries(cluster)
    reset(nodes)
    invalidate_tags("inv:1", "inv:2")
    calls = [found for found in commands(nodes) if found]
    assert sum(found.get("eval", 0) for found in calls) == 2
    assert not any({"scan", "keys", "flushdb"} & set(found) for found in calls)


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
