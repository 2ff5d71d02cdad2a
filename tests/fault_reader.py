"""What tests/test_redis_faults.py reads, in its own process and in spawned ones (which import
this module before Django is set up, so it imports no model)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resee_perf import cache_aside
from resee_perf.cache import CachedFunction

# 20 entries over 4 tags.
ENTRIES = [(k, k % 4) for k in range(20)]


def make_reader(truth: Path) -> CachedFunction[[int, int], str]:
    @cache_aside("fault:{k}", ttl=300, tags=["fault:{g}"], beta=0, cache="private")
    def read(k: int, g: int) -> str:
        values: dict[str, str] = json.loads(truth.read_text())
        return values[str(k)]

    return read


def stale_reads(read: Callable[[int, int], str], truth: Path) -> list[tuple[int, str]]:
    values = json.loads(truth.read_text())
    return [(k, got) for k, g in ENTRIES if (got := read(k, g)) != values[str(k)]]


def read_elsewhere(
    cache: dict[str, Any], resee: dict[str, Any], truth: str
) -> list[tuple[int, str]]:
    """A spawned process: its own Django, its own connections, the same entries."""
    import django
    from django.conf import settings
    from django.test.utils import override_settings

    django.setup()
    with override_settings(CACHES={**settings.CACHES, "private": cache}, RESEE_PERF=resee):
        return stale_reads(make_reader(Path(truth)), Path(truth))
