"""System checks of cache_aside (E010, W010) and that `manage.py check` fails on them."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from resee_perf import cache_aside
from resee_perf.checks import check_cache_aside, check_cluster_key_prefix


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


CLUSTER = {
    "BACKEND": "resee_perf.cluster.RedisClusterCache",
    "LOCATION": "redis://127.0.0.1:7000",
    "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
}


@pytest.mark.parametrize(
    ("cache_prefix", "resee_prefix", "named"),
    [
        ("{app}", "t", "CACHES['cluster']['KEY_PREFIX']"),
        ("app", "{t}", "RESEE_PERF['KEY_PREFIX']"),
        ("app}", "t", "CACHES['cluster']['KEY_PREFIX']"),
    ],
)
def test_w012_a_brace_in_a_cluster_key_prefix(
    settings: Any, cache_prefix: str, resee_prefix: str, named: str
) -> None:
    settings.CACHES = {**settings.CACHES, "cluster": {**CLUSTER, "KEY_PREFIX": cache_prefix}}
    settings.RESEE_PERF = {**settings.RESEE_PERF, "KEY_PREFIX": resee_prefix}
    # Only the "cluster" alias: on the cluster topology (RESEE_TEST_REDIS=cluster) the default
    # cache is one too, and a brace in RESEE_PERF's prefix concerns it as well.
    [warning] = [m for m in check_cluster_key_prefix() if "CACHES['cluster']" in m.msg]
    assert warning.id == "resee_perf.W012"
    assert named in warning.msg
    assert "one slot" in warning.msg


def test_w012_braces_are_fine_on_one_redis_and_absent_prefixes_on_a_cluster(
    settings: Any,
) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "cluster": {**CLUSTER, "KEY_PREFIX": "app"},
        "single": {"BACKEND": "django_redis.cache.RedisCache", "KEY_PREFIX": "{app}"},
    }
    assert check_cluster_key_prefix() == []
