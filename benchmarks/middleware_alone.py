"""Benchmark: one middleware's own CPU per request, around a view that runs no query.

``--middleware profiling``: what QueryProfileMiddleware adds to a request that makes no query
(the example's cached endpoint, whose session and user come from the cache): open a profile,
make it current, the two ``cache_aside`` round trips it is told of (``add_cache_time``), close
it, decide on ``Server-Timing`` (off for a non-staff user, the default).
``--middleware metrics``: what MetricsMiddleware adds, prometheus-client in multiprocess mode
(as under gunicorn: each sample an mmap'd file write): the query tally put on and taken off
every database alias of ``tests.settings`` (five), the route, a counter and a histogram.

One process, ``tests.settings``, a request from ``RequestFactory``; blocks of ``--requests``
calls alternate between the bare view and the view behind the middleware, timed with
``time.thread_time_ns``; the figure is the median over blocks. A few µs are too small to
resolve inside a whole request on a shared machine, so they are measured alone.

    .venv/bin/python -m benchmarks.middleware_alone [--middleware profiling] [--blocks 30]
        [--requests 20000]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--middleware", choices=("profiling", "metrics"), default="profiling")
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    requests: int = args.requests
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if args.middleware == "metrics":  # before prometheus-client is imported
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    import django

    django.setup()
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    from resee_perf._query_profile import add_cache_time
    from resee_perf.middleware import MetricsMiddleware, QueryProfileMiddleware

    response = HttpResponse(b"{}")

    def view(request: HttpRequest) -> HttpResponse:
        add_cache_time(0.0001)  # the session's user (resee/auth.py)
        add_cache_time(0.0001)  # today's reviews
        return response

    middleware = QueryProfileMiddleware if args.middleware == "profiling" else MetricsMiddleware
    profiled: Callable[[HttpRequest], Any] = middleware(view)
    request = RequestFactory().get("/api/review/today/")

    def block(handler: Callable[[HttpRequest], Any]) -> float:
        started = time.thread_time_ns()
        for _ in range(requests):
            handler(request)
        return (time.thread_time_ns() - started) / requests / 1000

    block(view), block(profiled)  # warm-up
    times: dict[str, list[float]] = {"bare": [], "profiled": []}
    for index in range(args.blocks):
        order = ("bare", "profiled") if index % 2 else ("profiled", "bare")
        for name in order:
            times[name].append(block(view if name == "bare" else profiled))
    added = [on - off for on, off in zip(times["profiled"], times["bare"], strict=True)]
    print(f"load average: {os.getloadavg()[0]:.1f}")
    print("| | µs per request (median of blocks) |")
    print("| --- | ---: |")
    print(f"| the view alone | {statistics.median(times['bare']):.2f} |")
    print(f"| behind {middleware.__name__} | {statistics.median(times['profiled']):.2f} |")
    print(
        f"| added (median of per-block differences, range) | {statistics.median(added):.2f} "
        f"({min(added):.2f} to {max(added):.2f}) |"
    )


if __name__ == "__main__":
    main()
