"""Benchmark: StickyReplicaRouter with two real streaming replicas: the share of reads each
replica serves, and stale reads, with both replicas current, one lagging 2 s, and both
lagging 2 s.

The workload of benchmarks/router_replicas.py (client threads, each a user with its own
cookies; `GET /api/review/today/`, one request in ten `POST /api/review/complete/<id>/` of a
review it has just seen; 50-350 ms of think time). Modes:

- `lsn`: the router and middleware as shipped, equal weights;
- `lsn 3:1`: the same with ``REPLICA_WEIGHTS = {replica_p1: 3, replica_p2: 1}``;
- `naive`: each read on a replica drawn at random, no stickiness, for reference.

Reads per alias come from resee_perf_db_routes_total; a stale read is a GET that still lists
a review the same client completed earlier.

Needs nothing running: it builds (or repairs) the two private replicas on 5450 and 5451 with
scripts/replica.sh and a throwaway database `resee_bench_several_replicas`.

    .venv/bin/python -m benchmarks.router_several_replicas [--clients 12] [--requests 60]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "example_project"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.router_several_settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from benchmarks.router_replicas import client_loop, routes, seed  # noqa: E402
from benchmarks.router_several_settings import BENCH_DATABASE, REPLICAS  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from resee_perf import _replicas  # noqa: E402
from resee_perf.metrics import report_route  # noqa: E402
from review.models import ReviewSchedule  # noqa: E402


class NaiveRouter:
    """Each read on a replica drawn at random; counted like the others."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        alias = random.choice(REPLICAS)
        report_route(alias, "naive")
        return alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        report_route("default", "write")
        return "default"


MODES: dict[str, dict[str, Any]] = {
    "lsn": {},
    "lsn 3:1": {
        "RESEE_PERF": {**settings.RESEE_PERF, "REPLICA_WEIGHTS": {REPLICAS[0]: 3, REPLICAS[1]: 1}}
    },
    "naive": {
        "DATABASE_ROUTERS": ["benchmarks.router_several_replicas.NaiveRouter"],
        "MIDDLEWARE": [m for m in settings.MIDDLEWARE if "StickyReads" not in m],
    },
}
LAGS = {"0 s / 0 s": (0.0, 0.0), "0 s / 2 s": (0.0, 2.0), "2 s / 2 s": (2.0, 2.0)}


def replica_script(alias: str, *args: str) -> None:
    port = str(connections.settings[alias]["PORT"])
    env = {**os.environ, "RESEE_REPLICA_PORT": port}
    subprocess.run(["bash", str(ROOT / "scripts" / "replica.sh"), *args], check=True, env=env)


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


def lsn(alias: str, sql: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        return _replicas.parse_lsn(cursor.fetchone()[0])


def wait_caught_up() -> None:
    target = lsn("default", "SELECT pg_current_wal_insert_lsn()::text")
    for alias in REPLICAS:
        while True:
            try:
                if lsn(alias, "SELECT pg_last_wal_replay_lsn()::text") >= target:
                    break
            except Exception:
                connections[alias].close()  # the database may not exist there yet
            time.sleep(0.02)


def run(mode: str, lags: tuple[float, float], users: list[User], requests: int) -> dict[str, Any]:
    ReviewSchedule.objects.update(next_review_date=timezone.localdate(), interval_index=0)
    wait_caught_up()
    for alias, lag in zip(REPLICAS, lags, strict=True):
        replica_script(alias, "lag", str(lag))
    _replicas.forget()
    before = routes()
    outs: list[Counter[str]] = [Counter() for _ in users]
    with override_settings(**MODES[mode]):
        threads = [
            threading.Thread(target=client_loop, args=(user, requests, i, outs[i]))
            for i, user in enumerate(users)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    totals: Counter[str] = Counter()
    for out in outs:
        totals.update(out)
    after = routes()
    by_alias: Counter[str] = Counter()
    for (alias, reason), value in after.items():
        if reason != "write":
            by_alias[alias] += value - before[(alias, reason)]
    for alias in REPLICAS:
        replica_script(alias, "lag", "0")
    return {"by_alias": by_alias, **totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()

    for alias in REPLICAS:
        replica_script(alias, "ensure")
    create_database()
    users = seed(args.clients)
    wait_caught_up()
    print(
        f"| lag {REPLICAS[0]} / {REPLICAS[1]} | mode | GETs (writes) | DB reads "
        f"| on {REPLICAS[0]} | on {REPLICAS[1]} | on the primary | stale reads |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, lags in LAGS.items():
        for mode in MODES:
            result = run(mode, lags, users, args.requests)
            by_alias = result["by_alias"]
            total = sum(by_alias.values()) or 1
            shares = " | ".join(
                f"{by_alias[alias] / total:.0%}" for alias in (*REPLICAS, "default")
            )
            print(
                f"| {label} | {mode} | {result.get('reads', 0)} ({result.get('writes', 0)}) "
                f"| {sum(by_alias.values())} | {shares} | {result.get('violations', 0)} |",
                flush=True,
            )
    connections.close_all()


if __name__ == "__main__":
    main()
