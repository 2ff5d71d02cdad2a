"""Benchmark: the per-request cost of MetricsMiddleware in microseconds, in one process, with
prometheus-client in multiprocess mode (as under gunicorn), on a view that does nothing, so
that the difference between "on" and "off" is the middleware's own work: the route, a counter
and a histogram (an mmap'd file write each), the execute_wrapper install and removal on every
database alias. Blocks of requests alternate on/off; compare the medians.

    .venv/bin/python -m benchmarks.metrics_middleware [--blocks 10] [--requests 2000]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Before prometheus-client is imported: its values then live in this directory's files.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="resee-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
# tests.settings is the example project's apps on the test services (5 database aliases).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "example_project"))

import django
from django.http import HttpRequest, HttpResponse
from django.urls import path

django.setup()

from django.test import Client, override_settings  # noqa: E402


def ok(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(b"ok")


urlpatterns = [path("things/<int:pk>/", ok)]


def block(client: Client, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        client.get("/things/1/")
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"off": [], "on": []}
    with override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["resee_perf.middleware.MetricsMiddleware"],
        ALLOWED_HOSTS=["testserver"],
    ):
        client = Client()
        block(client, 200)  # warm-up
        for _ in range(args.blocks):
            for mode in ("off", "on"):
                with override_settings(RESEE_PERF={"METRICS_ENABLED": mode == "on"}):
                    results[mode].append(block(client, args.requests))
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    deltas = [b - a for a, b in zip(results["off"], results["on"], strict=True)]
    print(f"off: {off:.1f} us/request (median of {args.blocks} blocks)")
    print(f"on:  {on:.1f} us/request")
    print(
        f"metrics cost: {statistics.median(deltas):.1f} us/request "
        f"(median of per-block differences, range {min(deltas):.1f}-{max(deltas):.1f})"
    )


if __name__ == "__main__":
    main()
