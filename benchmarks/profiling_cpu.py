"""Benchmark: the CPU one middleware costs a request of the example project, in one process.

The example project, database and user of benchmarks/profiling.py, requests made with Django's
test client (with a session cookie) through two handlers built from the same settings: one with
the middleware under test and one without. ``--middleware profiling`` compares
QueryProfileMiddleware (first in MIDDLEWARE) with no profiler; ``--middleware metrics``
compares MetricsMiddleware (first, prometheus-client in multiprocess mode, as under gunicorn)
with no metrics middleware, the profiler off in both.

What is measured is the CPU time of the requesting thread (``time.thread_time_ns``): waiting for
PostgreSQL or Redis is not CPU, and other processes on a loaded machine take turns on the cores
without adding to it, so the figure hardly depends on the machine's load (requests/s on a
shared 2-core machine swings by 2x between rounds). Rounds interleave the two handlers: each
round runs a block of ``--block`` requests without the middleware and one with it, in an order
that alternates by round, and records each block's CPU per request; the result is the median
over rounds of each side and of the per-round ratio (drift, a garbage collection or a busy
neighbour hits both blocks of a round alike). A garbage collection runs before every block.

    .venv/bin/python -m benchmarks.profiling_cpu --middleware profiling [--rounds 30]
        [--block 200] [--redis redis://127.0.0.1:6379/10]

Flushes the Redis database ``--redis``. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks.profiling import DB, ROOT, env, prepare

# (name, path, divisor of --block, cache_aside on)
ENDPOINTS = (
    ("cached `GET /api/review/today/` (hit)", "/api/review/today/", 1, True),
    ("uncached `GET /api/review/today/`", "/api/review/today/", 1, False),
    ("`GET /api/review/today/naive/` (2 N+1s logged)", "/api/review/today/naive/", 10, True),
)
MIDDLEWARE = {
    "profiling": "resee_perf.middleware.QueryProfileMiddleware",
    "metrics": "resee_perf.middleware.MetricsMiddleware",
}


def block_cpu(get: Callable[[], object], requests: int) -> float:
    """CPU µs per request of this thread over ``requests`` calls of ``get``."""
    gc.collect()
    started = time.thread_time_ns()
    for _ in range(requests):
        get()
    return (time.thread_time_ns() - started) / requests / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--middleware", choices=sorted(MIDDLEWARE), default="profiling")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=200, help="requests per block")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = parser.parse_args()
    cookie = prepare(args.redis)
    os.environ.update(env(args.redis, profile=True, cache=True))
    if args.middleware == "metrics":
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    sys.path.insert(0, str(ROOT / "example_project"))
    import django

    django.setup()
    import logging

    from django.conf import settings
    from django.test import Client
    from django.test.utils import override_settings

    from resee_perf.profiling import profile_queries

    # The N+1 records go nowhere: what is measured is making them, not a terminal's speed.
    logging.getLogger("resee_perf.profiling").handlers = [logging.NullHandler()]
    measured = MIDDLEWARE[args.middleware]
    # The example's stack less the middleware measured; measuring the metrics, less the
    # profiler too (its cost would be in both handlers, diluting the ratio).
    drop = set(MIDDLEWARE.values()) if args.middleware == "metrics" else {measured}
    base = [m for m in settings.MIDDLEWARE if m not in drop]
    with_it = [measured, *base]
    session = cookie.split("=", 1)[1]

    def client(middleware: list[str], path: str) -> Client:
        with override_settings(MIDDLEWARE=middleware):
            made = Client(HTTP_HOST="127.0.0.1")
            made.cookies["sessionid"] = session
            for _ in range(20):  # builds the handler, warms the cache and the connection
                assert made.get(path).status_code == 200
        return made

    print(f"middleware: {measured}; load average at start: {os.getloadavg()[0]:.1f}")
    print(
        "| endpoint | CPU µs/request without (median of rounds) | with | added "
        "| with/without (median of per-round ratios, IQR) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, path, divisor, cache in ENDPOINTS:
        switch = override_settings(RESEE_PERF={**settings.RESEE_PERF, "CACHE_ENABLED": cache})
        with switch:
            clients = {False: client(base, path), True: client(with_it, path)}
            with profile_queries() as counted:
                clients[False].get(path)
            block = max(args.block // divisor, 5)
            per_round: dict[bool, list[float]] = {False: [], True: []}
            for index in range(args.rounds):
                for profiled in (False, True) if index % 2 else (True, False):
                    get = functools.partial(clients[profiled].get, path)
                    per_round[profiled].append(block_cpu(get, block))
        ratios = [on / off for on, off in zip(per_round[True], per_round[False], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4)
        off, on = statistics.median(per_round[False]), statistics.median(per_round[True])
        print(
            f"| {name}, {counted.queries} queries | {off:.0f} | {on:.0f} | {on - off:.0f} µs "
            f"| {statistics.median(ratios):.3f} ({quartiles[0]:.3f} to {quartiles[2]:.3f}) |"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    import psycopg
    from benchmarks.profiling import ADMIN_URL
    from django.db import connections

    connections.close_all()
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
