"""A private redis-server on a spare port, for the tests that hang, kill or empty Redis: the
shared one on 6379 must never suffer that (tests/test_cache_redis_server.py, tests/faults/).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

SOCKET_TIMEOUT = 0.3


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PrivateRedis:
    """A throwaway redis-server, started and stopped by the test, on the same port each time.

    Without ``data_dir`` nothing survives a stop. With it, the server keeps its RDB snapshot
    there (written only by an explicit SAVE) and loads it when it starts: a restart after
    :meth:`kill` comes back with the snapshot, as a production Redis restored from a backup
    does, unless the test deletes :attr:`snapshot` first (a Redis that comes back empty)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.port = spare_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def snapshot(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "dump.rdb"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        # No automatic snapshots and no AOF: only an explicit SAVE writes to disk.
        command += ["--save", "", "--appendonly", "no"]
        if self.data_dir is not None:
            command += ["--dir", str(self.data_dir), "--dbfilename", self.snapshot.name]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = self.client()
        for _ in range(250):
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
        """SIGKILL: gone at once, nothing saved, clients' connections reset."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def cache_settings(self) -> dict[str, Any]:
        return redis_cache(self.url)


def redis_cache(location: str) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": location,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": SOCKET_TIMEOUT, "SOCKET_TIMEOUT": SOCKET_TIMEOUT},
    }
