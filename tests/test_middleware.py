"""StickyReadsMiddleware: read-your-writes across requests, through the example project's
endpoints and a few test views, on the real primary and the real replica (2 s of lag).

Each request runs in an empty contextvars context, as it would in another worker thread: the
only thing that carries a write over to the next request is the cookie.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import signing
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import include, path

from content.models import Category
from resee_perf import _replicas
from resee_perf.middleware import read_position
from resee_perf.routers import choose_read_alias
from tests.replica import (
    ALIAS,
    LAG_SECONDS,
    MIDDLEWARE,
    Replica,
    api_for,
    due_schedule,
    fresh_context,
    wait_caught_up,
)
from tests.settings import MIDDLEWARE as BASE_MIDDLEWARE

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

COOKIE = "resee_perf_sticky"


# -- test views: a write and a read in one request, sync and async -----------------------------


def _exists(name: str) -> bool:
    return Category.objects.filter(name=name).exists()


def write_then_read(request: HttpRequest, name: str) -> HttpResponse:
    Category.objects.create(name=name, slug=name)
    return JsonResponse({"seen": _exists(name), "route": choose_read_alias()})


def read(request: HttpRequest, name: str) -> HttpResponse:
    return JsonResponse({"seen": _exists(name), "route": choose_read_alias()})


async def async_write_then_read(request: HttpRequest, name: str) -> HttpResponse:
    await Category.objects.acreate(name=name, slug=name)
    seen = await Category.objects.filter(name=name).aexists()
    return JsonResponse({"seen": seen})


async def async_read(request: HttpRequest, name: str) -> HttpResponse:
    return JsonResponse({"seen": await Category.objects.filter(name=name).aexists()})


urlpatterns = [
    path("t/write/<slug:name>/", write_then_read),
    path("t/read/<slug:name>/", read),
    path("t/async-write/<slug:name>/", async_write_then_read),
    path("t/async-read/<slug:name>/", async_read),
    path("", include("resee.urls")),
]


# -- fixtures --------------------------------------------------------------------------------------

NAIVE = "tests.test_routers.NaiveReplicaRouter"
STICKY = "resee_perf.routers.StickyReplicaRouter"
SETUPS = {
    # router, with the middleware?
    "sticky": (STICKY, True),
    "naive": (NAIVE, False),
    "no-middleware": (STICKY, False),
}


@pytest.fixture(params=list(SETUPS))
def setup(request: pytest.FixtureRequest) -> Iterator[str]:
    router, with_middleware = SETUPS[request.param]
    middleware = [MIDDLEWARE, *BASE_MIDDLEWARE] if with_middleware else BASE_MIDDLEWARE
    with override_settings(DATABASE_ROUTERS=[router], MIDDLEWARE=middleware, ROOT_URLCONF=__name__):
        yield request.param


@pytest.fixture
def sticky() -> Iterator[None]:
    with override_settings(MIDDLEWARE=[MIDDLEWARE, *BASE_MIDDLEWARE], ROOT_URLCONF=__name__):
        yield


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    caches["default"].clear()  # our own Redis database (REDIS_URL)
    yield
    caches["default"].clear()


# -- across requests -------------------------------------------------------------------------------


def test_the_next_request_sees_the_write_through_a_cached_endpoint(
    replica_control: Replica, setup: str
) -> None:
    """Complete a review, then list today's reviews (a cache_aside endpoint whose entry the
    completion invalidates): the list must no longer hold the completed review."""
    schedule = due_schedule("next")
    wait_caught_up()
    replica_control.lag(LAG_SECONDS)
    api = api_for(schedule.user)
    assert fresh_context(lambda: api.get("/api/review/today/")).json()["count"] == 1

    done = fresh_context(
        lambda: api.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})
    )
    assert done.status_code == 200
    count = fresh_context(lambda: api.get("/api/review/today/")).json()["count"]

    # Without the middleware the invalidation's write position (test_routers_cache.py) still
    # sends the recompute to the primary; the naive router ignores it and serves stale data.
    assert count == (1 if setup == "naive" else 0)
    assert (COOKIE in done.cookies) == (setup == "sticky")


def test_the_next_request_sees_the_write(replica_control: Replica, setup: str) -> None:
    """No cache here: only the cookie can carry the write over to the next request."""
    replica_control.lag(LAG_SECONDS)
    client = Client()
    assert fresh_context(lambda: client.post("/t/write/next/")).status_code == 200
    seen = fresh_context(lambda: client.get("/t/read/next/")).json()["seen"]
    assert seen == (setup == "sticky")


def test_a_write_and_a_read_in_the_same_request(lagging_replica: Replica, setup: str) -> None:
    response = fresh_context(lambda: Client().post("/t/write/same/"))
    assert response.json()["seen"] == (setup != "naive")


def test_the_cookie_holds_the_write_position_and_is_dropped_once_replayed(
    lagging_replica: Replica, sticky: None
) -> None:
    client = Client()
    response = fresh_context(lambda: client.post("/t/write/position/"))
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["max-age"] == 15

    request = HttpRequest()
    request.COOKIES[COOKIE] = cookie.value
    position = read_position(request)
    assert position is not None
    assert position.lsn is not None
    assert lagging_replica.replay_lsn() < position.lsn <= lagging_replica.primary_lsn()

    body = fresh_context(lambda: client.get("/t/read/position/")).json()
    assert body == {"seen": True, "route": [DEFAULT_DB_ALIAS, "catching_up"]}

    # Replayed: the same cookie now reads from the replica, long before a 15 s time window
    # would have let it.
    lagging_replica.lag(0)
    wait_caught_up()
    time.sleep(0.05)  # one REPLICA_CHECK_INTERVAL of these tests
    body = fresh_context(lambda: client.get("/t/read/position/")).json()
    assert body == {"seen": True, "route": [ALIAS, "replica"]}


def test_a_request_that_only_reads_sets_no_cookie(replica: Replica, sticky: None) -> None:
    response = fresh_context(lambda: Client().get("/t/read/nothing/"))
    assert response.json()["route"] == [ALIAS, "replica"]
    assert COOKIE not in response.cookies


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        "x" * 5000,
        signing.dumps({"l": "0/0", "t": 0}, salt="another salt"),
        signing.dumps({"l": "FFFFFFFF/FFFFFFFF", "t": 0}, key="not the secret key"),
    ],
    ids=["garbage", "empty", "huge", "other-salt", "forged"],
)
def test_a_bad_cookie_is_ignored(replica: Replica, sticky: None, value: str) -> None:
    client = Client()
    client.cookies[COOKIE] = value
    response = fresh_context(lambda: client.get("/t/read/bad-cookie/"))
    assert response.status_code == 200
    assert response.json()["route"] == [ALIAS, "replica"]


@pytest.mark.parametrize(
    "payload",
    [[1, 2], {"l": 5, "t": 0}, {"l": "zz", "t": 0}, {"l": "0/1"}, {"l": None, "t": True}],
    ids=["list", "lsn-int", "lsn-garbage", "no-time", "time-bool"],
)
def test_a_signed_but_malformed_cookie_is_ignored(payload: Any) -> None:
    request = HttpRequest()
    request.COOKIES[COOKIE] = signing.dumps(
        payload, salt="resee_perf.middleware.StickyReadsMiddleware"
    )
    assert read_position(request) is None


class SignedAMinuteAgo(signing.TimestampSigner):
    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - 60)


def test_an_expired_cookie_is_ignored() -> None:
    """Older than max(STICKY_SECONDS, REPLICA_MAX_LAG_SECONDS), whatever the client keeps."""
    salt = "resee_perf.middleware.StickyReadsMiddleware"
    payload = {"l": "0/1", "t": 0}
    fresh, old = HttpRequest(), HttpRequest()
    fresh.COOKIES[COOKIE] = signing.TimestampSigner(salt=salt).sign_object(payload)
    old.COOKIES[COOKIE] = SignedAMinuteAgo(salt=salt).sign_object(payload)
    assert read_position(fresh) is not None
    assert read_position(old) is None


def test_inside_a_transaction_the_position_is_unknown(replica: Replica) -> None:
    assert _replicas.primary_lsn() is not None
    with transaction.atomic():
        assert _replicas.primary_lsn() is None


# -- async views ----------------------------------------------------------------------------------


def test_async_views_see_their_writes_in_the_request_and_the_next(
    lagging_replica: Replica, sticky: None
) -> None:
    async def requests() -> tuple[bool, bool, bool]:
        client = AsyncClient()
        stranger = AsyncClient()
        wrote = await client.post("/t/async-write/async-mw/")
        assert COOKIE in wrote.cookies
        mine = (await client.get("/t/async-read/async-mw/")).json()["seen"]
        theirs = (await stranger.get("/t/async-read/async-mw/")).json()["seen"]
        return wrote.json()["seen"], mine, theirs

    # The client that wrote sees it, in the request and the next; another client, without
    # the cookie, reads from the lagging replica.
    assert fresh_context(lambda: asyncio.run(requests())) == (True, True, False)


def test_concurrent_async_requests_route_independently(
    replica_control: Replica, sticky: None
) -> None:
    Category.objects.create(name="old", slug="old")
    wait_caught_up()
    replica_control.lag(LAG_SECONDS)

    async def requests() -> list[Any]:
        return list(
            await asyncio.gather(
                AsyncClient().post("/t/async-write/concurrent/"),
                *(AsyncClient().get("/t/read/old/") for _ in range(3)),
            )
        )

    wrote, *reads = fresh_context(lambda: asyncio.run(requests()))
    assert wrote.json()["seen"] is True
    assert [r.json()["route"] for r in reads] == [[ALIAS, "replica"]] * 3


# -- failures -------------------------------------------------------------------------------------


def test_a_stopped_replica_costs_the_user_nothing(replica_control: Replica, sticky: None) -> None:
    schedule = due_schedule("stopped")
    wait_caught_up()
    api = api_for(schedule.user)
    replica_control.stop()
    for url in ("/api/review/today/", "/api/analytics/stats/", "/api/categories/"):
        caches["default"].clear()
        response = fresh_context(lambda url=url: api.get(url))  # type: ignore[misc]
        assert response.status_code == 200, url
    done = fresh_context(
        lambda: api.post(f"/api/review/complete/{schedule.pk}/", {"result": "forgot"})
    )
    assert done.status_code == 200
    with CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary:
        assert fresh_context(lambda: api.get("/api/review/today/")).status_code == 200
    assert on_primary.captured_queries
