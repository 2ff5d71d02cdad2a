"""Tag generations: one number per tag key, and one for the cache's epoch.

A cached entry records the generations of its tags (and of the epoch) as they were *before*
its value was computed; a hit is valid only while they still match. Bumping a generation is
one INCR, whatever the number of entries under it. A missing generation (never created,
expired, evicted, lost with a restart) is created at random rather than 0, so that an entry
written under an evicted generation cannot become valid again when the key is recreated.

Keys are logical (before the cache's make_key): :func:`resee_perf._keys.tag_key` and
:func:`resee_perf._keys.epoch_key` build them. The hit path reads them raw, in the entry's MGET
(:meth:`resee_perf._store.Store.read`, through :func:`parse`); everything else is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.cache import BaseCache

from resee_perf._keys import epoch_key
from resee_perf._redis import BUMP_SCRIPT, client_for, fresh_generation
from resee_perf._sentinel import run_on_primary
from resee_perf.conf import conf


def parse(value: Any) -> int | None:
    """A generation as a raw read returns it (an int, or the bytes Redis stores); else None."""
    if type(value) is int:
        return value
    if isinstance(value, bytes):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def timeout_for(key: str) -> int | None:
    # The epoch key never expires (a TAG_TIMEOUT would turn every entry into a miss at once);
    # if it is evicted it is recreated at random like any generation.
    return None if key == epoch_key(conf.KEY_PREFIX) else conf.TAG_TIMEOUT


def read(cache: BaseCache, keys: Sequence[str]) -> list[int]:
    """The current generation at each key, creating the missing ones. For the miss path."""
    found: Mapping[str, object] = cache.get_many(list(keys)) if keys else {}
    generations: dict[str, int] = {}
    for key in keys:
        value = found.get(key)
        if isinstance(value, int):
            generations[key] = value
    for key in keys:
        if key in generations:
            continue
        candidate = fresh_generation()
        # add() is atomic (SET NX on Redis): if another process created the key first, its
        # value wins and we read it back.
        if cache.add(key, candidate, timeout=timeout_for(key)):
            generations[key] = candidate
        else:
            value = cache.get(key)
            generations[key] = value if isinstance(value, int) else candidate
    return [generations[key] for key in keys]


def bump(cache: BaseCache, keys: Sequence[str]) -> None:
    """Invalidate every entry recorded under ``keys``: one INCR per key.

    On Redis (django-redis's default or Sentinel client, or Django's own backend) all keys go
    in one script call, one round trip; other backends get one ``incr`` per key. Errors of the
    cache propagate.
    """
    unique = list(dict.fromkeys(keys))
    if not unique:
        return
    client = client_for(cache)
    if client is not None:
        # The epoch key keeps no TTL (it is bumped alone: after a queue overflow).
        timeout = None if epoch_key(conf.KEY_PREFIX) in unique else conf.TAG_TIMEOUT
        ttl_ms = 0 if timeout is None else timeout * 1000
        script = client.register_script(BUMP_SCRIPT)
        keys = [cache.make_key(key) for key in unique]
        args = [ttl_ms, *(fresh_generation() for _ in unique)]
        # Behind Sentinel, a bump counts only once it is on the primary the sentinels name
        # (resee_perf._sentinel); else it raises and the pending queue retries it.
        run_on_primary(client, lambda primary: script(keys=keys, args=args, client=primary))
        return
    for key in unique:
        try:
            cache.incr(key)
        except ValueError:
            # Missing key: nothing can be valid under a generation nobody holds, but create one
            # so that entries computed from now on record a definite value.
            cache.add(key, fresh_generation(), timeout=timeout_for(key))
