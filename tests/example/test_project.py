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
    assert settings.DEBUG is True
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
    assert settings.CACHES["default"] == {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://cache:6379/3",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
    assert settings.DEBUG is False
    assert settings.ALLOWED_HOSTS == ["resee.example", "api.resee.example"]
    assert settings.RESEE_PERF["CACHE_ENABLED"] is False


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
