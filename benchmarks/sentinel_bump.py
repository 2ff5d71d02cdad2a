"""What a tag bump costs behind Sentinel: the bump script alone vs the bump confirmed on the
primary the sentinels name (resee_perf._sentinel: one connection, the script, ``WAIT 1 50``),
and the slow path taken when no replica acknowledges (every sentinel asked).

    bash scripts/redis_sentinel.sh            # primary 6380, replica 6381, sentinels 26380-2
    .venv/bin/python benchmarks/sentinel_bump.py

Uses the tests' Sentinel cache (RESEE_TEST_REDIS=sentinel, database 1 of that set) and the
plain Redis of REDIS_URL for comparison. The variants run round-robin in 10 rounds so that the
machine's load weighs on each alike. Prints a Markdown table. Not a test: nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]

ROUNDS = 10
PER_ROUND = 200


def main() -> None:
    os.environ["RESEE_TEST_REDIS"] = "sentinel"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import caches
    from django.test import override_settings

    from resee_perf import _sentinel
    from resee_perf._redis import BUMP_SCRIPT, client_for
    from resee_perf._sentinel import _confirm, run_on_primary

    plain = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": settings.REDIS_URL}
    with override_settings(CACHES={**settings.CACHES, "plain": plain}):
        sentinel_client = client_for(caches["default"])
        plain_client = client_for(caches["plain"])
        assert sentinel_client is not None
        assert plain_client is not None
        script = sentinel_client.register_script(BUMP_SCRIPT)
        plain_script = plain_client.register_script(BUMP_SCRIPT)
        keys = ["bench:sentinel:tag"]
        pool = sentinel_client.connection_pool

        def bump_plain() -> object:
            return plain_script(keys=keys, args=[60_000, 1], client=plain_client)

        def bump_unconfirmed() -> object:
            return script(keys=keys, args=[60_000, 1], client=sentinel_client)

        def bump_confirmed() -> object:
            return run_on_primary(
                sentinel_client, lambda c: script(keys=keys, args=[60_000, 1], client=c)
            )

        def ask_sentinels() -> None:
            address = pool.get_master_address()
            _confirm(pool, (str(address[0]), int(address[1])))

        variants: dict[str, Callable[[], object]] = {
            "plain Redis, bump script": bump_plain,
            "Sentinel primary, bump script only": bump_unconfirmed,
            "Sentinel primary, bump + WAIT 1 (the default path)": bump_confirmed,
            "slow path alone: ask the 3 sentinels": ask_sentinels,
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, action in variants.items():
                for _ in range(PER_ROUND):
                    started = time.perf_counter()
                    action()
                    samples[name].append(time.perf_counter() - started)
    print(f"WAIT timeout: {_sentinel.WAIT_MILLISECONDS} ms\n")
    print("| | µs per bump, median / p99 |")
    print("| --- | --- |")
    for name, values in samples.items():
        ordered = sorted(values)
        p99 = ordered[int(len(ordered) * 0.99)]
        print(f"| {name} | {statistics.median(ordered) * 1e6:,.0f} / {p99 * 1e6:,.0f} |")


if __name__ == "__main__":
    main()
