"""cache_aside on an ``async def`` function: does a hung Redis stall the event loop, and what
does an async hit cost next to a sync one.

1. A private redis-server, SIGSTOPped (accepts connections, never answers), 0.2 s socket
   timeout, the breaker kept closed: 40 concurrent calls of a cached coroutine while a 10 ms
   heartbeat coroutine measures how late it wakes. Reported: its worst lag, and the same
   heartbeat's worst lag with nothing else on the loop.
2. The same server running: a hit of a sync function and of a coroutine (two tags, a 2 kB
   value), 20 rounds of 500 alternating hits; Redis commands per hit from INFO commandstats.

    .venv/bin/python benchmarks/async_cache.py

To compare with another commit, put its ``src`` first on the path:

    git archive <commit> src | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base/src .venv/bin/python benchmarks/async_cache.py

Port: RESEE_BENCH_REDIS_PORT (default 6413). Not a test: nothing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[1:1] = [str(ROOT), str(ROOT / "example_project")]

CALLS = 40
HEARTBEAT = 0.01
ROUNDS = 20
HITS = 500


async def worst_lag(during: Any) -> float:
    lags: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(HEARTBEAT)
            lags.append(time.perf_counter() - before - HEARTBEAT)

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(HEARTBEAT * 3)
    await during()
    done.set()
    await beating
    return max(lags)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import override_settings

    import resee_perf
    from resee_perf import cache_aside
    from tests.test_cache_redis_server import PrivateRedis, commands

    print("resee_perf from", Path(resee_perf.__file__).parent)
    server = PrivateRedis()
    server.port = int(os.environ.get("RESEE_BENCH_REDIS_PORT", "6413"))
    server.start()
    location = f"redis://127.0.0.1:{server.port}/0"
    private = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": location,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
    value = [{"id": i, "title": "x" * 80} for i in range(20)]
    try:
        with override_settings(
            CACHES={**settings.CACHES, "private": private},
            RESEE_PERF={"KEY_PREFIX": "bench", "CACHE_BREAKER_THRESHOLD": 100_000},
        ):

            @cache_aside("h:{x}", ttl=3600, cache="private")
            async def hung(x: int) -> int:
                return x

            async def calls() -> None:
                await asyncio.gather(*(hung(x) for x in range(CALLS)))

            async def idle() -> None:
                await asyncio.sleep(0.4)

            async def outage() -> tuple[float, float, float]:
                baseline = await worst_lag(idle)
                started = time.perf_counter()
                lag = await worst_lag(calls)
                return baseline, lag, time.perf_counter() - started

            server.pause()
            try:
                baseline, lag, elapsed = asyncio.run(outage())
            finally:
                server.resume()
            print(
                f"hung Redis, {CALLS} concurrent calls: heartbeat worst lag {lag * 1000:.0f} ms "
                f"(idle loop: {baseline * 1000:.1f} ms); the calls took {elapsed * 1000:.0f} ms"
            )

            tags = ["t:{x}:a", "t:{x}:b"]

            @cache_aside("s:{x}", ttl=3600, tags=tags, cache="private")
            def sync_hit(x: int) -> list[dict[str, Any]]:
                return value

            @cache_aside("a:{x}", ttl=3600, tags=tags, cache="private")
            async def async_hit(x: int) -> list[dict[str, Any]]:
                return value

            async def hits() -> tuple[list[float], list[float], dict[str, int], dict[str, int]]:
                sync_hit(1)
                await async_hit(1)
                admin = server.client()
                admin.config_resetstat()
                for _ in range(100):
                    sync_hit(1)
                sync_commands = commands(admin)
                admin.config_resetstat()
                for _ in range(100):
                    await async_hit(1)
                async_commands = commands(admin)
                sync_times: list[float] = []
                async_times: list[float] = []
                for _ in range(ROUNDS):
                    round_sync: list[float] = []
                    round_async: list[float] = []
                    for _ in range(HITS):
                        before = time.perf_counter()
                        sync_hit(1)
                        round_sync.append(time.perf_counter() - before)
                        before = time.perf_counter()
                        await async_hit(1)
                        round_async.append(time.perf_counter() - before)
                    sync_times.append(statistics.median(round_sync))
                    async_times.append(statistics.median(round_async))
                return sync_times, async_times, sync_commands, async_commands

            sync_times, async_times, sync_commands, async_commands = asyncio.run(hits())
            ratios = sorted(a / s for a, s in zip(async_times, sync_times, strict=True))
            print(f"commands per 100 hits: sync {sync_commands}, async {async_commands}")
            print(
                f"hit p50: sync {statistics.median(sync_times) * 1e6:.1f} us, async "
                f"{statistics.median(async_times) * 1e6:.1f} us; async / sync median "
                f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
