from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.example.conftest import PASSWORD

ENDPOINTS = [
    ("get", "/api/review/today/"),
    ("post", "/api/review/complete/1/"),
    ("get", "/api/analytics/stats/"),
    ("get", "/api/content/"),
    ("post", "/api/content/"),
    ("get", "/api/content/1/"),
    ("put", "/api/content/1/"),
    ("patch", "/api/content/1/"),
    ("delete", "/api/content/1/"),
    ("get", "/api/categories/"),
]


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_anonymous_requests_are_refused(method: str, url: str) -> None:
    response = getattr(APIClient(), method)(url, {}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert "detail" in response.json()


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_a_wrong_password_is_refused(user: User, method: str, url: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(user.username, "wrong"))
    response = getattr(client, method)(url, {}, format="json")
    assert response.status_code == 401


def test_basic_auth(user: User) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(user.username, PASSWORD))
    assert client.get("/api/review/today/").status_code == 200


def test_session_auth(user: User) -> None:
    client = APIClient()
    assert client.login(username=user.username, password=PASSWORD)
    assert client.get("/api/analytics/stats/").status_code == 200
