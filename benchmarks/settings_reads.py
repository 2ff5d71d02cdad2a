"""What a settings read costs on the hot path (docs/benchmarks.md): ``metrics.report_cache``
(every cache_aside call), ``metrics.report_route`` (every routed query), the router's settings
view and a plain ``conf`` property. No Redis, no database: settings and Prometheus only.

Each figure is the best of ``--rounds`` medians of ``timeit`` batches, in nanoseconds per call,
which the load of a shared machine disturbs least.

    .venv/bin/python benchmarks/settings_reads.py [--number 20000] [--rounds 15]

Run against another checkout's code (the "before") with ``PYTHONPATH=<checkout>/src``.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable


def setup_django() -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["resee_perf"],
        DATABASES={},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        RESEE_PERF={"REPLICAS": [], "METRICS_ENABLED": True},
    )
    django.setup()


def cases() -> dict[str, Callable[[], object]]:
    from resee_perf import _replicas, metrics
    from resee_perf.conf import conf

    return {
        "metrics.report_cache": lambda: metrics.report_cache("bench", "hit"),
        "metrics.report_route": lambda: metrics.report_route("default", "primary"),
        "_replicas.routing_settings": _replicas.routing_settings,
        "conf.KEY_PREFIX": lambda: conf.KEY_PREFIX,
        "baseline (empty lambda)": lambda: None,
    }


def metrics_off_cases() -> dict[str, Callable[[], object]]:
    """With METRICS_ENABLED off a report is the settings read alone."""
    from resee_perf import metrics

    return {
        "report_cache, METRICS_ENABLED off": lambda: metrics.report_cache("bench", "hit"),
        "report_route, METRICS_ENABLED off": lambda: metrics.report_route("default", "primary"),
    }


def measure(name: str, call: Callable[[], object], number: int, rounds: int) -> None:
    call()  # build whatever is built lazily
    medians = []
    for _ in range(rounds):
        batches = timeit.repeat(call, number=number, repeat=5)
        medians.append(statistics.median(batches) / number * 1e9)
    print(f"{name:36} {min(medians):8.0f} ns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    arguments = parser.parse_args()
    setup_django()
    from django.test import override_settings

    import resee_perf

    print(f"resee_perf from {resee_perf.__file__}")
    for name, call in cases().items():
        measure(name, call, arguments.number, arguments.rounds)
    with override_settings(RESEE_PERF={"METRICS_ENABLED": False}):
        for name, call in metrics_off_cases().items():
            measure(name, call, arguments.number, arguments.rounds)


if __name__ == "__main__":
    main()
