"""Locks this process may have left standing in Redis, to release at its next good read.

A ``SET NX`` (or a release) that timed out may still run: a hung Redis executes what it had
received when it resumes, and the lock then stands with no holder, every caller of the key
waiting it out for the rest of ``lock_timeout``. The stores note such locks here (alias, full
key, token) and release them, if they are still ours, at the first read that succeeds
(:class:`resee_perf._store.RedisStore`, :class:`resee_perf._astore.AsyncRedisStore`).

Process-wide like the connection pools the locks came through; bounded, since a lock left over
expires anyway.
"""

from __future__ import annotations

import threading

# Read without the lock on every hit (a list's truthiness): kept as one list, mutated in place.
maybe_orphaned: list[tuple[str, str, str]] = []
_lock = threading.Lock()
_MAX = 1000


def note(alias: str, full_key: str, token: str) -> None:
    """Release this lock (if it is still ours) at this process's first read that succeeds."""
    with _lock:
        if len(maybe_orphaned) < _MAX:
            maybe_orphaned.append((alias, full_key, token))


def pending() -> bool:
    return bool(maybe_orphaned)


def take(alias: str) -> list[tuple[str, str, str]]:
    """The possibly orphaned locks of ``alias``, to release now (or give back on failure)."""
    with _lock:
        mine = [entry for entry in maybe_orphaned if entry[0] == alias]
        for entry in mine:
            maybe_orphaned.remove(entry)
    return mine


def give_back(entries: list[tuple[str, str, str]]) -> None:
    with _lock:
        maybe_orphaned.extend(entries[: _MAX - len(maybe_orphaned)])
