"""Tag generations: one number per tag key, and one for the cache's epoch.

A cached entry records the generations of its tags (and of the epoch) as they were *before*
its value was computed; a hit is valid only while they still match. Bumping a generation is
one INCR, whatever the number of entries under it. A missing generation (never created,
expired, evicted, lost with a restart) is created at random rather than 0, so that an entry
written under an evicted generation cannot become valid again when the key is recreated.

Keys are logical (before the cache's make_key): :func:`resee_perf._keys.tag_key` and
:func:`resee_perf._keys.epoch_key` build them. The hit path reads them raw, in the entry's MGET
(:meth:`resee_perf._store.Store.read`, through :func:`parse`); everything else is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.core.cache import BaseCache

from resee_perf._keys import bucket_epoch_keys, epoch_key, is_epoch_key
from resee_perf._redis import (
    BUMP_SCRIPT,
    client_for,
    cluster_client_for,
    eval_per_key,
    fresh_generation,
)
from resee_perf._sentinel import run_on_primary
from resee_perf.conf import conf

if TYPE_CHECKING:
    from redis.cluster import RedisCluster


def parse(value: Any) -> int | None:
    """A generation as a raw read returns it (an int, or the bytes Redis stores); else None."""
    if type(value) is int:
        return value
    if isinstance(value, bytes):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def timeout_for(key: str) -> int | None:
    # The epoch key never expires (a TAG_TIMEOUT would turn every entry into a miss at once);
    # if it is evicted it is recreated at random like any generation.
    return None if is_epoch_key(conf.KEY_PREFIX, key) else conf.TAG_TIMEOUT


def read(cache: BaseCache, keys: Sequence[str]) -> list[int]:
    """The current generation at each key, creating the missing ones. For the miss path."""
    found: Mapping[str, object] = cache.get_many(list(keys)) if keys else {}
    generations: dict[str, int] = {}
    for key in keys:
        value = found.get(key)
        if isinstance(value, int):
            generations[key] = value
    for key in keys:
        if key in generations:
            continue
        candidate = fresh_generation()
        # add() is atomic (SET NX on Redis): if another process created the key first, its
        # value wins and we read it back.
        if cache.add(key, candidate, timeout=timeout_for(key)):
            generations[key] = candidate
        else:
            value = cache.get(key)
            generations[key] = value if isinstance(value, int) else candidate
    return [generations[key] for key in keys]


def bump(cache: BaseCache, keys: Sequence[str]) -> None:
    """Invalidate every entry recorded under ``keys``: one INCR per key.

    On Redis (django-redis's default or Sentinel client, or Django's own backend) all keys go
    in one script call, one round trip; other backends get one ``incr`` per key. Errors of the
    cache propagate.
    """
    unique = list(dict.fromkeys(keys))
    if not unique:
        return
    cluster = cluster_client_for(cache)
    if cluster is not None:
        _bump_on_cluster(cache, cluster, unique)
        return
    client = client_for(cache)
    if client is not None:
        # The epoch key keeps no TTL (it is bumped alone: after a queue overflow).
        timeout = None if epoch_key(conf.KEY_PREFIX) in unique else conf.TAG_TIMEOUT
        ttl_ms = 0 if timeout is None else timeout * 1000
        script = client.register_script(BUMP_SCRIPT)
        keys = [cache.make_key(key) for key in unique]
        args = [ttl_ms, *(fresh_generation() for _ in unique)]
        # Behind Sentinel, a bump counts only once it is on the primary the sentinels name
        # (resee_perf._sentinel); else it raises and the pending queue retries it.
        run_on_primary(client, lambda primary: script(keys=keys, args=args, client=primary))
        return
    for key in unique:
        try:
            cache.incr(key)
        except ValueError:
            # Missing key: nothing can be valid under a generation nobody holds, but create one
            # so that entries computed from now on record a definite value.
            cache.add(key, fresh_generation(), timeout=timeout_for(key))


def _bump_on_cluster(cache: BaseCache, cluster: RedisCluster, keys: list[str]) -> None:
    """The same script once per key (each its own slot: tags spread over the cluster),
    pipelined: one round trip per node. The cache's epoch is one key per slot bucket there."""
    prefix = conf.KEY_PREFIX
    if epoch_key(prefix) in keys:
        keys = [key for key in keys if key != epoch_key(prefix)] + bucket_epoch_keys(prefix)
    ttls = [timeout_for(key) for key in keys]
    eval_per_key(
        cluster,
        BUMP_SCRIPT,
        [cache.make_key(key) for key in keys],
        [[0 if ttl is None else ttl * 1000, fresh_generation()] for ttl in ttls],
    )
