"""The example project's own wiring: settings from the environment, migrations, checks."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from django.core.management import call_command

EXAMPLE_PROJECT = Path(__file__).resolve().parents[2] / "example_project"


def load_settings(monkeypatch: pytest.MonkeyPatch, **environ: str) -> ModuleType:
    for name in (
        "DATABASE_URL",
        "REPLICA_DATABASE_URL",
        "REDIS_URL",
        "DJANGO_DEBUG",
        "DJANGO_SECRET_KEY",
        "RESEE_CACHE_ENABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(sys.modules, "resee.settings", raising=False)
    return importlib.import_module("resee.settings")


def test_defaults_need_no_service(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(monkeypatch, DATABASE_URL="", REDIS_URL="")
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert settings.DATABASES["default"]["NAME"] == str(EXAMPLE_PROJECT / "db.sqlite3")
    assert list(settings.DATABASES) == ["default"]
    assert settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")
    assert settings.DEBUG is False
    assert settings.SECRET_KEY == ""
    assert "resee_perf" in settings.INSTALLED_APPS
    assert settings.RESEE_PERF == {"CACHE_ENABLED": True}


def test_services_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        monkeypatch,
        DATABASE_URL="postgres://app@db:5432/resee",
        REPLICA_DATABASE_URL="postgres://app@replica:5432/resee",
        REDIS_URL="redis://cache:6379/3",
        DJANGO_DEBUG="false",
        ALLOWED_HOSTS="resee.example, api.resee.example",
        RESEE_CACHE_ENABLED="0",
    )
    assert settings.DATABASES["default"]["HOST"] == "db"
    assert settings.DATABASES["replica"]["HOST"] == "replica"
    assert settings.DATABASES["replica"]["TEST"] == {"MIRROR": "default"}
    # The replica's own timeouts, not recommended_database()'s defaults (5 s and 30 s), which
    # replaced them once: its query deadline is meant to sit just above its statement_timeout.
    assert settings.DATABASES["replica"]["OPTIONS"] == {
        "connect_timeout": 2,
        "options": "-c statement_timeout=5000",
    }
    assert settings.RESEE_PERF["REPLICA_QUERY_TIMEOUT"] > 5
    assert settings.DATABASES["default"]["OPTIONS"]["options"] == "-c statement_timeout=30000"
    assert settings.CACHES["default"] == {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://cache:6379/3",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
    assert settings.DEBUG is False
    assert settings.ALLOWED_HOSTS == ["resee.example", "api.resee.example"]
    assert settings.RESEE_PERF["CACHE_ENABLED"] is False


def test_several_replica_urls_make_several_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        monkeypatch,
        DATABASE_URL="postgres://app@db:5432/resee",
        REPLICA_DATABASE_URL="postgres://app@r1:5432/resee, postgres://app@r2:5432/resee,",
    )
    assert [settings.DATABASES[alias]["HOST"] for alias in ("replica", "replica_2")] == [
        "r1",
        "r2",
    ]
    assert list(settings.DATABASES) == ["default", "replica", "replica_2"]
    assert settings.RESEE_PERF["REPLICAS"] == ["replica", "replica_2"]
    assert settings.DATABASE_ROUTERS == ["resee_perf.routers.StickyReplicaRouter"]
    assert settings.DATABASES["replica_2"]["TEST"] == {"MIRROR": "default"}


def test_no_replica_url_no_router(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(monkeypatch, DATABASE_URL="postgres://app@db:5432/resee")
    assert list(settings.DATABASES) == ["default"]
    assert "REPLICAS" not in settings.RESEE_PERF
    assert not getattr(settings, "DATABASE_ROUTERS", [])
    assert settings.REPLICA_ALIASES == []


def test_debug_only_when_asked_and_only_then_a_development_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(monkeypatch, DJANGO_DEBUG="1")
    assert settings.DEBUG is True
    assert settings.SECRET_KEY.startswith("django-insecure-")
    settings = load_settings(monkeypatch, DJANGO_SECRET_KEY="from-the-vault")
    assert (settings.DEBUG, settings.SECRET_KEY) == (False, "from-the-vault")


def run_in_demo_settings(code: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "resee.settings", **environ}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLE_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_500_is_logged_with_its_traceback_and_shows_no_settings() -> None:
    """With DEBUG off by default: the response is Django's plain 500 page, which does not print
    the Redis URL's password as the debug page did, and stderr has the traceback."""
    result = run_in_demo_settings(
        """
import base64, django
django.setup()
from django.test import Client
auth = "Basic " + base64.b64encode(b"someone:pw").decode()
response = Client(raise_request_exception=False).get(
    "/api/review/today/", HTTP_AUTHORIZATION=auth
)
print(response.status_code, response.content.decode())
""",
        # Nothing listens on port 1: Basic auth's user lookup fails with OperationalError.
        DATABASE_URL="postgres://postgres@127.0.0.1:1/resee",
        REDIS_URL="redis://:hunter2-secret@127.0.0.1:1/0",
        DJANGO_SECRET_KEY="not-the-default",
        ALLOWED_HOSTS="testserver",
    )
    assert result.stdout.startswith("500 "), result.stderr
    assert "hunter2" not in result.stdout
    assert "Internal Server Error: /api/review/today/" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "OperationalError" in result.stderr


def test_a_server_will_not_start_without_a_secret_key_outside_debug() -> None:
    result = run_in_demo_settings("import resee.wsgi", DATABASE_URL="", REDIS_URL="")
    assert result.returncode != 0
    assert "Set DJANGO_SECRET_KEY" in result.stderr
    debug = run_in_demo_settings("import resee.wsgi", DJANGO_DEBUG="1")
    assert debug.returncode == 0, debug.stderr


def test_the_test_settings_mirror_the_api_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import settings as test_settings

    assert load_settings(monkeypatch).REST_FRAMEWORK == test_settings.REST_FRAMEWORK


@pytest.mark.django_db
def test_migrations_are_up_to_date() -> None:
    call_command("makemigrations", "content", "review", "--check", "--dry-run", verbosity=0)


def test_manage_py_check_passes_on_the_demo_settings() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=EXAMPLE_PROJECT,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "", "REDIS_URL": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
