"""Hostile input is a 4xx, never a 500: the cases that were 500s, then a fuzz of every endpoint.

Against the real PostgreSQL, since it is PostgreSQL (psycopg) that refuses NUL characters and
lone surrogates.
"""

from __future__ import annotations

import base64
import json
import string
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from django.contrib.auth.models import User
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from content.models import Category, Content
from review.models import ReviewHistory, ReviewSchedule
from tests.example.conftest import PASSWORD, MakeSchedule

# Every endpoint, with "{id}" for an object id (the fuzz tries the user's and arbitrary ones).
ENDPOINTS = [
    ("get", "/api/review/today/"),
    ("post", "/api/review/complete/{id}/"),
    ("get", "/api/analytics/stats/"),
    ("get", "/api/content/"),
    ("post", "/api/content/"),
    ("get", "/api/content/{id}/"),
    ("put", "/api/content/{id}/"),
    ("patch", "/api/content/{id}/"),
    ("delete", "/api/content/{id}/"),
    ("get", "/api/categories/"),
]
FIELDS = ["result", "title", "body", "category", "id", "page"]


def basic(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode(errors="surrogatepass")
    return "Basic " + base64.b64encode(raw).decode()


def post_json(client: APIClient, url: str, raw: bytes) -> Any:
    return client.post(url, raw, content_type="application/json")


@pytest.fixture
def client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


# -- the cases that were 500s -------------------------------------------------------------------


@pytest.mark.parametrize("username", ["alice\x00", "\x00", "al\x00ice"])
def test_a_nul_in_basic_auth_credentials_is_401(user: User, username: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(username, PASSWORD))
    assert client.get("/api/review/today/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=basic(user.username, PASSWORD + "\x00"))
    assert client.get("/api/review/today/").status_code == 401


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"result": "\ud800"}',
        rb'{"result": "\udfff remembered"}',
        rb'{"\ud800": "remembered"}',
        rb'{"result": "remembered\u0000"}',
    ],
)
def test_a_lone_surrogate_or_nul_in_json_is_400(
    client: APIClient, user: User, make_schedule: MakeSchedule, raw: bytes
) -> None:
    schedule = make_schedule(user)
    response = post_json(client, f"/api/review/complete/{schedule.pk}/", raw)
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not ReviewHistory.objects.exists()


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
def test_deeply_nested_json_is_400(client: APIClient, depth: int) -> None:
    raw = b'{"title": ' + b"[" * depth + b"]" * depth + b"}"
    response = post_json(client, "/api/content/", raw)
    assert response.status_code == 400
    assert "nesting deeper than 32 levels" in response.json()["detail"]


def test_nesting_within_the_limit_is_left_to_the_serializer(client: APIClient) -> None:
    raw = b'{"title": ' + b"[" * 31 + b"]" * 31 + b"}"
    response = post_json(client, "/api/content/", raw)
    assert response.status_code == 400
    assert "title" in response.json()


@pytest.fixture
def category_id(category: Category) -> int:
    return category.pk


@pytest.mark.parametrize(
    "value", ["{pk}.5", "{pk}.0", "true", "1e400", '"{pk}.5"', '"{pk} "', '"-{pk}"', "[{pk}]"]
)
def test_a_category_that_is_not_an_integer_is_refused_not_rounded(
    client: APIClient, category_id: int, value: str
) -> None:
    """`1.5` used to find category 1 and be stored as 1; `1e400` was an OverflowError."""
    raw = f'{{"title": "t", "body": "b", "category": {value.format(pk=category_id)}}}'
    response = post_json(client, "/api/content/", raw.encode())
    assert response.status_code == 400, response.content
    assert "category" in response.json()
    assert not Content.objects.exists()


@pytest.mark.parametrize("value", ["{pk}", '"{pk}"'])
def test_a_category_id_as_integer_or_form_digits_is_accepted(
    client: APIClient, category_id: int, value: str
) -> None:
    raw = f'{{"title": "t", "body": "b", "category": {value.format(pk=category_id)}}}'
    assert post_json(client, "/api/content/", raw.encode()).status_code == 201
    form = client.post("/api/content/", {"title": "t", "body": "b", "category": str(category_id)})
    assert form.status_code == 201
    assert Content.objects.filter(category_id=category_id).count() == 2


@pytest.mark.parametrize("pk", [0, -1, 2**63, 10**30])
def test_a_category_id_out_of_range_is_400(client: APIClient, pk: int) -> None:
    raw = json.dumps({"title": "t", "body": "b", "category": pk}).encode()
    response = post_json(client, "/api/content/", raw)
    assert response.status_code == 400
    assert "category" in response.json()


# -- the fuzz ------------------------------------------------------------------------------------

# Every code point, lone surrogates and NUL included (Hypothesis leaves surrogates out unless
# asked).
hostile_text = st.text(
    st.characters(codec=None, exclude_categories=()), max_size=20
) | st.sampled_from(
    ["\x00", "\ud800", "\udfff", "remembered", "forgot", "1", "1.5", "", " ", "9" * 30]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | hostile_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)
json_bodies = (
    st.dictionaries(st.sampled_from(FIELDS) | hostile_text, json_values, max_size=5) | json_values
)
# Raw bytes too, percent-encoded, so that invalid UTF-8 and NUL reach the query string.
query_strings = st.dictionaries(
    st.sampled_from(["page", "result", "category", "search"])
    | st.text(string.ascii_letters, min_size=1, max_size=5),
    st.binary(max_size=12) | hostile_text.map(lambda text: text.encode(errors="surrogatepass")),
    max_size=3,
).map(lambda params: "&".join(f"{key}={quote_from_bytes(value)}" for key, value in params.items()))


@pytest.fixture
def fuzz_objects(user: User, make_schedule: MakeSchedule) -> tuple[ReviewSchedule, ReviewSchedule]:
    return make_schedule(user), make_schedule(user)


@settings(
    max_examples=500,
    deadline=None,
    # The fixtures' rows are meant to be shared by the examples, in the test's transaction.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    object_id=st.sampled_from(["own", "own-content"]) | st.integers(-5, 10**25),
    body=json_bodies,
    query=query_strings,
    key=st.none() | hostile_text,
)
@example(endpoint=ENDPOINTS[1], object_id="own", body={"result": "\ud800"}, query="", key=None)
@example(
    endpoint=ENDPOINTS[4],
    object_id="own",
    body={"category": 1.5, "title": "t", "body": "b"},
    query="",
    key=None,
)
@example(endpoint=ENDPOINTS[1], object_id="own", body={"result": "forgot"}, query="", key="k\x00")
@example(
    endpoint=ENDPOINTS[4],
    object_id="own",
    body={"category": 1e300, "title": "t\x00"},
    query="",
    key=None,
)
@example(endpoint=ENDPOINTS[3], object_id="own", body=None, query="page=%00", key=None)
def test_no_endpoint_answers_500(
    client: APIClient,
    fuzz_objects: tuple[ReviewSchedule, ReviewSchedule],
    endpoint: tuple[str, str],
    object_id: str | int,
    body: Any,
    query: str,
    key: str | None,
) -> None:
    schedule = fuzz_objects[0]
    pk = {"own": schedule.pk, "own-content": schedule.content_id}.get(str(object_id), object_id)
    method, url = endpoint
    url = url.format(id=pk) + (f"?{query}" if query else "")
    raw = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes
    headers = {} if key is None else {"Idempotency-Key": key}
    if method == "get":
        response = client.get(url, headers=headers)
    else:
        response = getattr(client, method)(
            url, raw, content_type="application/json", headers=headers
        )
    assert response.status_code < 500, (url, raw, response.content)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(username=hostile_text, password=hostile_text)
@example(username="alice\x00", password=PASSWORD)
def test_no_credentials_answer_500(user: User, username: str, password: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(username, password))
    assert client.get("/api/review/today/").status_code in (200, 401)
