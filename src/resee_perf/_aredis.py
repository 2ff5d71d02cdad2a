"""The redis.asyncio client of a Django cache, one connection pool per event loop.

``async def`` functions under ``cache_aside`` must not wait for Redis on their event loop: they
talk to the server through redis-py's asyncio client. It is built from the connection settings
django-redis (or Django's ``RedisCache``) already resolved for the cache's write client: the
sync pool's ``connection_kwargs`` hold LOCATION's host, port, db and credentials, the OPTIONS'
socket timeouts and password, and ``CONNECTION_POOL_KWARGS``, so both clients reach the same
server the same way.

An asyncio connection belongs to the loop that opened it, so each running loop gets its own
pool (keyed weakly by the loop: a loop that is garbage collected takes its pool with it, and
the pools of closed loops are dropped when the next one is made).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING, Any

from django.core.cache import BaseCache

from resee_perf._redis import client_for, cluster_client_for

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

# The settings a sync connection takes that mean the same to an asyncio one. The rest are
# sync objects (parser, retry, redis_connect_func, event dispatcher) or redis-py internals.
_COPIED = frozenset(
    {
        "host",
        "port",
        "db",
        "path",
        "username",
        "password",
        "credential_provider",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "retry_on_timeout",
        "health_check_interval",
        "client_name",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "protocol",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)

# Process-wide by design, like django-redis's own pools: loop -> settings -> client.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncRedis]] = (
    weakref.WeakKeyDictionary()
)
# Loops of several threads make their pools at once; the hit path only reads.
_clients_lock = threading.Lock()


def async_client_for(cache: BaseCache) -> AsyncRedis | None:
    """The running loop's redis.asyncio client for ``cache``'s write server; None where
    :func:`resee_perf._redis.client_for` finds no plain Redis, or where its connections are not
    plain TCP, TLS or Unix-socket ones (Sentinel-managed: the caller runs the sync client in a
    thread instead). Must be called from a coroutine."""
    if cluster_client_for(cache) is not None:
        # A cluster's client routes by slot: the caller runs the sync cluster store in a thread.
        return None
    sync = client_for(cache)
    if sync is None:
        return None
    import redis
    from redis import asyncio as aredis

    pool = sync.connection_pool
    connection_class: type[Any] | None = {
        redis.Connection: aredis.Connection,
        redis.SSLConnection: aredis.SSLConnection,
        redis.UnixDomainSocketConnection: aredis.UnixDomainSocketConnection,
    }.get(pool.connection_class)
    if connection_class is None:
        return None
    settings = {k: v for k, v in pool.connection_kwargs.items() if k in _COPIED}
    blocking = isinstance(pool, redis.BlockingConnectionPool)
    key = repr((connection_class, blocking, pool.max_connections, sorted(settings.items())))
    loop = asyncio.get_running_loop()
    clients = _clients.get(loop)
    if clients is None:
        with _clients_lock:
            for closed in [other for other in _clients if other.is_closed()]:
                del _clients[closed]
            clients = _clients.setdefault(loop, {})
    client = clients.get(key)
    if client is None:
        if blocking:
            async_pool: aredis.ConnectionPool = aredis.BlockingConnectionPool(
                connection_class=connection_class,
                max_connections=pool.max_connections,
                timeout=pool.timeout,  # type: ignore[attr-defined]
                **settings,
            )
        else:
            async_pool = aredis.ConnectionPool(
                connection_class=connection_class,
                max_connections=pool.max_connections,
                **settings,
            )
        client = clients[key] = aredis.Redis(connection_pool=async_pool)
    return client
