"""System checks of cache_aside (E010, W010) and that `manage.py check` fails on them."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from resee_perf import cache_aside
from resee_perf.checks import check_cache_aside


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_the_test_settings_pass() -> None:
    assert check_cache_aside() == []


def test_e010_a_decorated_function_names_a_missing_cache() -> None:
    @cache_aside("k", ttl=60, cache="nope")
    def uses_a_missing_cache() -> int:
        return 1

    [error] = check_cache_aside()
    assert error.id == "resee_perf.E010"
    assert "uses_a_missing_cache" in error.msg
    assert "'nope'" in error.msg
    assert error.hint is not None
    assert "default" in error.hint
    with pytest.raises(SystemCheckError, match=r"resee_perf\.E010"):
        call_command("check")


@pytest.mark.parametrize(
    ("backend", "options", "missing"),
    [
        ("django_redis.cache.RedisCache", {}, "SOCKET_CONNECT_TIMEOUT or SOCKET_TIMEOUT"),
        ("django_redis.cache.RedisCache", {"SOCKET_TIMEOUT": 1}, "SOCKET_CONNECT_TIMEOUT"),
        ("django.core.cache.backends.redis.RedisCache", {"socket_timeout": 1}, "connect_timeout"),
    ],
)
def test_w010_a_redis_cache_without_socket_timeouts(
    settings: Any, backend: str, options: dict[str, Any], missing: str
) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "slowpoke": {
            "BACKEND": backend,
            "LOCATION": "redis://127.0.0.1:6379/3",
            "OPTIONS": options,
        },
    }

    @cache_aside("k", ttl=60, cache="slowpoke")
    def uses_it() -> int:
        return 1

    [warning] = check_cache_aside()
    assert warning.id == "resee_perf.W010"
    assert "CACHES['slowpoke']" in warning.msg
    assert missing in warning.msg


def test_w010_looks_at_the_default_cache_alias_too(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "bare": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1/3"},
    }
    settings.RESEE_PERF = {"CACHE_ALIAS": "bare"}
    assert ids(check_cache_aside()) == ["resee_perf.W010"]


def test_other_backends_need_no_timeouts(settings: Any) -> None:
    @cache_aside("k", ttl=60, cache="locmem")
    def local() -> int:
        return 1

    assert check_cache_aside() == []
