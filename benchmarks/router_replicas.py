"""Benchmark: how many reads StickyReplicaRouter lets the replica serve, and what a routing
decision costs.

1. Share of reads on the replica, on the example project's workload: client threads, each a
   user with its own cookies, each request `GET /api/review/today/` or, one time in ten,
   `POST /api/review/complete/<id>/` of a review it has just seen, with 50-350 ms of think
   time between requests. Three ways of keeping a client on the primary after its write:
   - `lsn`: StickyReadsMiddleware as shipped (the WAL position of the write in the cookie);
   - `time 15 s`: the same middleware without the position, so the client reads from the
     primary for STICKY_SECONDS = 15 s after each write (django-multidb-router's rule);
   - `naive`: no stickiness at all (every read on the replica), for reference.
   Each at 0 s and 2 s of injected replica lag (recovery_min_apply_delay). Counted: database
   reads per alias (from resee_perf_db_routes_total), and read-your-writes violations (a
   client's list still holding a review it completed).
2. Routing overhead: `router.db_for_read` with and without StickyReplicaRouter, and a small
   ORM query for scale.

Needs the replica of scripts/replica.sh; uses a throwaway database `resee_bench_router`.

    .venv/bin/python -m benchmarks.router_replicas [--clients 12] [--requests 60]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextvars
import fcntl
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "example_project"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.router_settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from benchmarks.router_settings import BENCH_DATABASE  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections, router  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from content.models import Category, Content  # noqa: E402
from resee_perf import _replicas  # noqa: E402
from resee_perf.metrics import report_route  # noqa: E402
from resee_perf.middleware import StickyReadsMiddleware  # noqa: E402
from resee_perf.routers import routing_scope  # noqa: E402
from review.models import ReviewSchedule  # noqa: E402

LOCK = Path("/tmp/resee-perf-replica-5433.lock")
SCHEDULES_PER_USER = 40
WRITE_SHARE = 0.1
THINK = (0.05, 0.35)


class NaiveRouter:
    """Every read on the replica (what the Resee service ran), counted like the others."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        report_route("replica", "naive")
        return "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        report_route("default", "write")
        return "default"


class TimeWindowMiddleware(StickyReadsMiddleware):
    """The time-window rule: the write's position is never known."""

    def write_position(self) -> int | None:
        return None


MODES: dict[str, dict[str, Any]] = {
    "lsn": {},
    "time 15 s": {
        "MIDDLEWARE": [
            "benchmarks.router_replicas.TimeWindowMiddleware",
            *[m for m in settings.MIDDLEWARE if "StickyReads" not in m],
        ]
    },
    "naive": {
        "DATABASE_ROUTERS": ["benchmarks.router_replicas.NaiveRouter"],
        "MIDDLEWARE": [m for m in settings.MIDDLEWARE if "StickyReads" not in m],
    },
}


def replica_script(*args: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "replica.sh"), *args], check=True)


def create_database() -> None:
    settings_dict = connections["default"].settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        user=settings_dict["USER"],
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    call_command("migrate", verbosity=0)


def seed(users: int) -> list[User]:
    category = Category.objects.create(name="Bench", slug="bench")
    created = []
    for n in range(users):
        user = User.objects.create_user(username=f"bench{n:03d}", password="pw")
        contents = Content.objects.bulk_create(
            Content(title=f"C{i}", body="x" * 400, author=user, category=category)
            for i in range(SCHEDULES_PER_USER)
        )
        ReviewSchedule.objects.bulk_create(
            ReviewSchedule(user=user, content=c, next_review_date=timezone.localdate())
            for c in contents
        )
        created.append(user)
    return created


def lsn(alias: str, sql: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        return _replicas.parse_lsn(cursor.fetchone()[0])


def wait_caught_up() -> None:
    target = lsn("default", "SELECT pg_current_wal_insert_lsn()::text")
    while lsn("replica", "SELECT pg_last_wal_replay_lsn()::text") < target:
        time.sleep(0.02)


def routes() -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for metric in REGISTRY.collect():
        if metric.name == "resee_perf_db_routes":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["alias"], sample.labels["reason"])] += int(sample.value)
    return counts


def client_loop(user: User, requests: int, seed_value: int, out: dict[str, int]) -> None:
    rng = random.Random(seed_value)
    api = APIClient()
    api.force_authenticate(user=user)
    completed: set[int] = set()
    due: list[int] = []
    try:
        for _ in range(requests):
            time.sleep(rng.uniform(*THINK))
            candidates = [pk for pk in due if pk not in completed]
            # Each request in a context of its own, as on another worker thread.
            if candidates and rng.random() < WRITE_SHARE:
                pk = rng.choice(candidates)
                response = contextvars.Context().run(
                    api.post, f"/api/review/complete/{pk}/", {"result": "remembered"}
                )
                assert response.status_code == 200, response.content
                completed.add(pk)
                out["writes"] += 1
            else:
                response = contextvars.Context().run(api.get, "/api/review/today/")
                assert response.status_code == 200, response.content
                due = [item["id"] for item in response.json()["results"]]
                out["reads"] += 1
                if completed.intersection(due):
                    out["violations"] += 1
    finally:
        connections.close_all()


def run_mode(name: str, users: list[User], requests: int, lag: float) -> dict[str, Any]:
    ReviewSchedule.objects.update(next_review_date=timezone.localdate(), interval_index=0)
    wait_caught_up()
    replica_script("lag", str(lag))
    _replicas.forget()
    before = routes()
    totals: dict[str, int] = Counter()
    outs = [Counter() for _ in users]
    started = time.monotonic()
    with override_settings(**MODES[name]):
        threads = [
            threading.Thread(target=client_loop, args=(user, requests, i, outs[i]))
            for i, user in enumerate(users)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.monotonic() - started
    for out in outs:
        totals.update(out)
    after = routes()
    delta = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    reads = {k: v for k, v in delta.items() if k[1] != "write"}
    on_replica = sum(v for (alias, _), v in reads.items() if alias == "replica")
    all_reads = sum(reads.values())
    replica_script("lag", "0")
    return {
        "mode": name,
        "lag": lag,
        "requests": totals["reads"] + totals["writes"],
        "writes": totals["writes"],
        "db_reads": all_reads,
        "replica_share": on_replica / all_reads if all_reads else 0.0,
        "primary_by_reason": {r: v for (a, r), v in reads.items() if a == "default"},
        "violations": totals["violations"],
        "get_requests": totals["reads"],
        "seconds": seconds,
    }


def overhead(iterations: int) -> dict[str, float]:
    """Nanoseconds per router.db_for_read, warm: the replica's status is fresh and the scope
    has chosen its replica, as for every read after the first of a request."""

    def per_call(routers: list[str], metrics: bool) -> float:
        settings = {"REPLICAS": ["replica"], "METRICS_ENABLED": metrics}
        with override_settings(DATABASE_ROUTERS=routers, RESEE_PERF=settings), routing_scope():
            router.db_for_read(Category)
            samples = []
            for _ in range(7):
                started = time.perf_counter_ns()
                for _ in range(iterations):
                    router.db_for_read(Category)
                samples.append((time.perf_counter_ns() - started) / iterations)
            return statistics.median(samples)

    def query() -> float:
        with routing_scope():
            Category.objects.filter(pk=1).exists()
            started = time.perf_counter_ns()
            for _ in range(2000):
                Category.objects.filter(pk=1).exists()
            return (time.perf_counter_ns() - started) / 2000

    sticky = ["resee_perf.routers.StickyReplicaRouter"]
    return {
        "no router": per_call([], metrics=False),
        "StickyReplicaRouter, metrics off": per_call(sticky, metrics=False),
        "StickyReplicaRouter, metrics on": per_call(sticky, metrics=True),
        "ORM exists() on the replica": query(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()

    replica_script("ensure")
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the tests' lock: no test run lags the replica meanwhile
        create_database()
        users = seed(args.clients)
        wait_caught_up()
        results = [
            run_mode(mode, users, args.requests, lag) for lag in (0.0, 2.0) for mode in MODES
        ]
        costs = overhead(args.iterations)
        connections.close_all()

    print(
        "| lag | mode | requests (writes) | DB reads | on the replica | primary reads by reason "
        "| read-your-writes violations (of GETs) | seconds |"
    )
    print("| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in results:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["primary_by_reason"].items()))
        print(
            f"| {r['lag']:.0f} s | {r['mode']} | {r['requests']} ({r['writes']}) | {r['db_reads']} "
            f"| {r['replica_share']:.0%} | {reasons or '-'} | {r['violations']} "
            f"({r['get_requests']}) | {r['seconds']:.1f} |"
        )
    print()
    print("| router.db_for_read | ns per call (median of 7 runs) |")
    print("| --- | ---: |")
    for name, ns in costs.items():
        print(f"| {name} | {ns:,.0f} |")


if __name__ == "__main__":
    main()
