"""What :mod:`resee_perf._store` does for sync callers, for coroutines: the same operations,
awaited, so that a slow or hung cache never blocks the event loop.

- :class:`AsyncRedisStore`: redis.asyncio (:func:`resee_perf._aredis.async_client_for`, a pool
  per event loop) with the same keys, Lua scripts and compare-and-set rules as
  :class:`~resee_perf._store.RedisStore`: a hit is one ``MGET``.
- :class:`AsyncDjangoStore`: Django's async cache API (``aget_many``, ``aadd``...) for the other
  backends, with :class:`~resee_perf._store.DjangoStore`'s guarantees.
- :class:`AsyncThreadStore`: a Redis cache whose connections redis.asyncio cannot copy
  (Sentinel-managed): the sync store, run in a worker thread.

All three report to the alias's one circuit breaker (:func:`resee_perf._breaker.breaker_for`),
shared with sync callers: an outage either kind of caller sees opens it for both.

Restarts: each async pool confirms the cache's epoch on every new connection, as
:func:`resee_perf._store.watch_epoch` does for the sync pool.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import BaseCache, caches

from resee_perf import _orphans as orphans
from resee_perf import metrics
from resee_perf._aredis import async_client_for
from resee_perf._breaker import CircuitBreaker, breaker_for
from resee_perf._generations import parse, timeout_for
from resee_perf._keys import epoch_key, run_id_key
from resee_perf._redis import (
    BURY_SCRIPT,
    CONFIRM_EPOCH_SCRIPT,
    RELEASE_SCRIPT,
    STORE_IF_UNCHANGED_SCRIPT,
    client_for,
    cluster_client_for,
    fresh_generation,
)
from resee_perf._store import (
    TOMBSTONE,
    Unavailable,
    is_tombstone,
    parse_run_id,
    store_for,
)
from resee_perf.conf import conf

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis
    from redis.asyncio.connection import AbstractConnection

logger = logging.getLogger("resee_perf.cache")

T = TypeVar("T")


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class AsyncStore:
    """Entry and lock operations on one Django cache, awaited. Keys are logical."""

    def __init__(self, alias: str, cache: BaseCache) -> None:
        self.alias = alias
        self.cache = cache
        self.breaker: CircuitBreaker = breaker_for(alias)

    async def guarded(self, operation: Awaitable[T]) -> T:
        """Await a cache operation, reporting its outcome to the breaker."""
        try:
            result = await operation
        except Exception as error:
            # As Store.guarded; a cancellation (BaseException) is the caller's, not the cache's.
            self.breaker.record_failure(error)
            raise Unavailable(str(error)) from error
        self.breaker.record_success()
        return result

    def epoch_key(self, key: str, prefix: str) -> str:
        """The epoch key entry ``key`` carries with its tags (as :meth:`Store.epoch_key`)."""
        return epoch_key(prefix)

    async def read(self, key: str, tag_keys: Sequence[str]) -> tuple[Any, list[int | None]]:
        raise NotImplementedError

    async def write(self, key: str, blob: bytes, timeout: float, seen: Any) -> bool:
        raise NotImplementedError

    async def bury(self, key: str, tombstone: bytes, timeout: float) -> bool:
        raise NotImplementedError

    async def acquire(self, key: str, token: str, timeout: float) -> bool:
        raise NotImplementedError

    async def release(self, key: str, token: str) -> None:
        raise NotImplementedError

    async def generations(self, tag_keys: Sequence[str]) -> list[int]:
        raise NotImplementedError

    async def positions(self, keys: Sequence[str]) -> list[int]:
        raise NotImplementedError


class AsyncRedisStore(AsyncStore):
    def __init__(self, alias: str, cache: BaseCache, client: AsyncRedis) -> None:
        super().__init__(alias, cache)
        self._client = client
        self._full_tag_key = functools.lru_cache(maxsize=4096)(cache.make_key)
        self._store_if_unchanged = client.register_script(STORE_IF_UNCHANGED_SCRIPT)
        self._bury = client.register_script(BURY_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)
        self._watch, self._unconfirmed = _watch_epoch(alias, cache, client)

    async def read(self, key: str, tag_keys: Sequence[str]) -> tuple[Any, list[int | None]]:
        if self._unconfirmed:
            await self._confirm()
        keys = [self.cache.make_key(key), *map(self._full_tag_key, tag_keys)]
        values = await self.guarded(self._client.mget(keys))
        if orphans.pending():
            await self._release_orphans()
        return values[0], [parse(value) for value in values[1:]]

    async def write(self, key: str, blob: bytes, timeout: float, seen: Any) -> bool:
        full_key = self.cache.make_key(key)
        px = _milliseconds(timeout)
        if seen is None:
            return bool(await self.guarded(self._client.set(full_key, blob, px=px, nx=True)))
        digest = hashlib.sha1(seen, usedforsecurity=False).hexdigest()
        return bool(
            await self.guarded(self._store_if_unchanged(keys=[full_key], args=[digest, blob, px]))
        )

    async def bury(self, key: str, tombstone: bytes, timeout: float) -> bool:
        args: list[bytes | int] = [tombstone, _milliseconds(timeout), TOMBSTONE]
        return bool(await self.guarded(self._bury(keys=[self.cache.make_key(key)], args=args)))

    async def acquire(self, key: str, token: str, timeout: float) -> bool:
        full_key = self.cache.make_key(key)
        px = _milliseconds(timeout)
        try:
            return bool(await self.guarded(self._client.set(full_key, token, nx=True, px=px)))
        except Unavailable:
            orphans.note(self.alias, full_key, token)  # as RedisStore.acquire
            raise

    async def release(self, key: str, token: str) -> None:
        full_key = self.cache.make_key(key)
        try:
            await self.guarded(self._release(keys=[full_key], args=[token]))
        except Unavailable:
            orphans.note(self.alias, full_key, token)
            raise

    async def generations(self, tag_keys: Sequence[str]) -> list[int]:
        """As :func:`resee_perf._generations.read`: a missing generation is created at random
        with SET NX, and the winner's value read back."""

        async def read() -> list[int]:
            full_keys = [self.cache.make_key(key) for key in tag_keys]
            values = await self._client.mget(full_keys) if full_keys else []
            found: list[int] = []
            for key, full_key, value in zip(tag_keys, full_keys, values, strict=True):
                generation = parse(value)
                if generation is None:
                    candidate = fresh_generation()
                    timeout = timeout_for(key)
                    if await self._client.set(full_key, candidate, nx=True, ex=timeout or None):
                        generation = candidate
                    else:
                        generation = parse(await self._client.get(full_key))
                found.append(candidate if generation is None else generation)
            return found

        return await self.guarded(read())

    async def positions(self, keys: Sequence[str]) -> list[int]:
        values = await self._client.mget([self.cache.make_key(key) for key in keys])
        return [position for position in map(parse, values) if position is not None]

    async def _release_orphans(self) -> None:
        mine = orphans.take(self.alias)
        if not mine:
            return
        pipeline = self._client.pipeline(transaction=False)
        for _, full_key, token in mine:
            pipeline.eval(RELEASE_SCRIPT, 1, full_key, token)
        try:
            await self.guarded(pipeline.execute())
        except Unavailable:
            orphans.give_back(mine)

    async def _confirm(self) -> None:
        self._unconfirmed = False
        try:
            await self._watch.confirm(self._client)
        except Exception as error:
            # Make every connection reconnect, and so check, before its next command.
            logger.warning("cache %r: could not check the Redis run_id (%s)", self.alias, error)
            await self._client.connection_pool.disconnect()


class _AsyncEpochWatch:
    """Confirms the epoch keys of one redis.asyncio pool on each new connection."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.keys: dict[str, str] = {}  # full epoch key -> full run_id marker key
        self.warned = False

    async def on_connect(self, connection: AbstractConnection) -> None:
        # redis.asyncio awaits this inside connect(), before the connection serves a command.
        from redis.exceptions import ResponseError

        await connection.on_connect()
        keys = dict(self.keys)
        if not keys:
            return
        try:
            await connection.send_command("INFO", "server")
            run_id = parse_run_id(await connection.read_response())
        except (ResponseError, ValueError) as error:
            self._cannot_check(error)
            return
        pairs = [name for pair in keys.items() for name in pair]
        await connection.send_command(
            "EVAL", CONFIRM_EPOCH_SCRIPT, len(pairs), *pairs, run_id, fresh_generation()
        )
        self._report(await connection.read_response(), run_id)

    async def confirm(self, client: AsyncRedis) -> None:
        """The same check over a pooled connection (a key registered after it connected)."""
        from redis.exceptions import ResponseError

        try:
            run_id = str((await client.info("server"))["run_id"])
        except (ResponseError, KeyError) as error:
            self._cannot_check(error)
            return
        pairs = [name for pair in dict(self.keys).items() for name in pair]
        changed = await client.eval(
            CONFIRM_EPOCH_SCRIPT, len(pairs), *pairs, run_id, fresh_generation()
        )
        self._report(changed, run_id)

    def _cannot_check(self, error: Exception) -> None:
        if not self.warned:
            self.warned = True
            logger.error(
                "cache %r: cannot read the Redis run_id (%s); entries written before a restart "
                "from a snapshot or a failover may be served after it.",
                self.alias,
                error,
            )

    def _report(self, changed: Any, run_id: str) -> None:
        if changed:
            logger.warning(
                "cache %r: Redis is not the server its entries were written on (run_id %s); "
                "every entry written before is now a miss.",
                self.alias,
                run_id,
            )
            metrics.report_epoch_change(self.alias, "restart")


def _watch_epoch(alias: str, cache: BaseCache, client: AsyncRedis) -> tuple[_AsyncEpochWatch, bool]:
    """The pool's epoch watch, installed before its first connection; and whether connections
    opened before this cache's epoch key was known must confirm it (True)."""
    pool = client.connection_pool
    watch: _AsyncEpochWatch | None = getattr(pool, "_resee_perf_epoch_watch", None)
    if watch is None:
        watch = _AsyncEpochWatch(alias)
        pool._resee_perf_epoch_watch = watch  # type: ignore[attr-defined]
        pool.connection_kwargs["redis_connect_func"] = watch.on_connect
    key = cache.make_key(epoch_key(conf.KEY_PREFIX))
    if key in watch.keys:
        return watch, False
    watch.keys[key] = cache.make_key(run_id_key(conf.KEY_PREFIX))
    opened = [*pool._available_connections, *pool._in_use_connections]
    return watch, bool(opened)


class AsyncDjangoStore(AsyncStore):
    """Django's async cache API, with :class:`~resee_perf._store.DjangoStore`'s semantics."""

    async def read(self, key: str, tag_keys: Sequence[str]) -> tuple[Any, list[int | None]]:
        found = await self.guarded(self.cache.aget_many([key, *tag_keys]))
        return found.get(key), [parse(found.get(tag)) for tag in tag_keys]

    async def write(self, key: str, blob: bytes, timeout: float, seen: Any) -> bool:
        if seen is None:
            return bool(await self.guarded(self.cache.aadd(key, blob, timeout)))

        async def compare_and_set() -> bool:  # not atomic: docs/cache.md gives the window
            if await self.cache.aget(key) != seen:
                return False
            await self.cache.aset(key, blob, timeout)
            return True

        return await self.guarded(compare_and_set())

    async def bury(self, key: str, tombstone: bytes, timeout: float) -> bool:
        async def replace() -> bool:
            old = await self.cache.aget(key)
            await self.cache.aset(key, tombstone, timeout)
            return old is not None and not is_tombstone(old)

        return await self.guarded(replace())

    async def acquire(self, key: str, token: str, timeout: float) -> bool:
        return bool(await self.guarded(self.cache.aadd(key, token, timeout)))

    async def release(self, key: str, token: str) -> None:
        async def compare_and_delete() -> None:
            if await self.cache.aget(key) == token:
                await self.cache.adelete(key)

        await self.guarded(compare_and_delete())

    async def generations(self, tag_keys: Sequence[str]) -> list[int]:
        async def read() -> list[int]:
            found = await self.cache.aget_many(list(tag_keys)) if tag_keys else {}
            generations: list[int] = []
            for key in tag_keys:
                value = found.get(key)
                if not isinstance(value, int):
                    candidate = fresh_generation()
                    if await self.cache.aadd(key, candidate, timeout=timeout_for(key)):
                        value = candidate
                    else:
                        value = await self.cache.aget(key)
                        value = value if isinstance(value, int) else candidate
                generations.append(value)
            return generations

        return await self.guarded(read())

    async def positions(self, keys: Sequence[str]) -> list[int]:
        found = await self.cache.aget_many(list(keys))
        return [value for value in found.values() if isinstance(value, int)]


class AsyncThreadStore(AsyncStore):
    """The sync store of a worker thread (it reports to the same breaker itself)."""

    def _in_thread(self, name: str) -> Callable[..., Awaitable[Any]]:
        def run(*args: Any) -> Any:
            return getattr(store_for(self.alias), name)(*args)

        return sync_to_async(run, thread_sensitive=False)

    def epoch_key(self, key: str, prefix: str) -> str:
        # One per slot bucket on a cluster (resee_perf._store.ClusterStore).
        return store_for(self.alias).epoch_key(key, prefix)

    async def read(self, key: str, tag_keys: Sequence[str]) -> tuple[Any, list[int | None]]:
        return await self._in_thread("read")(key, tag_keys)  # type: ignore[no-any-return]

    async def write(self, key: str, blob: bytes, timeout: float, seen: Any) -> bool:
        return bool(await self._in_thread("write")(key, blob, timeout, seen))

    async def bury(self, key: str, tombstone: bytes, timeout: float) -> bool:
        return bool(await self._in_thread("bury")(key, tombstone, timeout))

    async def acquire(self, key: str, token: str, timeout: float) -> bool:
        return bool(await self._in_thread("acquire")(key, token, timeout))

    async def release(self, key: str, token: str) -> None:
        await self._in_thread("release")(key, token)

    async def generations(self, tag_keys: Sequence[str]) -> list[int]:
        return await self._in_thread("generations")(tag_keys)  # type: ignore[no-any-return]

    async def positions(self, keys: Sequence[str]) -> list[int]:
        return await self._in_thread("positions")(keys)  # type: ignore[no-any-return]


# Per event loop (an asyncio client belongs to one loop), weakly: a collected loop takes its
# stores with it. Dropped when settings.CACHES changes (tests), see forget_async_stores().
_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncStore]] = (
    weakref.WeakKeyDictionary()
)


_stores_lock = threading.Lock()


def astore_for(alias: str) -> AsyncStore:
    """The running loop's async store for ``alias``; to be called from a coroutine."""
    loop = asyncio.get_running_loop()
    stores = _stores.get(loop)
    if stores is None:
        with _stores_lock:
            stores = _stores.setdefault(loop, {})
    store = stores.get(alias)
    if store is None:
        cache = caches[alias]
        client = async_client_for(cache)
        if client is not None:
            store = AsyncRedisStore(alias, cache, client)
        elif client_for(cache) is not None or cluster_client_for(cache) is not None:
            store = AsyncThreadStore(alias, cache)
        else:
            store = AsyncDjangoStore(alias, cache)
        stores[alias] = store
    return store


def forget_async_stores() -> None:
    _stores.clear()
