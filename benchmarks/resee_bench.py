"""The bench of issue 14: Resee's promised before/after table next to a measured one.

Drives the example project (example_project/) the way its users would, with caching off and on
side by side, and prints the plan's promised figures next to what was measured::

    ./scripts/bench.sh [--duration 20] [--rounds 3] [--rate 40] [--json] [--markdown]

1. Data: reuses the demo data set on the configured database when it is there, else seeds it
   (``seed_demo``; full size, 1,000 users, 100k contents, 1M reviews, on PostgreSQL; small on
   SQLite). Creates a session per demo user.
2. Servers: two gunicorns of the same build, one with ``RESEE_CACHE_ENABLED=0`` ("off"), one
   with caching on, each 2 workers x 4 threads (1 x 4 on the embedded default: the local-memory
   cache is per process). The "on" server starts cold (a fresh ``KEY_PREFIX``: nothing flushed).
3. Load: open-loop, paced at ``--rate`` requests/s from client processes apart from the servers,
   in rounds that alternate off and on (``off, on, on, off, ...``), so drift and other work on the
   machine hit both alike. Latency counts from the scheduled start (a late request counts its
   wait). Users are drawn Zipf-skewed; each session is ``--reads`` reads of today's reviews, the
   statistics and the first content page, of which ``--writes`` (5%) are writes instead: a review
   completed or a content created, each followed by the writer's read of what it changed, which
   must show it (else it counts as stale). 5% of requests go to the floor endpoints
   (``/api/me/`` authenticated, ``/api/ping/`` anonymous).
4. Counted: per endpoint p50/p95/p99 and requests/s (client side); DB queries per minute per
   server (Django's execute wrappers, benchmarks/bench_gunicorn.py); the cache hit rate and the
   replica share of reads from the library's own counters (prometheus multiprocess directories
   read with ``MultiProcessCollector``).

Services: ``DATABASE_URL``, ``REDIS_URL`` and optionally ``REPLICA_DATABASE_URL`` (the replica
of that primary). Without them: SQLite and the local-memory cache, whose figures are not
comparable to a PostgreSQL + Redis deployment. Not a test: nothing is asserted, except that the
command exits 1 when a read was stale.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import math
import multiprocessing
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_project"
CSRF_TOKEN = "benchcsrftoken0123456789abcdefgh"  # 32 characters: Django takes it unmasked
TODAY, STATS, CONTENT = "/api/review/today/", "/api/analytics/stats/", "/api/content/?page=1"
ME, PING = "/api/me/", "/api/ping/"
READS = (TODAY, STATS, CONTENT)
VIEWS = {
    TODAY: "review.views.TodayView.due_on",
    STATS: "analytics.views.StatsView.for_day",
    CONTENT: "content.views.ContentViewSet.list",
}
PROMISED = {
    TODAY: ("200 ms", "10 ms (TTL 1 h)"),
    STATS: ("500 ms", "20 ms (TTL 5 min)"),
    CONTENT: ("150 ms", "15 ms (TTL 10 min)"),
}
TTL = {TODAY: 3600.0, STATS: 300.0, CONTENT: 600.0}  # the views' cache_aside TTLs
CLIENT_TIMEOUT = 30.0

_SETUP = """
import json
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.core.management import call_command
from importlib import import_module
from content.models import Content

sizes = %(sizes)s
demo = User.objects.filter(username__startswith="user")
if %(reseed)s or not demo.exists():
    call_command("seed_demo", flush=True, **sizes)
store = import_module(settings.SESSION_ENGINE).SessionStore
users = []
for user in demo.order_by("username"):
    # A session instead of a password: hashing one (PBKDF2) per request would be the load.
    session = store()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "resee.auth.CachedUserBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    category = Content.objects.filter(author=user).values_list("category_id", flat=True).first()
    users.append([user.pk, session.session_key, category])
print("USERS " + json.dumps({"users": users, "contents": Content.objects.count(),
      "vendor": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]}))
"""


# --- configuration -----------------------------------------------------------------------------


@dataclass
class Config:
    duration: float
    rounds: int
    rate: float
    reads: int
    writes: float
    clients: int
    workers: int
    threads: int
    sparse: float
    active: int
    env: dict[str, str]
    embedded: bool
    sizes: dict[str, int]
    reseed: bool
    quiet: bool
    port: int = 0
    shared_users: bool = False


def parse(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per server (off and on).")
    parser.add_argument("--rate", type=float, default=40.0, help="Offered requests/s.")
    parser.add_argument("--reads", type=int, default=8, help="Requests per user session.")
    parser.add_argument("--writes", type=float, default=0.05, help="Share of writes.")
    parser.add_argument("--clients", type=int, default=2, help="Client processes.")
    parser.add_argument(
        "--active",
        type=int,
        default=100,
        help="Users active in the rounds (Zipf-skewed among them; default 100: at 40 req/s "
        "for 3 x 30 s, even the least active makes about 7 reads); the sparse phase uses all.",
    )
    parser.add_argument(
        "--sparse",
        type=float,
        default=0.0,
        help="Seconds of sparse traffic (2 reads per "
        "session, uniform users) on the cached server at the end, for its hit rate.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="The off server's port (the on server's is the next one); default: free ports.",
    )
    parser.add_argument(
        "--shared-users",
        action="store_true",
        help="Both servers serve the same users (before 2026-12-04: then the off server's writes "
        "invalidate the on server's entries between its rounds, twice the workload's writes).",
    )
    parser.add_argument("--users", type=int, help="Demo users (seed size).")
    parser.add_argument("--contents", type=int, help="Contents (seed size).")
    parser.add_argument("--history", type=int, help="Reviews in the history (seed size).")
    parser.add_argument("--reseed", action="store_true", help="Seed again even if data exists.")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    parser.add_argument("--markdown", action="store_true", help="Print a Markdown table.")
    parser.add_argument("--quiet", action="store_true", help="No progress display.")
    args = parser.parse_args(argv)
    database = os.environ.get("DATABASE_URL", "")
    redis = os.environ.get("REDIS_URL", "")
    embedded = not (database and redis)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="resee.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or "bench-" + secrets.token_hex(16),
        ALLOWED_HOSTS="127.0.0.1",
    )
    if not database:
        env["DATABASE_URL"] = f"sqlite:///{EXAMPLE / 'bench.sqlite3'}"
    full = not embedded and "postgres" in database
    sizes = {
        "users": args.users or (1000 if full else 100),
        "contents": args.contents or (100_000 if full else 5_000),
        "history": args.history or (1_000_000 if full else 50_000),
    }
    workers = 1 if embedded else 2
    config = Config(
        duration=args.duration,
        rounds=args.rounds,
        rate=args.rate,
        reads=args.reads,
        writes=args.writes,
        clients=args.clients,
        workers=workers,
        threads=4,
        sparse=args.sparse,
        active=args.active,
        env=env,
        embedded=embedded,
        sizes=sizes,
        reseed=args.reseed,
        quiet=args.quiet,
        port=args.port,
        shared_users=args.shared_users,
    )
    return config, args


def progress(config: Config, text: str) -> None:
    if not config.quiet:
        print(text, file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------------


def manage(config: Config, *args: str, timeout: float = 1800) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=config.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare(config: Config) -> dict[str, Any]:
    """Migrate, seed unless the demo data is there, and log every demo user in."""
    manage(config, "migrate", "--noinput")
    script = _SETUP % {"sizes": repr(config.sizes), "reseed": config.reseed}
    output = manage(config, "shell", "-c", script)
    [line] = [line for line in output.splitlines() if line.startswith("USERS ")]
    data: dict[str, Any] = json.loads(line.removeprefix("USERS "))
    return data


# --- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    metrics: Path
    process: subprocess.Popen[bytes]


class ConnectionWatch(threading.Thread):
    """Samples each PostgreSQL server's connections once a second while the bench runs: the
    fewest left free under ``max_connections`` (the bench connects as whoever the URL names;
    a superuser may take the reserved slots too), the most in use, and the most of the bench's
    own database. Both servers of the bench hold persistent connections (up to 2 servers x
    workers x threads per alias), and other work on a shared server needs its share: a
    request that needs a new connection when none is left gets a 500. Also when a server
    went away or restarted during the run (``pg_postmaster_start_time()``): on a shared
    machine other tests stop and start the shared replica, and a query in flight on it then
    fails (a 500 of the uncached server, in the round that was running)."""

    QUERY = (
        "SELECT pg_postmaster_start_time()::text, "
        "current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int, "
        "count(*) FILTER (WHERE backend_type = 'client backend'), "
        "count(*) FILTER (WHERE backend_type = 'client backend' "
        "AND datname = current_database()) FROM pg_stat_activity"
    )

    def __init__(self, urls: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.stop = threading.Event()
        self.figures: dict[str, dict[str, Any]] = {}

    def run(self) -> None:
        import psycopg

        connections: dict[str, psycopg.Connection[Any]] = {}
        while not self.stop.is_set():
            for name, url in self.urls.items():
                try:
                    if name not in connections:
                        connections[name] = psycopg.connect(url, autocommit=True, connect_timeout=2)
                    row = connections[name].execute(self.QUERY).fetchone()
                except psycopg.Error as error:
                    broken = connections.pop(name, None)
                    if broken is not None:
                        broken.close()
                    outages = self.figures.setdefault(name, {}).setdefault("unreachable", [])
                    outages.append(f"{time.strftime('%H:%M:%S')} {str(error).strip()[:120]}")
                    continue
                assert row is not None
                started, limit, reserved, total, ours = row
                figures = self.figures.setdefault(name, {})
                figures.setdefault("max_connections", limit)
                figures.setdefault("reserved", reserved)
                figures.setdefault("fewest_free", limit)
                starts = figures.setdefault("started", [])
                if started not in starts:
                    starts.append(started)  # more than one: it restarted during the run
                figures["fewest_free"] = min(figures["fewest_free"], limit - total)
                figures["most_in_use"] = max(figures.get("most_in_use", 0), total)
                figures["most_of_the_bench_database"] = max(
                    figures.get("most_of_the_bench_database", 0), ours
                )
            self.stop.wait(1.0)
        for connection in connections.values():
            connection.close()


@contextmanager
def watch_connections(config: Config) -> Iterator[ConnectionWatch]:
    urls = {
        name: config.env[key]
        for name, key in (("primary", "DATABASE_URL"), ("replica", "REPLICA_DATABASE_URL"))
        if config.env.get(key, "").startswith(("postgres://", "postgresql://"))
    }
    watch = ConnectionWatch(urls)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        watch.join(timeout=10)


@contextmanager
def servers(config: Config, workdir: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    prefix = "bench" + secrets.token_hex(4)  # a cold cache without flushing anything
    try:
        for offset, (name, enabled) in enumerate((("off", "0"), ("on", "1"))):
            metrics = workdir / f"metrics-{name}"
            metrics.mkdir()
            port = config.port + offset if config.port else free_port()
            env = {
                **config.env,
                "RESEE_CACHE_ENABLED": enabled,
                "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                "WEB_THREADS": str(config.threads),
                "RESEE_PERF_JSON": json.dumps({"KEY_PREFIX": prefix}),
            }
            log = (workdir / f"gunicorn-{name}.log").open("ab")
            process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "gunicorn"),
                    "resee.wsgi:application",
                    *("-c", str(ROOT / "benchmarks" / "bench_gunicorn.py")),
                    *("--bind", f"127.0.0.1:{port}", "--workers", str(config.workers)),
                    *("--worker-class", "gthread", "--threads", str(config.threads)),
                    *("--timeout", "60", "--graceful-timeout", "5"),
                ],
                cwd=EXAMPLE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            started[name] = Server(name, port, metrics, process)
        for server in started.values():
            wait_ready(server)
            warm(server)
        yield started
    finally:
        for server in started.values():
            server.process.terminate()
        for server in started.values():
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"the {server.name} server exited; see its gunicorn log")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("GET", PING)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the {server.name} server did not answer within 120 s")


def warm(server: Server) -> None:
    """Warm the processes, not the cache: every thread's first request (imports, a database
    connection) is not what the bench measures. Only the uncached floor endpoint."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(4 * 8):
            pool.submit(lambda: _get(server.port, PING))


def _get(port: int, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
    finally:
        connection.close()


# --- counters ----------------------------------------------------------------------------------


def counters(server: Server) -> dict[str, float]:
    """The server's totals so far, from its workers' prometheus multiprocess files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(server.metrics))  # type: ignore[no-untyped-call]
    totals: dict[str, float] = defaultdict(float)
    for metric in registry.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name == "bench_db_queries_total":
                totals["queries"] += sample.value
            elif sample.name == "resee_perf_cache_requests_total":
                totals[f"cache:{labels['name']}:{labels['result']}"] += sample.value
            elif sample.name == "resee_perf_db_routes_total":
                totals[f"route:{labels['alias']}"] += sample.value
    return dict(totals)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


# --- load --------------------------------------------------------------------------------------


@dataclass
class Sample:
    path: str
    seconds: float
    status: int
    user: int = 0  # 0: anonymous, or a floor request (not part of a user's session)
    at: float = 0.0  # when it was sent (time.monotonic(), one clock for every process)
    kind: str = ""  # a write: "complete" or "create"
    cache: str = ""  # what cache_aside did for the view (X-Bench-Cache): "hit", "miss"...


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    errors: int = 0
    server_errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    writes: int = 0


class Connection(threading.local):
    connection: http.client.HTTPConnection | None = None


@dataclass
class Session:
    user_id: int
    session_key: str
    category: int | None
    left: int
    busy: bool = False
    due: list[int] = field(default_factory=list)


class Driver:
    """One client process: open-loop arrivals at ``rate``, each the next request of a user
    session (or a floor request), run on a thread pool; latency from the scheduled start."""

    def __init__(
        self,
        port: int,
        users: list[list[Any]],
        rate: float,
        reads: int,
        writes: float,
        seed: int,
        zipf: bool,
    ) -> None:
        self.port = port
        self.users = users
        self.rate = rate
        self.reads = reads
        self.writes = writes
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.local = Connection()
        self.outcome = Outcome()
        self.sessions: list[Session] = []
        self.jars: dict[int, dict[str, str]] = {}  # user id -> cookies, across sessions
        self.active: set[int] = set()
        # Zipf over the users (s = 1): user i drawn with weight 1/(i+1), in a shuffled order.
        weights = [1.0 / (i + 1) if zipf else 1.0 for i in range(len(users))]
        self.cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]
        self.order = list(range(len(users)))
        self.random.shuffle(self.order)

    def request(
        self, method: str, path: str, cookie: dict[str, str], body: Any = None
    ) -> tuple[int, Any, str]:
        """Like a browser: sends the user's cookies and keeps what the server sets (the
        router's read-your-writes cookie among them)."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookie.items()), "Host": "127.0.0.1"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers.update({"Content-Type": "application/json", "X-CSRFToken": CSRF_TOKEN})
        for attempt in (1, 2):
            connection = self.local.connection
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, CLIENT_TIMEOUT)
                self.local.connection = connection
            try:
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self.local.connection = None
                if attempt == 2 or method != "GET":
                    return 0, None, ""
                continue
            for header in response.headers.get_all("Set-Cookie") or []:
                jar: SimpleCookie = SimpleCookie()
                jar.load(header)
                for name, morsel in jar.items():
                    if morsel["max-age"] == "0" or not morsel.value:
                        cookie.pop(name, None)
                    else:
                        cookie[name] = morsel.value
            data = json.loads(raw) if raw.startswith((b"{", b"[")) else None
            return response.status, data, response.headers.get("X-Bench-Cache", "")
        return 0, None, ""

    def timed(
        self,
        scheduled: float,
        method: str,
        path: str,
        cookie: dict[str, str],
        body: Any = None,
        *,
        user: int = 0,
        kind: str = "",
    ) -> tuple[int, Any]:
        sent = time.monotonic()
        status, data, cache = self.request(method, path, cookie, body)
        elapsed = time.monotonic() - scheduled
        label = path if method == "GET" else f"{method} write"
        view = VIEWS.get(path, "")
        results = (r.split("=", 1)[1] for r in cache.split(",") if r.startswith(view + "="))
        result = next(results, "")
        with self.lock:
            self.outcome.samples.append(
                Sample(label, elapsed, status, user, sent, kind, result if view else "")
            )
            if status == 0 or status >= 400:
                self.outcome.errors += 1
                self.outcome.server_errors += status >= 500
                if len(self.outcome.error_examples) < 5:
                    self.outcome.error_examples.append(f"{method} {path} -> {status}")
        return status, data

    def new_session(self) -> Session | None:
        for _ in range(20):
            draw = self.random.random() * self.cumulative[-1]
            index = self.order[bisect.bisect_left(self.cumulative, draw)]
            user_id, session_key, category = self.users[index]
            if user_id not in self.active:
                self.active.add(user_id)
                return Session(user_id, session_key, category, self.reads)
        return None

    def pick(self) -> Session | None:
        free = [session for session in self.sessions if not session.busy]
        # Keep a handful of sessions going: a user's requests come one after another.
        if len(free) < 3 or self.random.random() < 1.0 / self.reads:
            session = self.new_session()
            if session is not None:
                self.sessions.append(session)
                return session
        return self.random.choice(free) if free else None

    def step(self, session: Session, scheduled: float) -> None:
        cookie = self.jars.setdefault(
            session.user_id, {"sessionid": session.session_key, "csrftoken": CSRF_TOKEN}
        )
        try:
            if self.random.random() < self.writes:
                self.write(session, scheduled, cookie)
            else:
                path = self.random.choice(READS)
                status, data = self.timed(scheduled, "GET", path, cookie, user=session.user_id)
                if path == TODAY and status == 200:
                    session.due = [row["id"] for row in data["results"]]
        finally:
            with self.lock:
                session.left -= 1
                session.busy = False
                if session.left <= 0:
                    self.sessions.remove(session)
                    self.active.discard(session.user_id)

    def write(self, session: Session, scheduled: float, cookie: dict[str, str]) -> None:
        """A write, then the writer's next read of what it changed: must show it."""
        with self.lock:
            self.outcome.writes += 1
        if session.due and self.random.random() < 0.5:
            schedule = session.due.pop()
            status, _ = self.timed(
                scheduled,
                "POST",
                f"/api/review/complete/{schedule}/",
                cookie,
                {"result": "remembered"},
                user=session.user_id,
                kind="complete",
            )
            if status != 200:
                return
            status, data = self.timed(time.monotonic(), "GET", TODAY, cookie, user=session.user_id)
            if status == 200 and schedule in {row["id"] for row in data["results"]}:
                with self.lock:
                    self.outcome.stale.append(f"user {session.user_id}: completed {schedule}")
            return
        body = {"title": f"bench {secrets.token_hex(4)}", "body": "b", "category": session.category}
        status, created = self.timed(
            scheduled, "POST", "/api/content/", cookie, body, user=session.user_id, kind="create"
        )
        if status != 201:
            return
        status, data = self.timed(time.monotonic(), "GET", CONTENT, cookie, user=session.user_id)
        if status == 200 and created["id"] not in {row["id"] for row in data["results"]}:
            with self.lock:
                self.outcome.stale.append(f"user {session.user_id}: created {created['id']}")

    def floor(self, scheduled: float) -> None:
        if self.random.random() < 0.5:
            self.timed(scheduled, "GET", PING, {})
        else:
            _, session_key, _ = self.users[self.random.randrange(len(self.users))]
            self.timed(scheduled, "GET", ME, {"sessionid": session_key})

    def run(self, duration: float) -> Outcome:
        started = time.monotonic()
        at = started
        with ThreadPoolExecutor(max_workers=48) as pool:
            while True:
                at += self.random.expovariate(self.rate)
                if at - started >= duration:
                    break
                time.sleep(max(0.0, at - time.monotonic()))
                if self.random.random() < 0.05:
                    pool.submit(self.floor, at)
                    continue
                with self.lock:
                    session = self.pick()
                    if session is not None:
                        session.busy = True
                if session is not None:
                    pool.submit(self.step, session, at)
        return self.outcome


def drive_process(args: tuple[Any, ...]) -> Outcome:
    port, users, rate, reads, writes, seed, zipf, duration = args
    return Driver(port, users, rate, reads, writes, seed, zipf).run(duration)


def drive(
    config: Config,
    server: Server,
    users: list[list[Any]],
    seed: int,
    duration: float,
    *,
    reads: int,
    zipf: bool,
) -> Outcome:
    """``config.clients`` processes, each with its own users (a user's requests stay in order)."""
    shares = [users[i :: config.clients] for i in range(config.clients)]
    jobs = [
        (
            server.port,
            share,
            config.rate / config.clients,
            reads,
            config.writes,
            seed * 100 + i,
            zipf,
            duration,
        )
        for i, share in enumerate(shares)
    ]
    with multiprocessing.get_context("fork").Pool(config.clients) as pool:
        outcomes = pool.map(drive_process, jobs)
    total = Outcome()
    for outcome in outcomes:
        total.samples += outcome.samples
        total.stale += outcome.stale
        total.errors += outcome.errors
        total.server_errors += outcome.server_errors
        total.error_examples += outcome.error_examples
        total.writes += outcome.writes
    return total


# --- figures -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(samples: list[Sample], seconds: float) -> dict[str, dict[str, float]]:
    by_path: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        if 0 < sample.status < 400:
            by_path[sample.path].append(sample.seconds * 1000)
    return {
        path: {
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99),
            "mean": statistics.fmean(values),
            "rps": len(values) / seconds,
            "n": len(values),
        }
        for path, values in by_path.items()
    }


def hit_rate(counts: dict[str, float], names: list[str]) -> float | None:
    hits = sum(counts.get(f"cache:{name}:hit", 0.0) for name in names)
    misses = sum(counts.get(f"cache:{name}:miss", 0.0) for name in names)
    return hits / (hits + misses) if hits + misses else None


def hit_rates(counts: dict[str, float]) -> dict[str, float | None]:
    """Per endpoint, from the library's counters."""
    return {path: hit_rate(counts, [name]) for path, name in VIEWS.items()}


def miss_causes(
    samples: list[Sample],
    elsewhere: Sequence[Sample] = (),
) -> dict[str, dict[str, dict[str, int]]]:
    """Why reads missed: per endpoint, each read by what the cache did (the server's
    X-Bench-Cache header) and what came before it for the same user and endpoint on the same
    server: its first read there (a cold key), a write by the user since the previous read
    (by kind: which writes the view's tags make it miss; ``elsewhere``: the other server's
    writes, which reach the same users with ``--shared-users``), the TTL passed since the
    entry was filled, or nothing (a miss there is unexplained)."""
    causes: dict[str, dict[str, dict[str, int]]] = {
        path: defaultdict(lambda: defaultdict(int)) for path in READS
    }
    seen: set[tuple[int, str]] = set()
    filled: dict[tuple[int, str], float] = {}
    writes: dict[tuple[int, str], set[str]] = defaultdict(set)
    other = [s for s in elsewhere if s.kind]
    others = {id(s) for s in other}
    for sample in sorted([*samples, *other], key=lambda s: s.at):
        if sample.kind and sample.status in (200, 201):
            kind = sample.kind + (" (other server)" if id(sample) in others else "")
            for path in READS:
                writes[(sample.user, path)].add(kind)
            continue
        if sample.path not in READS or sample.status != 200 or not sample.user:
            continue
        key = (sample.user, sample.path)
        if key not in seen:
            cause = "first read (cold key)"
        elif writes[key]:
            cause = "after a write: " + " + ".join(sorted(writes[key]))
        elif sample.at - filled.get(key, sample.at) > TTL[sample.path]:
            cause = "TTL passed"
        else:
            cause = "no write since the last read"
        causes[sample.path][cause][sample.cache or "?"] += 1
        seen.add(key)
        writes.pop(key, None)
        if sample.cache != "hit":
            filled[key] = sample.at
    return {path: {cause: dict(r) for cause, r in by.items()} for path, by in causes.items()}


def results(
    config: Config,
    runs: dict[str, list[tuple[Outcome, dict[str, float]]]],
    sparse: dict[str, float] | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    seconds = config.duration * config.rounds
    out: dict[str, Any] = {
        "workload": {
            "rate": config.rate,
            "duration_per_round": config.duration,
            "rounds": config.rounds,
            "reads_per_session": config.reads,
            "writes": config.writes,
            "users": len(data["users"]),
            "active_users": min(config.active, len(data["users"])),
            "contents": data["contents"],
            "database": data["vendor"],
            "cache": "local memory" if config.embedded else "redis",
            "servers": f"{config.workers} x {config.threads} gthread, each",
            "replica": bool(config.env.get("REPLICA_DATABASE_URL")),
            "load_average": os.getloadavg(),
        },
    }
    for name, rounds in runs.items():
        samples = [sample for outcome, _ in rounds for sample in outcome.samples]
        counts: dict[str, float] = defaultdict(float)
        for _, round_counts in rounds:
            for key, value in round_counts.items():
                counts[key] += value
        reads = [s.seconds * 1000 for s in samples if s.path in READS and 0 < s.status < 400]
        routes = {k: v for k, v in counts.items() if k.startswith("route:")}
        out[name] = {
            "endpoints": summarize(samples, seconds),
            "hit_rates": hit_rates(counts),
            "hit_rates_per_round": [hit_rates(c) for _, c in rounds],
            "cache_results": {
                path: {
                    k.rsplit(":", 1)[1]: v
                    for k, v in counts.items()
                    if k.startswith(f"cache:{view}:") and v
                }
                for path, view in VIEWS.items()
            },
            "miss_causes": miss_causes(
                samples,
                [
                    s
                    for other, rs in runs.items()
                    if other != name
                    for o, _ in rs
                    for s in o.samples
                ],
            ),
            "average_ms": statistics.fmean(reads) if reads else math.nan,
            "p99_reads_ms": percentile(reads, 0.99),
            "queries_per_minute": counts.get("queries", 0.0) / seconds * 60,
            "hit_rate": hit_rate(counts, list(VIEWS.values())),
            "user_lookup_hit_rate": hit_rate(counts, ["resee.auth.user_row"]),
            "hit_rate_first_round": hit_rate(rounds[0][1], list(VIEWS.values())),
            "hit_rate_after_first_round": hit_rate(
                {k: sum(c.get(k, 0.0) for _, c in rounds[1:]) for k in counts},
                list(VIEWS.values()),
            ),
            "replica_share": (
                sum(v for k, v in routes.items() if k != "route:default") / sum(routes.values())
                if routes and sum(routes.values())
                else None
            ),
            "stale": sum(len(outcome.stale) for outcome, _ in rounds),
            "stale_examples": [s for outcome, _ in rounds for s in outcome.stale][:5],
            "writes": sum(outcome.writes for outcome, _ in rounds),
            "errors": sum(outcome.errors for outcome, _ in rounds),
            "server_errors": sum(outcome.server_errors for outcome, _ in rounds),
            "error_examples": [e for outcome, _ in rounds for e in outcome.error_examples][:5],
        }
    if sparse is not None:
        out["sparse_hit_rate"] = hit_rate(sparse, list(VIEWS.values()))
    return out


def ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f} ms"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def table_rows(r: dict[str, Any]) -> list[list[str]]:
    off, on = r["off"], r["on"]
    rows = [
        [
            "endpoint",
            "promised before",
            "promised after",
            "off p50/p95/p99",
            "off req/s",
            "on p50/p95/p99",
            "on req/s",
        ]
    ]

    def cells(side: dict[str, Any], path: str) -> tuple[str, str]:
        e = side["endpoints"].get(path)
        if e is None:
            return "-", "-"
        return f"{e['p50']:.1f} / {e['p95']:.1f} / {e['p99']:.1f} ms", f"{e['rps']:.1f}"

    for path in READS:
        rows.append([f"GET {path}", *PROMISED[path], *cells(off, path), *cells(on, path)])
    for path, label in (
        (ME, "floor: GET /api/me/ (auth, no DB)"),
        (PING, "floor: GET /api/ping/ (anonymous)"),
        ("POST write", "writes (POST)"),
    ):
        rows.append([label, "", "", *cells(off, path), *cells(on, path)])
    rows.append(
        [
            "average API response (3 reads)",
            "250 ms",
            "50 ms",
            ms(off["average_ms"]),
            "",
            ms(on["average_ms"]),
            "",
        ]
    )
    rows.append(
        [
            "p99 of the 3 reads (cold start incl.)",
            "",
            "",
            ms(off["p99_reads_ms"]),
            "",
            ms(on["p99_reads_ms"]),
            "",
        ]
    )
    rows.append(
        [
            "DB queries per minute (same offered rate)",
            "1000",
            "200",
            f"{off['queries_per_minute']:.0f}",
            "",
            f"{on['queries_per_minute']:.0f}",
            "",
        ]
    )
    cut = (
        1 - on["queries_per_minute"] / off["queries_per_minute"]
        if off["queries_per_minute"]
        else math.nan
    )
    rows.append(["DB queries cut", "", "80%", "", "", f"{cut:.0%}", ""])
    rows.append(
        [
            "cache hit rate (library counters)",
            "-",
            "85%+",
            "",
            "",
            f"{pct(on['hit_rate'])} (round 1 {pct(on['hit_rate_first_round'])}, "
            f"then {pct(on['hit_rate_after_first_round'])})",
            "",
        ]
    )
    rows.append(
        [
            "hit rate per endpoint (today / stats / content)",
            "",
            "",
            "",
            "",
            " / ".join(pct(on["hit_rates"][path]) for path in READS),
            "",
        ]
    )
    if r.get("sparse_hit_rate") is not None:
        rows.append(["hit rate, sparse traffic", "", "", "", "", pct(r["sparse_hit_rate"]), ""])
    rows.append(
        ["user lookups from the cache", "", "", "", "", pct(on["user_lookup_hit_rate"]), ""]
    )
    rows.append(
        [
            "replica share of reads",
            "",
            "",
            pct(off["replica_share"]),
            "",
            pct(on["replica_share"]),
            "",
        ]
    )
    floor = on["endpoints"].get(ME)
    if floor:
        ratios = []
        for path in READS:
            e = on["endpoints"].get(path)
            ratios.append(f"{e['p50'] / floor['p50']:.2f}x" if e else "-")
        rows.append(["cached p50 / auth floor p50", "", "", "", "", " ".join(ratios), ""])
    rows.append(
        [
            "stale reads after writes",
            "",
            "0",
            f"{off['stale']} of {off['writes']}",
            "",
            f"{on['stale']} of {on['writes']}",
            "",
        ]
    )
    for name, figures in r.get("connections", {}).items():
        if "most_in_use" in figures:
            text = (
                f"{figures['fewest_free']} of {figures['max_connections']} "
                f"(bench database: up to {figures['most_of_the_bench_database']})"
            )
            rows.append([f"connections left, {name} (fewest)", "", "", text, "", "", ""])
        if figures.get("unreachable") or len(figures.get("started", [])) > 1:
            outages = figures.get("unreachable", [])
            text = (
                f"unreachable {len(outages)} s from {outages[0][:8]}" if outages else "restarted"
            ) + f"; started at {', '.join(figures.get('started', []))}"
            rows.append([f"{name} went away during the run", "", "", text, "", "", ""])
    rows.append(
        [
            "errors: all (5xx)",
            "",
            "0",
            f"{off['errors']} ({off['server_errors']})",
            "",
            f"{on['errors']} ({on['server_errors']})",
            "",
        ]
    )
    return rows


def cause_rows(r: dict[str, Any]) -> list[list[str]]:
    """The cached server's reads by what came before them, and how many of them missed."""
    rows = [["endpoint", "what came before the read (same user)", "reads", "misses", "hit rate"]]
    for path in READS:
        for cause, results in sorted(r["on"]["miss_causes"][path].items()):
            reads = sum(results.values())
            hits = results.get("hit", 0)
            rows.append([f"GET {path}", cause, str(reads), str(reads - hits), pct(hits / reads)])
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    config, args = parse(argv)
    where = (
        "SQLite + local memory (embedded; not comparable)"
        if config.embedded
        else (
            "PostgreSQL + Redis" + (" + replica" if config.env.get("REPLICA_DATABASE_URL") else "")
        )
    )
    progress(config, f"bench: {where}; preparing data (reused when present)...")
    prepared = time.monotonic()
    data = prepare(config)
    progress(
        config,
        f"bench: {len(data['users'])} users, {data['contents']} contents "
        f"({time.monotonic() - prepared:.0f} s); starting servers...",
    )
    users = data["users"]
    # Each server its own users (the even and the odd ones): both servers write to the one
    # database, and the off server's writes would invalidate the on server's entries of the
    # same users between its rounds, doubling the write rate its cache sees.
    active = {
        name: users[: config.active]
        if config.shared_users
        else users[offset::2][: max(1, config.active)]
        for offset, name in enumerate(("on", "off"))
    }
    workdir = Path(tempfile.mkdtemp(prefix="resee-bench-"))
    runs: dict[str, list[tuple[Outcome, dict[str, float]]]] = {"off": [], "on": []}
    sparse: dict[str, float] | None = None
    try:
        with watch_connections(config) as watch, servers(config, workdir) as started:
            order = ["off", "on"]
            for round_number in range(config.rounds):
                for name in order:
                    server = started[name]
                    before = counters(server)
                    outcome = drive(
                        config,
                        server,
                        active[name],
                        round_number * 2 + len(runs[name]),
                        config.duration,
                        reads=config.reads,
                        zipf=True,
                    )
                    counts = delta(counters(server), before)
                    runs[name].append((outcome, counts))
                    reads = [s.seconds * 1000 for s in outcome.samples if s.path in READS]
                    progress(
                        config,
                        f"  round {round_number + 1}/{config.rounds} {name:>3}: "
                        f"{len(outcome.samples)} requests, p50 {percentile(reads, 0.5):.1f} ms, "
                        f"{counts.get('queries', 0) / config.duration * 60:.0f} queries/min, "
                        f"hit rate {pct(hit_rate(counts, list(VIEWS.values())))} "
                        f"({' / '.join(pct(v) for v in hit_rates(counts).values())}), "
                        f"stale {len(outcome.stale)}, 5xx {outcome.server_errors}",
                    )
                order.reverse()
            if config.sparse:
                before = counters(started["on"])
                drive(config, started["on"], users, 999, config.sparse, reads=2, zipf=False)
                sparse = delta(counters(started["on"]), before)
                progress(
                    config, f"  sparse on: hit rate {pct(hit_rate(sparse, list(VIEWS.values())))}"
                )
    finally:
        shutil.rmtree(workdir / "metrics-off", ignore_errors=True)
        shutil.rmtree(workdir / "metrics-on", ignore_errors=True)
    r = results(config, runs, sparse, data)
    r["workload"]["users_per_server"] = {name: len(each) for name, each in active.items()}
    r["connections"] = watch.figures
    failed = any(r[side][k] for side in ("off", "on") for k in ("stale", "server_errors"))
    if r["off"]["errors"] or r["on"]["errors"]:
        # The servers' logs (Django's tracebacks on stderr) say why a request failed.
        progress(config, f"bench: requests failed; the servers' logs are in {workdir}")
        for name in ("off", "on"):
            if r[name]["server_errors"]:
                progress(config, f"bench: {r[name]['server_errors']} 5xx on the {name} server:")
                progress(config, server_failures(workdir / f"gunicorn-{name}.log"))
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = table_rows(r)
    if args.json:
        print(json.dumps(r, indent=2, default=str))
    elif args.markdown:
        print(markdown_table(rows))
        print()
        print(markdown_table(cause_rows(r)))
    else:
        print(f"\n{where}; {r['workload']}\n")
        print(text_table(rows))
        print()
        print(text_table(cause_rows(r)))
    if failed:
        progress(config, "bench: FAILED: a stale read or a 5xx (above)")
    return 1 if failed else 0


def server_failures(log: Path, limit: int = 3) -> str:
    """The distinct errors a server logged (django.request's tracebacks, gunicorn's own),
    with the first traceback of each in full."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"  (no log: {error})"
    blocks: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        if " ERROR " not in line and "[ERROR]" not in line:
            continue
        block = [line]
        for following in lines[i + 1 :]:
            if (
                not following
                or following.startswith((" ", "Traceback", "During", "The above"))
                or (not following[0].isdigit() and not following.startswith("["))
            ):
                block.append(following)
            else:
                break
        last = next((b for b in reversed(block) if b and not b.startswith(" ")), line)
        blocks.setdefault(last, block)
    if not blocks:
        return f"  (nothing logged as an error; see {log})"
    shown = [
        f"  {len(blocks)} distinct error(s); {log}",
        *("\n".join(block) for block in list(blocks.values())[:limit]),
    ]
    return "\n".join(shown)


if __name__ == "__main__":
    sys.exit(main())
