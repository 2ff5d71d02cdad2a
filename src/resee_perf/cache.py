"""``cache_aside``: a read-through cache decorator that recomputes each key once.

What a call does (docs/cache.md explains the choices for users):

1. Read the entry and the generations of its tags in one round trip (one MGET on Redis). The
   entry holds the value, the generations its tags had before the value was computed, the
   time the body took (``delta``) and the logical expiry.
2. Valid entry (every generation unchanged), before expiry: a hit, unless XFetch (Vattani,
   Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede Prevention", VLDB 2015)
   draws an early refresh: ``now - delta * beta * ln(rand()) >= expiry``. The refresh takes the
   key's lock without waiting and runs in a background thread while this caller gets the
   current value; callers that find the lock taken get the current value too.
3. Valid entry past its expiry but inside ``stale_ttl``: served stale while exactly one caller
   (the lock holder) refreshes it, the same way.
4. Otherwise a miss: one caller takes the lock (``SET NX PX`` with a random token), reads the
   tag generations, runs the body and stores the entry; the others poll until it is there.
   A holder that dies or overruns ``lock_timeout`` loses the lock when it expires.

Every store is a compare-and-set against what the key held when the recompute last read it,
before its body ran; ``invalidate()`` writes a tombstone with a fresh token rather than
deleting. So a recompute that read the database before a write and its ``invalidate()`` finds
the key changed and does not store its value (the stale-set race, as tag generations prevent it
for tags). A tombstone reads as a miss.

Any failure of the cache (down, slow past its socket timeout, garbage) makes the call run the
body directly; a circuit breaker (:mod:`resee_perf._breaker`) then skips the cache for a while.
``RESEE_PERF['CACHE_ENABLED'] = False`` skips it on every call (invalidations keep running).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

from resee_perf import _flow, _pending, _view_keys, metrics
from resee_perf._arguments import SAFE_METHODS, Arguments
from resee_perf._astore import astore_for
from resee_perf._cache_settings import hot_settings
from resee_perf._cache_settings import serializer_for as serializer_for  # checks use it
from resee_perf._entries import Entry, UncacheableValue
from resee_perf._flow import (
    NO_HIT,
    Call,
    Policy,
    Unreachable,
    afirst_read,
    drive,
    drive_async,
    xfetch_early,
)
from resee_perf._freshness import primary_position
from resee_perf._keys import (
    ENTRY,
    LOCK,
    Template,
    bounded,
    family_key,
    safe_key,
    tag_key,
)
from resee_perf._options import Options
from resee_perf._store import new_tombstone, store_for

__all__ = ["BoundCachedFunction", "CachedFunction", "UncacheableValue", "cache_aside"]

logger = logging.getLogger("resee_perf.cache")

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


# Tags repeat on every hit.
_tag_key = functools.lru_cache(maxsize=4096)(tag_key)


class _CacheAside:
    """Everything ``cache_aside`` knows about one decorated function."""

    def __init__(
        self,
        func: Callable[..., Any],
        key: str | Callable[..., str],
        tags: Iterable[str] | Callable[..., Iterable[str]],
        options: Options,
    ) -> None:
        self.func = func
        self.name = f"{func.__module__}.{func.__qualname__}"
        self.options = options
        self.alias = options.cache
        self.version = options.version
        self.policy = Policy(self.name, options)
        # Read on every hit: one attribute each, as before the policy had its own class.
        self.first_read = self.policy.first_read
        self.beta = options.beta
        names: set[str] = set()
        self.key_template: Template | None = None
        self.key_function: Callable[..., str] | None = None
        if isinstance(key, str):
            if not key:
                raise ImproperlyConfigured(f"cache_aside on {self.name}: key is empty.")
            self.key_template = Template(key, "key")
            names |= self.key_template.names
        elif callable(key):
            self.key_function = key
        else:
            raise ImproperlyConfigured(
                f"cache_aside on {self.name}: key should be a template string or a callable, "
                f"not {key!r}."
            )
        self.tag_templates: tuple[Template, ...] = ()
        self.tag_function: Callable[..., Iterable[str]] | None = None
        if isinstance(tags, str):
            raise ImproperlyConfigured(
                f"cache_aside on {self.name}: tags should be a list of templates, not the "
                f"string {tags!r} (write tags=[{tags!r}])."
            )
        if callable(tags):
            self.tag_function = tags
        else:
            self.tag_templates = tuple(Template(tag, "tag") for tag in tags)
            for template in self.tag_templates:
                names |= template.names
        self.arguments = Arguments(func, frozenset(names), self.name)
        if options.cache is not None:
            _declared_aliases[self.name] = options.cache

    def cache_alias(self) -> str:
        return self.alias if self.alias is not None else hot_settings().alias

    def key_and_tags(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, helper: bool
    ) -> tuple[str, tuple[str, ...]]:
        namespace: dict[str, Any] = {}
        if self.arguments.names:
            arguments = self.arguments
            namespace = (
                arguments.for_helper(args, kwargs) if helper else arguments.for_call(args, kwargs)
            )
        if self.key_template is not None:
            body = bounded(self.key_template.render_key(namespace))
        else:
            body = bounded(
                safe_key(str(cast(Callable[..., str], self.key_function)(*args, **kwargs)))
            )
        if self.tag_function is not None:
            tags = tuple(dict.fromkeys(self.tag_function(*args, **kwargs)))
        else:
            tags = tuple(
                dict.fromkeys(template.render_tag(namespace) for template in self.tag_templates)
            )
        key = family_key(hot_settings().prefix, ENTRY, f"{self.version}:{body}")
        # A view's response also depends on host, scheme, language and its Vary headers.
        request = kwargs.get("request") if helper else self.arguments.request(args, kwargs)
        if self.arguments.is_view and request is not None:
            key += _view_keys.variant(self.name, request)
        return key, tags

    def prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, asynchronous: bool = False
    ) -> Call | None:
        """The keys of this call, or None when the cache must be skipped. An async call's
        store is the running loop's (redis.asyncio), so that it never blocks the loop."""
        hot = hot_settings()
        if not hot.enabled:
            metrics.report_cache(self.name, "bypass")
            return None
        if self.arguments.is_view:
            request = self.arguments.request(args, kwargs)
            if request is not None and request.method not in SAFE_METHODS:
                metrics.report_cache(self.name, "bypass")
                return None
        alias = self.alias if self.alias is not None else hot.alias
        store = astore_for(alias) if asynchronous else store_for(alias)
        if not store.breaker.allow():
            metrics.report_cache(self.name, "bypass")
            return None
        key, tags = self.key_and_tags(args, kwargs, helper=False)
        if _pending.queue.any and _pending.queue.blocks(store.alias, key, tags):
            # An invalidation of this entry failed and is still being retried: the entry may
            # be one this process's own write made stale.
            metrics.report_cache(self.name, "bypass")
            return None
        # The same body in the lock family (built, not replaced: KEY_PREFIX may hold ":c:").
        lock_key = family_key(hot.prefix, LOCK, key[len(hot.prefix) + len(ENTRY) + 2 :])
        # Every entry also carries the cache's epoch (bumped when Redis comes back from an
        # older state): read in the same MGET, so a hit stays one round trip.
        epoch = store.epoch_key(key, hot.prefix)
        tag_keys = (*(_tag_key(hot.prefix, tag) for tag in tags), epoch)
        return Call(key, lock_key, tags, tag_keys, store)

    def bury(self, key: str) -> bool:
        """Replace the entry at ``key`` by a fresh tombstone: True if it held an entry."""
        alias = self.cache_alias()
        try:
            tombstone = new_tombstone(primary_position())
            return store_for(alias).bury(key, tombstone, self.options.tombstone_seconds())
        except Exception:
            # Also from on_commit, after the write committed: never an error for the request.
            # Retried in the background; this process serves no entry at key meanwhile.
            logger.exception(
                "%s: could not invalidate %s; retrying in the background", self.name, key
            )
            _pending.add_key(alias, key, self.options.tombstone_seconds())
            return False

    async def abury(self, key: str) -> bool:
        """:meth:`bury` from a coroutine, through the loop's async store."""
        alias = self.cache_alias()
        try:
            # The primary's position is a database query (with replicas): not on the loop.
            position = await sync_to_async(primary_position)()
            return await astore_for(alias).bury(
                key, new_tombstone(position), self.options.tombstone_seconds()
            )
        except Exception:
            logger.exception(
                "%s: could not invalidate %s; retrying in the background", self.name, key
            )
            _pending.add_key(alias, key, self.options.tombstone_seconds())
            return False


# Process-wide by design: the aliases named by decorated functions, for system check E010.
_declared_aliases: dict[str, str] = {}


def declared_aliases() -> dict[str, str]:
    """Function name -> cache alias, for every decorated function imported so far."""
    return dict(_declared_aliases)


def restore_declared_aliases(saved: dict[str, str]) -> None:
    """Back to what :func:`declared_aliases` returned (:mod:`resee_perf.testing`)."""
    _declared_aliases.clear()
    _declared_aliases.update(saved)


# --- The public decorator ---


class BoundCachedFunction(Generic[R_co]):
    """A cached method looked up on an instance: ``self`` is passed for you."""

    def __init__(self, cached: CachedFunction[..., R_co], instance: object) -> None:
        self.__self__ = instance
        self.__func__ = cached

    def __call__(self, /, *args: Any, **kwargs: Any) -> R_co:
        return self.__func__(self.__self__, *args, **kwargs)

    def cache_key(self, /, *args: Any, **kwargs: Any) -> str:
        return self.__func__.cache_key(*args, self=self.__self__, **kwargs)

    def invalidate(self, /, *args: Any, **kwargs: Any) -> bool:
        return self.__func__.invalidate(*args, self=self.__self__, **kwargs)

    async def ainvalidate(self, /, *args: Any, **kwargs: Any) -> bool:
        return await self.__func__.ainvalidate(*args, self=self.__self__, **kwargs)

    def refresh(self, /, *args: Any, **kwargs: Any) -> R_co:
        return self.__func__.refresh(self.__self__, *args, **kwargs)


class CachedFunction(Generic[P, R_co]):
    """What ``@cache_aside(...)`` returns: the function, plus ``cache_key``, ``invalidate`` and
    ``refresh``. On a class it behaves like a method (``self`` is passed)."""

    def __init__(self, aside: _CacheAside) -> None:
        self._aside = aside
        self.__wrapped__ = aside.func
        functools.update_wrapper(self, aside.func)
        self._is_async = inspect.iscoroutinefunction(aside.func)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R_co:
        if self._is_async:
            # Nothing happens until the coroutine is awaited, as with the undecorated function.
            return cast(R_co, self._call_async(args, kwargs))
        aside = self._aside
        call = aside.prepare(args, kwargs)
        if call is None:
            return cast(R_co, aside.func(*args, **kwargs))
        value, entry, early = self._hit(call)
        if value is not NO_HIT:
            return cast(R_co, value)
        body = functools.partial(aside.func, *args, **kwargs)
        return cast(R_co, drive(aside.policy.flow(call, entry, early=early), body))

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        aside = self._aside
        call = aside.prepare(args, kwargs, asynchronous=True)
        if call is None:
            return await aside.func(*args, **kwargs)
        value, entry, early = self._judge(await afirst_read(aside.name, call))
        if value is not NO_HIT:
            return value
        body = functools.partial(aside.func, *args, **kwargs)
        return await drive_async(aside.policy.flow(call, entry, early=early), body)

    def _hit(self, call: Call) -> tuple[Any, Entry | Unreachable | None, bool]:
        """The value of a plain hit (else ``NO_HIT``), the entry read, and the XFetch draw.

        The plain hit is the path that must cost no more than a raw ``cache.get``: inline,
        without the generator the other paths need."""
        return self._judge(self._aside.first_read(call))

    def _judge(
        self, entry: Entry | Unreachable | None
    ) -> tuple[Any, Entry | Unreachable | None, bool]:
        aside = self._aside
        if type(entry) is not Entry:
            return NO_HIT, entry, False
        now = _flow.clock()
        if now >= entry.expiry:
            return NO_HIT, entry, False
        if aside.beta and xfetch_early(now, entry.delta, aside.beta, entry.expiry):
            return NO_HIT, entry, True
        metrics.report_cache(aside.name, "hit")
        return entry.value(), entry, False

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> CachedFunction[P, R_co]: ...
    @overload
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> BoundCachedFunction[R_co]: ...
    def __get__(
        self, instance: object | None, owner: type[Any] | None = None
    ) -> CachedFunction[P, R_co] | BoundCachedFunction[R_co]:
        if instance is None:
            return self
        return BoundCachedFunction(self, instance)

    def cache_key(self, /, *args: Any, **kwargs: Any) -> str:
        """The key this function uses for these arguments (``self`` and ``request`` skipped;
        in a view, pass ``user_id=`` and query parameters as keywords)."""
        key, _tags = self._aside.key_and_tags(args, kwargs, helper=True)
        return key

    def invalidate(self, /, *args: Any, **kwargs: Any) -> bool:
        """Invalidate the entry for these arguments (as for :meth:`cache_key`), now and, inside
        a transaction, again once it commits. True if there was an entry; False if there was
        none or the cache is unavailable (logged, and retried in the background until it
        lands; this process serves no entry at this key meanwhile).

        The entry is replaced by a tombstone rather than deleted, so that a recompute that read
        the database before this call cannot store its older value afterwards."""
        return self._invalidate_key(self.cache_key(*args, **kwargs))

    async def ainvalidate(self, /, *args: Any, **kwargs: Any) -> bool:
        """:meth:`invalidate` for async code: the tombstone goes through the event loop's
        redis.asyncio client instead of blocking the loop."""
        key = self.cache_key(*args, **kwargs)
        buried = await self._aside.abury(key)
        self._bury_again_on_commit(key)
        return buried

    def _invalidate_key(self, key: str) -> bool:
        buried = self._aside.bury(key)
        self._bury_again_on_commit(key)
        return buried

    def _bury_again_on_commit(self, key: str) -> None:
        for connection in connections.all(initialized_only=True):
            if connection.in_atomic_block:
                # Until the commit, other connections read the old rows, and a recompute that
                # read them stores over this tombstone: bury it again once the write is visible.
                transaction.on_commit(
                    functools.partial(self._aside.bury, key), using=connection.alias
                )

    def refresh(self, /, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Run the function now and store its value, whatever the cache holds, unless the entry
        changed while it ran (an :meth:`invalidate`, another store). Same arguments as a call;
        returns the new value. With ``CACHE_ENABLED`` False: runs the function and invalidates
        the entry instead of storing."""
        if self._is_async:
            return cast(R_co, self._refresh_async(args, kwargs))
        aside = self._aside
        call = aside.prepare(args, kwargs)
        if call is None:
            self._invalidate_while_disabled(args, kwargs)
            return cast(R_co, aside.func(*args, **kwargs))
        return cast(
            R_co,
            drive(
                aside.policy.refreshing_now(call), functools.partial(aside.func, *args, **kwargs)
            ),
        )

    async def _refresh_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        aside = self._aside
        call = aside.prepare(args, kwargs, asynchronous=True)
        if call is None:
            if not hot_settings().enabled:  # as _invalidate_while_disabled, on the loop
                key, _tags = aside.key_and_tags(args, kwargs, helper=False)
                await aside.abury(key)
                self._bury_again_on_commit(key)
            return await aside.func(*args, **kwargs)
        return await drive_async(
            aside.policy.refreshing_now(call), functools.partial(aside.func, *args, **kwargs)
        )

    def _invalidate_while_disabled(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """With ``CACHE_ENABLED`` False, ``refresh()`` stores nothing, yet its caller is saying
        the data changed: invalidate the entry instead, or switching caching back on would
        serve it (as tag invalidations keep running while disabled)."""
        if not hot_settings().enabled:
            key, _tags = self._aside.key_and_tags(args, kwargs, helper=False)
            self._invalidate_key(key)

    def __repr__(self) -> str:
        return f"<cache_aside {self._aside.name}>"


def cache_aside(
    key: str | Callable[..., str],
    ttl: float,
    *,
    tags: Iterable[str] | Callable[..., Iterable[str]] = (),
    beta: float | None = None,
    lock: bool = True,
    stale_ttl: float | None = None,
    cache: str | None = None,
    version: int | str = 1,
    lock_timeout: float | None = None,
    background: bool | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
    """Cache a function's return value in a Django cache, recomputing each key once.

    - ``key``: a ``str.format`` template over the function's arguments
      (``"review:today:{user_id}"``, ``"{request.user.id}"``), or a callable taking the same
      arguments and returning a string. In a view, templates may also name URL kwargs,
      ``user_id`` (the authenticated user's pk) and query parameters (``{page}``). Templates
      take no format specs or conversions; different arguments never share a key.
    - ``ttl``: seconds an entry is fresh.
    - ``tags``: templates like ``key``, or a callable returning tags; invalidating a tag
      (:func:`resee_perf.invalidate_tags`) turns every entry under it into a miss.
    - ``beta``: XFetch early-expiry factor; 0 disables early recomputes. Default 1.0, or 0.0
      when ``stale_ttl`` is given (serving stale already keeps readers from waiting, and early
      refreshes on top of it recompute a hot key several times per TTL); an explicit value is
      honoured either way.
    - ``lock``: on a miss, one caller recomputes while the others wait for its value.
    - ``stale_ttl``: seconds an expired entry may still be served while one caller refreshes.
    - ``cache``: the cache alias (default ``RESEE_PERF['CACHE_ALIAS']``).
    - ``version``: part of every key; bump it when the function's return value changes shape.
    - ``lock_timeout``: seconds a recompute may hold the lock (default
      ``RESEE_PERF['CACHE_LOCK_TIMEOUT']``).
    - ``background``: refresh stale and early-expired entries in the background (default
      ``RESEE_PERF['CACHE_BACKGROUND_REFRESH']``).
    """

    def decorate(func: Callable[P, R]) -> CachedFunction[P, R]:
        name = f"{func.__module__}.{func.__qualname__}"
        options = Options.validated(
            name,
            ttl=ttl,
            beta=beta,
            lock=lock,
            stale_ttl=stale_ttl,
            cache=cache,
            version=version,
            lock_timeout=lock_timeout,
            background=background,
        )
        return CachedFunction(_CacheAside(func, key, tags, options))

    return decorate
