"""Read-after rules: every "this read must wait until a replica has replayed X" in one place.

The router (:mod:`resee_perf.routers`) sends a read to a replica only once it has replayed
every position this module says the read must see (:func:`has_replayed`); the positions come
from:

- the client's earlier write, from its cookie (:mod:`resee_perf.middleware` stores the
  primary's position after a request that wrote; the router pins a scope that wrote itself);
- :func:`require`, around a cache recompute: the write positions recorded with the tag
  invalidations of its tags (:func:`record`, :func:`reads_after`), and the position an
  ``invalidate()`` tombstone holds (:func:`reads_after_tombstone`);
- :func:`use_primary`: every read to the primary.

Tag write positions
-------------------
The cache and the replicas together: a recompute must not fill the cache from a replica that
has not replayed the write that invalidated the entry.

Without this, a write on the primary bumps a tag's generation after it commits; the next miss
(any client's, not only the writer's, whose cookie would send it to the primary) reads the new
generation, runs the body on a lagging replica and stores the old data under the new
generation, where it is served as current until it expires.

So each invalidation also records, per tag, the primary's WAL position after the write
(:func:`record`, called by the invalidation just *before* the bump), and a recompute reads those
positions just *after* the generations and runs its body under them (:func:`reads_after`): the
router then sends its reads to a replica only once that replica has replayed them. A recompute
that sees a new generation therefore always sees the position recorded before it.

Both are no-ops unless ``RESEE_PERF['REPLICAS']`` is set. The positions live in the cache next
to the generations, for ``max(STICKY_SECONDS, REPLICA_MAX_LAG_SECONDS)``: a usable replica has
replayed the write by then.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from django.core.cache import BaseCache
from django.db import DEFAULT_DB_ALIAS

from resee_perf import _replicas
from resee_perf._keys import WRITE_POSITION, family_key, tag_part
from resee_perf._redis import MAX_POSITION_SCRIPT, client_for, cluster_client_for, eval_per_key
from resee_perf._store import tombstone_position
from resee_perf.conf import conf

PRIMARY = DEFAULT_DB_ALIAS
"""The primary is ``default``; ``REPLICAS`` name its replicas."""

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class WritePosition:
    """A write a reader must see: the primary's WAL position once it had committed (None where
    unknown) and when it happened (``time.time()``)."""

    lsn: int | None
    written_at: float


_forced: ContextVar[bool] = ContextVar("resee_perf_use_primary", default=False)
_required: ContextVar[tuple[WritePosition, ...]] = ContextVar(
    "resee_perf_required_positions", default=()
)


def forced() -> bool:
    """Whether the running code is inside :func:`use_primary`."""
    return _forced.get()


def required() -> tuple[WritePosition, ...]:
    """The positions the running code's reads must see, from :func:`require`."""
    return _required.get()


def primary_position() -> int | None:
    """With replicas, the primary's WAL position now (after the writes a reader must see);
    None without replicas, or where it is unknown."""
    if not _replicas.routing_settings().replicas:
        return None
    return _replicas.primary_lsn(PRIMARY)


def remembered_for() -> float:
    """How long a write is remembered for its readers (a cookie, a tag's position): a usable
    replica has replayed it by then."""
    return _replicas.routing_settings().write_memory


def has_replayed(
    status: _replicas.ReplicaStatus, positions: Iterable[WritePosition | None]
) -> bool:
    for position in positions:
        if position is None:
            continue
        if position.lsn is not None and status.replay_lsn is not None:
            if status.replay_lsn < position.lsn:
                return False
        elif time.time() < position.written_at + _replicas.routing_settings().sticky_seconds:
            return False
    return True


@contextmanager
def require(position: WritePosition) -> Iterator[None]:
    """Reads inside go to a replica only once it has replayed ``position``, else to the
    primary; on top of the scope's own rules. For the recompute of a cache entry whose tags a
    write has just invalidated (:func:`reads_after`)."""
    token = _required.set((*_required.get(), position))
    try:
        yield
    finally:
        # A generator-driven caller (cache_aside's flow) may be closed from another context,
        # where this token means nothing; that context never saw the requirement anyway.
        with suppress(ValueError):
            _required.reset(token)


class _UsePrimary:
    def __init__(self) -> None:
        self._tokens: list[Token[bool]] = []

    def __enter__(self) -> None:
        self._tokens.append(_forced.set(True))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _forced.reset(self._tokens.pop())

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        return _decorate(func)


def _decorate(func: Callable[P, R]) -> Callable[P, R]:
    # A fresh context manager per call: one shared instance would interleave the tokens of
    # concurrent calls.
    if inspect.iscoroutinefunction(func):
        async_func: Callable[P, Awaitable[Any]] = func

        @functools.wraps(func)
        async def async_inner(*args: P.args, **kwargs: P.kwargs) -> Any:
            with _UsePrimary():
                return await async_func(*args, **kwargs)

        return async_inner  # type: ignore[return-value]

    @functools.wraps(func)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        with _UsePrimary():
            return func(*args, **kwargs)

    return inner


@overload
def use_primary() -> _UsePrimary: ...
@overload
def use_primary(func: Callable[P, R]) -> Callable[P, R]: ...
def use_primary(func: Callable[P, R] | None = None) -> _UsePrimary | Callable[P, R]:
    """Send every read to the primary: ``with use_primary(): ...``, or as a decorator of a
    function or coroutine function (``@use_primary`` or ``@use_primary()``).

    For code that must see the very latest data, or that writes outside the ORM (raw SQL on
    the primary is invisible to the router).
    """
    if func is None:
        return _UsePrimary()
    return _decorate(func)


def position_key(tag: str) -> str:
    # Its own family: a tag "X:lsn" must not address the position of tag "X".
    return family_key(conf.KEY_PREFIX, WRITE_POSITION, tag_part(tag))


def record(cache: BaseCache, tags: Sequence[str]) -> None:
    """After a write has committed: the position reads of ``tags``' entries must wait for."""
    if not tags:
        return
    lsn = primary_position()
    if lsn is None:
        return
    keys = [position_key(tag) for tag in dict.fromkeys(tags)]
    ttl_ms = math.ceil(remembered_for() * 1000)
    cluster = cluster_client_for(cache)
    if cluster is not None:
        full_keys = [cache.make_key(key) for key in keys]
        eval_per_key(cluster, MAX_POSITION_SCRIPT, full_keys, [[ttl_ms, lsn]] * len(keys))
        return
    client = client_for(cache)
    if client is not None:
        script = client.register_script(MAX_POSITION_SCRIPT)
        script(keys=[cache.make_key(key) for key in keys], args=[ttl_ms, *[lsn] * len(keys)])
        return
    # Other backends have no compare-and-set: a concurrent, older position can win this
    # read-modify-write (docs/routing.md says so).
    current = cache.get_many(keys)
    cache.set_many(
        {key: lsn for key in keys if not isinstance(current.get(key), int) or current[key] < lsn},
        timeout=ttl_ms / 1000,
    )


def position_keys(tags: Sequence[str]) -> list[str]:
    """The keys of ``tags``' write positions, which a recompute reads after the generations
    (the store reads them: :meth:`resee_perf._store.Store.positions`); none without replicas."""
    if not tags or not _replicas.routing_settings().replicas:
        return []
    return [position_key(tag) for tag in tags]


@contextmanager
def reads_after(cache: BaseCache, tags: Sequence[str]) -> Iterator[None]:
    """Run a recompute's body so that it reads what the last invalidations of ``tags`` wrote.

    To be entered after the tag generations were read. A cache error sends the body to the
    primary: better one read there than a stale value stored as current. (``cache_aside``'s
    flow reads the positions through its store and enters :func:`reads_after_positions`.)
    """
    keys = position_keys(tags)
    if not keys:
        yield
        return
    positions: list[int] | None
    try:
        found = cache.get_many(keys)
    except Exception:
        positions = None
    else:
        positions = [value for value in found.values() if isinstance(value, int)]
    with reads_after_positions(positions):
        yield


@contextmanager
def reads_after_positions(positions: Sequence[int] | None) -> Iterator[None]:
    """:func:`reads_after` once the positions at :func:`position_keys` are read; None (a
    cache error) sends the body to the primary."""
    if positions is None:
        with use_primary():
            yield
        return
    if not positions:
        yield
        return
    with require(WritePosition(lsn=max(positions), written_at=0.0)):
        yield


@contextmanager
def reads_after_tombstone(seen: Any) -> Iterator[None]:
    """With replicas: a recompute that found an ``invalidate()`` tombstone reads from a replica
    only once it has replayed the write before it, as tag invalidations do with
    :func:`reads_after`; else a lagging replica would refill the entry with the
    old rows, and the compare-and-set would store them over the tombstone."""
    position = tombstone_position(seen)
    if position is None:
        yield
        return
    with require(WritePosition(lsn=position, written_at=0.0)):
        yield
