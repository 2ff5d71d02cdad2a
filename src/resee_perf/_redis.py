"""Redis plumbing: which redis-py client a Django cache writes through, and every Lua script.

A leaf: it knows Redis and Django's cache classes, nothing of the features above it. The
scripts are here, side by side, so that their atomicity arguments can be read together.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, cast

from django.core.cache import BaseCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

from resee_perf.cluster import RedisClusterCache

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis import Redis
    from redis.cluster import RedisCluster


def client_for(cache: BaseCache) -> Redis | None:
    """The redis-py client that writes ``cache``'s keys, or None if it is not a plain Redis."""
    if isinstance(cache, DjangoRedisCache):
        return cache._cache.get_client(write=True)
    try:
        from django_redis.cache import RedisCache
        from django_redis.client import DefaultClient, HerdClient, ShardClient
    except ImportError:  # pragma: no cover - the redis extra is not installed
        return None
    if not isinstance(cache, RedisCache):
        return None
    client = cache.client
    # The herd client wraps every value (INCR cannot work on them) and the shard client spreads
    # keys over servers (one script cannot see them all): both go through the cache API.
    if isinstance(client, DefaultClient) and not isinstance(client, HerdClient | ShardClient):
        return client.get_client(write=True)  # type: ignore[no-any-return]
    return None


def cluster_client_for(cache: BaseCache) -> RedisCluster | None:
    """The ``RedisCluster`` behind ``cache`` if it is a :class:`RedisClusterCache`, else None.

    On a cluster every script gets keys of one slot (entries and locks carry a hash tag,
    resee_perf._keys.slot_tagged), and multi-key reads go one MGET per slot, pipelined."""
    if isinstance(cache, RedisClusterCache):
        return cast("RedisCluster", cache._cache.get_client(write=True))
    return None


def read_keys(client: RedisCluster, keys: Sequence[str]) -> list[Any]:
    """Raw values of ``keys``: one MGET when they share a slot, else one per slot, pipelined
    (one round trip per node)."""
    keyslot = client.keyslot
    slot = keyslot(keys[0])  # type: ignore[no-untyped-call]
    if all(keyslot(key) == slot for key in keys[1:]):  # type: ignore[no-untyped-call]
        return list(client.mget(keys))
    return list(client.mget_nonatomic(keys))


def eval_per_key(
    client: RedisCluster, script: str, keys: Sequence[str], args: Sequence[Sequence[object]]
) -> None:
    """Run ``script`` once per key (``KEYS[1]``; ``ARGV`` from ``args``), pipelined: a
    cluster refuses a script over keys of several slots. Each call stays atomic on its key."""
    pipeline = client.pipeline()  # type: ignore[no-untyped-call]
    for key, key_args in zip(keys, args, strict=True):
        pipeline.execute_command("EVAL", script, 1, key, *key_args)
    pipeline.execute()


def fresh_generation() -> int:
    """A new value for a generation key (a missing one, or one a script replaces)."""
    # 62 bits: stays an int in every backend, leaves 2**62 increments before INCR overflows,
    # and collides with an evicted generation with negligible probability.
    return secrets.randbits(62)


# --- Locks and entries (resee_perf._store) -----------------------------------------------------

# Deletes the lock only if it still holds our token: a holder that outlived lock_timeout must
# not delete the lock a later caller acquired (https://redis.io/docs/latest/commands/set/).
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# Stores the entry only if the key still holds what the recompute saw before its body ran
# (compared by SHA-1, so that a large entry is not sent back). Absent keys use SET NX instead.
STORE_IF_UNCHANGED_SCRIPT = """
local current = redis.call('get', KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[1] then
    return 0
end
redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3])
return 1
"""

# Replaces whatever the key holds by a tombstone (ARGV[1]); 1 if it held something else than a
# tombstone (ARGV[3] is the tombstone prefix).
BURY_SCRIPT = """
local old = redis.call('get', KEYS[1])
redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
if old and string.sub(old, 1, #ARGV[3]) ~= ARGV[3] then
    return 1
end
return 0
"""

# --- Restart detection (resee_perf._store) -----------------------------------------------------

# For each (epoch key, marker key) pair: unless the marker holds this server's run_id, give
# the epoch a new random value (ARGV[2]) and the marker the run_id. A missing marker counts as a
# different server (an empty restart, a key nobody confirmed yet). Returns how many epochs
# that existed were replaced: a missing one had no entries to retire.
CONFIRM_EPOCH_SCRIPT = """
local changed = 0
for i = 1, #KEYS, 2 do
    if redis.call('get', KEYS[i + 1]) ~= ARGV[1] then
        if redis.call('exists', KEYS[i]) == 1 then
            changed = changed + 1
        end
        redis.call('set', KEYS[i], ARGV[2])
        redis.call('set', KEYS[i + 1], ARGV[1])
    end
end
return changed
"""

# --- Tag generations (resee_perf.invalidation) -------------------------------------------------

# One script call bumps every tag of an invalidation: one round trip, and atomic per key, so a
# key cannot expire between the existence check and the INCR (INCR on a missing key would
# restart it at 1, a value an evicted generation may have had). A value INCR rejects (not an
# integer, or at the 64-bit limit) is replaced too: any new value invalidates.
BUMP_SCRIPT = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local bumped = redis.call('EXISTS', key) == 1 and redis.pcall('INCR', key)
  if type(bumped) ~= 'number' then
    if ttl > 0 then
      redis.call('SET', key, ARGV[i + 1], 'PX', ttl)
    else
      redis.call('SET', key, ARGV[i + 1])
    end
  end
end
return #KEYS
"""

# --- Write positions (resee_perf._freshness) ---------------------------------------------

# Keep the larger position: two invalidations of one tag can record theirs out of order.
MAX_POSITION_SCRIPT = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    local current = tonumber(redis.call('GET', key))
    local new = tonumber(ARGV[i + 1])
    if current == nil or current < new then
        redis.call('SET', key, new, 'PX', ttl)
    else
        redis.call('PEXPIRE', key, ttl)
    end
end
"""
