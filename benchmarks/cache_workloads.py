"""Benchmark: the three workloads of issue 3 for resee_perf's cache_aside and its peers.

Libraries, all on one private redis-server this script starts on a spare port (so that
``INFO commandstats`` counts only our own commands):

- ``raw get``: django-redis ``cache.get`` of a stored value, the baseline of hit latency;
- ``naive``: ``cache.get``, then on a miss compute and ``cache.set``;
- ``get_or_set``: Django's ``cache.get_or_set``;
- ``dogpile``: dogpile.cache's Redis backend with ``distributed_lock=True`` (expired values are
  kept in Redis, ``redis_expiration_time``, so that dogpile can serve them while one caller
  regenerates);
- ``cacheops``: django-cacheops ``cached_as(User, lock=True)``;
- ``resee``: ``cache_aside(key, ttl)`` with its defaults (XFetch ``beta=1``, lock, background
  refresh), ``resee +2 tags`` the same with two tags (what the example project's views use),
  and ``resee stale`` with ``stale_ttl`` and ``beta=0`` (what docs/cache.md recommends for hot
  keys with short TTLs).

Workloads:

1. stampede: 4 processes x 10 threads call one cold key whose body takes 200 ms. Recomputes,
   and how long the slowest caller waited.
2. hot key: 8 threads read one key for 6 s; TTL 1 s, body 100 ms. Recomputes, and blocked
   reads: calls that took longer than half the body (they waited for a recompute, theirs or
   another's).
3. hits: one thread reads a warm key (a 2 kB list of dicts like today's reviews); median and
   p99 latency, in rounds that alternate the libraries so drift hits them alike, as a ratio to
   the raw get; Redis commands per hit from ``INFO commandstats``.

    .venv/bin/python -m benchmarks.cache_workloads [--hot-seconds 6] [--hits 20000]

Not a test: nothing is asserted. Compare ratios within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

STAMPEDE_PROCESSES = 4
STAMPEDE_THREADS = 10
STAMPEDE_BODY = 0.2
HOT_THREADS = 8
HOT_TTL = 1.0
HOT_BODY = 0.1
PAYLOAD = [
    {"id": i, "title": f"Content {i}", "excerpt": "x" * 60, "interval_index": i % 7, "due": None}
    for i in range(20)
]
LIBRARIES = [
    "naive",
    "get_or_set",
    "dogpile",
    "cacheops",
    "resee",
    "resee +2 tags",
    "resee stale",
]


def setup_django(port: int) -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "cacheops"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{port}/0",
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
            }
        },
        CACHEOPS_REDIS=f"redis://127.0.0.1:{port}/1",
        CACHEOPS={"auth.user": {"ops": (), "timeout": 3600}},
        RESEE_PERF={},
        USE_TZ=True,
    )
    django.setup()


def counter(port: int) -> redis.Redis:
    return redis.Redis(port=port, db=2)


def make_getter(library: str, port: int, key: str, ttl: float, body: Callable[[], Any]) -> Any:
    """A zero-argument call that reads ``key`` through ``library``, computing with ``body``."""
    from django.core.cache import cache

    if library == "raw get":
        return lambda: cache.get(key)
    if library == "naive":

        def naive() -> Any:
            value = cache.get(key)
            if value is None:
                value = body()
                cache.set(key, value, ttl)
            return value

        return naive
    if library == "get_or_set":
        return lambda: cache.get_or_set(key, body, ttl)
    if library == "dogpile":
        from dogpile.cache import make_region

        region = make_region().configure(
            "dogpile.cache.redis",
            expiration_time=ttl,
            arguments={
                "host": "127.0.0.1",
                "port": port,
                "db": 3,
                "distributed_lock": True,
                "thread_local_lock": False,
                "lock_timeout": 30,
                "redis_expiration_time": int(ttl) + 30,
            },
        )
        return lambda: region.get_or_create(key, body)
    if library == "cacheops":
        from cacheops import cached_as  # type: ignore[import-untyped]
        from django.contrib.auth.models import User

        @cached_as(User, timeout=max(1, round(ttl)), lock=True, extra=key)  # type: ignore[untyped-decorator]
        def cacheops_call() -> Any:
            return body()

        return cacheops_call
    from resee_perf import cache_aside

    presets: dict[str, dict[str, Any]] = {
        "resee": {},
        "resee +2 tags": {"tags": ["user:{name}:reviews", "user:{name}:contents"]},
        "resee stale": {"stale_ttl": 30.0, "beta": 0.0},
    }
    options = presets[library]

    @cache_aside("bench:{name}", ttl=ttl, **options)
    def resee_call(name: str) -> Any:
        return body()

    return lambda: resee_call(key)


def slow_body(port: int, runs_key: str, seconds: float) -> Callable[[], Any]:
    runs = counter(port)

    def body() -> Any:
        runs.incr(runs_key)  # counted across processes
        time.sleep(seconds)
        return PAYLOAD

    return body


# --- 1. stampede -------------------------------------------------------------------------------


def _stampede_process(library: str, port: int, key: str, ready: Any, waits: Any) -> None:
    setup_django(port)
    getter = make_getter(library, port, key, 3600, slow_body(port, key, STAMPEDE_BODY))
    together = threading.Barrier(STAMPEDE_THREADS)
    mine: list[float] = []

    def call() -> None:
        together.wait()
        started = time.perf_counter()
        assert getter() == PAYLOAD
        mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=call) for _ in range(STAMPEDE_THREADS)]
    ready.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    waits.put(mine)


def stampede(library: str, port: int) -> tuple[int, float]:
    key = f"stampede:{library}:{time.time_ns()}"
    context = multiprocessing.get_context("spawn")
    ready, waits = context.Barrier(STAMPEDE_PROCESSES), context.Queue()
    processes = [
        context.Process(target=_stampede_process, args=(library, port, key, ready, waits))
        for _ in range(STAMPEDE_PROCESSES)
    ]
    for process in processes:
        process.start()
    slowest = max(wait for _ in processes for wait in waits.get(timeout=120))
    for process in processes:
        process.join(60)
    return int(counter(port).get(key) or 0), slowest


# --- 2. hot key --------------------------------------------------------------------------------


def hot_key(library: str, port: int, seconds: float) -> tuple[int, int, int]:
    key = f"hot:{library}:{time.time_ns()}"
    getter = make_getter(library, port, key, HOT_TTL, slow_body(port, key, HOT_BODY))
    getter()  # warm: the cold miss is workload 1's business
    runs_before = int(counter(port).get(key) or 0)
    deadline = time.monotonic() + seconds
    blocked = [0] * HOT_THREADS
    reads = [0] * HOT_THREADS

    def read(index: int) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            getter()
            reads[index] += 1
            if time.perf_counter() - started >= HOT_BODY / 2:
                blocked[index] += 1

    threads = [threading.Thread(target=read, args=(i,)) for i in range(HOT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(HOT_BODY * 2)  # let a background refresh that started at the end count
    return int(counter(port).get(key) or 0) - runs_before, sum(blocked), sum(reads)


# --- 3. hits -----------------------------------------------------------------------------------


@dataclass
class Hits:
    rounds: list[list[float]] = field(default_factory=list)
    commands_per_hit: float = 0.0

    @property
    def samples(self) -> list[float]:
        return [sample for samples in self.rounds for sample in samples]

    def quantile(self, q: float) -> float:
        return quantile(self.samples, q)

    def ratio(self, baseline: Hits, q: float) -> tuple[float, float, float]:
        """Median, min and max over rounds of this round's quantile / the baseline's: the
        libraries of a round run seconds apart, so load that comes and goes cancels out."""
        ratios = [
            quantile(mine, q) / quantile(theirs, q)
            for mine, theirs in zip(self.rounds, baseline.rounds, strict=True)
        ]
        return statistics.median(ratios), min(ratios), max(ratios)


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def commands(admin: redis.Redis) -> int:
    stats: dict[str, dict[str, int]] = admin.info("commandstats")
    return sum(
        value["calls"]
        for name, value in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))
    )


def hits(libraries: list[str], port: int, total: int, rounds: int = 20) -> dict[str, Hits]:
    from django.core.cache import cache

    never = slow_body(port, "hits:never", 0)
    getters = {}
    for library in libraries:
        key = f"hits:{library.replace(' ', '_')}"
        getters[library] = make_getter(library, port, key, 3600, never)
        if library == "raw get":
            cache.set(key, PAYLOAD, 3600)
        assert getters[library]() == PAYLOAD  # the miss that stores it
    counter(port).delete("hits:never")
    admin = redis.Redis(port=port)
    results = {library: Hits() for library in libraries}
    for library, getter in getters.items():
        for _ in range(200):  # warm connections and code paths
            getter()
        admin.config_resetstat()
        for _ in range(1000):
            getter()
        results[library].commands_per_hit = commands(admin) / 1000
    per_round = total // rounds
    perf_counter = time.perf_counter
    for _ in range(rounds):
        for library, getter in getters.items():
            samples: list[float] = []
            results[library].rounds.append(samples)
            for _ in range(per_round):
                started = perf_counter()
                getter()
                samples.append(perf_counter() - started)
    assert int(counter(port).get("hits:never") or 0) == 0, "a hit workload recomputed"
    return results


# --- the run -----------------------------------------------------------------------------------


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def start_redis() -> tuple[int, subprocess.Popen[bytes]]:
    port = spare_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    return port, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hot-seconds", type=float, default=6.0)
    parser.add_argument("--hits", type=int, default=20_000)
    arguments = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server on PATH")
    port, server = start_redis()
    try:
        setup_django(port)
        from django.core.management import call_command

        call_command("migrate", verbosity=0, run_syncdb=True)
        rows = {}
        for library in LIBRARIES:
            print(f"{library}: stampede...", flush=True)
            recomputes, slowest = stampede(library, port)
            print(f"{library}: hot key...", flush=True)
            hot_runs, blocked, reads = hot_key(library, port, arguments.hot_seconds)
            rows[library] = (recomputes, slowest, hot_runs, blocked, reads)
            print(f"  {rows[library]}", flush=True)
        print("hits...", flush=True)
        latency = hits(["raw get", *LIBRARIES], port, arguments.hits)
    finally:
        server.terminate()
        server.wait(10)

    raw = latency["raw get"]
    raw_p50, raw_p99 = raw.quantile(0.5), raw.quantile(0.99)
    print()
    print(
        f"hit latency baseline, raw django-redis cache.get: median {raw_p50 * 1e6:.1f} us, "
        f"p99 {raw_p99 * 1e6:.1f} us, {raw.commands_per_hit:.2f} commands"
    )
    print()
    header = (
        "| library | stampede recomputes | slowest stampede caller (ms) | hot-key recomputes "
        "| hot-key blocked reads (of all) | Redis commands per hit | hit p50 (us) | hit p99 (us) "
        "| p50 / raw get (min-max) | p99 / raw get (min-max) |"
    )
    print(header)
    print("|" + " --- |" * header.count(" | ") + " --- |")
    for library in LIBRARIES:
        recomputes, slowest, hot_runs, blocked, reads = rows[library]
        hit = latency[library]
        p50, p99 = hit.quantile(0.5), hit.quantile(0.99)
        r50, r99 = hit.ratio(raw, 0.5), hit.ratio(raw, 0.99)
        print(
            f"| {library} | {recomputes} | {slowest * 1000:.0f} | {hot_runs} | "
            f"{blocked} (of {reads}) | {hit.commands_per_hit:.2f} | {p50 * 1e6:.1f} | "
            f"{p99 * 1e6:.1f} | {r50[0]:.2f} ({r50[1]:.2f}-{r50[2]:.2f}) | "
            f"{r99[0]:.2f} ({r99[1]:.2f}-{r99[2]:.2f}) |"
        )
    print()
    print(
        f"stampede: {STAMPEDE_PROCESSES} processes x {STAMPEDE_THREADS} threads, "
        f"{STAMPEDE_BODY * 1000:.0f} ms body; hot key: {HOT_THREADS} threads, TTL {HOT_TTL:.0f} s, "
        f"{HOT_BODY * 1000:.0f} ms body, {arguments.hot_seconds:.0f} s; hits: "
        f"{arguments.hits} per library in 20 rounds; p50/p99 over all samples, ratios: median "
        "(and range) over rounds of the round's quantile over the raw get's in that round"
    )
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
