"""Benchmark: what QueryProfileMiddleware costs, profiler on vs off, under gunicorn.

The example project (gunicorn gthread, 2 workers x 4 threads, persistent connections:
benchmarks/profiling_settings.py) on a throwaway database of the local PostgreSQL, Redis db
``--redis`` (flushed), driven by keep-alive HTTP clients in threads, as a logged-in non-staff
user (no Server-Timing, as for most traffic) with 24 reviews due. Three endpoints:

- cached: ``GET /api/review/today/``, a cache hit (session and user queries, one Redis read);
- uncached: the same with ``RESEE_CACHE_ENABLED=0`` (three queries);
- 50 queries: ``GET /api/review/today/naive/`` (1 + 2 x 24 lazy loads, plus session and user:
  51 queries), whose two N+1s the profiler logs on every request.

Four servers run side by side (profiler off/on x cache on/off), each measured alone; within
each round every endpoint is measured off then on (the order alternates by round), so drift
hits both alike. Compare the per-round ratios, not absolute numbers. Besides requests per
second (which other work on a shared machine swings by 2x), the workers' CPU time per
request (user + system, from /proc): the profiler's cost is CPU, and that figure hardly
depends on what else the machine runs.

    .venv/bin/python -m benchmarks.profiling [--rounds 5] [--seconds 6] [--clients 8]
        [--redis redis://127.0.0.1:6379/10]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# RESEE_BENCH_DB: another name, for two people benchmarking on one PostgreSQL.
DB = os.environ.get("RESEE_BENCH_DB", "bench_profiling")
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DUE = 24

_SEED = f"""
import datetime
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone
from content.models import Category, Content
from review.models import ReviewSchedule

user = User.objects.create_user("bench")
category = Category.objects.create(name="Bench", slug="bench")
yesterday = timezone.localdate() - datetime.timedelta(days=1)
for index in range({DUE}):
    content = Content.objects.create(author=user, category=category, title=f"t{{index}}",
                                     body="b" * 400)
    ReviewSchedule.objects.create(user=user, content=content, next_review_date=yesterday)
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
# The backend a login records: the first (resee.auth.CachedUserBackend, no query per request).
session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""


def env(redis_url: str, *, profile: bool, cache: bool) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "benchmarks.profiling_settings",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": "benchmark-only-not-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "RESEE_PROFILE": "1" if profile else "0",
        "RESEE_CACHE_ENABLED": "1" if cache else "0",
        "RESEE_DEMO_NAIVE": "1",
    }


def prepare(redis_url: str) -> str:
    """A fresh database, migrated and seeded; returns the Cookie header of the session."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    redis.Redis.from_url(redis_url).flushdb()
    manage = [sys.executable, "manage.py"]
    settings = env(redis_url, profile=False, cache=True)
    cwd = ROOT / "example_project"
    subprocess.run([*manage, "migrate", "-v0"], cwd=cwd, env=settings, check=True)
    seeded = subprocess.run(
        [*manage, "shell", "-c", _SEED],
        cwd=cwd,
        env=settings,
        check=True,
        capture_output=True,
        text=True,
    )
    return f"sessionid={seeded.stdout.strip().splitlines()[-1]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gunicorn(settings: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    with log.open("w") as output:  # gunicorn's log and the profiler's records (stderr)
        process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "resee.wsgi:application",
                *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread"),
                *("--threads", "4", "--timeout", "60"),
            ],
            cwd=ROOT / "example_project",
            env=settings,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/categories/", timeout=2)
            except urllib.error.HTTPError:
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


class Load:
    """Client threads, each on one keep-alive HTTP connection, counting responses."""

    def __init__(self, url: str, cookie: str, clients: int) -> None:
        self.ok = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, cookie), daemon=True)
            for _ in range(clients)
        ]

    def _run(self, url: str, cookie: str) -> None:
        host, port, path = _split(url)
        connection = http.client.HTTPConnection(host, port, timeout=30)
        while not self._stop.is_set():
            try:
                connection.request("GET", path, headers={"Cookie": cookie})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                ok = False
            with self._lock:
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
        with self._lock:
            return self.ok, self.errors


def _split(url: str) -> tuple[str, int, str]:
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port), "/" + path


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(master: int) -> float:
    """User + system CPU time of the gunicorn workers (the master's children) so far."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def measure(
    url: str, master: int, cookie: str, clients: int, seconds: float
) -> tuple[float, float, int]:
    """Requests per second, server CPU milliseconds per request, errors."""
    with Load(url, cookie, clients) as load:
        time.sleep(1.0)  # warm-up: connections, caches, the first requests of each thread
        ok_before, errors_before = load.counts()
        cpu_before = cpu_seconds(master)
        started = time.monotonic()
        time.sleep(seconds)
        ok_after, errors_after = load.counts()
        cpu_after = cpu_seconds(master)
        elapsed = time.monotonic() - started
    served = max(ok_after - ok_before, 1)
    return served / elapsed, (cpu_after - cpu_before) * 1000 / served, errors_after - errors_before


ENDPOINTS = (
    ("cached `GET /api/review/today/` (hit)", "/api/review/today/", True),
    ("uncached `GET /api/review/today/` (`RESEE_CACHE_ENABLED=0`)", "/api/review/today/", False),
    (
        "`GET /api/review/today/naive/` (51 queries, 2 N+1s logged)",
        "/api/review/today/naive/",
        True,
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = parser.parse_args()
    cookie = prepare(args.redis)
    rps: dict[tuple[str, bool], list[float]] = {}
    cpu: dict[tuple[str, bool], list[float]] = {}
    ratios: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    errors = 0
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        servers = {
            (profile, cache): stack.enter_context(
                gunicorn(
                    env(args.redis, profile=profile, cache=cache),
                    Path(logs) / f"profile{int(profile)}-cache{int(cache)}.log",
                )
            )
            for profile in (False, True)
            for cache in (True, False)
        }
        print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
        for round_ in range(args.rounds):
            for name, path, cache in ENDPOINTS:
                order = (False, True) if round_ % 2 == 0 else (True, False)
                measured: dict[bool, float] = {}
                per_request: dict[bool, float] = {}
                for profile in order:
                    base, master = servers[(profile, cache)]
                    value, cpu_ms, failed = measure(
                        base + path, master, cookie, args.clients, args.seconds
                    )
                    errors += failed
                    measured[profile] = value
                    per_request[profile] = cpu_ms
                    rps.setdefault((name, profile), []).append(value)
                    cpu.setdefault((name, profile), []).append(cpu_ms)
                ratios.setdefault(name, []).append(measured[True] / measured[False])
                cpu_ratios.setdefault(name, []).append(per_request[True] / per_request[False])
                print(
                    f"round {round_ + 1} {name}: off {measured[False]:.0f}/s "
                    f"{per_request[False]:.2f} ms CPU, on {measured[True]:.0f}/s "
                    f"{per_request[True]:.2f} ms CPU",
                    flush=True,
                )
        print(f"load average at end: {os.getloadavg()[0]:.1f}; errors: {errors}\n")
    print(
        "| endpoint | requests/s off | requests/s on | on/off (median, range) "
        "| CPU ms/request off | CPU ms/request on | CPU on/off (median, range) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _, _ in ENDPOINTS:
        per_round = ratios[name]
        per_round_cpu = cpu_ratios[name]
        print(
            f"| {name} | {statistics.median(rps[(name, False)]):.0f} "
            f"| {statistics.median(rps[(name, True)]):.0f} "
            f"| {statistics.median(per_round):.3f} "
            f"({min(per_round):.3f}-{max(per_round):.3f}) "
            f"| {statistics.median(cpu[(name, False)]):.2f} "
            f"| {statistics.median(cpu[(name, True)]):.2f} "
            f"| {statistics.median(per_round_cpu):.3f} "
            f"({min(per_round_cpu):.3f}-{max(per_round_cpu):.3f}) |"
        )
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
