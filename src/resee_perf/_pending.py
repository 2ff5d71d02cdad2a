"""Invalidations that failed, kept and retried until they land.

A write has committed and its invalidation (a tag bump, an ``invalidate()`` tombstone) failed:
the cache is down, hung or refused. Dropped, it would leave the entries it was meant to kill
valid until they expire (issue #9: 13 of 13 samples stale after Redis was paused for 10 s). So
it waits here, and a background thread retries it with backoff (50 ms doubling up to
``RESEE_PERF['INVALIDATION_RETRY_SECONDS']``) until the cache takes it.

- Merged per cache alias: a set of tags and a set of keys. Bumping a tag twice invalidates the
  same entries as once, and one fresh tombstone replaces any number of earlier ones.
- While a tag or a key is pending, this process serves no entry under it (``cache_aside``
  bypasses the cache for those calls): else the writer's own next request, arriving after
  Redis answers again but before the retry lands, would read the value it just replaced.
- Bounded: ``RESEE_PERF['INVALIDATION_QUEUE_SIZE']`` tags and keys per alias. On overflow
  everything pending for the alias is replaced by one bump of the cache's epoch
  (:func:`resee_perf._keys.epoch_key`), which every entry carries: all entries of the cache
  become misses when it lands, and until then this process bypasses that cache entirely.
  Counted in ``resee_perf_invalidation_overflows_total``.

Held in memory: an invalidation still pending when its process exits is lost (logged), and the
entries it covered stay valid until they expire.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterable

from django.core.cache import caches
from django.db import connections

from resee_perf import _freshness, _generations, metrics
from resee_perf._freshness import primary_position
from resee_perf._keys import epoch_key, tag_key
from resee_perf._store import new_tombstone, store_for
from resee_perf.conf import conf

logger = logging.getLogger("resee_perf.invalidation")

_FIRST_RETRY = 0.05


class _Alias:
    """What is pending for one cache alias. Values are sequence numbers, so that an item queued
    again while a retry of it was under way stays queued."""

    __slots__ = ("epoch", "keys", "tags")

    def __init__(self) -> None:
        self.tags: dict[str, int] = {}
        self.keys: dict[str, tuple[int, float]] = {}  # key -> (sequence, tombstone seconds)
        self.epoch = 0  # the sequence of a pending epoch bump; 0: none

    def size(self) -> int:
        return len(self.tags) + len(self.keys) + bool(self.epoch)


class PendingInvalidations:
    """The process's failed invalidations and the thread that retries them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aliases: dict[str, _Alias] = {}
        self._sequence = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        # Read without the lock on every cache_aside call: False almost always.
        self.any = False

    # --- queueing ---

    def add_tags(self, alias: str, tags: Iterable[str]) -> None:
        with self._lock:
            pending = self._aliases.setdefault(alias, _Alias())
            for tag in tags:
                self._sequence += 1
                pending.tags[tag] = self._sequence
            self._bound(alias, pending)
            self._changed()

    def add_key(self, alias: str, key: str, tombstone_seconds: float) -> None:
        with self._lock:
            pending = self._aliases.setdefault(alias, _Alias())
            self._sequence += 1
            pending.keys[key] = (self._sequence, tombstone_seconds)
            self._bound(alias, pending)
            self._changed()

    def _bound(self, alias: str, pending: _Alias) -> None:
        if pending.size() <= conf.INVALIDATION_QUEUE_SIZE:
            return
        # One epoch bump invalidates every entry, so it stands for every tag and key it drops.
        dropped = pending.size()
        self._sequence += 1
        pending.tags = {}
        pending.keys = {}
        pending.epoch = self._sequence
        logger.error(
            "More than %d invalidations of cache %r are pending; replaced by one bump of the "
            "cache's epoch: every entry is a miss once it lands, and this process bypasses the "
            "cache until then.",
            conf.INVALIDATION_QUEUE_SIZE,
            alias,
        )
        metrics.report_invalidation_overflow(alias, dropped)
        metrics.report_epoch_change(alias, "overflow")

    def _changed(self) -> None:
        self.any = any(pending.size() for pending in self._aliases.values())
        for alias, pending in self._aliases.items():
            metrics.report_invalidations_pending(alias, pending.size())
        self._start_thread()
        self._wake.set()

    # --- the hit path ---

    def blocks(self, alias: str, key: str, tags: Iterable[str]) -> bool:
        """Whether a call reading ``key`` under ``tags`` must not be served from the cache."""
        pending = self._aliases.get(alias)
        if pending is None:
            return False
        if pending.epoch:
            return True  # every entry carries the epoch
        # Dict reads: safe without the lock (the GIL makes each atomic); a tag queued an
        # instant after this check belongs to a write this call did not follow.
        if key in pending.keys:
            return True
        return any(tag in pending.tags for tag in tags)

    def pending(self, alias: str) -> tuple[list[str], list[str]]:
        """The tags and keys still pending for ``alias`` (for tests and debugging)."""
        with self._lock:
            pending = self._aliases.get(alias) or _Alias()
            return list(pending.tags), list(pending.keys)

    def epoch_pending(self, alias: str) -> bool:
        """Whether a bump of ``alias``'s epoch (after an overflow) is still pending."""
        with self._lock:
            pending = self._aliases.get(alias)
            return pending is not None and bool(pending.epoch)

    # --- the retry thread ---

    def _start_thread(self) -> None:
        # Recreated after fork: a thread of a preloading parent does not exist in its workers.
        if self._thread is None or self._thread_pid != os.getpid():
            self._thread = threading.Thread(
                target=self._run, name="resee-invalidation-retry", daemon=True
            )
            self._thread_pid = os.getpid()
            self._thread.start()

    def _run(self) -> None:
        delay = _FIRST_RETRY
        while True:
            self._wake.wait(delay if self.any else None)
            self._wake.clear()
            if not self.any:
                delay = _FIRST_RETRY
                continue
            try:
                landed = self.retry_once()
            finally:
                # The write positions read the primary from this thread; nothing else would
                # close that connection.
                connections.close_all()
            delay = _FIRST_RETRY if landed else min(delay * 2, conf.INVALIDATION_RETRY_SECONDS)

    def retry_once(self) -> bool:
        """Try every pending invalidation once; True if all of them landed."""
        with self._lock:
            work = {
                alias: (dict(pending.tags), dict(pending.keys), pending.epoch)
                for alias, pending in self._aliases.items()
                if pending.size()
            }
        all_landed = True
        for alias, (tags, keys, epoch) in work.items():
            try:
                keys_seconds = {key: seconds for key, (_, seconds) in keys.items()}
                _retry(alias, list(tags), keys_seconds, epoch=bool(epoch))
            except Exception as error:
                all_landed = False
                logger.info(
                    "Retrying %d invalidation(s) of cache %r failed (%s); trying again.",
                    len(tags) + len(keys) + bool(epoch),
                    alias,
                    error,
                )
                continue
            with self._lock:
                pending = self._aliases.get(alias)
                if pending is not None:
                    for tag, sequence in tags.items():
                        if pending.tags.get(tag) == sequence:
                            del pending.tags[tag]
                    for key, (sequence, _) in keys.items():
                        current = pending.keys.get(key)
                        if current is not None and current[0] == sequence:
                            del pending.keys[key]
                    if epoch and pending.epoch == epoch:
                        pending.epoch = 0
                self._changed()
            landed_count = len(tags) + len(keys) + bool(epoch)
            logger.warning("Cache %r: %d pending invalidation(s) landed.", alias, landed_count)
            metrics.report_invalidation(alias, "retried", landed_count)
        return all_landed

    def clear(self) -> None:
        """Forget everything pending (tests: a new settings.CACHES makes the aliases new)."""
        with self._lock:
            self._aliases.clear()
            self._changed()

    def _log_lost(self) -> None:
        lost = {alias: pending.size() for alias, pending in self._aliases.items() if pending.size()}
        if lost:
            logger.error(
                "Exiting with invalidations still pending (%s); their entries stay valid until "
                "they expire.",
                ", ".join(f"{alias!r}: {size}" for alias, size in lost.items()),
            )


def bump_now(cache: str, tags: list[str]) -> None:
    """One attempt at invalidating ``tags`` in cache alias ``cache``; raises what the cache
    (or the primary, for its write position) raises."""
    # With replicas: the write's WAL position goes in BEFORE the bump, so that a recompute
    # that reads the new generation also finds what a replica must have replayed.
    _freshness.record(caches[cache], tags)
    _generations.bump(caches[cache], [tag_key(conf.KEY_PREFIX, tag) for tag in tags])


def _retry(alias: str, tags: list[str], keys: dict[str, float], *, epoch: bool) -> None:
    if epoch:
        _generations.bump(caches[alias], [epoch_key(conf.KEY_PREFIX)])
    if tags:
        bump_now(alias, tags)
    if keys:
        store = store_for(alias)
        # With replicas, the primary's position now: after every write these keys follow.
        position = primary_position()
        for key, seconds in keys.items():
            store.bury(key, new_tombstone(position), seconds)


# Process-wide by design: the invalidations a process failed to deliver, and the rule that it
# serves none of their entries, concern every thread of the process (a request's write and the
# same user's next request run on different threads).
queue = PendingInvalidations()
atexit.register(queue._log_lost)


def add_tags(alias: str, tags: Iterable[str]) -> None:
    queue.add_tags(alias, tags)


def add_key(alias: str, key: str, tombstone_seconds: float) -> None:
    queue.add_key(alias, key, tombstone_seconds)
