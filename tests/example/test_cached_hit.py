"""A cached request of the example touches no database: the session from the cache
(``cached_db``), the user through ``cache_aside`` (resee/auth.py), the response from the cache.
Against the real PostgreSQL and Redis."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from resee.auth import user_row
from tests.example.conftest import MakeSchedule

BACKEND = "resee.auth.CachedUserBackend"
CACHED_ENDPOINTS = ["/api/review/today/", "/api/analytics/stats/", "/api/content/?page=1"]


@pytest.fixture(autouse=True)
def _cached_sessions_and_users(settings: Any) -> None:
    """What example_project/resee/settings.py sets when REDIS_URL is given."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    settings.CACHES = {
        **settings.CACHES,
        "sessions": {
            **settings.CACHES["default"],
            "OPTIONS": {**settings.CACHES["default"].get("OPTIONS", {}), "IGNORE_EXCEPTIONS": True},
        },
    }
    settings.SESSION_CACHE_ALIAS = "sessions"
    settings.AUTHENTICATION_BACKENDS = [BACKEND, "django.contrib.auth.backends.ModelBackend"]


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend=BACKEND)
    return client


@pytest.mark.parametrize("path", CACHED_ENDPOINTS)
def test_a_cached_hit_runs_no_query(
    path: str, user: User, make_schedule: MakeSchedule, django_assert_num_queries: Any
) -> None:
    make_schedule(user)
    client = logged_in(user)
    first = client.get(path)
    assert first.status_code == 200
    with django_assert_num_queries(0):
        again = client.get(path)
    assert again.status_code == 200
    assert again.content == first.content


def test_the_floor_endpoints_run_no_query(user: User, django_assert_num_queries: Any) -> None:
    client = logged_in(user)
    assert client.get("/api/me/").json() == {"id": user.pk}
    with django_assert_num_queries(0):
        assert client.get("/api/me/").json() == {"id": user.pk}
        assert Client().get("/api/ping/").json() == {"ok": True}
    assert Client().get("/api/me/").status_code in {401, 403}


def test_the_cached_user_is_the_users_row(user: User) -> None:
    row = user_row(user.pk)
    assert row is not None
    assert row["username"] == user.username
    assert row["password"] == user.password
    assert user_row(10**9) is None


# Committed for real: the user's creation and its change are two transactions.
@pytest.mark.django_db(transaction=True)
def test_a_password_change_still_logs_other_sessions_out(user: User) -> None:
    client = logged_in(user)
    assert client.get("/api/review/today/").status_code == 200
    user.set_password("another-pass-1")
    user.save()
    assert client.get("/api/review/today/").status_code in {401, 403}


# Committed for real: the user's creation and its change are two transactions.
@pytest.mark.django_db(transaction=True)
def test_a_deactivated_user_is_out_at_the_next_request(user: User) -> None:
    client = logged_in(user)
    assert client.get("/api/analytics/stats/").status_code == 200
    user.is_active = False
    user.save()
    assert client.get("/api/analytics/stats/").status_code in {401, 403}
