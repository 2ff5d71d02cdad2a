"""Attribution under real servers: the example project under gunicorn (2 workers x 8 threads)
and uvicorn (ASGI, 2 workers), hit with interleaved requests of the naive N+1 endpoint and the
real one. Every N+1 report names the naive route with exactly one request's count, and every
response's Server-Timing counts exactly its own queries: nothing leaks between requests."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.utils import timezone

from content.models import Category, Content
from review.models import ReviewSchedule

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VIEWS = ROOT / "example_project" / "review" / "views.py"
SCHEDULES = 6
NAIVE = "/api/review/today/naive/"
CLEAN = "/api/review/today/"
REPORT = re.compile(r"N\+1 query on (\S+): (\d+) times from (\S+): (.*)$")

pytestmark = [pytest.mark.slow]


@pytest.fixture
def session_cookie(transactional_db: None) -> str:
    """A staff user with SCHEDULES reviews due (committed: the servers are other processes),
    and the Cookie header of a session of theirs."""
    user = User.objects.create_user("profiled", is_staff=True)
    category = Category.objects.create(name="Profiling", slug="profiling")
    today = timezone.localdate()
    for index in range(SCHEDULES):
        content = Content.objects.create(
            author=user, category=category, title=f"t{index}", body="b" * 50
        )
        ReviewSchedule.objects.create(
            user=user, content=content, next_review_date=today - datetime.timedelta(days=1)
        )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"sessionid={session.session_key}"


def server_env(redis_url: str) -> dict[str, str]:
    settings = connection.settings_dict
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "resee.settings",
        "DATABASE_URL": (
            f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/"
            f"{settings['NAME']}"
        ),
        "REDIS_URL": redis_url,
        # The session was signed with the tests' key.
        "DJANGO_SECRET_KEY": "tests-only-not-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "RESEE_PROFILE": "1",
        "RESEE_DEMO_NAIVE": "1",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(command: list[str], log: Path, redis_url: str) -> Iterator[str]:
    port = free_port()
    argv = [arg.replace("{port}", str(port)) for arg in command]
    with log.open("w") as output:
        process = subprocess.Popen(
            argv,
            cwd=ROOT / "example_project",
            env=server_env(redis_url),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/categories/", timeout=2)
            except urllib.error.HTTPError:
                break  # answering (403 without a session)
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get(url: str, cookie: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers.get("Server-Timing", "")


def queries_in(server_timing: str) -> int:
    match = re.search(r'db;dur=[\d.]+;desc="(\d+) quer', server_timing)
    assert match, server_timing
    return int(match.group(1))


def naive_call_site() -> str:
    lines = VIEWS.read_text().splitlines()
    number = next(n for n, line in enumerate(lines, 1) if "# the lazy loads: N+1" in line)
    return f"review/views.py:{number}"


GUNICORN = [
    str(BIN / "gunicorn"),
    "resee.wsgi:application",
    *("--bind", "127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread"),
    *("--threads", "8", "--timeout", "60", "--graceful-timeout", "5"),
]
UVICORN = [
    str(BIN / "uvicorn"),
    "resee.asgi:application",
    *("--host", "127.0.0.1", "--port", "{port}", "--workers", "2", "--no-access-log"),
]


@pytest.mark.parametrize("command", [GUNICORN, UVICORN], ids=["gunicorn-2x8", "uvicorn-2"])
def test_interleaved_requests_are_attributed_to_their_own_route(
    command: list[str], session_cookie: str, tmp_path: Path
) -> None:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1")
    log = tmp_path / "server.log"
    with server(command, log, redis_url) as base:
        # Sequential first: each route's own query count, alone (the real endpoint's second
        # request is a cache hit, as every later one is).
        get(base + CLEAN, session_cookie)
        alone = {
            NAIVE: queries_in(get(base + NAIVE, session_cookie)[1]),
            CLEAN: queries_in(get(base + CLEAN, session_cookie)[1]),
        }
        assert alone[NAIVE] > alone[CLEAN] + 2 * SCHEDULES - 1
        results: list[tuple[str, int, str]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client(first: int) -> None:
            try:
                for round_ in range(6):
                    path = (NAIVE, CLEAN)[(first + round_) % 2]
                    status, timing = get(base + path, session_cookie)
                    with lock:
                        results.append((path, status, timing))
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=client, args=(index,)) for index in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(results) == 96
        # Each response counts its own queries: none of another request's (the real endpoint
        # may miss the cache, one query more, if its entry went meanwhile; the naive one runs
        # 2 x SCHEDULES more than that).
        allowed = {NAIVE: {alone[NAIVE]}, CLEAN: {alone[CLEAN], alone[CLEAN] + 1}}
        for path, status, timing in results:
            assert status == 200
            assert queries_in(timing) in allowed[path], (path, timing)
    naive_requests = 1 + sum(1 for path, _, _ in results if path == NAIVE)
    reports = [m.groups() for line in log.read_text().splitlines() if (m := REPORT.search(line))]
    # Two N+1s per naive request (contents, then categories), each with one request's count.
    assert len(reports) == 2 * naive_requests
    assert {(route, int(count), site) for route, count, site, _ in reports} == {
        ("api/review/today/naive/", SCHEDULES, naive_call_site())
    }
