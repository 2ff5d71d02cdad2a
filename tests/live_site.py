"""The example project served by real processes for the monitoring tests: its environment on
the test database, a logged-in session, HTTP helpers and a parse of ``/metrics``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from tests.test_cache_redis_server import spare_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
SECRET_KEY = "tests-only-not-secret"


def database_url() -> str:
    """The test database (committed rows: use transactional_db), as the example reads it."""
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def example_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="resee.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        **extra,
    )
    return env


def session_cookie(user: User) -> str:
    """A logged-in session in the database (a password would cost a hash per request)."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"sessionid={session.session_key}"


def get(url: str, cookie: str = "", timeout: float = 10) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def post_json(url: str, cookie: str, body: bytes, csrf: bool = False) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Cookie": cookie, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of ``/metrics``: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, metric: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (n, got), value in samples.items() if n == metric and wanted <= got)


def wait_until(condition: Callable[[], bool], *, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def gunicorn(env: dict[str, str], workers: int, log: Path) -> Iterator[str]:
    """The example project under gunicorn with example_project/gunicorn.conf.py (its
    multiprocess hooks); yields its base URL."""
    port = spare_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "resee.wsgi:application",
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
            *("--timeout", "60", "--graceful-timeout", "5", "--error-logfile", str(log)),
        ],
        cwd=EXAMPLE,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: log.exists() and log.read_text().count("Booting worker") == workers,
            what=f"{workers} gunicorn workers",
        )
        wait_until(lambda: _answers(f"{base}/metrics"), what="/metrics")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return get(url, timeout=2) == 200
    except OSError:
        return False
