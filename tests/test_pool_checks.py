"""System checks of the connection budget: every id E030-E034 / W030-W036, and that Django
runs them (W030 and the other deploy checks only with ``check --deploy``).

The checks take DATABASES as an argument, so these tests need not override DATABASES (which
Django warns against). W030 and W036 against live servers are in test_pool_live.py.
"""

from __future__ import annotations

import sys
from typing import Any

import django
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from resee_perf.checks import (
    check_connection_budget,
    check_connections,
    connection_budget_messages,
    connection_messages,
)
from tests.test_pool import before_native_pool_only, databases_setting, native_pool_only

PG = "django.db.backends.postgresql"


def db(host: str = "db1", **extra: Any) -> dict[str, Any]:
    return {"ENGINE": PG, "NAME": "resee", "USER": "app", "HOST": host, "PORT": 5432, **extra}


def messages(
    databases: dict[str, Any], deployment: dict[str, Any] | None = None, *, asgi: bool = False
) -> list[Any]:
    user = {} if deployment is None else {"DEPLOYMENT": deployment}
    return connection_messages(databases, user, settings_asgi=asgi)


def deploy_messages(
    databases: dict[str, Any], deployment: dict[str, Any] | None = None, *, asgi: bool = False
) -> list[Any]:
    user = {} if deployment is None else {"DEPLOYMENT": deployment}
    return connection_budget_messages(databases, user, settings_asgi=asgi)


def ids(found: list[Any]) -> list[str]:
    return [message.id for message in found]


@pytest.mark.parametrize(
    "replica",
    [
        pytest.param({"CONN_MAX_AGE": 0}, id="closing"),
        pytest.param(
            {"OPTIONS": {"pool": {"min_size": 4, "max_size": 4}}}, id="pool", marks=native_pool_only
        ),
    ],
)
def test_a_sound_configuration_passes_both(replica: dict[str, Any]) -> None:
    databases = {
        "default": db(CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True),
        "replica": db("replica", **replica),
    }
    deployment = {"web_workers": 4, "threads_per_worker": 4, "max_connections": 100}
    assert messages(databases, deployment) == []
    assert deploy_messages(databases, deployment) == []


# -- E030: the DEPLOYMENT setting ------------------------------------------------------------


@pytest.mark.parametrize(
    ("deployment", "message"),
    [
        ({"web_workers": -2}, "['web_workers'] should be a non-negative integer, not -2."),
        ({"threads_per_worker": 0}, "['threads_per_worker'] should be a positive integer"),
        ({"web_worker": 2}, "has an unknown key 'web_worker'"),
        ({"extra_clients": {"cron": {"procs": 1}}}, "Client 'cron' has unknown keys ['procs']"),
        ({"web_aliases": ["replica"]}, "['web_aliases'] names the database alias 'replica'"),
        ({"max_connections": {"primary": 100}}, "has the key 'primary', which is neither"),
    ],
)
def test_e030_names_the_bad_deployment_key(deployment: dict[str, Any], message: str) -> None:
    [error] = messages({"default": db()}, deployment)
    assert error.id == "resee_perf.E030"
    assert message in error.msg
    assert error.msg.startswith("RESEE_PERF['DEPLOYMENT']")


def test_e030_accepts_servers_and_aliases_as_capacity_keys() -> None:
    deployment = {"max_connections": {"db1:5432": 100, "default": 100}}
    assert messages({"default": db()}, deployment) == []


def test_e030_makes_manage_py_check_fail() -> None:
    with (
        override_settings(RESEE_PERF={"DEPLOYMENT": {"celery_pool": "fork"}}),
        pytest.raises(SystemCheckError, match=r"resee_perf\.E030"),
    ):
        call_command("check")


# -- E031-E034: pools ------------------------------------------------------------------------


@native_pool_only
def test_e031_pool_with_persistent_connections() -> None:
    [error] = messages({"default": db(CONN_MAX_AGE=60, OPTIONS={"pool": True})})
    assert error.id == "resee_perf.E031"
    assert "Pooling doesn't support persistent connections." in error.msg
    assert messages({"default": db(CONN_MAX_AGE=0, OPTIONS={"pool": True})}) == []


@native_pool_only
def test_e032_impossible_pool_sizes() -> None:
    [error] = messages({"default": db(OPTIONS={"pool": {"min_size": 8, "max_size": 4}})})
    assert error.id == "resee_perf.E032"
    assert "DATABASES['default']['OPTIONS']['pool']['max_size']" in error.msg


@before_native_pool_only
def test_e033_pool_needs_django_51() -> None:
    [error] = messages({"default": db(OPTIONS={"pool": True})})
    assert error.id == "resee_perf.E033"
    assert error.msg == (
        "DATABASES['default']['OPTIONS']['pool'] is set, but Django's native pool needs "
        f"Django 5.1 or newer (this is {django.get_version()})."
    )
    # A pool that cannot exist is reported once, whatever else is wrong with it.
    databases = {"default": db(CONN_MAX_AGE=60, OPTIONS={"pool": {"min_size": 8, "max_size": 4}})}
    assert ids(messages(databases, {"web_workers": 2, "threads_per_worker": 8})) == [
        "resee_perf.E033"
    ]


@native_pool_only
def test_e033_pool_needs_psycopg_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    [error] = messages({"default": db(OPTIONS={"pool": True})})
    assert error.id == "resee_perf.E033"
    assert "psycopg_pool is not installed" in error.msg


@native_pool_only
def test_e034_pool_larger_than_its_server() -> None:
    databases = {"default": db(OPTIONS={"pool": {"min_size": 1, "max_size": 50}})}
    [error] = messages(databases, {"max_connections": 50, "reserved": 3})
    assert error.id == "resee_perf.E034"
    assert "more than its server can ever give (47" in error.msg
    assert messages(databases, {"max_connections": 53, "reserved": 3}) == []


@native_pool_only
def test_w033_pool_smaller_than_the_threads() -> None:
    databases = {"default": db(OPTIONS={"pool": {"min_size": 1, "max_size": 2}})}
    [warning] = messages(databases, {"web_workers": 2, "threads_per_worker": 8})
    assert warning.id == "resee_perf.W033"
    assert "6 threads can wait" in warning.msg


@native_pool_only
def test_w034_pool_min_size_above_the_threads() -> None:
    databases = {"default": db(OPTIONS={"pool": True})}
    [warning] = messages(databases, {"celery_workers": 1, "celery_concurrency": 4})
    assert warning.id == "resee_perf.W034"
    assert "each celery process has 1 thread but a pool with min_size 4" in warning.msg


# -- W031, W032: known-bad combinations ------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"CONN_MAX_AGE": 0}, id="closing"),
        pytest.param({"OPTIONS": {"pool": True}}, id="pool", marks=native_pool_only),
    ],
)
def test_w031_persistent_connections_under_asgi(other: dict[str, Any]) -> None:
    databases = {"default": db(CONN_MAX_AGE=60), "other": db("b", **other)}
    [warning] = messages(databases, asgi=True)
    assert warning.id == "resee_perf.W031"
    assert "DATABASES['default']" in warning.msg
    # The way out depends on the Django: its native pool, or a pooler in front.
    fix = "PgBouncer" if django.VERSION < (5, 1) else "use OPTIONS['pool']"
    assert fix in warning.hint
    assert messages(databases, asgi=False) == []
    # The deployment's own statement wins over what the settings look like.
    assert ids(messages(databases, {"asgi": True}, asgi=False)) == ["resee_perf.W031"]


def test_w031_is_detected_from_the_settings() -> None:
    with (
        databases_setting({"default": db(CONN_MAX_AGE=60)}),
        override_settings(ASGI_APPLICATION="resee.asgi.application", WSGI_APPLICATION=None),
    ):
        assert ids(check_connections()) == ["resee_perf.W031"]
        with override_settings(WSGI_APPLICATION="resee.wsgi.application"):
            assert check_connections() == []
        with override_settings(RESEE_PERF={"DEPLOYMENT": {"asgi": False}}):
            assert check_connections() == []


@pytest.mark.parametrize(
    ("alias", "deployment"),
    [
        (db(PORT=6432), None),  # PgBouncer's port
        (db(), {"transaction_pooled": ["default"]}),
    ],
)
def test_w032_transaction_pooler_with_server_side_cursors(
    alias: dict[str, Any], deployment: dict[str, Any] | None
) -> None:
    [warning] = messages({"default": alias}, deployment)
    assert warning.id == "resee_perf.W032"
    assert "DISABLE_SERVER_SIDE_CURSORS" in warning.hint
    alias["DISABLE_SERVER_SIDE_CURSORS"] = True
    assert messages({"default": alias}, deployment) == []


# -- deploy checks: W030, W035, W036 ---------------------------------------------------------


def test_w030_budget_over_the_configured_capacity() -> None:
    databases = {"default": db(), "replica": db("replica")}
    deployment: dict[str, Any] = {
        "web_workers": 4,
        "threads_per_worker": 4,
        "headroom": 0.25,  # 16 per server, 20 with the headroom
        "max_connections": {"default": 22, "replica": 23},
    }
    [warning] = deploy_messages(databases, deployment)
    assert warning.id == "resee_perf.W030"
    assert warning.msg == (
        "The connection budget needs 20 connections on db1:5432, which can give 19 "
        "(configured: max_connections minus reserved slots)."
    )
    deployment["max_connections"] = {"default": 23, "replica": 23}
    assert deploy_messages(databases, deployment) == []


def test_w030_not_without_a_capacity_to_compare_with() -> None:
    deployment = {"web_workers": 400, "threads_per_worker": 4}
    assert deploy_messages({"default": db()}, deployment) == []


def test_w035_persistent_connections_without_health_checks() -> None:
    [warning] = deploy_messages({"default": db(CONN_MAX_AGE=None)})
    assert warning.id == "resee_perf.W035"
    assert "CONN_HEALTH_CHECKS" in warning.hint
    assert deploy_messages({"default": db(CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True)}) == []


def test_w036_unreachable_server_when_asked_to_query() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    databases = {"default": db("127.0.0.1", PORT=1)}
    deployment = {"web_workers": 1, "query_servers": True}
    [warning] = deploy_messages(databases, deployment)
    assert warning.id == "resee_perf.W036"
    assert "Could not ask 127.0.0.1:1" in warning.msg


def test_deploy_checks_run_only_with_deploy() -> None:
    deployment = {"web_workers": 100, "threads_per_worker": 4, "max_connections": 100}
    with (
        databases_setting({"default": db()}),
        override_settings(RESEE_PERF={"DEPLOYMENT": deployment}),
    ):
        assert "resee_perf.W030" in ids(check_connection_budget())
        call_command("check")  # not a deploy check: passes
        with pytest.raises(SystemCheckError, match=r"resee_perf\.W030"):
            call_command("check", deploy=True, fail_level="WARNING")
