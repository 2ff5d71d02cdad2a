"""Sentinel: an invalidation counts as delivered only on the primary the sentinels name.

With django-redis's Sentinel client, writes go to the primary the sentinels named when the
connection was opened. During a failover (``SENTINEL FAILOVER``, or the primary lost) there is a
window in which the old primary still takes writes from the connections it already had while
other processes, connecting anew, write to the promoted replica; the old primary's writes are
then discarded when the sentinels turn it into a replica (a full resync). A tag bump lost that
way would leave an entry that a process on the new primary computed from the database *before*
the write valid until it expires. So, after a bump (or a tombstone) on a Sentinel-managed pool:

1. ``WAIT 1 <ms>``: if a replica acknowledged it, it is on a server the sentinels will promote
   or have reconfigured: a promoted replica that still lacks it is a new server, whose run_id
   change retires every entry (resee_perf._store's epoch), and no process reaches it before
   the sentinels name it, i.e. before step 2 would have failed.
2. Else (no replica, or a slow one) ask every sentinel which server is the primary: if any that
   answers names another one than the server that took the write, or none answers, raise
   :class:`NotThePrimary` (a redis ``ConnectionError``): the caller's pending queue retries
   the invalidation, and this process's connections move to the new primary.

Outside Sentinel this module does nothing: :func:`run_on_primary` just runs the operation.
docs/scaling.md#sentinel gives the bound this buys and what it costs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from redis import Redis

T = TypeVar("T")

# WAIT's timeout: a replica on the same network acknowledges in about one round trip; past
# this the sentinels are asked instead (a slow replica costs a few more round trips, not
# an error).
WAIT_MILLISECONDS = 50


def _redis_connection_error() -> type[Exception]:
    from redis.exceptions import ConnectionError as RedisConnectionError

    return RedisConnectionError


class NotThePrimary(Exception):
    """The server that took a write is not (or cannot be confirmed as) the sentinels' primary."""


def run_on_primary(client: Redis, operation: Callable[[Redis], T]) -> T:
    """``operation(client)``; on a Sentinel-managed primary pool, on one connection, and then
    confirmed as above (raising :class:`NotThePrimary` when it cannot be)."""
    from redis import Redis
    from redis.sentinel import SentinelConnectionPool

    # A RedisCluster has no single pool (and no Sentinel): the operation as is.
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool) or not pool.is_master:
        return operation(client)
    # One connection for the write, the WAIT and the address check: they must all be about
    # the same server.
    single = Redis(connection_pool=pool, single_connection_client=True)
    try:
        result = operation(single)
        acknowledged = single.execute_command(  # type: ignore[no-untyped-call]
            "WAIT", 1, WAIT_MILLISECONDS
        )
        if int(acknowledged) < 1:
            connection = single.connection
            assert connection is not None  # single_connection_client holds one
            _confirm(pool, (str(connection.host), int(connection.port)))
        return result
    except NotThePrimary:
        if single.connection is not None:
            single.connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        single.close()


def _confirm(pool: object, address: tuple[str, int]) -> None:
    from redis.sentinel import SentinelConnectionPool

    assert isinstance(pool, SentinelConnectionPool)
    errors = (_redis_connection_error(), OSError)
    answered = 0
    for sentinel in pool.sentinel_manager.sentinels:
        try:
            state = sentinel.sentinel_masters().get(pool.service_name)
        except errors:
            continue
        answered += 1
        if state is None:
            continue
        named = (str(state["ip"]), int(state["port"]))
        if named != address:
            # Moves this pool's idle connections to the new primary (redis-py disconnects
            # them when the address it knows changes).
            with contextlib.suppress(*errors):
                pool.get_master_address()  # type: ignore[no-untyped-call]
            raise NotThePrimary(
                f"the write went to {address[0]}:{address[1]}, but a sentinel names "
                f"{named[0]}:{named[1]} as the primary of {pool.service_name!r} (a failover)"
            )
    if not answered:
        raise NotThePrimary(
            f"no sentinel of {pool.service_name!r} answered, so the write to "
            f"{address[0]}:{address[1]} cannot be confirmed on the primary"
        )
