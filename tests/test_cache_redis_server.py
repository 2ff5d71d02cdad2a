"""cache_aside against a private redis-server this module starts on a spare port: one Redis
command per hit (INFO commandstats sees nobody else's traffic there), and the outages the
shared Redis must never suffer: refused, stopped, hung. Plus garbage in the shared one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.cache import caches
from prometheus_client import REGISTRY

from resee_perf import cache_aside
from tests.test_cache import Counter

SOCKET_TIMEOUT = 0.3

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    # Its own one-node redis-server, and round trips counted on it.
    pytest.mark.single_redis,
]


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PrivateRedis:
    """A throwaway redis-server without automatic persistence, started and stopped by the test.
    With a ``directory``, SAVE writes a snapshot there that the next start loads (Redis'
    default persistence, taken only when the test says so)."""

    def __init__(self, directory: Path | None = None, options: tuple[str, ...] = ()) -> None:
        self.port = spare_port()
        self.directory = directory
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]  # nothing survives a stop
        if self.directory is not None:
            command += ["--dir", str(self.directory), "--dbfilename", "dump.rdb"]
        command += self.options
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = self.client()
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown save; the next start loads the last SAVE, if any."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def cache_settings(self) -> dict[str, Any]:
        return redis_cache(f"redis://127.0.0.1:{self.port}/0")


def redis_cache(location: str) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": location,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": SOCKET_TIMEOUT, "SOCKET_TIMEOUT": SOCKET_TIMEOUT},
    }


@pytest.fixture
def private_redis(settings: Any) -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    settings.CACHES = {**settings.CACHES, "private": server.cache_settings()}
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def resee_settings(settings: Any) -> dict[str, Any]:
    settings.RESEE_PERF = {
        "KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}",
        "CACHE_BREAKER_THRESHOLD": 2,
        "CACHE_BREAKER_COOLDOWN": 60.0,
    }
    return settings.RESEE_PERF  # type: ignore[no-any-return]


def counted(name: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "resee_perf_cache_requests_total", {"name": name, "result": result}
    )
    return value or 0.0


def commands(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, without the measuring client's own."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))
    }


def test_a_hit_is_one_redis_command_including_xfetch_and_tag_checks(
    private_redis: PrivateRedis,
) -> None:
    tags = ["user:{user_id}:a", "user:{user_id}:b"]

    @cache_aside("stats:{user_id}", ttl=60, tags=tags, stale_ttl=30, cache="private")
    def stats(user_id: int) -> dict[str, int]:
        return {"user": user_id}

    stats(1)  # the miss, and the connection
    admin = private_redis.client()
    caches["private"].get("warm")  # the raw baseline's connection is the same pool
    admin.config_resetstat()
    for _ in range(50):
        assert stats(1) == {"user": 1}
    assert commands(admin) == {"mget": 50}

    admin.config_resetstat()
    for _ in range(50):
        caches["private"].get("raw")
    assert commands(admin) == {"get": 50}  # the raw cache.get it is compared with: also one


def test_a_refused_connection_fails_open_and_opens_the_breaker(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "dead": redis_cache(f"redis://127.0.0.1:{spare_port()}/0"),
    }
    count = Counter()

    @cache_aside("dead:{x}", ttl=60, tags=["x:{x}"], cache="dead")
    def dead(x: int) -> dict[str, int]:
        return {"x": x, "run": count()}

    name = dead._aside.name
    before = {result: counted(name, result) for result in ("error", "bypass")}
    with caplog.at_level("WARNING", logger="resee_perf.cache"):
        results = [dead(1) for _ in range(6)]
    assert results == [{"x": 1, "run": run} for run in range(1, 7)]
    assert counted(name, "error") - before["error"] == 2  # CACHE_BREAKER_THRESHOLD
    assert counted(name, "bypass") - before["bypass"] == 4
    assert "circuit breaker open" in caplog.text
    assert REGISTRY.get_sample_value("resee_perf_cache_breaker_open", {"cache": "dead"}) == 1
    assert dead.invalidate(1) is False  # logged, not raised


def test_a_redis_that_stops_and_comes_back(
    private_redis: PrivateRedis, resee_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    resee_settings["CACHE_BREAKER_COOLDOWN"] = 0.3
    count = Counter()

    @cache_aside("back:{x}", ttl=60, cache="private")
    def back(x: int) -> int:
        return count()

    assert back(1) == back(1) == 1
    private_redis.stop()
    with caplog.at_level("WARNING", logger="resee_perf.cache"):
        assert back(1) == 2  # error
        assert back(1) == 3  # error: the breaker opens
        assert back(1) == 4  # bypass
        private_redis.start()  # same port, empty
        time.sleep(0.4)  # the cooldown
        assert back(1) == 5  # the trial call: a miss, stored, breaker closed
    assert back(1) == 5
    assert "circuit breaker open" in caplog.text
    assert "answers again: circuit breaker closed" in caplog.text
    assert REGISTRY.get_sample_value("resee_perf_cache_breaker_open", {"cache": "private"}) == 0


def test_a_hung_redis_costs_one_socket_timeout_then_nothing(
    private_redis: PrivateRedis, resee_settings: dict[str, Any]
) -> None:
    """Behavioural bounds, not a benchmark: without socket timeouts a hung Redis holds each
    call for the OS's TCP timeout (minutes), and without the breaker every call pays one."""
    resee_settings["CACHE_BREAKER_THRESHOLD"] = 1
    count = Counter()

    @cache_aside("hung:{x}", ttl=60, tags=["hung"], cache="private")
    def hung(x: int) -> int:
        return count()

    assert hung(1) == 1
    private_redis.pause()
    try:
        started = time.monotonic()
        assert hung(1) == 2
        first = time.monotonic() - started
        started = time.monotonic()
        assert [hung(1) for _ in range(10)] == list(range(3, 13))
        then = time.monotonic() - started
    finally:
        private_redis.resume()
    assert first < SOCKET_TIMEOUT + 1.5
    assert then < SOCKET_TIMEOUT  # ten calls together wait less than one timeout


def test_garbage_in_the_cache_is_logged_recomputed_and_overwritten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = Counter()

    @cache_aside("garbage:{x}", ttl=60, tags=["garbage"])
    def garbage(x: int) -> dict[str, int]:
        return {"run": count()}

    assert garbage(1) == {"run": 1}
    cache = caches["default"]
    raw = cache.client.get_client(write=True)  # type: ignore[attr-defined]
    full_key = cache.make_key(garbage.cache_key(1))
    for junk in (b"\x80\x05garbage", b"rp\x02u\x00\x02[]not json", b"12345"):
        raw.set(full_key, junk)
        with caplog.at_level("WARNING", logger="resee_perf.cache"):
            value = garbage(1)
        assert value == {"run": count.runs}
        assert garbage(1) == value  # overwritten with a good entry
    assert count.runs == 4
    assert caplog.text.count("recomputing") == 3
