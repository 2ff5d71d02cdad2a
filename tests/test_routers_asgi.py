"""The router's contextvars pinning under a real ASGI server: uvicorn (one worker, one event
loop) serving tests/asgi_site, with interleaved requests of several users while the shared
replica lags LAG_SECONDS behind. A writer's next request reads its write (on the primary: the
replica has not replayed it), and no pin leaks: users who did not write read from the replica,
and do not see the writes of the others yet.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from content.models import Category
from resee_perf.conf import conf
from tests.replica import ALIAS, Replica

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PORT = int(os.environ.get("RESEE_ASGI_TEST_PORT", "8411"))
WRITERS = 4
ROUNDS = 3
READERS = 3
READS = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["default", ALIAS]),
]


def database_url(alias: str) -> str:
    settings = connections[alias].settings_dict
    # The test database (a replica alias is its MIRROR: the same NAME on the replica's host).
    name = connections["default"].settings_dict["NAME"]
    return f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{name}"


@contextlib.contextmanager
def uvicorn(log: Path) -> Iterator[str]:
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'example_project'}",
        "DJANGO_SETTINGS_MODULE": "tests.asgi_site.settings",
        "DATABASE_URL": database_url("default"),
        "REPLICA_DATABASE_URL": database_url(ALIAS),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"),
    }
    command = [str(BIN / "uvicorn"), "tests.asgi_site.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(PORT), "--no-access-log"]
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{PORT}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/read/none/", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"uvicorn did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class User:
    """One browser: its own cookies (the sticky cookie among them)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}

    def request(self, path: str, method: str = "GET") -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path, method=method, data=b"" if method == "POST" else None
        )
        if self.cookies:
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        with urllib.request.urlopen(request, timeout=30) as response:
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, value = header.split(";", 1)[0].partition("=")
                self.cookies[name.strip()] = value
            body: dict[str, Any] = json.loads(response.read())
        return body


def test_uvicorn_pins_each_writer_alone_on_one_event_loop(
    lagging_replica: Replica, tmp_path: Path
) -> None:
    Category.objects.create(name="old", slug="old")
    lagging_replica.lag(0)
    lagging_replica.wait_caught_up()
    lagging_replica.lag(2.0)
    results: list[tuple[str, dict[str, Any]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS + READERS)

    def record(kind: str, body: dict[str, Any]) -> None:
        with lock:
            results.append((kind, body))

    def writer(index: int, base: str) -> None:
        me, stranger = User(base), User(base)
        try:
            start.wait(30)
            for round_ in range(ROUNDS):
                slug = f"w{index}-{round_}"
                record("write", me.request(f"/write/{slug}/", "POST"))
                assert conf.STICKY_COOKIE_NAME in me.cookies
                record("own", me.request(f"/read/{slug}/"))
                record("stranger", stranger.request(f"/read/{slug}/"))
            assert conf.STICKY_COOKIE_NAME not in stranger.cookies
        except BaseException as error:  # reported below
            errors.append(error)

    def reader(base: str) -> None:
        me = User(base)
        try:
            start.wait(30)
            for _ in range(READS):
                record("reader", me.request("/read/old/"))
            assert conf.STICKY_COOKIE_NAME not in me.cookies
        except BaseException as error:
            errors.append(error)

    with uvicorn(tmp_path / "uvicorn.log") as base:
        threads = [threading.Thread(target=writer, args=(i, base)) for i in range(WRITERS)]
        threads += [threading.Thread(target=reader, args=(base,)) for _ in range(READERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for kind, body in results:
        by_kind.setdefault(kind, []).append(body)
    assert {kind: len(bodies) for kind, bodies in by_kind.items()} == {
        "write": WRITERS * ROUNDS,
        "own": WRITERS * ROUNDS,
        "stranger": WRITERS * ROUNDS,
        "reader": READERS * READS,
    }
    # One process, one loop, and its requests did interleave.
    assert len({body["pid"] for _, body in results}) == 1
    spans = sorted((body["started"], body["ended"]) for _, body in results)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    # The writer's next request reads its write, from the primary (the replica lags 2 s).
    assert all(body["seen"] for body in by_kind["own"])
    assert {body["alias"] for body in by_kind["own"]} == {"default"}
    # Nobody else is pinned: the replica, where the new rows have not arrived yet.
    assert {body["alias"] for body in by_kind["stranger"] + by_kind["reader"]} == {ALIAS}
    assert not any(body["seen"] for body in by_kind["stranger"])
    assert all(body["seen"] for body in by_kind["reader"])
