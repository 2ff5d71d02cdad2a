"""Tag generations: the invalidation model shared by :mod:`resee_perf.cache` and the signal
receivers.

Each tag has a generation number stored under its own cache key. A cached entry records the
generations of its tags as they were *before* its value was computed; a hit is valid only if
they still match (the cache reads the entry and the tag keys in one ``get_many``, one MGET on
Redis). Invalidating a tag is then one INCR, whatever the number of entries under it: no key
scans on the write path.

Because the generations are read before the body runs, a reader that loaded the database
before a write committed stores its value under the old generation; the invalidation that
follows the commit bumps the generation and that value can never be served (the stale-set race
that memcache leases solve, NSDI 2013).

A generation key that is missing (never created, evicted, or lost with a Redis restart) is
created with a random value rather than 0, so that an entry written under an evicted
generation cannot become valid again when the key is recreated.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence

from django.core.cache import BaseCache

from resee_perf.conf import conf

_MAX_TAG_LENGTH = 150


def tag_key(tag: str) -> str:
    """The cache key (before the cache's own KEY_PREFIX/VERSION) holding ``tag``'s generation."""
    if len(tag) > _MAX_TAG_LENGTH or not tag.isprintable() or any(c.isspace() for c in tag):
        tag = "h." + hashlib.blake2b(tag.encode(), digest_size=16).hexdigest()
    return f"{conf.KEY_PREFIX}:t:{tag}"


def _fresh_generation() -> int:
    # 62 bits: stays an int in every backend, and collides with an evicted generation with
    # negligible probability.
    return secrets.randbits(62)


def read_generations(cache: BaseCache, tags: Sequence[str]) -> dict[str, int]:
    """The current generation of each tag, creating the missing ones. For the miss path."""
    keys = {tag: tag_key(tag) for tag in tags}
    found: Mapping[str, object] = cache.get_many(list(keys.values())) if keys else {}
    generations: dict[str, int] = {}
    missing: list[str] = []
    for tag, key in keys.items():
        value = found.get(key)
        if isinstance(value, int):
            generations[tag] = value
        else:
            missing.append(tag)
    for tag in missing:
        candidate = _fresh_generation()
        # add() is atomic (SET NX on Redis): if another process created the key first, its
        # value wins and we read it back.
        if cache.add(keys[tag], candidate, timeout=None):
            generations[tag] = candidate
        else:
            value = cache.get(keys[tag])
            generations[tag] = value if isinstance(value, int) else candidate
    return generations


def bump_generations(cache: BaseCache, tags: Iterable[str]) -> None:
    """Invalidate every entry recorded under ``tags``: one INCR per tag."""
    for tag in dict.fromkeys(tags):
        key = tag_key(tag)
        try:
            cache.incr(key)
        except ValueError:
            # Missing key: nothing can be valid under a generation nobody holds, but create one
            # so that entries computed from now on record a definite value.
            cache.add(key, _fresh_generation(), timeout=None)
