"""Helpers for tests of resee-perf and of projects that use it (docs/testing.md).

Tests drive ``cache_aside``'s notion of time and its XFetch draws, wait for background
refreshes, and keep the process-wide registrations of one test from leaking into the next,
through these functions rather than through private module state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from resee_perf import _db_on_delete, _flow, _refresh
from resee_perf.cache import declared_aliases, restore_declared_aliases
from resee_perf.invalidation import registrations, restore_registrations

__all__ = [
    "isolated_registrations",
    "restore_time",
    "set_clock",
    "set_random",
    "wait_for_background_refreshes",
]


def set_clock(clock: Callable[[], float]) -> None:
    """Make ``cache_aside`` read the wall-clock time (expiries, the time a body took) from
    ``clock`` instead of :func:`time.time`, until :func:`restore_time`."""
    _flow.clock = clock


def set_random(draw: Callable[[], float]) -> None:
    """Make ``cache_aside``'s XFetch draws (a float in [0, 1)) come from ``draw`` instead of
    :func:`random.random`, until :func:`restore_time`."""
    _flow.draw = draw


def restore_time() -> None:
    """Undo :func:`set_clock` and :func:`set_random`."""
    _flow.clock = time.time
    _flow.draw = random.random


def wait_for_background_refreshes(timeout: float = 10.0) -> None:
    """Wait until the background refreshes (threads) started so far in this process are done."""
    _refresh.executor().submit(lambda: None).result(timeout)


@contextmanager
def isolated_registrations() -> Iterator[None]:
    """Forget, on exit, the ``cache_aside(cache=...)`` functions (for system check E010) and
    the ``invalidate_on`` registrations made inside (the signal receivers stay connected, and
    find no registration)."""
    aliases = declared_aliases()
    saved = registrations()
    database_on_delete = _db_on_delete.state()
    try:
        yield
    finally:
        restore_declared_aliases(aliases)
        restore_registrations(saved)
        _db_on_delete.restore(database_on_delete)
