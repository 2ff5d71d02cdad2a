"""The cache and the replicas together: a recompute must not fill the cache from a replica that
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

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.core.cache import BaseCache

from resee_perf import _replicas
from resee_perf._keys import WRITE_POSITION, family_key, tag_part
from resee_perf._redis import MAX_POSITION_SCRIPT, client_for
from resee_perf.conf import conf
from resee_perf.routers import PRIMARY, WritePosition, require, use_primary


def position_key(tag: str) -> str:
    # Its own family: a tag "X:lsn" must not address the position of tag "X".
    return family_key(conf.KEY_PREFIX, WRITE_POSITION, tag_part(tag))


def _lifetime() -> float:
    return _replicas.routing_settings().write_memory


def record(cache: BaseCache, tags: Sequence[str]) -> None:
    """After a write has committed: the position reads of ``tags``' entries must wait for."""
    if not tags or not _replicas.routing_settings().replicas:
        return
    lsn = _replicas.primary_lsn(PRIMARY)
    if lsn is None:
        return
    keys = [position_key(tag) for tag in dict.fromkeys(tags)]
    ttl_ms = math.ceil(_lifetime() * 1000)
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


@contextmanager
def reads_after(cache: BaseCache, tags: Sequence[str]) -> Iterator[None]:
    """Run a recompute's body so that it reads what the last invalidations of ``tags`` wrote.

    To be entered after the tag generations were read. A cache error sends the body to the
    primary: better one read there than a stale value stored as current.
    """
    if not tags or not _replicas.routing_settings().replicas:
        yield
        return
    try:
        found = cache.get_many([position_key(tag) for tag in tags])
    except Exception:
        with use_primary():
            yield
        return
    positions = [value for value in found.values() if isinstance(value, int)]
    if not positions:
        yield
        return
    with require(WritePosition(lsn=max(positions), written_at=0.0)):
        yield
