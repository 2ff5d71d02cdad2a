"""``RESEE_PERF['CACHE_ENABLED']``, the kill switch of ``cache_aside``: off, every call runs the
body without a single Redis command (counted on a private redis-server, whose INFO
commandstats sees nobody else's traffic) and counts as ``bypass``; invalidations keep running,
so that switching caching back on serves no entry a write made stale meanwhile.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.cache import caches
from django.db import transaction
from django.test import override_settings

from resee_perf import cache_aside, invalidate_on, invalidate_tags, testing
from resee_perf._tag_invalidation import bump_generations
from resee_perf.cache import CachedFunction
from resee_perf.checks import check_settings
from tests.test_cache import Counter, requests_counted
from tests.test_cache_redis_server import PrivateRedis, commands
from tests.test_cache_redis_server import private_redis as private_redis  # the fixture

RESULTS = ("hit", "stale", "early", "wait", "miss", "bypass", "error")


@pytest.fixture(autouse=True)
def resee_settings(settings: Any) -> dict[str, Any]:
    settings.RESEE_PERF = {"KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}"}
    return settings.RESEE_PERF  # type: ignore[no-any-return]


def switch(settings: Any, enabled: bool) -> None:
    """Flip the switch as a deploy of settings would: a new RESEE_PERF dict (setting_changed)."""
    settings.RESEE_PERF = {**settings.RESEE_PERF, "CACHE_ENABLED": enabled}


def counts(name: str) -> dict[str, float]:
    return {result: requests_counted(name, result) for result in RESULTS}


def delta(before: dict[str, float], name: str) -> dict[str, float]:
    after = counts(name)
    return {result: after[result] - before[result] for result in RESULTS}


def test_disabled_runs_the_body_every_call_without_one_redis_command(
    private_redis: PrivateRedis, settings: Any
) -> None:
    count = Counter()
    tags = ["user:{user_id}"]

    @cache_aside("switch:{user_id}", ttl=60, tags=tags, stale_ttl=30, cache="private")
    def stats(user_id: int) -> dict[str, int]:
        return {"user": user_id, "run": count()}

    @cache_aside("switch-async:{user_id}", ttl=60, tags=tags, cache="private")
    async def stats_async(user_id: int) -> dict[str, int]:
        return {"user": user_id, "run": count()}

    assert stats(1) == stats(1) == {"user": 1, "run": 1}  # an entry the calls below could hit
    admin = private_redis.client()
    switch(settings, enabled=False)
    admin.config_resetstat()
    before = counts(stats._aside.name)
    before_async = counts(stats_async._aside.name)
    assert [stats(1)["run"] for _ in range(20)] == list(range(2, 22))

    async def twice() -> list[dict[str, int]]:
        return [await stats_async(1), await stats_async(1)]

    assert [value["run"] for value in asyncio.run(twice())] == [22, 23]
    assert stats.cache_key(1).endswith(":c:1:switch:{1}")  # a key, still, without Redis
    assert commands(admin) == {}
    assert delta(before, stats._aside.name) == {**dict.fromkeys(RESULTS, 0.0), "bypass": 20}
    assert delta(before_async, stats_async._aside.name) == {
        **dict.fromkeys(RESULTS, 0.0),
        "bypass": 2,
    }

    switch(settings, enabled=True)
    assert stats(1) == {"user": 1, "run": 1}  # the entry was neither read nor overwritten
    assert commands(admin) == {"mget": 1}


def test_override_settings_toggles_the_switch_mid_process(settings: Any) -> None:
    count = Counter()

    @cache_aside("toggle:{x}", ttl=60)
    def toggled(x: int) -> int:
        return count()

    assert toggled(1) == toggled(1) == 1
    current = {**settings.RESEE_PERF, "CACHE_ENABLED": False}
    with override_settings(RESEE_PERF=current):
        assert toggled(1) == 2
        assert toggled(1) == 3
        with override_settings(RESEE_PERF={**current, "CACHE_ENABLED": True}):
            assert toggled(1) == 1
        assert toggled(1) == 4
    assert toggled(1) == 1


# --- invalidations keep running while disabled ------------------------------------------------


@pytest.fixture
def registry() -> Iterator[None]:
    """``invalidate_on`` registrations made by a test do not outlive it."""
    with testing.isolated_registrations():
        yield


def rename_with_invalidate_on(group: Group, name: CachedFunction[[int], str]) -> None:
    group.name = "after"
    group.save()  # the invalidate_on receiver, after the commit


def rename_with_invalidate_tags(group: Group, name: CachedFunction[[int], str]) -> None:
    with transaction.atomic():
        Group.objects.filter(pk=group.pk).update(name="after")
        invalidate_tags(f"group:{group.pk}")


def rename_with_bump_generations(group: Group, name: CachedFunction[[int], str]) -> None:
    Group.objects.filter(pk=group.pk).update(name="after")
    bump_generations(caches["default"], [f"group:{group.pk}"])


def rename_with_invalidate(group: Group, name: CachedFunction[[int], str]) -> None:
    with transaction.atomic():
        Group.objects.filter(pk=group.pk).update(name="after")
        assert name.invalidate(group.pk) is True  # a tombstone now, and again on commit


def rename_with_refresh(group: Group, name: CachedFunction[[int], str]) -> None:
    Group.objects.filter(pk=group.pk).update(name="after")
    assert name.refresh(group.pk) == "after"  # stores nothing, invalidates instead


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("registry")
@pytest.mark.parametrize(
    "write",
    [
        rename_with_invalidate_on,
        rename_with_invalidate_tags,
        rename_with_bump_generations,
        rename_with_invalidate,
        rename_with_refresh,
    ],
    ids=lambda write: write.__name__.removeprefix("rename_with_"),
)
def test_a_write_while_disabled_is_not_served_stale_once_enabled_again(
    settings: Any, write: Callable[[Group, CachedFunction[[int], str]], None]
) -> None:
    invalidate_on(Group, tags=lambda group: [f"group:{group.pk}"])
    group = Group.objects.create(name="before")

    @cache_aside("group-name:{pk}", ttl=60, tags=["group:{pk}"])
    def name(pk: int) -> str:
        return Group.objects.get(pk=pk).name

    assert name(group.pk) == "before"
    assert name(group.pk) == "before"  # cached
    switch(settings, enabled=False)
    write(group, name)
    assert name(group.pk) == "after"  # bypass: the database
    switch(settings, enabled=True)
    assert name(group.pk) == "after"


def test_a_bad_value_is_a_system_check_error() -> None:
    with override_settings(RESEE_PERF={"CACHE_ENABLED": "off"}):
        [error] = check_settings()
    assert error.id == "resee_perf.E002"
    assert error.msg == "RESEE_PERF['CACHE_ENABLED'] should be True or False, not 'off'."
