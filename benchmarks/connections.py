"""Benchmark: ``CONN_MAX_AGE = 0`` vs persistent connections vs Django's native psycopg pool.

The example project's ``GET /api/review/today/`` under gunicorn (gthread) on the throwaway
cluster of scripts/pg_small.sh, driven by keep-alive HTTP clients in threads. For each
strategy: requests per second, PostgreSQL connections opened per request (the delta of
``pg_stat_database.sessions`` over the server's whole life, which PostgreSQL counts at connect
time) and the peak of open connections next to the budget's prediction. Strategies alternate
within each round, so drift hits them alike; compare ratios, not absolute numbers.

    .venv/bin/python -m benchmarks.connections [--rounds 3] [--seconds 8] [--workers 2]
        [--threads 4] [--clients 16]

Not a test: nothing is asserted. On Django before 5.1 (no native pool) the pool is left out.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dj_database_url

from resee_perf._databases import native_pool_unavailable
from resee_perf.pool import connection_budget, recommended_database
from tests.test_pool_live import (
    APP_ROLE,
    APP_URL,
    LOAD_DB,
    ROOT,
    admin,
    client_backends,
    example_env,
    gunicorn,
    prepare_example_site,
    start_cluster,
    wait_until,
)

# Django's native pool needs Django 5.1+ (and psycopg_pool): without it, two strategies.
STRATEGIES = ("close", "persistent") + (("pool",) if native_pool_unavailable() is None else ())


@dataclass(frozen=True)
class Run:
    strategy: str
    requests_per_second: float
    connections_per_request: float
    peak: int
    errors: int


class Load:
    """Client threads, each on one keep-alive HTTP connection, counting responses."""

    def __init__(self, url: str, cookie: str, clients: int) -> None:
        self.ok = 0
        self.errors = 0
        self._counting = threading.Lock()
        self._stop = threading.Event()
        parts = urllib.parse.urlsplit(url)
        self._threads = [
            threading.Thread(target=self._run, args=(parts, cookie), daemon=True)
            for _ in range(clients)
        ]

    def _run(self, parts: urllib.parse.SplitResult, cookie: str) -> None:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        while not self._stop.is_set():
            try:
                connection.request("GET", parts.path, headers={"Cookie": cookie})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                ok = False
            with self._counting:
                if ok:
                    self.ok += 1
                else:
                    self.errors += 1
        connection.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def counts(self) -> tuple[int, int]:
        with self._counting:
            return self.ok, self.errors


def sessions(watcher: Any) -> int:
    watcher.execute("SELECT pg_stat_clear_snapshot()")
    row = watcher.execute(
        "SELECT sessions FROM pg_stat_database WHERE datname = %s", (LOAD_DB,)
    ).fetchone()
    return int(row[0])


def measure(
    strategy: str, args: argparse.Namespace, cookie: str, watcher: Any, log_dir: Path
) -> Run:
    env = example_env("connections_settings", str(ROOT / "benchmarks"))
    env.update(RESEE_BENCH_CONNECTIONS=strategy, RESEE_BENCH_THREADS=str(args.threads))
    before = sessions(watcher)
    peak = 0
    with (
        gunicorn(args.workers, args.threads, log_dir, saturate=False, env=env) as url,
        Load(url, cookie, args.clients) as load,
    ):
        time.sleep(1.0)  # warm-up: imports, first connections, pools opening
        start_ok, start_errors = load.counts()
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            peak = max(peak, client_backends(watcher, role=APP_ROLE, dbname=LOAD_DB))
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        end_ok, end_errors = load.counts()
    # Stopping gunicorn closes every connection; count the sessions of its whole life.
    wait_until(lambda: client_backends(watcher, role=APP_ROLE) == 0, what="connections to close")
    total_ok, total_errors = load.counts()
    return Run(
        strategy=strategy,
        requests_per_second=(end_ok - start_ok) / elapsed,
        connections_per_request=(sessions(watcher) - before) / max(1, total_ok + total_errors),
        peak=peak,
        errors=end_errors - start_errors,
    )


def predicted_peak(strategy: str, workers: int, threads: int) -> int:
    database = recommended_database(
        dict(dj_database_url.parse(APP_URL)),
        threads_per_worker=threads,
        pool=strategy == "pool",
        conn_max_age=0 if strategy == "close" else 600,
    )
    budget = connection_budget(
        web_workers=workers, threads_per_worker=threads, headroom=0, databases={"default": database}
    )
    return budget.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    start_cluster()
    cookie = prepare_example_site()
    runs: list[Run] = []
    with admin(LOAD_DB) as watcher, tempfile.TemporaryDirectory() as log_dir:
        for round_number in range(1, args.rounds + 1):
            for strategy in STRATEGIES:
                run = measure(strategy, args, cookie, watcher, Path(log_dir))
                runs.append(run)
                print(
                    f"round {round_number} {strategy:>10}: {run.requests_per_second:7.1f} req/s, "
                    f"{run.connections_per_request:.3f} connections/request, peak {run.peak}, "
                    f"errors {run.errors}",
                    flush=True,
                )

    print()
    print(
        "| strategy | requests/s (median) | vs CONN_MAX_AGE=0 (median of per-round ratios, range) "
        "| connections opened per request | peak open connections | budget predicts | errors |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for strategy in STRATEGIES:
        mine = [run for run in runs if run.strategy == strategy]
        # Each round measures the strategies back to back: compare within a round.
        ratios = [
            run.requests_per_second / close.requests_per_second
            for run, close in zip(mine, (r for r in runs if r.strategy == "close"), strict=True)
        ]
        print(
            f"| {strategy} | {statistics.median(run.requests_per_second for run in mine):.0f} "
            f"| {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) "
            f"| {statistics.median(run.connections_per_request for run in mine):.3f} "
            f"| {max(run.peak for run in mine)} "
            f"| {predicted_peak(strategy, args.workers, args.threads)} "
            f"| {sum(run.errors for run in mine)} |"
        )


if __name__ == "__main__":
    main()
