"""A Django cache backend for Redis Cluster: Django's own ``RedisCache`` on redis-py's
``RedisCluster``.

django-redis has no cluster client (jazzband/django-redis#606 is open) and django-valkey's
cluster cache is built on valkey-py, a second client library next to the redis-py this package
already uses; Django's backend needs only a different client object and the few commands that
span keys made slot-aware (docs/scaling.md). Configure it as::

    CACHES = {
        "default": {
            "BACKEND": "resee_perf.cluster.RedisClusterCache",
            # Any primaries or replicas: the client learns the rest (CLUSTER SLOTS).
            "LOCATION": "redis://10.0.0.1:6379,redis://10.0.0.2:6379",
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        }
    }

``OPTIONS`` go to ``redis.cluster.RedisCluster`` as keyword arguments. Every command follows
MOVED and ASK redirections (resharding, failover) as redis-py does. The cache's ``KEY_PREFIX``
must not contain ``{``: Redis would take it for the hash tag of every key, and put them all in
one slot (docs/scaling.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

__all__ = ["RedisClusterCache"]


# One RedisCluster per LOCATION and OPTIONS for the process: Django builds a cache object per
# thread, and a RedisCluster per thread would learn the slot map (CLUSTER SLOTS) and open a
# pool per node again in every thread. It is thread-safe (a pool per node, a lock on its map).
_clusters: dict[tuple[tuple[str, ...], str], RedisCluster] = {}
_clusters_lock = threading.Lock()


class RedisClusterCacheClient(RedisCacheClient):
    """Django's client on a ``RedisCluster`` shared by the process's threads."""

    def __init__(self, servers: list[str], **options: Any) -> None:
        options.pop("pool_class", None)
        options.pop("parser_class", None)
        super().__init__(servers, **options)
        self._cluster_options = {
            key: value for key, value in options.items() if key not in {"serializer", "db"}
        }
        self._cluster: RedisCluster | None = None

    def get_client(  # type: ignore[override]
        self, key: Any = None, *, write: bool = False
    ) -> RedisCluster:
        cluster = self._cluster
        if cluster is None:
            identity = (tuple(self._servers), repr(sorted(self._cluster_options.items())))  # type: ignore[attr-defined]
            with _clusters_lock:
                cluster = _clusters.get(identity)
                if cluster is None:
                    cluster = _clusters[identity] = self._connect()
            self._cluster = cluster
        return cluster

    def _connect(self) -> RedisCluster:
        from redis.cluster import ClusterNode, RedisCluster

        first, *others = self._servers  # type: ignore[attr-defined]
        nodes = [
            ClusterNode(parts.hostname, parts.port or 6379)  # type: ignore[no-untyped-call]
            for parts in map(urlsplit, others)
        ]
        return RedisCluster(url=first, startup_nodes=nodes, **self._cluster_options)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        keys = list(keys)
        if not keys:
            return {}
        # One MGET per slot, pipelined: one round trip per node.
        values = self.get_client().mget_nonatomic(keys)
        return {
            key: self._serializer.loads(value)  # type: ignore[attr-defined]
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    def set_many(self, data: Mapping[Any, Any], timeout: Any) -> None:
        # Django sends one MSET, which a cluster refuses across slots: a SET per key instead,
        # pipelined (one round trip per node).
        pipeline = self.get_client().pipeline()  # type: ignore[no-untyped-call]
        for key, value in data.items():
            if timeout == 0:
                pipeline.delete(key)
            else:
                pipeline.set(key, self._serializer.dumps(value), ex=timeout)  # type: ignore[attr-defined]
        pipeline.execute()

    def clear(self) -> bool:
        # FLUSHDB goes to every primary (redis-py's default nodes for it), not one node.
        from redis.cluster import RedisCluster

        results: Any = self.get_client().flushdb(target_nodes=RedisCluster.PRIMARIES)
        values = results.values() if isinstance(results, dict) else [results]
        return all(bool(value) for value in values)


class RedisClusterCache(RedisCache):
    """``CACHES`` backend for a Redis Cluster (see the module docstring)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisClusterCacheClient
