"""One cache_aside hit (two tags, a 2 kB value) against a raw django-redis ``cache.get``, on a
private redis-server (the tests' ``PrivateRedis``): Redis commands per hit from INFO
commandstats, and the median latency of each, in 20 rounds of 500 alternating reads.

    .venv/bin/python benchmarks/cache_hit.py

To compare with another commit, put its ``src`` first on the path:

    git archive <commit> src | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base/src .venv/bin/python benchmarks/cache_hit.py

Not a test: nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[1:1] = [str(ROOT), str(ROOT / "example_project")]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import caches
    from django.test.utils import override_settings

    import resee_perf
    from resee_perf import cache_aside
    from tests.test_cache_redis_server import PrivateRedis, commands

    print("resee_perf from", Path(resee_perf.__file__).parent)
    server = PrivateRedis()
    server.start()
    value = [{"id": i, "title": "x" * 80} for i in range(20)]
    try:
        with override_settings(
            CACHES={**settings.CACHES, "private": server.cache_settings()},
            RESEE_PERF={"KEY_PREFIX": "bench"},
        ):

            @cache_aside("b:{x}", ttl=3600, tags=["t:{x}:a", "t:{x}:b"], cache="private")
            def hit(x: int) -> list[dict[str, Any]]:
                return value

            hit(1)
            cache = caches["private"]
            cache.set("raw", value, 3600)
            cache.get("raw")
            admin = server.client()
            admin.config_resetstat()
            for _ in range(100):
                hit(1)
            print("commands for 100 hits:", commands(admin))
            raw_p50: list[float] = []
            hit_p50: list[float] = []
            for _ in range(20):
                raw: list[int] = []
                cached: list[int] = []
                for _ in range(500):
                    start = time.perf_counter_ns()
                    cache.get("raw")
                    raw.append(time.perf_counter_ns() - start)
                    start = time.perf_counter_ns()
                    hit(1)
                    cached.append(time.perf_counter_ns() - start)
                raw_p50.append(statistics.median(raw))
                hit_p50.append(statistics.median(cached))
            ratios = [h / r for h, r in zip(hit_p50, raw_p50, strict=True)]
            print(
                f"raw get p50 {statistics.median(raw_p50) / 1000:.1f} us, "
                f"hit p50 {statistics.median(hit_p50) / 1000:.1f} us, "
                f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
