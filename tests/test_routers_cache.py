"""The cache and the replica together: a recompute right after an invalidating write must not
fill the cache from a replica that has not replayed the write (real Redis, real replica with
2 s of lag).

The client that recomputes here is another device of the same user: it has no cookie, so only
the write position recorded with the invalidation can send its recompute to the primary.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, transaction
from django.test import override_settings

from content.models import Category
from resee_perf import _freshness, _replicas
from resee_perf.cache import cache_aside
from resee_perf.invalidation import invalidate_tags
from resee_perf.routers import choose_read_alias, routing_scope
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


@pytest.fixture(autouse=True)
def _sticky_and_empty_cache() -> Iterator[None]:
    caches["default"].clear()  # our own Redis database (REDIS_URL)
    with override_settings(MIDDLEWARE=[MIDDLEWARE, *BASE_MIDDLEWARE]):
        yield
    caches["default"].clear()


@pytest.fixture(params=["positions", "no-positions"])
def positions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """With the write positions, and without them (the proof that the tests can fail)."""
    if request.param == "no-positions":
        monkeypatch.setattr(_freshness, "record", lambda cache, tags: None)
    return bool(request.param == "positions")


def test_another_device_does_not_cache_what_the_replica_has_not_replayed(
    replica_control: Replica, positions: bool
) -> None:
    schedule = due_schedule("two-devices")
    user = schedule.user
    wait_caught_up()
    replica_control.lag(LAG_SECONDS)
    phone, laptop = api_for(user), api_for(user)
    assert fresh_context(lambda: laptop.get("/api/review/today/")).json()["count"] == 1

    done = fresh_context(
        lambda: phone.post(f"/api/review/complete/{schedule.pk}/", {"result": "remembered"})
    )
    assert done.status_code == 200
    # The laptop has no cookie: its miss recomputes on the replica unless the position that
    # the invalidation recorded sends it to the primary.
    first = fresh_context(lambda: laptop.get("/api/review/today/")).json()["count"]
    replica_control.lag(0)
    wait_caught_up()
    # The replica has caught up; whatever the recompute stored is still what is served.
    later = fresh_context(lambda: laptop.get("/api/review/today/")).json()["count"]

    assert (first, later) == ((0, 0) if positions else (1, 1))


@cache_aside("test:category-names", ttl=300, tags=["categories"])
def category_names() -> list[str]:
    return sorted(Category.objects.values_list("name", flat=True))


def test_a_shared_entry_is_recomputed_from_the_primary_right_after_the_write(
    lagging_replica: Replica, positions: bool
) -> None:
    with routing_scope():
        assert category_names() == []
    with routing_scope(), transaction.atomic():
        Category.objects.create(name="New", slug="new")
        invalidate_tags("categories")  # runs after the commit
    # Another request, with no write of its own.
    with routing_scope():
        assert category_names() == (["New"] if positions else [])


def test_entries_without_a_recent_invalidation_still_recompute_on_the_replica(
    replica: Replica,
) -> None:
    with routing_scope(), transaction.atomic():
        Category.objects.create(name="Old", slug="old")
        invalidate_tags("categories")
    wait_caught_up()
    with routing_scope():
        # Polled after the write: the replica has replayed the recorded position.
        _replicas.forget()
        with _freshness.reads_after(caches["default"], ["categories"]):
            assert choose_read_alias() == (ALIAS, "replica")


@pytest.mark.parametrize("alias", ["default", "locmem"], ids=["redis-lua", "no-compare-and-set"])
def test_the_larger_position_is_kept(replica: Replica, alias: str) -> None:
    cache = caches[alias]
    key = _freshness.position_key("t")
    cache.set(key, 10**15)
    _freshness.record(cache, ["t"])
    assert cache.get(key) == 10**15
    cache.delete(key)
    _freshness.record(cache, ["t"])
    recorded = cache.get(key)
    assert isinstance(recorded, int)
    assert recorded <= replica.primary_lsn()


def test_nothing_is_recorded_without_replicas(replica: Replica) -> None:
    cache = caches["default"]
    with override_settings(RESEE_PERF={}):
        _freshness.record(cache, ["t"])
    assert cache.get(_freshness.position_key("t")) is None


def test_a_cache_error_sends_the_recompute_to_the_primary(replica: Replica) -> None:
    down = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
    with override_settings(CACHES={**caches.settings, "down": down}), routing_scope():
        with _freshness.reads_after(caches["down"], ["t"]):
            assert choose_read_alias() == (DEFAULT_DB_ALIAS, "forced")
        assert choose_read_alias() == (ALIAS, "replica")
