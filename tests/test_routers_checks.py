"""System checks of the router: resee_perf.E020-E021, W020-W024, E040-E041, W040."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from resee_perf.checks import check_router
from resee_perf.routers import StickyReplicaRouter

ROUTER = "resee_perf.routers.StickyReplicaRouter"
MIDDLEWARE = "resee_perf.middleware.StickyReadsMiddleware"
SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"


def ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return sorted(message.id or "" for message in check_router())


def test_a_complete_setup_passes() -> None:
    assert (
        ids(
            DATABASE_ROUTERS=[ROUTER],
            MIDDLEWARE=[MIDDLEWARE, SESSIONS],
            RESEE_PERF={"REPLICAS": ["replica"]},
        )
        == []
    )


def test_nothing_to_say_without_the_router() -> None:
    assert ids(DATABASE_ROUTERS=[], MIDDLEWARE=[SESSIONS], RESEE_PERF={}) == []


def test_e020_a_replica_alias_missing_from_databases() -> None:
    with override_settings(
        DATABASE_ROUTERS=[ROUTER],
        MIDDLEWARE=[MIDDLEWARE],
        RESEE_PERF={"REPLICAS": ["replica", "replcia"]},
    ):
        [error] = check_router()
    assert error.id == "resee_perf.E020"
    assert "'replcia'" in error.msg
    assert error.hint is not None
    assert "replica" in error.hint


def test_e021_the_primary_listed_as_a_replica() -> None:
    assert ids(
        DATABASE_ROUTERS=[ROUTER], MIDDLEWARE=[MIDDLEWARE], RESEE_PERF={"REPLICAS": ["default"]}
    ) == ["resee_perf.E021"]


def test_w020_router_without_middleware() -> None:
    assert ids(
        DATABASE_ROUTERS=[ROUTER], MIDDLEWARE=[SESSIONS], RESEE_PERF={"REPLICAS": ["replica"]}
    ) == ["resee_perf.W020"]


def test_w021_middleware_without_router() -> None:
    assert ids(DATABASE_ROUTERS=[], MIDDLEWARE=[MIDDLEWARE], RESEE_PERF={}) == ["resee_perf.W021"]


def test_w022_router_without_replicas() -> None:
    assert ids(DATABASE_ROUTERS=[ROUTER], MIDDLEWARE=[MIDDLEWARE], RESEE_PERF={}) == [
        "resee_perf.W022"
    ]


def test_w023_middleware_below_sessions() -> None:
    assert ids(
        DATABASE_ROUTERS=[ROUTER],
        MIDDLEWARE=[SESSIONS, MIDDLEWARE],
        RESEE_PERF={"REPLICAS": ["replica"]},
    ) == ["resee_perf.W023"]


def test_w024_a_replica_without_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Added to the DATABASES dict, not overridden: Django warns about overriding DATABASES.
    monkeypatch.setitem(
        settings.DATABASES, "slow", {**settings.DATABASES["replica"], "OPTIONS": {}}
    )
    monkeypatch.setitem(
        settings.DATABASES,
        "other_engine",
        {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    )
    complete = {"DATABASE_ROUTERS": [ROUTER], "MIDDLEWARE": [MIDDLEWARE]}
    with override_settings(**complete, RESEE_PERF={"REPLICAS": ["replica", "slow"]}):
        [warning] = check_router()
    assert warning.id == "resee_perf.W024"
    assert "'slow'" in warning.msg
    assert warning.hint is not None
    assert "connect_timeout" in warning.hint
    # Given (the test settings give the replica 2 s), or not PostgreSQL: nothing to say.
    assert ids(**complete, RESEE_PERF={"REPLICAS": ["replica", "other_engine"]}) == []


class CustomRouter(StickyReplicaRouter):
    pass


def test_subclasses_and_router_instances_count_as_the_router() -> None:
    settings = {"MIDDLEWARE": [MIDDLEWARE], "RESEE_PERF": {"REPLICAS": ["replica"]}}
    assert ids(DATABASE_ROUTERS=["tests.test_routers_checks.CustomRouter"], **settings) == []
    assert ids(DATABASE_ROUTERS=[CustomRouter()], **settings) == []


def test_a_malformed_replicas_setting_is_left_to_e002() -> None:
    assert ids(DATABASE_ROUTERS=[], MIDDLEWARE=[], RESEE_PERF={"REPLICAS": "replica"}) == []


def test_the_router_check_runs_with_manage_py_check() -> None:
    with (
        override_settings(RESEE_PERF={"REPLICAS": ["nowhere"]}),
        pytest.raises(SystemCheckError, match=r"resee_perf\.E020"),
    ):
        call_command("check")


def test_the_example_project_routes_to_its_replica_when_it_has_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.example.test_project import load_settings

    settings = load_settings(
        monkeypatch,
        DATABASE_URL="postgres://app@db:5432/resee",
        REPLICA_DATABASE_URL="postgres://app@replica:5432/resee",
    )
    assert settings.DATABASE_ROUTERS == [ROUTER]
    assert settings.MIDDLEWARE.index(MIDDLEWARE) < settings.MIDDLEWARE.index(SESSIONS)
    assert settings.RESEE_PERF["REPLICAS"] == ["replica"]

    settings = load_settings(monkeypatch, DATABASE_URL="postgres://app@db:5432/resee")
    assert not hasattr(settings, "DATABASE_ROUTERS")
    assert MIDDLEWARE not in settings.MIDDLEWARE
    assert "REPLICAS" not in settings.RESEE_PERF


def weight_messages(weights: Any, replicas: list[str] | None = None) -> list[Any]:
    resee_perf = {"REPLICAS": replicas or ["replica", "replica_b"], "REPLICA_WEIGHTS": weights}
    with override_settings(
        DATABASE_ROUTERS=[ROUTER], MIDDLEWARE=[MIDDLEWARE], RESEE_PERF=resee_perf
    ):
        return [message for message in check_router() if message.id != "resee_perf.W024"]


def test_sound_weights_pass() -> None:
    assert weight_messages({"replica": 3, "replica_b": 1}) == []
    assert weight_messages({"replica": 0, "replica_b": 0.5}) == []  # one drained


def test_e040_a_weight_for_an_alias_not_in_replicas() -> None:
    [error] = weight_messages({"replica": 1, "replcia_b": 2})
    assert error.id == "resee_perf.E040"
    assert "'replcia_b'" in error.msg
    assert "replica_b" in error.hint


def test_e041_a_negative_or_non_numeric_weight() -> None:
    errors = weight_messages({"replica": -1, "replica_b": "2"})
    assert [error.id for error in errors] == ["resee_perf.E041", "resee_perf.E041"]
    assert "['REPLICA_WEIGHTS']['replica'] should be a non-negative number, not -1" in errors[0].msg
    assert "not '2'" in errors[1].msg


def test_w040_every_replica_weighs_zero() -> None:
    [warning] = weight_messages({"replica": 0, "replica_b": 0})
    assert warning.id == "resee_perf.W040"


def test_a_malformed_weights_setting_is_left_to_e002() -> None:
    assert weight_messages(["replica"]) == []


def test_a_bad_weight_is_a_configuration_error_at_runtime_too() -> None:
    from django.core.exceptions import ImproperlyConfigured

    from resee_perf._replicas import routing_settings

    with (
        override_settings(RESEE_PERF={"REPLICAS": ["replica"], "REPLICA_WEIGHTS": {"replica": -2}}),
        pytest.raises(ImproperlyConfigured, match=r"\['REPLICA_WEIGHTS'\]\['replica'\]"),
    ):
        routing_settings()
    with override_settings(
        RESEE_PERF={"REPLICAS": ["replica", "replica2"], "REPLICA_WEIGHTS": {"replica": 2}}
    ):
        settings_ = routing_settings()
    assert dict(settings_.weights) == {"replica": 2.0, "replica2": 1.0}
    assert settings_.in_rotation == ("replica", "replica2")


def test_bad_weights_fail_manage_py_check() -> None:
    with (
        override_settings(
            RESEE_PERF={"REPLICAS": ["replica"], "REPLICA_WEIGHTS": {"replica": -1, "nope": 1}}
        ),
        pytest.raises(
            SystemCheckError,
            match=r"resee_perf\.E040(.|\n)*resee_perf\.E041|resee_perf\.E041(.|\n)*resee_perf\.E040",
        ),
    ):
        call_command("check")
