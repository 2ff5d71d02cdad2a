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

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar, cast, overload

from asgiref.sync import markcoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections, transaction
from django.utils.module_loading import import_string

from resee_perf import _pending, _replicas, _view_keys, _write_positions, metrics
from resee_perf._breaker import reset_breakers
from resee_perf._entries import (
    SERIALIZERS,
    Codec,
    Entry,
    Garbage,
    Rejected,
    Serializer,
    UncacheableValue,
    payload,
)
from resee_perf._keys import ENTRY, LOCK, Template, bounded, family_key, safe_key
from resee_perf._query_profile import add_cache_time
from resee_perf._store import (
    Store,
    Unavailable,
    forget_stores,
    new_tombstone,
    store_for,
    tombstone_position,
)
from resee_perf._validators import (
    boolean,
    non_empty_str,
    non_negative_int,
    non_negative_number,
    optional,
    positive_number,
)
from resee_perf.conf import conf
from resee_perf.invalidation import EPOCH_TAG, read_generations, tag_key
from resee_perf.routers import PRIMARY, WritePosition, require

__all__ = ["BoundCachedFunction", "CachedFunction", "UncacheableValue", "cache_aside"]

logger = logging.getLogger("resee_perf.cache")

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


# --- Arguments ---------------------------------------------------------------------------------

_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_VIEW_CONTEXT = "user_id"


class _Arguments:
    """Finds the values that templates name among a call's arguments.

    In a view (a function or method with a ``request`` parameter), a name that is not a
    parameter is looked up in the URL kwargs (``**kwargs``), then as ``user_id`` (the
    authenticated user's pk, None for anonymous), then in the query string (None when absent).
    """

    def __init__(self, func: Callable[..., Any], names: frozenset[str], where: str) -> None:
        self.where = where
        self.signature = inspect.signature(func)
        parameters = list(self.signature.parameters.values())
        self.parameters = self.signature.parameters
        self.names = names
        self.var_keyword = next(
            (p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None
        )
        positional = [p.name for p in parameters if p.kind in _POSITIONAL]
        self.index = {name: i for i, name in enumerate(positional)}
        self.is_view = "request" in self.parameters
        # Positional arguments of the helpers (cache_key, invalidate) skip self/cls and the
        # request: `TodayView.get.invalidate(user_id=7)`, `Service.today.cache_key(7)`.
        skipped = {"request"}
        if positional and positional[0] in {"self", "cls"}:
            skipped.add(positional[0])
        self.helper_positional = [name for name in positional if name not in skipped]
        for name in names:
            if name not in self.parameters and not (self.var_keyword or self.is_view):
                raise ImproperlyConfigured(
                    f"cache_aside on {where}: a template names {name!r}, which is not an "
                    f"argument of {where}{self.signature}."
                )

    def request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.is_view:
            return None
        index = self.index.get("request")
        if index is not None and index < len(args):
            return args[index]
        return kwargs.get("request")

    def for_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        namespace: dict[str, Any] = {}
        for name in self.names:
            parameter = self.parameters.get(name)
            if parameter is None:
                namespace[name] = self._context(name, args, kwargs)
                continue
            index = self.index.get(name)
            if index is not None and index < len(args):
                namespace[name] = args[index]
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                namespace[name] = args[len(self.index) :]
            elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
                namespace[name] = {k: v for k, v in kwargs.items() if k not in self.parameters}
            elif name in kwargs and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
                namespace[name] = kwargs[name]
            elif parameter.default is not _EMPTY:
                namespace[name] = parameter.default
            else:
                # Let Python word the error exactly as the undecorated call would have.
                self.signature.bind(*args, **kwargs)
                raise TypeError(f"{self.where}() missing argument {name!r}")
        return namespace

    def _context(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name in kwargs:
            return kwargs[name]
        request = self.request(args, kwargs)
        if request is None:
            raise TypeError(f"{self.where}() got no {name!r}, which its cache key needs")
        if name == _VIEW_CONTEXT:
            user = getattr(request, "user", None)
            return user.pk if user is not None and user.is_authenticated else None
        return request.GET.get(name)

    def for_helper(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(self.helper_positional):
            raise TypeError(
                f"{self.where}.cache_key() takes the arguments its templates name "
                f"({', '.join(self.helper_positional)}) positionally; got {len(args)}."
            )
        given = dict(zip(self.helper_positional, args, strict=False))
        for name, value in kwargs.items():
            if name in given:
                raise TypeError(f"{self.where}.cache_key() got multiple values for {name!r}")
            given[name] = value
        namespace: dict[str, Any] = {}
        for name in self.names:
            parameter = self.parameters.get(name)
            if name in given:
                namespace[name] = given[name]
            elif parameter is not None and parameter.default is not _EMPTY:
                namespace[name] = parameter.default
            elif parameter is not None and parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                namespace[name] = ()
            elif parameter is not None and parameter.kind is inspect.Parameter.VAR_KEYWORD:
                namespace[name] = {}
            elif parameter is None and self.is_view and name != _VIEW_CONTEXT:
                namespace[name] = None  # a query parameter the request would not have had
            else:
                raise TypeError(f"{self.where}.cache_key() needs {name!r} to build the key")
        return namespace


# Injected by tests for deterministic expiry and XFetch draws; time.time because expiries are
# compared across processes and machines.
_clock: Callable[[], float] = time.time
_random: Callable[[], float] = random.random


@functools.lru_cache(maxsize=4096)
def _tag_key(prefix: str, tag: str) -> str:
    """:func:`tag_key`, memoized per KEY_PREFIX: tags repeat on every hit."""
    return tag_key(tag)


def _xfetch_early(now: float, delta: float, beta: float, expiry: float) -> bool:
    """Vattani et al.'s test; ``1 - random()`` is in (0, 1], so the log is finite."""
    return now - delta * beta * math.log(1.0 - _random()) >= expiry


# --- The call, as a generator driven by a sync or an async driver --------------------------------
#
# The cache logic yields what it needs from the outside: run the body, sleep, start a
# background refresh. One generator serves sync and async functions; each driver does those
# three things its own way.


class _Run:
    pass


_RUN = _Run()


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Spawn:
    flow: _Flow
    name: str


_Instruction = _Run | _Sleep | _Spawn
_Flow = Generator[_Instruction, Any, Any]

# Waiters poll for the holder's entry: soon at first (most bodies are fast), then every
# 20 ms at most, each sleep jittered so that a stampede's waiters do not wake in lockstep.
_FIRST_POLL = 0.005
_MAX_POLL = 0.02


class _Unreachable:
    """The first read of a call failed: the cache is down (the breaker has been told)."""


_UNREACHABLE = _Unreachable()
_NO_HIT = object()


class _Call:
    """The keys of one call (a plain class: built on every hit, so kept cheap), and what its
    last read found at the entry key: the raw value a store must still find there, and the
    ``time.monotonic()`` just before that read."""

    __slots__ = ("key", "lock_key", "seen", "seen_at", "store", "tag_keys", "tags")

    def __init__(
        self,
        key: str,
        lock_key: str,
        tags: tuple[str, ...],
        tag_keys: tuple[str, ...],
        store: Store,
    ) -> None:
        self.key = key
        self.lock_key = lock_key
        self.tags = tags
        self.tag_keys = tag_keys
        self.store = store
        self.seen: Any = None
        self.seen_at = -math.inf  # never read: too old to store over an absent key


class _CacheAside:
    """Everything ``cache_aside`` knows about one decorated function."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        key: str | Callable[..., str],
        ttl: float,
        tags: Iterable[str] | Callable[..., Iterable[str]],
        beta: float,
        lock: bool,
        stale_ttl: float | None,
        cache: str | None,
        version: int | str,
        lock_timeout: float | None,
        background: bool | None,
    ) -> None:
        self.func = func
        self.name = f"{func.__module__}.{func.__qualname__}"
        _check_options(
            self.name, ttl, beta, lock, stale_ttl, cache, version, lock_timeout, background
        )
        self.ttl = float(ttl)
        self.beta = float(beta)
        self.lock = lock
        self.stale_ttl = float(stale_ttl or 0)
        self.alias = cache
        self.version = str(version)
        self.lock_timeout = lock_timeout
        self.background = background
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
        self.arguments = _Arguments(func, frozenset(names), self.name)
        if cache is not None:
            _declared_aliases[self.name] = cache

    def cache_alias(self) -> str:
        return self.alias if self.alias is not None else _hot_settings().alias

    def lock_seconds(self) -> float:
        return self.lock_timeout if self.lock_timeout is not None else conf.CACHE_LOCK_TIMEOUT

    def tombstone_seconds(self) -> float:
        """How long an ``invalidate()`` tombstone lives: twice the store horizon (lock_timeout),
        so that a recompute that read the key before the tombstone was written and stores within
        the horizon finds it still there, whatever delays its store command meets."""
        return 2 * self.lock_seconds()

    def refresh_in_background(self) -> bool:
        return conf.CACHE_BACKGROUND_REFRESH if self.background is None else self.background

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
        key = family_key(_hot_settings().prefix, ENTRY, f"{self.version}:{body}")
        # A view's response also depends on host, scheme, language and its Vary headers.
        request = kwargs.get("request") if helper else self.arguments.request(args, kwargs)
        if self.arguments.is_view and request is not None:
            key += _view_keys.variant(self.name, request)
        return key, tags

    def prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
        """The keys of this call, or None when the cache must be skipped."""
        hot = _hot_settings()
        if not hot.enabled:
            metrics.report_cache(self.name, "bypass")
            return None
        if self.arguments.is_view:
            request = self.arguments.request(args, kwargs)
            if request is not None and request.method not in _SAFE_METHODS:
                metrics.report_cache(self.name, "bypass")
                return None
        store = store_for(self.alias if self.alias is not None else hot.alias)
        if not store.breaker.allow():
            metrics.report_cache(self.name, "bypass")
            return None
        key, tags = self.key_and_tags(args, kwargs, helper=False)
        # Every entry also carries the cache's epoch (bumped when Redis comes back from an
        # older state): read in the same MGET, so a hit stays one round trip.
        tags = (*tags, EPOCH_TAG)
        if _pending.queue.any and _pending.queue.blocks(store.alias, key, tags):
            # An invalidation of this entry failed and is still being retried: the entry may
            # be one this process's own write made stale.
            metrics.report_cache(self.name, "bypass")
            return None
        # The same body in the lock family (built, not replaced: KEY_PREFIX may hold ":c:").
        lock_key = family_key(hot.prefix, LOCK, key[len(hot.prefix) + len(ENTRY) + 2 :])
        return _Call(key, lock_key, tags, tuple(_tag_key(hot.prefix, tag) for tag in tags), store)

    # --- the flows ---

    def first_read(self, call: _Call) -> Entry | _Unreachable | None:
        try:
            return self._read(call)
        except Unavailable:
            return _UNREACHABLE
        except Garbage:
            return None

    def flow(
        self, call: _Call, entry: Entry | _Unreachable | None, *, early: bool = False
    ) -> _Flow:
        """Everything but a plain hit, from the result of :meth:`first_read` (and the XFetch
        draw made for it: one draw per read)."""
        store = call.store
        if isinstance(entry, _Unreachable):
            metrics.report_cache(self.name, "error")
            return (yield _RUN)
        if entry is not None:
            now = _clock()
            if now < entry.expiry:
                if early:
                    return (yield from self._refresh_or_serve(call, entry, "early"))
                metrics.report_cache(self.name, "hit")
                return entry.value()
            if self.stale_ttl and now < entry.expiry + self.stale_ttl:
                return (yield from self._refresh_or_serve(call, entry, "stale"))
        if not self.lock:
            metrics.report_cache(self.name, "miss")
            return (yield from self.compute(call))
        lock_timeout = self.lock_seconds()
        started = time.monotonic()
        delay = _FIRST_POLL
        waited = False
        while True:
            token = secrets.token_hex(16)
            try:
                acquired = store.acquire(call.lock_key, token, lock_timeout)
            except Unavailable:
                metrics.report_cache(self.name, "error")
                return (yield _RUN)
            if acquired:
                if waited:
                    metrics.report_lock_wait(self.name, time.monotonic() - started)
                return (yield from self._under_lock(call, token, waited))
            if time.monotonic() - started >= lock_timeout:
                # Checked right after a failed SET NX: a lock taken before we started has
                # expired by now, so it is held by a later caller, and holders keep failing
                # to store (bodies raising or returning error responses). Stop waiting.
                logger.warning(
                    "%s: waited %.1f s for the lock of %s; computing without it",
                    self.name,
                    lock_timeout,
                    call.key,
                )
                metrics.report_cache(self.name, "miss")
                return (yield from self.compute(call))
            waited = True
            yield _Sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, _MAX_POLL)
            try:
                entry = self._reread(call)
            except Unavailable:
                metrics.report_cache(self.name, "error")
                return (yield _RUN)
            if entry is not None and _clock() < entry.expiry + self.stale_ttl:
                metrics.report_lock_wait(self.name, time.monotonic() - started)
                metrics.report_cache(self.name, "wait")
                return entry.value()

    def _read(self, call: _Call, *, report: bool = True) -> Entry | None:
        before = time.monotonic()
        raw, generations = call.store.read(call.key, call.tag_keys)
        add_cache_time(time.monotonic() - before)  # Server-Timing "cache" (profiling.py)
        call.seen = raw
        call.seen_at = before
        try:
            entry = _hot_settings().codec.decode(raw, call.key)
        except Rejected as error:
            if report:
                # Someone wrote to the cache without the signing key: worth an operator's look.
                logger.warning("%s: %s at %s; recomputing", self.name, error, call.key)
                metrics.report_entry_rejected(self.name)
            raise
        except Garbage as error:
            if report:  # once per call, not again by the re-reads of the lock wait
                logger.warning("%s: %s at %s; recomputing", self.name, error, call.key)
                metrics.report_cache(self.name, "error")
            raise
        if entry is None or entry.generations != tuple(generations):
            return None
        return entry

    def _reread(self, call: _Call) -> Entry | None:
        """Read again (lock waits, checks under the lock): garbage was reported by the first
        read of the call, and is a missing entry here."""
        try:
            return self._read(call, report=False)
        except Garbage:
            return None

    def _refresh_or_serve(self, call: _Call, entry: Entry, result: str) -> _Flow:
        """Start (or run) the refresh of a stale or early-expired entry if nobody else is."""
        token = secrets.token_hex(16)
        try:
            acquired = call.store.acquire(call.lock_key, token, self.lock_seconds())
        except Unavailable:
            acquired = False
        if not acquired:
            metrics.report_cache(self.name, "stale" if result == "stale" else "hit")
            return entry.value()
        metrics.report_cache(self.name, result)
        if self.refresh_in_background():
            yield _Spawn(self._refreshing(call, token, entry), self.name)
            return entry.value()
        return (yield from self._refreshing(call, token, entry))

    def _under_lock(self, call: _Call, token: str, waited: bool) -> _Flow:
        try:
            # Check again: the previous holder may have stored the entry between our read and
            # our SET NX, and computing again would be the double recompute the lock prevents.
            entry = self._reread(call)
            if entry is not None and _clock() < entry.expiry:
                metrics.report_cache(self.name, "wait" if waited else "hit")
                return entry.value()
            metrics.report_cache(self.name, "miss")
            return (yield from self.compute(call))
        except Unavailable:
            metrics.report_cache(self.name, "error")
            return (yield _RUN)
        finally:
            self._release(call, token)

    def _refreshing(self, call: _Call, token: str, seen: Entry) -> _Flow:
        try:
            # The lock is free again as soon as a refresh has stored its entry, and a reader
            # that saw the old entry just before may take it: refresh only if the entry we
            # saw is still the current one.
            current = self._reread(call)
            if current is not None and current.expiry > seen.expiry:
                return current.value()
            return (yield from self.compute(call))
        except Unavailable:
            return seen.value()
        finally:
            self._release(call, token)

    def _release(self, call: _Call, token: str) -> None:
        # If the cache is gone, the lock expires after lock_timeout.
        with contextlib.suppress(Unavailable):
            call.store.release(call.lock_key, token)

    def compute(self, call: _Call) -> _Flow:
        """Run the body and store its value under the tag generations read before it ran."""
        store = call.store
        generations: dict[str, int] | None = {}
        if call.tags:
            try:
                # BEFORE the body: a write that commits while the body runs bumps a generation
                # after this read, so the value stored below is already invalid (the stale-set
                # race). Reading them after the body would make a stale value look current.
                generations = store.guarded(lambda: read_generations(store.cache, call.tags))
            except Unavailable:
                generations = None
        started = _clock()
        # With replicas (resee_perf._write_positions): read AFTER the generations, the write
        # positions of the invalidations they reflect; the body's reads go to a replica only
        # once it has replayed them, so a lagging replica cannot refill an invalidated entry.
        with (
            _write_positions.reads_after(store.cache, call.tags),
            _reads_after_tombstone(call.seen),
        ):
            value = yield _RUN
        # The clock of the expiries, so that tests can drive both; a step back is no delta.
        delta = max(0.0, _clock() - started)
        metrics.report_recompute(self.name, delta)
        stored = (
            payload(value, self.name) if _view_keys.storable(self.name, call.key, value) else None
        )
        if stored is None:
            return value
        entry = Entry(
            _clock() + self.ttl,
            delta,
            tuple(generations[tag] for tag in call.tags) if generations is not None else (),
            *stored,
        )
        blob = _hot_settings().codec.encode(entry, call.key, self.name)
        if generations is not None:
            self._store(call, blob)
        return value

    def _store(self, call: _Call, blob: bytes) -> None:
        """Store the entry only if the key still holds what the last read before the body saw:
        a write whose ``invalidate()`` (a tombstone) came after that read, or another caller's
        store, makes this value the older one, and the caller gets it without it being stored."""
        if call.seen is None and time.monotonic() - call.seen_at >= self.lock_seconds():
            # An absent key proves nothing after a tombstone's life: one written after our read
            # may have expired. Past lock_timeout this recompute has lost its lock anyway.
            logger.warning(
                "%s: the body ran for over lock_timeout (%.1f s); not storing %s. Raise "
                "lock_timeout above the slowest body.",
                self.name,
                self.lock_seconds(),
                call.key,
            )
            metrics.report_store_skipped(self.name, "slow")
            return
        try:
            stored = call.store.write(call.key, blob, self.ttl + self.stale_ttl, call.seen)
        except Unavailable:
            return
        if not stored:
            metrics.report_store_skipped(self.name, "changed")

    def bury(self, key: str) -> bool:
        """Replace the entry at ``key`` by a fresh tombstone: True if it held an entry."""
        alias = self.cache_alias()
        try:
            tombstone = new_tombstone(_primary_position())
            return store_for(alias).bury(key, tombstone, self.tombstone_seconds())
        except Exception:
            # Also from on_commit, after the write committed: never an error for the request.
            # Retried in the background; this process serves no entry at key meanwhile.
            logger.exception(
                "%s: could not invalidate %s; retrying in the background", self.name, key
            )
            _pending.add_key(alias, key, self.tombstone_seconds())
            return False

    def refreshing_now(self, call: _Call) -> _Flow:
        """``refresh()``: read what the key holds (a store must still find it there), then
        compute and store, whatever the key held."""
        try:
            self._reread(call)
        except Unavailable:
            metrics.report_cache(self.name, "error")
            return (yield _RUN)
        return (yield from self.compute(call))


def _primary_position() -> int | None:
    """With replicas, the primary's WAL position now (after the write an ``invalidate()``
    follows; None inside a transaction, whose commit buries again)."""
    if not _replicas.routing_settings().replicas:
        return None
    return _replicas.primary_lsn(PRIMARY)


@contextlib.contextmanager
def _reads_after_tombstone(seen: Any) -> Iterator[None]:
    """With replicas: a recompute that found an ``invalidate()`` tombstone reads from a replica
    only once it has replayed the write before it, as tag invalidations do with
    :mod:`resee_perf._write_positions`; else a lagging replica would refill the entry with the
    old rows, and the compare-and-set would store them over the tombstone."""
    position = tombstone_position(seen)
    if position is None:
        yield
        return
    with require(WritePosition(lsn=position, written_at=0.0)):
        yield


_VERSION = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def _check_options(
    where: str,
    ttl: Any,
    beta: Any,
    lock: Any,
    stale_ttl: Any,
    cache: Any,
    version: Any,
    lock_timeout: Any,
    background: Any,
) -> None:
    checks = [
        (positive_number(ttl), f"ttl should be a positive number of seconds, not {ttl!r}"),
        (
            non_negative_number(beta),
            f"beta should be a number >= 0 (0: no early expiry), not {beta!r}",
        ),
        (isinstance(lock, bool), f"lock should be True or False, not {lock!r}"),
        (
            optional(non_negative_number)(stale_ttl),
            f"stale_ttl should be None or a number of seconds >= 0, not {stale_ttl!r}",
        ),
        (optional(non_empty_str)(cache), f"cache should be a cache alias, not {cache!r}"),
        (
            non_negative_int(version) or (isinstance(version, str) and _VERSION.fullmatch(version)),
            f"version should be an int >= 0 or a short [A-Za-z0-9_.-] string, not {version!r}",
        ),
        (
            optional(positive_number)(lock_timeout),
            f"lock_timeout should be None or a positive number of seconds, not {lock_timeout!r}",
        ),
        (
            optional(boolean)(background),
            f"background should be None, True or False, not {background!r}",
        ),
    ]
    problems = [problem for valid, problem in checks if not valid]
    if problems:
        raise ImproperlyConfigured(f"cache_aside on {where}: {'; '.join(problems)}.")


# Process-wide by design: the aliases named by decorated functions, for system check E010.
_declared_aliases: dict[str, str] = {}


def declared_aliases() -> dict[str, str]:
    """Function name -> cache alias, for every decorated function imported so far."""
    return dict(_declared_aliases)


# --- Drivers -----------------------------------------------------------------------------------


def _drive(flow: _Flow, body: Callable[[], Any]) -> Any:
    try:
        instruction = next(flow)
        while True:
            if isinstance(instruction, _Run):
                try:
                    value = body()
                except BaseException as error:
                    instruction = flow.throw(error)
                    continue
                instruction = flow.send(value)
            elif isinstance(instruction, _Sleep):
                time.sleep(instruction.seconds)
                instruction = flow.send(None)
            else:
                _spawn_thread(instruction, body)
                instruction = flow.send(None)
    except StopIteration as done:
        return done.value
    finally:
        flow.close()


async def _drive_async(flow: _Flow, body: Callable[[], Awaitable[Any]]) -> Any:
    try:
        instruction = next(flow)
        while True:
            if isinstance(instruction, _Run):
                try:
                    value = await body()
                except BaseException as error:
                    instruction = flow.throw(error)
                    continue
                instruction = flow.send(value)
            elif isinstance(instruction, _Sleep):
                await asyncio.sleep(instruction.seconds)
                instruction = flow.send(None)
            else:
                _spawn_task(instruction, body)
                instruction = flow.send(None)
    except StopIteration as done:
        return done.value
    finally:
        flow.close()


# Process-wide by design: one small pool per process runs background refreshes, so a burst of
# keys expiring together queues instead of starting a thread per key. Recreated after fork
# (a pool inherited from a preloading parent has no threads).
_REFRESH_WORKERS = 4
_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()
_tasks: set[asyncio.Task[Any]] = set()


def _refresh_executor() -> ThreadPoolExecutor:
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(_REFRESH_WORKERS, thread_name_prefix="resee-refresh")
            _executor_pid = os.getpid()
        return _executor


def _spawn_thread(spawn: _Spawn, body: Callable[[], Any]) -> None:
    def run() -> None:
        try:
            _drive(spawn.flow, body)
        except Exception:
            logger.exception("%s: background refresh failed; serving the old entry", spawn.name)
            metrics.report_refresh_failure(spawn.name)
        finally:
            # The body may have opened database connections in this pool thread; nothing
            # else would ever close them (Django closes connections per request).
            connections.close_all()

    try:
        _refresh_executor().submit(run)
    except RuntimeError:  # interpreter shutting down: refresh inline rather than lose the lock
        run()


def _spawn_task(spawn: _Spawn, body: Callable[[], Awaitable[Any]]) -> None:
    async def run() -> None:
        try:
            await _drive_async(spawn.flow, body)
        except Exception:
            logger.exception("%s: background refresh failed; serving the old entry", spawn.name)
            metrics.report_refresh_failure(spawn.name)

    # Keep a reference: the event loop holds tasks weakly.
    task = asyncio.get_running_loop().create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


# --- The public decorator ----------------------------------------------------------------------


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
        if value is not _NO_HIT:
            return cast(R_co, value)
        body = functools.partial(aside.func, *args, **kwargs)
        return cast(R_co, _drive(aside.flow(call, entry, early=early), body))

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        aside = self._aside
        call = aside.prepare(args, kwargs)
        if call is None:
            return await aside.func(*args, **kwargs)
        value, entry, early = self._hit(call)
        if value is not _NO_HIT:
            return value
        body = functools.partial(aside.func, *args, **kwargs)
        return await _drive_async(aside.flow(call, entry, early=early), body)

    def _hit(self, call: _Call) -> tuple[Any, Entry | _Unreachable | None, bool]:
        """The value of a plain hit (else ``_NO_HIT``), the entry read, and the XFetch draw.

        The plain hit is the path that must cost no more than a raw ``cache.get``: inline,
        without the generator the other paths need."""
        aside = self._aside
        entry = aside.first_read(call)
        if type(entry) is not Entry:
            return _NO_HIT, entry, False
        now = _clock()
        if now >= entry.expiry:
            return _NO_HIT, entry, False
        if aside.beta and _xfetch_early(now, entry.delta, aside.beta, entry.expiry):
            return _NO_HIT, entry, True
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

    def _invalidate_key(self, key: str) -> bool:
        buried = self._aside.bury(key)
        for connection in connections.all(initialized_only=True):
            if connection.in_atomic_block:
                # Until the commit, other connections read the old rows, and a recompute that
                # read them stores over this tombstone: bury it again once the write is visible.
                transaction.on_commit(
                    functools.partial(self._aside.bury, key), using=connection.alias
                )
        return buried

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
            _drive(aside.refreshing_now(call), functools.partial(aside.func, *args, **kwargs)),
        )

    async def _refresh_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        aside = self._aside
        call = aside.prepare(args, kwargs)
        if call is None:
            self._invalidate_while_disabled(args, kwargs)
            return await aside.func(*args, **kwargs)
        return await _drive_async(
            aside.refreshing_now(call), functools.partial(aside.func, *args, **kwargs)
        )

    def _invalidate_while_disabled(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """With ``CACHE_ENABLED`` False, ``refresh()`` stores nothing, yet its caller is saying
        the data changed: invalidate the entry instead, or switching caching back on would
        serve it (as tag invalidations keep running while disabled)."""
        if not _hot_settings().enabled:
            key, _tags = self._aside.key_and_tags(args, kwargs, helper=False)
            self._invalidate_key(key)

    def __repr__(self) -> str:
        return f"<cache_aside {self._aside.name}>"


def cache_aside(
    key: str | Callable[..., str],
    ttl: float,
    *,
    tags: Iterable[str] | Callable[..., Iterable[str]] = (),
    beta: float = 1.0,
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
    - ``beta``: XFetch early-expiry factor; 0 disables early recomputes.
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
        aside = _CacheAside(
            func,
            key=key,
            ttl=ttl,
            tags=tags,
            beta=beta,
            lock=lock,
            stale_ttl=stale_ttl,
            cache=cache,
            version=version,
            lock_timeout=lock_timeout,
            background=background,
        )
        return CachedFunction(aside)

    return decorate


class _HotSettings(NamedTuple):
    prefix: str
    alias: str
    enabled: bool
    codec: Codec


# KEY_PREFIX, CACHE_ALIAS and CACHE_ENABLED are needed on every hit, where reading them through
# conf (a settings lookup and a validation each) was a measurable share of the latency. Read
# once, dropped whenever Django reports a settings change (override_settings, pytest-django's
# `settings`), so they behave like conf's read-on-access for every caller.
_hot: _HotSettings | None = None


def _hot_settings() -> _HotSettings:
    global _hot
    if _hot is None:
        _hot = _HotSettings(conf.KEY_PREFIX, conf.CACHE_ALIAS, conf.CACHE_ENABLED, _codec())
    return _hot


def serializer_for(setting: str) -> Serializer:
    """The serializer ``RESEE_PERF['CACHE_SERIALIZER']`` names: "json", "pickle" or the dotted
    path of a class (instantiated without arguments) or object with ``dumps`` and ``loads``."""
    found: Any = SERIALIZERS.get(setting) or import_string(setting)
    serializer = found() if isinstance(found, type) else found
    if not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise ImproperlyConfigured(
            f"RESEE_PERF['CACHE_SERIALIZER'] = {setting!r} has no dumps() and loads()."
        )
    return cast(Serializer, serializer)


def _codec() -> Codec:
    return Codec(serializer_for(conf.CACHE_SERIALIZER), conf.CACHE_SIGNING_KEYS)


def _forget_state(*, setting: str, **kwargs: Any) -> None:
    global _hot
    if setting in {"CACHES", "RESEE_PERF"}:
        _hot = None
        reset_breakers()
        forget_stores()
        _pending.queue.clear()


setting_changed.connect(_forget_state)
