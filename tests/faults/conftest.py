"""Fixtures of the fault suite: PRIVATE processes it starts, breaks and always restores.

- ``fault_site``: a database of its own on the shared primary (5432, where writing is fine),
  migrated and seeded small, with a logged-in session per demo user.
- ``private_replica``: a streaming replica of the primary on port 5445 (scripts/replica.sh
  with RESEE_REPLICA_PORT), never the shared one on 5433.
- ``private_redis``: a redis-server on a spare port, keeping its RDB snapshot in a temporary
  directory, never the shared one on 6379.
- ``app``: the example project under gunicorn (2 workers x 4 threads) on those three.

Every fixture that can leave a process hung, cut off or dead resumes, reconnects or restarts
it in its teardown, whatever the test did.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.faults.load import User
from tests.test_cache_redis_server import PrivateRedis
from tests.test_pool_live import gunicorn

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "replica.sh"
PRIMARY = "postgres://postgres@127.0.0.1:5432"
REPLICA_PORT = int(os.environ.get("RESEE_FAULTS_REPLICA_PORT", "5445"))
DATABASE = f"resee_faults_{os.environ.get('RESEE_TEST_DB_SUFFIX') or 'default'}"
WORKERS, THREADS = 2, 4
# Shorter timers than the defaults, so that a scenario of seconds sees what users would see
# over minutes: the cache in use again 1 s after it answers (not 5), a failed replica tried
# again after 1 s (not 5: several tries within one fault), and a client's writes remembered
# (its sticky cookie, the positions of its invalidations) for 5 s, the default
# REPLICA_MAX_LAG_SECONDS, rather than 15.
RESEE_PERF = {"CACHE_BREAKER_COOLDOWN": 1.0, "REPLICA_RETRY_SECONDS": 1.0, "STICKY_SECONDS": 2.0}
WRITE_MEMORY_SECONDS = 5.0
USERS = 24  # 4 per scenario; each scenario takes its own, so none sees another's writes

_SETUP = """
import io, json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from review.models import ReviewSchedule

call_command("seed_demo", users=%(users)d, categories=3, contents=%(contents)d,
             history=%(history)d, flush=True, stdout=io.StringIO())
users = []
for user in User.objects.filter(username__startswith="user").order_by("username"):
    # A session instead of a password: hashing one (PBKDF2) per request would be the load.
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    schedules = ReviewSchedule.objects.filter(user=user, is_active=True).order_by("id")
    users.append({
        "username": user.username, "user_id": user.pk, "session_key": session.session_key,
        "schedule_ids": list(schedules.values_list("id", flat=True)[:200]),
        "category_id": schedules.values_list("content__category_id", flat=True).first(),
    })
print("USERS " + json.dumps(users))
"""


@dataclass
class Site:
    conninfo: str
    users: list[User]
    taken: int = field(default=0)

    def take_users(self, count: int) -> list[User]:
        chosen = self.users[self.taken : self.taken + count]
        assert len(chosen) == count, "the seed has too few users for another scenario"
        self.taken += count
        return chosen


def example_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "REDIS_URL", "PYTHONPATH", "REPLICA_DATABASE_URL"}
    }
    env.update(
        DATABASE_URL=f"{PRIMARY}/{DATABASE}",
        DJANGO_SETTINGS_MODULE="resee.settings",
        DJANGO_DEBUG="0",
        # DEBUG off may have no default key, and the load's sessions are signed with it.
        DJANGO_SECRET_KEY="tests-only-not-secret",
        ALLOWED_HOSTS="127.0.0.1",
        **extra,
    )
    return env


def manage(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT / "example_project",
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def recreate_database(*, create: bool) -> None:
    with psycopg.connect(f"{PRIMARY}/postgres", autocommit=True) as admin:
        # A run killed halfway leaves its database (and perhaps connections to it) behind.
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        if create:
            admin.execute(f"CREATE DATABASE {DATABASE}")


@pytest.fixture(scope="session")
def fault_site() -> Iterator[Site]:
    recreate_database(create=True)
    try:
        manage("migrate", "--noinput")
        sizes = {"users": USERS, "contents": USERS * 8, "history": USERS * 30}
        output = manage("shell", "-c", _SETUP % sizes)
        [line] = [line for line in output.splitlines() if line.startswith("USERS ")]
        users = [User(**user) for user in json.loads(line.removeprefix("USERS "))]
        yield Site(conninfo=f"{PRIMARY}/{DATABASE}", users=users)
    finally:
        recreate_database(create=False)


class PrivateReplica:
    """scripts/replica.sh on this suite's own port."""

    port = REPLICA_PORT
    conninfo = f"postgres://postgres@127.0.0.1:{REPLICA_PORT}/{DATABASE}"

    def run(self, *args: str) -> None:
        result = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env={**os.environ, "RESEE_REPLICA_PORT": str(self.port)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"scripts/replica.sh {' '.join(args)} failed:\n{result.stderr}")

    def ensure(self) -> None:
        """Up, resumed, connected to the primary, caught up."""
        self.run("ensure")

    def hang(self) -> None:
        self.run("hang")

    def resume(self) -> None:
        self.run("resume")

    def disconnect(self) -> None:
        self.run("disconnect")

    def reconnect(self) -> None:
        self.run("reconnect")


@pytest.fixture(scope="session")
def private_replica(fault_site: Site) -> Iterator[PrivateReplica]:
    """After fault_site: ensure waits until the replica has replayed the new database.

    Private to this run: a concurrent run of the suite (another checkout, another tox
    environment) waits for the lock rather than pausing the replica under this one."""
    with open(f"/tmp/resee-perf-replica-{REPLICA_PORT}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        replica = PrivateReplica()
        try:
            replica.ensure()
            yield replica
        finally:
            replica.resume()  # a stopped process cannot shut down
            replica.run("stop")  # the next ensure reconnects it if it was left cut off


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("the fault suite needs redis-server", pytrace=False)
    server = PrivateRedis(directory=tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def healthy(private_replica: PrivateReplica, private_redis: PrivateRedis) -> Iterator[None]:
    """Each scenario starts and ends with both services healthy, whatever the last one did."""

    def restore() -> None:
        if private_redis.process is None:
            private_redis.start()
        else:
            private_redis.resume()
        private_replica.ensure()

    restore()
    try:
        yield
    finally:
        restore()


@dataclass(frozen=True)
class App:
    url: str
    site: Site
    redis: PrivateRedis
    replica: PrivateReplica
    log: Path


@pytest.fixture
def app(
    healthy: None,
    fault_site: Site,
    private_replica: PrivateReplica,
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> Iterator[App]:
    """The example project under gunicorn on the private services. A new server per
    scenario, so no circuit breaker or replica state carries over from the last one."""
    env = example_env(
        # libpq's minimum: a replica that does not answer costs a connect this long at most.
        REPLICA_DATABASE_URL=f"{private_replica.conninfo}?connect_timeout=2",
        REDIS_URL=f"redis://127.0.0.1:{private_redis.port}/0",
        RESEE_PERF_JSON=json.dumps(RESEE_PERF),
        PYTHONPATH="",
    )
    output = tmp_path / "app.log"  # Django's log: the errors the faults cause, for diagnosis
    with gunicorn(WORKERS, THREADS, tmp_path, saturate=False, env=env, output=output) as url:
        yield App(url.split("/api/", 1)[0], fault_site, private_redis, private_replica, output)
