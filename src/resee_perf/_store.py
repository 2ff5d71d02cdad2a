"""How :mod:`resee_perf.cache` talks to a Django cache: one interface, two implementations.

- :class:`RedisStore` for django-redis and Django's own ``RedisCache``: the native redis-py
  client gives what Django's cache API cannot, an atomic lock (``SET NX PX`` with a token,
  released by a compare-and-delete script) and raw ``MGET`` reads of the entry and its tag
  generations in one round trip.
- :class:`DjangoStore` for every other backend (locmem, database, memcached): ``get_many`` and
  ``add``, with the weaker guarantees the docs describe.

Entries are stored with a compare-and-set against what the recompute saw before its body ran
(memcache leases, NSDI 2013), and ``CachedFunction.invalidate()`` replaces an entry by a
tombstone with a fresh token instead of deleting it: a recompute that read the database before
an invalidation then fails to store, since the key no longer holds what it saw.

Both turn any backend failure into :class:`Unavailable` after telling the alias's circuit
breaker, so the caller can fall back to calling the function.

Redis restarts: every entry carries the generation of the cache's epoch
(:func:`resee_perf._keys.epoch_key`), read in the same MGET
as the entry. A Redis that comes back from an older state (an RDB snapshot or AOF restore, a
failover to a replica that missed writes) holds old entries *and* the old generations that make
them look valid, so a restart cannot be seen in the data. It is seen in the server's ``run_id``
(INFO server), new on every start: :class:`_EpochWatch` runs on every new connection of the
client's pool (redis-py's ``redis_connect_func``), before the connection serves any command, and
gives the epoch a new random value unless a marker key next to it already holds this server's
run_id. A server incarnation is only reachable through new connections, so no command of this
process reaches a restarted server before its epoch has been changed, by this process or by
another one (the marker is in Redis, so the first process to reconnect does it for all).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.core.cache import BaseCache, caches

from resee_perf import _orphans as orphans
from resee_perf import metrics
from resee_perf._breaker import CircuitBreaker, breaker_for
from resee_perf._generations import parse
from resee_perf._generations import read as read_generations
from resee_perf._keys import bucket_epoch_key, epoch_key, run_id_key, slot_tagged
from resee_perf._orphans import maybe_orphaned
from resee_perf._redis import (
    BURY_SCRIPT,
    CONFIRM_EPOCH_SCRIPT,
    RELEASE_SCRIPT,
    STORE_IF_UNCHANGED_SCRIPT,
    client_for,
    cluster_client_for,
    fresh_generation,
    read_keys,
)
from resee_perf._sentinel import run_on_primary
from resee_perf.conf import conf

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster
    from redis.connection import AbstractConnection, ConnectionPool

logger = logging.getLogger("resee_perf.cache")

T = TypeVar("T")

_epoch_key = functools.lru_cache(maxsize=16)(epoch_key)

# What invalidate() leaves where an entry was: this prefix and a random token, so that no two
# tombstones are equal and a recompute that saw one can tell whether another replaced it.
# Entries start with b"rp\x01" (resee_perf.cache), so neither can pass for the other.
TOMBSTONE = b"rp\x00"

_TOKEN_BYTES = 16


def new_tombstone(position: int | None = None) -> bytes:
    """A tombstone, holding the primary's WAL position after the write when there are replicas
    (a recompute that finds it must read what that write wrote)."""
    tombstone = TOMBSTONE + secrets.token_bytes(_TOKEN_BYTES)
    return tombstone if position is None else tombstone + str(position).encode()


def is_tombstone(raw: object) -> bool:
    return isinstance(raw, bytes) and raw.startswith(TOMBSTONE)


def tombstone_position(raw: object) -> int | None:
    """The WAL position in a tombstone; None for anything else or a tombstone without one."""
    if not is_tombstone(raw):
        return None
    digits = cast(bytes, raw)[len(TOMBSTONE) + _TOKEN_BYTES :]
    return int(digits) if digits.isdigit() else None


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Unavailable(Exception):
    """The cache failed (down, slow, refused); the breaker has been told."""


class Store:
    """Entry and lock operations on one Django cache. Keys are logical (before make_key)."""

    def __init__(self, alias: str, cache: BaseCache) -> None:
        self.alias = alias
        self.cache = cache
        self.breaker: CircuitBreaker = breaker_for(alias)

    def guarded(self, operation: Callable[[], T]) -> T:
        """Run a cache operation, reporting its outcome to the breaker."""
        try:
            result = operation()
        except Exception as error:
            # Django's cache API promises no exception types (pymemcache, redis-py and
            # database backends each raise their own), so anything a cache call raises is a
            # cache failure; our own code is outside this call.
            self.breaker.record_failure(error)
            raise Unavailable(str(error)) from error
        self.breaker.record_success()
        return result

    def read(self, key: str, tag_keys: Sequence[str]) -> tuple[Any, list[int | None]]:
        """The raw entry (None when missing) and each tag's generation, in one round trip."""
        raise NotImplementedError

    def generations(self, tag_keys: Sequence[str]) -> list[int]:
        """The current generation at each tag key, creating the missing ones (a recompute)."""
        return self.guarded(lambda: read_generations(self.cache, tag_keys))

    def positions(self, keys: Sequence[str]) -> list[int]:
        """The write positions at ``keys`` (:mod:`resee_perf._freshness`); errors raise."""
        found = self.cache.get_many(list(keys))
        return [value for value in found.values() if isinstance(value, int)]

    def write(self, key: str, blob: bytes, timeout: float, seen: Any) -> bool:
        """Store ``blob`` only if ``key`` still holds ``seen``, what :meth:`read` returned for
        it before the value was computed (None: nothing). False if it holds something else."""
        raise NotImplementedError

    def bury(self, key: str, tombstone: bytes, timeout: float) -> bool:
        """Replace what ``key`` holds by ``tombstone``; True if that was not a tombstone."""
        raise NotImplementedError

    def acquire(self, key: str, token: str, timeout: float) -> bool:
        raise NotImplementedError

    def epoch_key(self, key: str, prefix: str) -> str:
        """The epoch key entry ``key`` carries with its tags (one per cache, but on a cluster
        one per slot bucket)."""
        return _epoch_key(prefix)

    def release(self, key: str, token: str) -> None:
        raise NotImplementedError


class RedisStore(Store):
    def __init__(self, alias: str, cache: BaseCache, client: Redis) -> None:
        super().__init__(alias, cache)
        # The primary's client (the one tag bumps go to), also for reads: a hit read from a
        # lagging replica could miss the bump that the writer's next request must see.
        self._client = client
        # Tags repeat on every hit; this store lives as long as its cache object.
        self._full_tag_key = functools.lru_cache(maxsize=4096)(cache.make_key)
        # EVALSHA, loading the script on the first NOSCRIPT (redis-py's Script).
        self._store_if_unchanged = client.register_script(STORE_IF_UNCHANGED_SCRIPT)
        self._bury = client.register_script(BURY_SCRIPT)
        self._key: Callable[[str], str] = cache.make_key
        self._mget: Callable[[list[str]], list[Any]] = client.mget

    @property
    def client(self) -> Redis:
        return self._client

    def full_key(self, key: str) -> str:
        """The Redis key of entry or lock ``key`` (hash-tagged on a cluster)."""
        return self._key(key)

    def read(self, key: str, tag_keys: Sequence[str]) -> tuple[Any, list[int | None]]:
        keys = [self._key(key), *map(self._full_tag_key, tag_keys)]
        values = self.guarded(lambda: self._mget(keys))
        if maybe_orphaned:
            self._release_orphans()
        return values[0], [parse(value) for value in values[1:]]

    def write(self, key: str, blob: bytes, timeout: float, seen: Any) -> bool:
        full_key = self._key(key)
        px = _milliseconds(timeout)
        if seen is None:
            return bool(self.guarded(lambda: self._client.set(full_key, blob, px=px, nx=True)))
        args: list[bytes | str | int] = [
            hashlib.sha1(seen, usedforsecurity=False).hexdigest(),
            blob,
            px,
        ]
        return bool(self.guarded(lambda: self._store_if_unchanged(keys=[full_key], args=args)))

    def bury(self, key: str, tombstone: bytes, timeout: float) -> bool:
        full_key = self._key(key)
        args: list[bytes | int] = [tombstone, _milliseconds(timeout), TOMBSTONE]
        # A tombstone is an invalidation: behind Sentinel it counts only on the primary the
        # sentinels name (resee_perf._sentinel).
        return bool(
            self.guarded(
                lambda: run_on_primary(
                    self._client,
                    lambda primary: self._bury(keys=[full_key], args=args, client=primary),
                )
            )
        )

    def acquire(self, key: str, token: str, timeout: float) -> bool:
        full_key = self._key(key)
        px = _milliseconds(timeout)
        try:
            return bool(self.guarded(lambda: self._client.set(full_key, token, nx=True, px=px)))
        except Unavailable:
            # A SET that timed out may still run: a hung Redis executes what it had received
            # when it resumes, and the lock then stands with no holder.
            orphans.note(self.alias, full_key, token)
            raise

    def release(self, key: str, token: str) -> None:
        full_key = self._key(key)
        try:
            self.guarded(lambda: self._client.eval(RELEASE_SCRIPT, 1, full_key, token))
        except Unavailable:
            # Redis hung or went away while we held the lock: it would stand for the rest of
            # lock_timeout, every caller of the key waiting it out after Redis answers again.
            orphans.note(self.alias, full_key, token)
            raise

    def _release_orphans(self) -> None:
        mine = orphans.take(self.alias)
        if not mine:
            return
        pipeline = self._client.pipeline(transaction=False)
        for _, full_key, token in mine:
            # EVAL by name: a cluster pipeline has no eval() (each key routes to its slot).
            pipeline.execute_command("EVAL", RELEASE_SCRIPT, 1, full_key, token)  # type: ignore[no-untyped-call]
        try:
            self.guarded(pipeline.execute)
        except Unavailable:
            orphans.give_back(mine)


class ClusterStore(RedisStore):
    """A :class:`RedisStore` on a Redis Cluster (resee_perf.cluster.RedisClusterCache).

    An entry and its lock carry their bucket's hash tag (:func:`resee_perf._keys.slot_tagged`),
    so every script touches one slot; so does the bucket's epoch, read with the entry. A hit
    is one MGET per slot its keys fall in, pipelined: one round trip per node touched, one
    when the function has no tags. No run_id watch: a promoted replica has a run_id of its own,
    and a manual failover loses no write (docs/scaling.md).
    """

    def __init__(self, alias: str, cache: BaseCache, client: RedisCluster) -> None:
        super().__init__(alias, cache, client)  # type: ignore[arg-type]
        make_key = cache.make_key
        cluster = client
        # The prefix is read on a miss of this cache only: a key holds its prefix, so a key
        # made under another KEY_PREFIX (override_settings) is another entry here.
        self._key = functools.lru_cache(maxsize=4096)(
            lambda key: make_key(slot_tagged(conf.KEY_PREFIX, key))
        )
        self._mget = lambda keys: read_keys(cluster, keys)

    def epoch_key(self, key: str, prefix: str) -> str:
        return bucket_epoch_key(prefix, key)


def _run_id(info: Any) -> str:
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line.removeprefix("run_id:").strip()
    raise ValueError("INFO server has no run_id")


def _pairs(keys: dict[str, str]) -> list[str]:
    return [name for pair in keys.items() for name in pair]


class _EpochWatch:
    """Confirms the epoch keys of one redis-py connection pool on each new connection."""

    def __init__(self, alias: str, previous: Callable[[AbstractConnection], None] | None) -> None:
        self.alias = alias
        self._previous = previous
        # Full epoch key -> full run_id marker key, for every KEY_PREFIX used through this
        # pool (aliases sharing a server).
        self.keys: dict[str, str] = {}
        self.warned = False

    def __call__(self, connection: AbstractConnection) -> None:
        # Runs inside connect(), before the pool hands the connection out; raising makes the
        # connect fail, and the caller fails open.
        if self._previous is not None:
            self._previous(connection)
        else:
            connection.on_connect()  # type: ignore[no-untyped-call]
        from redis.exceptions import ResponseError  # the redis extra: installed if this runs

        keys = dict(self.keys)
        if not keys:
            return
        try:
            connection.send_command("INFO", "server")  # type: ignore[no-untyped-call]
            run_id = _run_id(connection.read_response())
        except (ResponseError, ValueError) as error:
            self._cannot_check(error)
            return
        pairs = _pairs(keys)
        connection.send_command(  # type: ignore[no-untyped-call]
            "EVAL", CONFIRM_EPOCH_SCRIPT, len(pairs), *pairs, run_id, fresh_generation()
        )
        self._report(connection.read_response(), run_id)

    def confirm(self, client: Redis) -> None:
        """The same check over an existing connection (when a key is first registered)."""
        from redis.exceptions import ResponseError

        keys = dict(self.keys)
        try:
            run_id = str(client.info("server")["run_id"])
        except (ResponseError, KeyError) as error:
            self._cannot_check(error)
            return
        pairs = _pairs(keys)
        changed = client.eval(CONFIRM_EPOCH_SCRIPT, len(pairs), *pairs, run_id, fresh_generation())
        self._report(changed, run_id)

    def _cannot_check(self, error: Exception) -> None:
        # A server that refuses INFO (renamed by a managed service) must not refuse the cache:
        # it works, without restart detection, and says so once.
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
                "cache %r: Redis is not the server its entries were written on (run_id %s: a "
                "restart, a restore or a failover); every entry written before is now a miss.",
                self.alias,
                run_id,
            )
            metrics.report_epoch_change(self.alias, "restart")


def parse_run_id(info: Any) -> str:
    """The run_id in a raw ``INFO server`` reply (for the async store's epoch watch)."""
    return _run_id(info)


_watch_lock = threading.Lock()


def watch_epoch(alias: str, cache: BaseCache, client: Redis) -> None:
    """Check the epoch of ``cache`` on every new connection of ``client``'s pool, and now."""
    pool: ConnectionPool = client.connection_pool
    key = cache.make_key(epoch_key(conf.KEY_PREFIX))
    marker = cache.make_key(run_id_key(conf.KEY_PREFIX))
    with _watch_lock:
        watch = getattr(pool, "_resee_perf_epoch_watch", None)
        if watch is None:
            previous = pool.connection_kwargs.get("redis_connect_func")
            watch = _EpochWatch(alias, previous)
            pool._resee_perf_epoch_watch = watch  # type: ignore[attr-defined]
            pool.connection_kwargs["redis_connect_func"] = watch
            # Connections made before: they reconnect through connect() on the same object.
            with pool._lock:
                existing = [
                    *getattr(pool, "_available_connections", ()),
                    *getattr(pool, "_in_use_connections", ()),
                ]
            for connection in existing:
                connection.redis_connect_func = watch
        if key in watch.keys:
            return
        watch.keys[key] = marker
    try:
        # Connections opened before the key was known did not check it.
        watch.confirm(client)
    except Exception as error:
        # Make every connection reconnect, and so check, before its next command.
        logger.warning("cache %r: could not check the Redis run_id (%s)", alias, error)
        with contextlib.suppress(Exception):
            pool.disconnect()


class DjangoStore(Store):
    def read(self, key: str, tag_keys: Sequence[str]) -> tuple[Any, list[int | None]]:
        found = self.guarded(lambda: self.cache.get_many([key, *tag_keys]))
        return found.get(key), [parse(found.get(tag)) for tag in tag_keys]

    def write(self, key: str, blob: bytes, timeout: float, seen: Any) -> bool:
        if seen is None:
            # add() is atomic on every backend that has one (memcached ADD, locmem's lock).
            return bool(self.guarded(lambda: self.cache.add(key, blob, timeout)))

        # Django's API has no compare-and-set: compare, then set. An invalidation that lands
        # between the two is lost (docs/cache.md gives this window); one that landed while the
        # body ran is not.
        def compare_and_set() -> bool:
            if self.cache.get(key) != seen:
                return False
            self.cache.set(key, blob, timeout)
            return True

        return self.guarded(compare_and_set)

    def bury(self, key: str, tombstone: bytes, timeout: float) -> bool:
        def replace() -> bool:
            old = self.cache.get(key)
            self.cache.set(key, tombstone, timeout)
            return old is not None and not is_tombstone(old)

        return self.guarded(replace)

    def acquire(self, key: str, token: str, timeout: float) -> bool:
        return bool(self.guarded(lambda: self.cache.add(key, token, timeout)))

    def release(self, key: str, token: str) -> None:
        # Not atomic: between the get and the delete the lock may expire and be taken by
        # another caller, whose lock we then delete. Only a holder that overran lock_timeout
        # can hit this; the cost is one extra recompute. Redis backends use the script above.
        def compare_and_delete() -> None:
            if self.cache.get(key) == token:
                self.cache.delete(key)

        self.guarded(compare_and_delete)


# Per thread, like Django's own cache objects (caches[alias] is per thread too); dropped when
# settings.CACHES changes (tests), see forget_stores().
_local = threading.local()
_epoch = 0


def store_for(alias: str) -> Store:
    stores: dict[str, Store] | None = getattr(_local, "stores", None)
    if stores is None or _local.epoch != _epoch:
        stores = _local.stores = {}
        _local.epoch = _epoch
    store = stores.get(alias)
    if store is None:
        cache = caches[alias]
        client = client_for(cache)
        cluster = cluster_client_for(cache)
        if cluster is not None:
            store = ClusterStore(alias, cache, cluster)
        elif client is None:
            store = DjangoStore(alias, cache)
        else:
            store = RedisStore(alias, cache, client)
            watch_epoch(alias, cache, client)
        stores[alias] = store
    return store


def forget_stores() -> None:
    global _epoch
    _epoch += 1
