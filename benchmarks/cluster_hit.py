"""A cache_aside hit on one Redis vs a Redis Cluster, with 0 and 2 tags (issue #15).

Single: a private redis-server (the tests' ``PrivateRedis``) through django-redis. Cluster: a
private 6-node cluster (scripts/redis_cluster.sh 7100, stopped at the end) through
``resee_perf.cluster.RedisClusterCache``. For each: round trips per hit (nodes that received
a command, from INFO commandstats read around single hits of 200 different keys) and the
median latency of a hit over 20 rounds of 500 hits on 50 keys.

    .venv/bin/python benchmarks/cluster_hit.py

Not a test: nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[1:1] = [str(ROOT), str(ROOT / "example_project")]
BASE = 7100
SCRIPT = ROOT / "scripts" / "redis_cluster.sh"


def calls(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name not in {"cmdstat_info", "cmdstat_config|resetstat"}
    )


def round_trips(hit: Callable[[int], Any], nodes: list[Any]) -> float:
    """Mean number of nodes one hit sends commands to (a pipeline is one round trip each)."""
    touched = 0
    for x in range(200):
        for node in nodes:
            node.config_resetstat()
        hit(x)
        touched += sum(1 for node in nodes if calls(node) > 0)
    return touched / 200


def functions(alias: str) -> dict[str, Callable[[int], Any]]:
    from resee_perf import cache_aside

    @cache_aside("n:{x}", ttl=3600, cache=alias)
    def untagged(x: int) -> list[int]:
        return list(range(50))

    @cache_aside("t:{x}", ttl=3600, tags=["bench:{x}:a", "bench:{x}:b"], cache=alias)
    def tagged(x: int) -> list[int]:
        return list(range(50))

    for x in range(200):  # fill
        untagged(x)
        tagged(x)
    return {"0 tags": untagged, "2 tags": tagged}


def latencies_us(hits: dict[str, Callable[[int], Any]]) -> dict[str, float]:
    """Median per-hit time of each, in 20 rounds of 500 hits that alternate between them (so
    that the machine's load, which varies, weighs on each alike)."""
    rounds: dict[str, list[float]] = {name: [] for name in hits}
    for _ in range(20):
        for name, hit in hits.items():
            start = time.perf_counter()
            for i in range(500):
                hit(i % 50)
            rounds[name].append((time.perf_counter() - start) / 500 * 1e6)
    return {name: statistics.median(values) for name, values in rounds.items()}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.test.utils import override_settings

    from tests.test_cache_redis_server import PrivateRedis

    server = PrivateRedis()
    server.start()
    subprocess.run(["bash", str(SCRIPT), str(BASE)], check=True)
    cluster_nodes = [redis.Redis(port=BASE + i) for i in range(6)]
    try:
        with override_settings(
            CACHES={
                **settings.CACHES,
                "single": server.cache_settings(),
                "cluster": {
                    "BACKEND": "resee_perf.cluster.RedisClusterCache",
                    "LOCATION": f"redis://127.0.0.1:{BASE}",
                },
            },
            RESEE_PERF={"KEY_PREFIX": "bench"},
        ):
            single, cluster = functions("single"), functions("cluster")
            trips = {
                (topology, name): round_trips(function, nodes)
                for topology, found, nodes in (
                    ("single", single, [server.client()]),
                    ("cluster", cluster, cluster_nodes),
                )
                for name, function in found.items()
            }
            micros = latencies_us(
                {
                    f"{topology}/{name}": function
                    for topology, found in (("single", single), ("cluster", cluster))
                    for name, function in found.items()
                }
            )
    finally:
        server.stop()
        subprocess.run(["bash", str(SCRIPT), str(BASE), "stop"], check=False)
    print("| topology | tags | round trips per hit | median hit (µs) | vs single |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("0 tags", "2 tags"):
        for topology in ("single", "cluster"):
            us = micros[f"{topology}/{name}"]
            ratio = us / micros[f"single/{name}"]
            trip = trips[(topology, name)]
            print(f"| {topology} | {name} | {trip:.2f} | {us:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
