"""The per-query cost of the replica query deadline (resee_perf._query_deadline).

    python benchmarks/replica_query_deadline.py [--queries 20000] [--rounds 5]

Two figures, with REPLICA_QUERY_TIMEOUT None (the wrapper returns at once) and 5 s (a deadline
registered and removed around each query):

- ``SELECT 1`` through Django's cursor on a connection to the replica of scripts/replica.sh
  (port 5433, database ``postgres``), one connection, rounds of each setting interleaved so
  that the shared machine's noise falls on both alike;
- the wrapper alone around a no-op ``execute``: what it adds, without the network's noise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings

REPLICA = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": "127.0.0.1",
    "PORT": 5433,
    "USER": "postgres",
    "NAME": "postgres",
    "OPTIONS": {"connect_timeout": 2},
    "CONN_MAX_AGE": 600,
}


def setup() -> None:
    settings.configure(
        INSTALLED_APPS=["resee_perf"],
        DATABASES={"default": {**REPLICA, "PORT": 5432}, "replica": REPLICA},
        RESEE_PERF={"REPLICAS": ["replica"], "METRICS_ENABLED": False},
        USE_TZ=True,
    )
    django.setup()


def per_query_us(run: Callable[[], None], count: int) -> float:
    began = time.perf_counter()
    for _ in range(count):
        run()
    return (time.perf_counter() - began) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup()
    from django.db import connections
    from django.test import override_settings

    from resee_perf._query_deadline import QueryDeadline

    connection = connections["replica"]
    with connection.cursor() as cursor:

        def select_one() -> None:
            cursor.execute("SELECT 1")
            cursor.fetchone()

        deadline = QueryDeadline("replica")

        def wrapper_alone() -> None:
            deadline(_noop, "SELECT 1", None, False, {"connection": connection})

        wrappers = sum(isinstance(w, QueryDeadline) for w in connection.execute_wrappers)
        assert wrappers == 1, "the deadline is not installed on the replica connection"
        results: dict[tuple[str, str], list[float]] = {}
        settings_pair = [("off (None)", None), ("on (5 s)", 5.0)]
        for round_number in range(args.rounds):
            # Alternated, so that neither setting always runs second.
            order = settings_pair if round_number % 2 == 0 else settings_pair[::-1]
            for label, timeout in order:
                resee_perf = {"REPLICAS": ["replica"], "REPLICA_QUERY_TIMEOUT": timeout}
                with override_settings(RESEE_PERF={**resee_perf, "METRICS_ENABLED": False}):
                    results.setdefault((label, "select"), []).append(
                        per_query_us(select_one, args.queries)
                    )
                    results.setdefault((label, "wrapper"), []).append(
                        per_query_us(wrapper_alone, args.queries * 10)
                    )
    print(f"{args.rounds} rounds; median (min-max) microseconds per call")
    for (label, kind), values in results.items():
        print(
            f"{label:11} {kind:8} {statistics.median(values):8.2f} "
            f"({min(values):.2f}-{max(values):.2f})"
        )


def _noop(sql: Any, params: Any, many: bool, context: Any) -> None:
    return None


if __name__ == "__main__":
    main()
