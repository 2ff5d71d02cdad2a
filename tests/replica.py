"""Fixtures for tests that run against the real streaming replica of ``scripts/replica.sh``
(loaded as a plugin by tests/conftest.py).

The replica is shared by every test run on the machine, so tests take a file lock: shared
while they only read from it, exclusive while they inject lag or stop it. Each fixture that
changes the replica restores it in its finalizer, and waits until it has caught up again.
"""

from __future__ import annotations

import contextvars
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from content.models import Category, Content
from resee_perf import _replicas
from review.models import ReviewSchedule

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "replica.sh"
ALIAS = "replica"
LOCK_PATH = Path("/tmp/resee-perf-replica-5433.lock")
LAG_SECONDS = 2.0

T = TypeVar("T")

ROUTER = "resee_perf.routers.StickyReplicaRouter"
MIDDLEWARE = "resee_perf.middleware.StickyReadsMiddleware"


def fresh_context(call: Callable[[], T]) -> T:
    """Run one request as another worker thread would: with no routing scope around it."""
    return contextvars.Context().run(call)


def api_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def due_schedule(username: str) -> ReviewSchedule:
    """A user with one review due today, in the example project."""
    user = User.objects.create_user(username=username, password="pw")
    category = Category.objects.create(name=f"c-{username}", slug=f"c-{username}")
    content = Content.objects.create(title="T", body="B", author=user, category=category)
    return ReviewSchedule.objects.create(
        user=user, content=content, next_review_date=timezone.localdate()
    )


def run_script(*args: str, port: int | None = None) -> None:
    env = None if port is None else {**os.environ, "RESEE_REPLICA_PORT": str(port)}
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/replica.sh {' '.join(args)} failed:\n{result.stderr}")


def _query(alias: str, sql: str) -> Any:
    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def primary_lsn() -> int:
    return _replicas.parse_lsn(_query("default", "SELECT pg_current_wal_insert_lsn()::text"))


def replay_lsn() -> int:
    return _replicas.parse_lsn(_query(ALIAS, "SELECT pg_last_wal_replay_lsn()::text"))


def wait_caught_up(timeout: float = 30) -> None:
    """Until the replica has replayed everything the primary had written when called."""
    target = primary_lsn()
    deadline = time.monotonic() + timeout
    while replay_lsn() < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"the replica did not catch up within {timeout} s")
        time.sleep(0.02)


class Replica:
    """The replica's controls, for tests."""

    alias = ALIAS

    def lag(self, seconds: float) -> None:
        run_script("lag", str(seconds))

    def stop(self) -> None:
        run_script("stop")

    def start(self) -> None:
        run_script("start")

    def wait_caught_up(self) -> None:
        wait_caught_up()

    @staticmethod
    def primary_lsn() -> int:
        return primary_lsn()

    @staticmethod
    def replay_lsn() -> int:
        return replay_lsn()


def _first_answer(timeout: float = 10) -> Any:
    """pg_is_in_recovery() on the replica, which may not have replayed the creation of the
    test database yet when the session starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _query(ALIAS, "SELECT pg_is_in_recovery()")
        except Exception:
            connections[ALIAS].close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def replica_db(django_db_setup: None, django_db_blocker: Any) -> None:
    """The replica is up and has replayed the test database; FAILS (not skips) otherwise:
    CI must exercise the router against a real replica."""
    with django_db_blocker.unblock():
        try:
            in_recovery = _first_answer()
        except Exception as error:
            pytest.fail(
                f"The streaming replica ({connections[ALIAS].settings_dict['HOST']}:"
                f"{connections[ALIAS].settings_dict['PORT']}) cannot be reached: {error}. "
                "Start it with scripts/replica.sh (scripts/test.sh does).",
                pytrace=False,
            )
        finally:
            connections[ALIAS].close()
        if not in_recovery:
            pytest.fail("The 'replica' database is not a standby (pg_is_in_recovery() is false).")
        with _lock(fcntl.LOCK_EX):
            # A run killed halfway through a lag test leaves the lag behind.
            run_script("ensure")
            wait_caught_up()
        connections[ALIAS].close()


def _flock(kind: int) -> Any:
    handle = LOCK_PATH.open("a")
    fcntl.flock(handle, kind)
    return handle


class _lock:
    def __init__(self, kind: int) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        self.handle = _flock(self.kind)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _routed_settings(**resee_perf: Any) -> override_settings:
    return override_settings(
        DATABASE_ROUTERS=[ROUTER],
        RESEE_PERF={
            "REPLICAS": [ALIAS],
            # Short, so that tests see a replica's state change within a few ms.
            "REPLICA_CHECK_INTERVAL": 0.02,
            "REPLICA_RETRY_SECONDS": 0.2,
            **resee_perf,
        },
    )


def _fresh_state() -> None:
    _replicas.forget()
    connections[ALIAS].close()


@pytest.fixture
def replica(replica_db: None, transactional_db: None) -> Iterator[Replica]:
    """The replica, unlagged and running, with the router installed; data committed by the
    test replicates (transactional_db)."""
    with _lock(fcntl.LOCK_SH), _routed_settings():
        _fresh_state()
        yield Replica()
        _fresh_state()


@pytest.fixture
def replica_control(replica_db: None, transactional_db: None) -> Iterator[Replica]:
    """The replica to lag or stop at will: this test has it to itself, and it is started
    and unlagged again afterwards, whatever the test did."""
    with _lock(fcntl.LOCK_EX), _routed_settings():
        _fresh_state()
        control = Replica()
        try:
            yield control
        finally:
            _fresh_state()
            try:
                control.start()
                control.lag(0)
            except RuntimeError:
                run_script("ensure")
            wait_caught_up()
            connections[ALIAS].close()


@pytest.fixture
def lagging_replica(replica_control: Replica) -> Replica:
    """The replica applying each commit LAG_SECONDS after the primary."""
    replica_control.wait_caught_up()
    replica_control.lag(LAG_SECONDS)
    return replica_control


# -- the private replica of the fault tests ------------------------------------------------------

FAULT_ALIAS = "replica_faults"


def _fault_port() -> int:
    return int(connections.settings[FAULT_ALIAS]["PORT"])


class FaultReplica:
    """A replica of our own, to hang and cut off: the shared one serves other test runs."""

    alias = FAULT_ALIAS

    def __init__(self) -> None:
        self.port = _fault_port()

    def script(self, *args: str) -> None:
        run_script(*args, port=self.port)

    def hang(self) -> None:
        """SIGSTOP the postmaster and every backend: the kernel still accepts and ACKs."""
        self.script("hang")

    def resume(self) -> None:
        self.script("resume")

    def disconnect(self) -> None:
        """Point its primary_conninfo at a dead port: it keeps serving what it has."""
        self.script("disconnect")

    def reconnect(self) -> None:
        self.script("reconnect")

    def wait_caught_up(self, timeout: float = 30) -> None:
        target = primary_lsn()
        deadline = time.monotonic() + timeout
        while True:
            try:
                replayed = _replicas.parse_lsn(
                    _query(FAULT_ALIAS, "SELECT pg_last_wal_replay_lsn()::text")
                )
            except Exception:
                connections[FAULT_ALIAS].close()
                replayed = 0
            if replayed >= target:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the private replica did not catch up within {timeout} s")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def fault_replica_db(django_db_setup: None, django_db_blocker: Any) -> None:
    """The private replica, built or repaired by scripts/replica.sh (a few seconds)."""
    lock = Path(f"/tmp/resee-perf-replica-{_fault_port()}.lock")
    with django_db_blocker.unblock(), lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        run_script("ensure", port=_fault_port())
        FaultReplica().wait_caught_up()
        connections[FAULT_ALIAS].close()


@pytest.fixture
def fault_replica(fault_replica_db: None, transactional_db: None) -> Iterator[FaultReplica]:
    """The private replica, running and streaming; resumed, reconnected and caught up again
    afterwards whatever the test did to it."""
    lock = Path(f"/tmp/resee-perf-replica-{_fault_port()}.lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _fresh_state()
        connections[FAULT_ALIAS].close()
        control = FaultReplica()
        try:
            yield control
        finally:
            _replicas.forget()
            try:
                control.resume()
                control.reconnect()
                control.wait_caught_up(timeout=10)
            except (RuntimeError, AssertionError):
                # Past repair (the primary recycled WAL it needed): rebuilt, a few seconds.
                connections[FAULT_ALIAS].close()
                control.script("ensure")
                control.wait_caught_up()
            connections[FAULT_ALIAS].close()


# -- several replicas: the second shared one, and two private ones ------------------------------

SHARED_B = "replica_b"
PRIVATE = ("replica_p1", "replica_p2")


def _port(alias: str) -> int:
    return int(connections.settings[alias]["PORT"])


def _lock_path(alias: str) -> Path:
    return Path(f"/tmp/resee-perf-replica-{_port(alias)}.lock")


def alias_replay_lsn(alias: str) -> int:
    return _replicas.parse_lsn(_query(alias, "SELECT pg_last_wal_replay_lsn()::text"))


def wait_alias_caught_up(alias: str, timeout: float = 30, target: int | None = None) -> None:
    """Until the replica behind ``alias`` has replayed ``target`` (default: the primary's
    position now)."""
    if target is None:
        target = primary_lsn()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if alias_replay_lsn(alias) >= target:
                return
        except Exception:
            connections[alias].close()
        if time.monotonic() > deadline:
            raise AssertionError(f"{alias} did not catch up within {timeout} s")
        time.sleep(0.02)


class ReplicaControl:
    """scripts/replica.sh for one replica alias of the test settings."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.port = _port(alias)

    def script(self, *args: str) -> None:
        run_script(*args, port=self.port)

    def lag(self, seconds: float) -> None:
        self.script("lag", str(seconds))

    def stop(self) -> None:
        self.script("stop")

    def start(self) -> None:
        self.script("start")

    def replay_lsn(self) -> int:
        return alias_replay_lsn(self.alias)

    def wait_caught_up(self, timeout: float = 30, target: int | None = None) -> None:
        wait_alias_caught_up(self.alias, timeout, target)

    def restore(self) -> None:
        """Running, unlagged and caught up; rebuilt (a few seconds) if past repair."""
        connections[self.alias].close()
        try:
            self.start()
            self.lag(0)
            self.wait_caught_up(timeout=15)
        except (RuntimeError, AssertionError):
            connections[self.alias].close()
            self.script("ensure")
            self.wait_caught_up()
        connections[self.alias].close()


@pytest.fixture(scope="session")
def several_replicas_db(replica_db: None, django_db_blocker: Any) -> None:
    """The second shared replica (5435) is up and has replayed the test database."""
    with django_db_blocker.unblock(), _lock_path(SHARED_B).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        run_script("ensure", port=_port(SHARED_B))
        wait_alias_caught_up(SHARED_B)
        connections[SHARED_B].close()


@pytest.fixture
def two_replicas(several_replicas_db: None, transactional_db: None) -> Iterator[list[str]]:
    """The two shared replicas, only read (shared locks), with the router installed."""
    with _lock(fcntl.LOCK_SH), _lock_path(SHARED_B).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        with _routed_settings(REPLICAS=[ALIAS, SHARED_B]):
            _fresh_state()
            connections[SHARED_B].close()
            yield [ALIAS, SHARED_B]
            _fresh_state()
            connections[SHARED_B].close()


@pytest.fixture(scope="session")
def private_replicas_db(django_db_setup: None, django_db_blocker: Any) -> None:
    """The two private replicas (5450, 5451), built or repaired (seconds each)."""
    with django_db_blocker.unblock():
        for alias in PRIVATE:
            with _lock_path(alias).open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                ReplicaControl(alias).script("ensure")
                wait_alias_caught_up(alias)
                connections[alias].close()


@pytest.fixture
def private_replicas(
    private_replicas_db: None, transactional_db: None
) -> Iterator[tuple[ReplicaControl, ReplicaControl]]:
    """Two private replicas to lag and stop at will (no router settings: the test sets its
    own); running, unlagged and caught up again afterwards whatever the test did."""
    handles = [_lock_path(alias).open("a") for alias in PRIVATE]
    try:
        for handle in handles:
            fcntl.flock(handle, fcntl.LOCK_EX)
        controls = (ReplicaControl(PRIVATE[0]), ReplicaControl(PRIVATE[1]))
        _replicas.forget()
        for control in controls:
            connections[control.alias].close()
        try:
            yield controls
        finally:
            _replicas.forget()
            for control in controls:
                control.restore()
    finally:
        for handle in handles:
            handle.close()
