"""The recompute policy of ``cache_aside``, as a generator, and its sync and async drivers.

Everything but a plain hit (which :mod:`resee_perf.cache` serves inline) is a generator that
yields what it needs from the outside: run the body (:data:`RUN`), sleep (:class:`Sleep`),
start a background refresh (:class:`Spawn`), and each cache operation (:class:`Io`, a bound
method of the call's store). One policy serves sync and async functions; each driver does those
four things its own way: the sync driver calls a :class:`~resee_perf._store.Store`, the async
one awaits an :class:`~resee_perf._astore.AsyncStore` (redis.asyncio), so a coroutine never
blocks its event loop on the cache. ``resee_perf.cache``'s docstring tells the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.db import connections

from resee_perf import _freshness, _refresh, _view_keys, metrics
from resee_perf._cache_settings import hot_settings
from resee_perf._entries import Entry, Garbage, Rejected, payload
from resee_perf._options import Options
from resee_perf._query_profile import add_cache_time
from resee_perf._store import Store, Unavailable

if TYPE_CHECKING:
    from resee_perf._astore import AsyncStore

logger = logging.getLogger("resee_perf.cache")

# Injected by tests (resee_perf.testing) for deterministic expiry and XFetch draws; time.time
# because expiries are compared across processes and machines.
clock: Callable[[], float] = time.time
draw: Callable[[], float] = random.random


def xfetch_early(now: float, delta: float, beta: float, expiry: float) -> bool:
    """Vattani et al.'s test; ``1 - random()`` is in (0, 1], so the log is finite."""
    return now - delta * beta * math.log(1.0 - draw()) >= expiry


class Run:
    pass


RUN = Run()


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Spawn:
    flow: Flow
    name: str


@dataclass(frozen=True)
class Io:
    """A cache operation: ``operation(*args)``, awaited by the async driver. Its exception
    (:class:`Unavailable` from a store) is thrown back into the flow at the yield."""

    operation: Callable[..., Any]
    args: tuple[Any, ...]


Instruction = Run | Sleep | Spawn | Io
Flow = Generator[Instruction, Any, Any]

# Waiters poll for the holder's entry: soon at first (most bodies are fast), then every
# 20 ms at most, each sleep jittered so that a stampede's waiters do not wake in lockstep.
_FIRST_POLL = 0.005
_MAX_POLL = 0.02


class Unreachable:
    """The first read of a call failed: the cache is down (the breaker has been told)."""


UNREACHABLE = Unreachable()
NO_HIT = object()


class Call:
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
        store: Store | AsyncStore,
    ) -> None:
        self.key = key
        self.lock_key = lock_key
        self.tags = tags
        self.tag_keys = tag_keys
        self.store = store
        self.seen: Any = None
        self.seen_at = -math.inf  # never read: too old to store over an absent key


# --- Reading and storing entries ---


def decode_entry(
    name: str, call: Call, raw: Any, generations: list[int | None], *, report: bool = True
) -> Entry | None:
    """What a read of the entry and its generations found (``call.seen`` is set already)."""
    try:
        entry = hot_settings().codec.decode(raw, call.key)
    except Rejected as error:
        if report:
            # Someone wrote to the cache without the signing key: worth an operator's look.
            logger.warning("%s: %s at %s; recomputing", name, error, call.key)
            metrics.report_entry_rejected(name)
        raise
    except Garbage as error:
        if report:  # once per call, not again by the re-reads of the lock wait
            logger.warning("%s: %s at %s; recomputing", name, error, call.key)
            metrics.report_cache(name, "error")
        raise
    if entry is None or entry.generations != tuple(generations):
        return None
    return entry


def read_entry(name: str, call: Call) -> Entry | None:
    """The first read of a sync call, inline (the hit path)."""
    before = time.monotonic()
    raw, generations = cast(Store, call.store).read(call.key, call.tag_keys)
    add_cache_time(time.monotonic() - before)  # Server-Timing "cache" (profiling.py)
    call.seen = raw
    call.seen_at = before
    return decode_entry(name, call, raw, generations)


async def aread_entry(name: str, call: Call) -> Entry | None:
    """The first read of an async call: one awaited round trip."""
    before = time.monotonic()
    raw, generations = await cast("AsyncStore", call.store).read(call.key, call.tag_keys)
    add_cache_time(time.monotonic() - before)
    call.seen = raw
    call.seen_at = before
    return decode_entry(name, call, raw, generations)


async def afirst_read(name: str, call: Call) -> Entry | Unreachable | None:
    """:meth:`Policy.first_read` of an async call."""
    try:
        return await aread_entry(name, call)
    except Unavailable:
        return UNREACHABLE
    except Garbage:
        return None


def reread(name: str, call: Call) -> Flow:
    """Read again (lock waits, checks under the lock): garbage was reported by the first
    read of the call, and is a missing entry here."""
    before = time.monotonic()
    raw, generations = yield Io(call.store.read, (call.key, call.tag_keys))
    add_cache_time(time.monotonic() - before)
    call.seen = raw
    call.seen_at = before
    try:
        return decode_entry(name, call, raw, generations, report=False)
    except Garbage:
        return None


def release(call: Call, token: str) -> Flow:
    # If the cache is gone, the lock expires after lock_timeout.
    with contextlib.suppress(Unavailable):
        yield Io(call.store.release, (call.lock_key, token))


def store_entry(name: str, options: Options, call: Call, blob: bytes) -> Flow:
    """Store the entry only if the key still holds what the last read before the body saw:
    a write whose ``invalidate()`` (a tombstone) came after that read, or another caller's
    store, makes this value the older one, and the caller gets it without it being stored."""
    if call.seen is None and time.monotonic() - call.seen_at >= options.lock_seconds():
        # An absent key proves nothing after a tombstone's life: one written after our read
        # may have expired. Past lock_timeout this recompute has lost its lock anyway.
        logger.warning(
            "%s: the body ran for over lock_timeout (%.1f s); not storing %s. Raise "
            "lock_timeout above the slowest body.",
            name,
            options.lock_seconds(),
            call.key,
        )
        metrics.report_store_skipped(name, "slow")
        return
    try:
        stored = yield Io(
            call.store.write, (call.key, blob, options.ttl + options.stale_ttl, call.seen)
        )
    except Unavailable:
        return
    if not stored:
        metrics.report_store_skipped(name, "changed")


def write_positions(call: Call) -> Flow:
    """With replicas, the write positions of the call's tags (None if the cache failed: the
    body then reads from the primary)."""
    keys = _freshness.position_keys(call.tags)
    if not keys:
        return []
    try:
        return (yield Io(call.store.positions, (keys,)))
    except Exception:
        return None


class Policy:
    """The recompute policy of one decorated function (its name and options)."""

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options

    def first_read(self, call: Call) -> Entry | Unreachable | None:
        try:
            return read_entry(self.name, call)
        except Unavailable:
            return UNREACHABLE
        except Garbage:
            return None

    def flow(self, call: Call, entry: Entry | Unreachable | None, *, early: bool = False) -> Flow:
        """Everything but a plain hit, from the result of :meth:`first_read` (and the XFetch
        draw made for it: one draw per read)."""
        store = call.store
        if isinstance(entry, Unreachable):
            metrics.report_cache(self.name, "error")
            return (yield RUN)
        if entry is not None:
            now = clock()
            if now < entry.expiry:
                if early:
                    return (yield from self._refresh_or_serve(call, entry, "early"))
                metrics.report_cache(self.name, "hit")
                return entry.value()
            if self.options.stale_ttl and now < entry.expiry + self.options.stale_ttl:
                return (yield from self._refresh_or_serve(call, entry, "stale"))
        if not self.options.lock:
            metrics.report_cache(self.name, "miss")
            return (yield from self.compute(call))
        lock_timeout = self.options.lock_seconds()
        started = time.monotonic()
        delay = _FIRST_POLL
        waited = False
        while True:
            token = secrets.token_hex(16)
            try:
                acquired = yield Io(store.acquire, (call.lock_key, token, lock_timeout))
            except Unavailable:
                metrics.report_cache(self.name, "error")
                return (yield RUN)
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
            yield Sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, _MAX_POLL)
            try:
                fresh = yield from reread(self.name, call)
            except Unavailable:
                metrics.report_cache(self.name, "error")
                return (yield RUN)
            if fresh is not None and clock() < fresh.expiry + self.options.stale_ttl:
                metrics.report_lock_wait(self.name, time.monotonic() - started)
                metrics.report_cache(self.name, "wait")
                return fresh.value()

    def _refresh_or_serve(self, call: Call, entry: Entry, result: str) -> Flow:
        """Start (or run) the refresh of a stale or early-expired entry if nobody else is."""
        token = secrets.token_hex(16)
        try:
            lock = (call.lock_key, token, self.options.lock_seconds())
            acquired = yield Io(call.store.acquire, lock)
        except Unavailable:
            acquired = False
        if not acquired:
            metrics.report_cache(self.name, "stale" if result == "stale" else "hit")
            return entry.value()
        metrics.report_cache(self.name, result)
        if self.options.refresh_in_background():
            yield Spawn(self._refreshing(call, token, entry), self.name)
            return entry.value()
        return (yield from self._refreshing(call, token, entry))

    def _under_lock(self, call: Call, token: str, waited: bool) -> Flow:
        try:
            # Check again: the previous holder may have stored the entry between our read and
            # our SET NX, and computing again would be the double recompute the lock prevents.
            entry = yield from reread(self.name, call)
            if entry is not None and clock() < entry.expiry:
                metrics.report_cache(self.name, "wait" if waited else "hit")
                return entry.value()
            metrics.report_cache(self.name, "miss")
            return (yield from self.compute(call))
        except Unavailable:
            metrics.report_cache(self.name, "error")
            return (yield RUN)
        finally:
            yield from release(call, token)

    def _refreshing(self, call: Call, token: str, seen: Entry) -> Flow:
        try:
            # The lock is free again as soon as a refresh has stored its entry, and a reader
            # that saw the old entry just before may take it: refresh only if the entry we
            # saw is still the current one.
            current = yield from reread(self.name, call)
            if current is not None and current.expiry > seen.expiry:
                return current.value()
            return (yield from self.compute(call))
        except Unavailable:
            return seen.value()
        finally:
            yield from release(call, token)

    def compute(self, call: Call) -> Flow:
        """Run the body and store its value under the tag generations read before it ran."""
        store = call.store
        generations: list[int] | None
        try:
            # BEFORE the body: a write that commits while the body runs bumps a generation
            # after this read, so the value stored below is already invalid (the stale-set
            # race). Reading them after the body would make a stale value look current.
            generations = yield Io(store.generations, (call.tag_keys,))
        except Unavailable:
            generations = None
        started = clock()
        # With replicas (resee_perf._freshness): read AFTER the generations, the write
        # positions of the invalidations they reflect; the body's reads go to a replica only
        # once it has replayed them, so a lagging replica cannot refill an invalidated entry.
        positions = yield from write_positions(call)
        with (
            _freshness.reads_after_positions(positions),
            _freshness.reads_after_tombstone(call.seen),
        ):
            value = yield RUN
        # The clock of the expiries, so that tests can drive both; a step back is no delta.
        delta = max(0.0, clock() - started)
        metrics.report_recompute(self.name, delta)
        stored = (
            payload(value, self.name) if _view_keys.storable(self.name, call.key, value) else None
        )
        if stored is None:
            return value
        entry = Entry(
            clock() + self.options.ttl,
            delta,
            tuple(generations) if generations is not None else (),
            *stored,
        )
        blob = hot_settings().codec.encode(entry, call.key, self.name)
        if generations is not None:
            yield from store_entry(self.name, self.options, call, blob)
        return value

    def refreshing_now(self, call: Call) -> Flow:
        """``refresh()``: read what the key holds (a store must still find it there), then
        compute and store, whatever the key held."""
        try:
            yield from reread(self.name, call)
        except Unavailable:
            metrics.report_cache(self.name, "error")
            return (yield RUN)
        return (yield from self.compute(call))


# --- Drivers ---


def drive(flow: Flow, body: Callable[[], Any]) -> Any:
    try:
        instruction = next(flow)
        while True:
            try:
                if isinstance(instruction, Io):
                    result = instruction.operation(*instruction.args)
                elif isinstance(instruction, Run):
                    result = body()
                elif isinstance(instruction, Sleep):
                    time.sleep(instruction.seconds)
                    result = None
                else:
                    _spawn_thread(instruction, body)
                    result = None
            except BaseException as error:
                # Into the flow, whose finally blocks release the lock it may hold.
                instruction = flow.throw(error)
                continue
            instruction = flow.send(result)
    except StopIteration as done:
        return done.value
    finally:
        flow.close()


async def drive_async(flow: Flow, body: Callable[[], Awaitable[Any]]) -> Any:
    try:
        instruction = next(flow)
        while True:
            try:
                if isinstance(instruction, Io):
                    result = await instruction.operation(*instruction.args)
                elif isinstance(instruction, Run):
                    result = await body()
                elif isinstance(instruction, Sleep):
                    await asyncio.sleep(instruction.seconds)
                    result = None
                else:
                    _spawn_task(instruction, body)
                    result = None
            except BaseException as error:
                # A cancellation too: the flow's finally blocks release the lock it holds.
                instruction = flow.throw(error)
                continue
            instruction = flow.send(result)
    except StopIteration as done:
        return done.value
    finally:
        flow.close()


def _spawn_thread(spawn: Spawn, body: Callable[[], Any]) -> None:
    def run() -> None:
        try:
            drive(spawn.flow, body)
        except Exception:
            logger.exception("%s: background refresh failed; serving the old entry", spawn.name)
            metrics.report_refresh_failure(spawn.name)
        finally:
            # The body may have opened database connections in this pool thread; nothing
            # else would ever close them (Django closes connections per request).
            connections.close_all()

    _refresh.submit(run)


def _spawn_task(spawn: Spawn, body: Callable[[], Awaitable[Any]]) -> None:
    async def run() -> None:
        try:
            await drive_async(spawn.flow, body)
        except Exception:
            logger.exception("%s: background refresh failed; serving the old entry", spawn.name)
            metrics.report_refresh_failure(spawn.name)

    _refresh.start_task(run)
