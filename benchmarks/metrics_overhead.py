"""Benchmark: what MetricsMiddleware and the library metrics cost, requests/s with metrics on
vs off on one build.

The example project's ``GET /api/review/today/`` (a cache_aside hit on Redis after the first
call, session auth) under gunicorn gthread with persistent connections, on the throwaway
cluster of scripts/pg_small.sh, driven by keep-alive HTTP clients. "on": metrics recorded
(``RESEE_METRICS_ENABLED=1``) in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, as in production under gunicorn: every increment writes an
mmap'd file); "off": ``RESEE_METRICS_ENABLED=0`` (the middleware stays installed and returns at
once). Modes alternate within each round, so drift hits both alike: compare ratios.

    .venv/bin/python -m benchmarks.metrics_overhead [--rounds 5] [--seconds 6]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.connections import Load

from tests.test_pool_live import ROOT, example_env, gunicorn, prepare_example_site, start_cluster

MODES = ("off", "on")


def measure(mode: str, args: argparse.Namespace, cookie: str, work: Path) -> tuple[float, int]:
    env = example_env("connections_settings", str(ROOT / "benchmarks"))
    env.update(
        RESEE_BENCH_CONNECTIONS="persistent",
        RESEE_BENCH_THREADS=str(args.threads),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/8"),
        RESEE_METRICS_ENABLED="1" if mode == "on" else "0",
    )
    if mode == "on":
        multiproc = Path(tempfile.mkdtemp(dir=work))
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    with (
        gunicorn(args.workers, args.threads, work, saturate=False, env=env) as url,
        Load(url, cookie, args.clients) as load,
    ):
        time.sleep(1.0)  # warm-up: imports, connections, the first (missing) cache entry
        start_ok, start_errors = load.counts()
        started = time.perf_counter()
        time.sleep(args.seconds)
        elapsed = time.perf_counter() - started
        end_ok, end_errors = load.counts()
    return (end_ok - start_ok) / elapsed, end_errors - start_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    start_cluster()
    cookie = prepare_example_site()
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    errors = 0
    with tempfile.TemporaryDirectory() as work:
        for round_number in range(1, args.rounds + 1):
            for mode in MODES:
                rate, failed = measure(mode, args, cookie, Path(work))
                results[mode].append(rate)
                errors += failed
                print(f"round {round_number} metrics {mode:>3}: {rate:7.1f} req/s", flush=True)
    ratios = [on / off for on, off in zip(results["on"], results["off"], strict=True)]
    print()
    print("| metrics | requests/s (median) | on / off (median of per-round ratios, range) |")
    print("| --- | ---: | ---: |")
    print(f"| off | {statistics.median(results['off']):.0f} | 1.00x |")
    print(
        f"| on | {statistics.median(results['on']):.0f} | {statistics.median(ratios):.3f}x "
        f"({min(ratios):.3f}-{max(ratios):.3f}) |"
    )
    print(f"\nerrors: {errors}")


if __name__ == "__main__":
    main()
