"""Hit cost of the entry format: JSON vs pickle, with and without an HMAC (docs/benchmarks.md).

Starts its own redis-server on a spare port. Each round times, interleaved, N raw django-redis
``cache.get`` of the value and N ``cache_aside`` hits under each serializer/signing setting, and
reports per setting the median over rounds of (hit median / raw get median). Also times the
decoding alone (no Redis), in microseconds, the best of 5 medians, which load disturbs less.

    .venv/bin/python benchmarks/cache_entries.py [--hits 2000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from cache_workloads import start_redis

# A DRF-like page of 20 rows: PLAIN has only JSON-native values, TYPED dates and Decimals too.
PLAIN = {
    "count": 20,
    "results": [{"id": i, "title": f"content {i}", "score": i * 1.5} for i in range(20)],
}
TYPED = {
    "count": 20,
    "results": [
        {
            "id": i,
            "due": datetime.date(2026, 12, 4),
            "at": datetime.datetime(2026, 12, 4, 5, i, tzinfo=datetime.UTC),
            "price": decimal.Decimal("9.99"),
        }
        for i in range(20)
    ],
}
SETTINGS = {
    "json": {},
    "json+hmac": {"CACHE_SIGNING_KEY": "bench-secret"},
    "pickle": {"CACHE_SERIALIZER": "pickle"},
    "pickle+hmac": {"CACHE_SERIALIZER": "pickle", "CACHE_SIGNING_KEY": "bench-secret"},
}


def setup_django(port: int) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["resee_perf"],
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{port}/0",
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
            }
        },
        RESEE_PERF={},
        USE_TZ=True,
    )
    django.setup()


def median_time(call: Any, n: int) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    port, server = start_redis()
    try:
        setup_django(port)
        run(args.hits, args.rounds)
    finally:
        server.terminate()
        server.wait()


def run(hits: int, rounds: int) -> None:
    from django.core.cache import cache
    from django.test import override_settings

    from resee_perf import cache_aside
    from resee_perf._entries import PLAIN as KIND_PLAIN
    from resee_perf._entries import Codec, Entry, JSONSerializer, PickleSerializer

    print(f"{'value':6} {'setting':12} {'p50/raw get (range)':>24} {'decode µs':>10}")
    for label, value in (("plain", PLAIN), ("typed", TYPED)):
        cache.set(f"raw:{label}", value, 3600)

        def raw(label: str = label) -> Any:
            return cache.get(f"raw:{label}")

        functions = {}
        for name, extra in SETTINGS.items():
            with override_settings(RESEE_PERF=extra):

                @cache_aside(f"bench:{label}:{name}", ttl=3600, beta=0)
                def hit(value: Any = value) -> Any:
                    return value

                hit()  # store it under this setting
            functions[name] = hit
        ratios: dict[str, list[float]] = {name: [] for name in SETTINGS}
        baselines = []
        for _ in range(rounds):
            baseline = median_time(raw, hits)
            baselines.append(baseline)
            # A fresh order each round, so that a load spike does not always hit one setting.
            for name, extra in random.sample(list(SETTINGS.items()), len(SETTINGS)):
                with override_settings(RESEE_PERF=extra):
                    assert functions[name]() == value
                    ratios[name].append(median_time(functions[name], hits) / baseline)
        print(f"{label:6} raw cache.get p50 {statistics.median(baselines) * 1e6:.1f} µs")
        for name in SETTINGS:
            serializer = PickleSerializer() if "pickle" in name else JSONSerializer()
            keys = [b"bench-secret"] if "hmac" in name else []
            codec = Codec(serializer, keys)
            blob = codec.encode(Entry(1e12, 0.0, (), KIND_PLAIN, value), "k", "bench")
            # The best of 5 medians: on a shared machine the minimum is the code, the rest load.
            decode = min(
                median_time(lambda codec=codec, blob=blob: codec.decode(blob, "k"), 4000)
                for _ in range(5)
            )
            found = ratios[name]
            spread = f"{statistics.median(found):.2f} ({min(found):.2f}-{max(found):.2f})"
            print(f"{label:6} {name:12} {spread:>24} {decode * 1e6:10.1f}")


if __name__ == "__main__":
    main()
