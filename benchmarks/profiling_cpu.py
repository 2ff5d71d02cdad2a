"""Benchmark: the profiler's CPU cost per request, in one process, without a server.

The same example project, database and user as benchmarks/profiling.py, requests made with
Django's test client (with a session cookie) through two handlers built from the same settings,
one with QueryProfileMiddleware first in MIDDLEWARE and one without, alternating request by
request. Each request's CPU time of the thread (``time.thread_time_ns``) is recorded: waiting
for PostgreSQL or Redis is not CPU, so what other processes on the machine do weighs much less
than on requests per second. The 10th percentile is the steadiest figure.

    .venv/bin/python -m benchmarks.profiling_cpu [--requests 1500]
        [--redis redis://127.0.0.1:6379/10]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks.profiling import DB, ROOT, env, prepare

ENDPOINTS = (
    ("cached `GET /api/review/today/` (hit)", "/api/review/today/", 1),
    ("`GET /api/review/today/naive/` (51 queries, 2 N+1s logged)", "/api/review/today/naive/", 10),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = parser.parse_args()
    cookie = prepare(args.redis)
    os.environ.update(env(args.redis, profile=True, cache=True))
    sys.path.insert(0, str(ROOT / "example_project"))
    import django

    django.setup()
    import logging

    from django.conf import settings
    from django.test import Client
    from django.test.utils import override_settings

    # The N+1 records go nowhere: what is measured is making them, not a terminal's speed.
    logging.getLogger("resee_perf.profiling").handlers = [logging.NullHandler()]
    without = [name for name in settings.MIDDLEWARE if "QueryProfile" not in name]
    with_profiler = ["resee_perf.middleware.QueryProfileMiddleware", *without]
    session = cookie.split("=", 1)[1]

    def client(middleware: list[str], path: str) -> Client:
        with override_settings(MIDDLEWARE=middleware):
            made = Client(HTTP_HOST="127.0.0.1")
            made.cookies["sessionid"] = session
            for _ in range(20):  # builds the handler, warms the cache and the connection
                assert made.get(path).status_code == 200
        return made

    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print(
        "| endpoint | CPU ms/request off (p10, median) | on (p10, median) "
        "| added (p10) | on/off (p10) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, path, divisor in ENDPOINTS:
        clients = {False: client(without, path), True: client(with_profiler, path)}
        samples: dict[bool, list[int]] = {False: [], True: []}
        for index in range(args.requests // divisor):
            for profiled in (False, True) if index % 2 else (True, False):
                started = time.thread_time_ns()
                clients[profiled].get(path)
                samples[profiled].append(time.thread_time_ns() - started)
        p10 = {key: statistics.quantiles(values, n=10)[0] / 1e6 for key, values in samples.items()}
        median = {key: statistics.median(values) / 1e6 for key, values in samples.items()}
        print(
            f"| {name} | {p10[False]:.3f}, {median[False]:.3f} | {p10[True]:.3f}, "
            f"{median[True]:.3f} | {(p10[True] - p10[False]) * 1000:.0f} µs "
            f"| {p10[True] / p10[False]:.3f} |"
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
