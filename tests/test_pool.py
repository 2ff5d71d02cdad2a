"""The connection budget's arithmetic: per server, per alias, per kind of process, and the
recommended settings (checked against the real PostgreSQL).

The live side (what servers report, what happens when the budget is exceeded) is in
test_pool_live.py, against a throwaway cluster with max_connections = 20.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import DEFAULT_DB_ALIAS, ConnectionHandler, ProgrammingError
from django.test import override_settings

from resee_perf.conf import conf
from resee_perf.pool import (
    Deployment,
    PoolUnavailable,
    budget_from_settings,
    connection_budget,
    recommended_database,
)

PG = "django.db.backends.postgresql"

native_pool_only = pytest.mark.skipif(
    django.VERSION < (5, 1), reason="Django's native pool is Django 5.1+"
)
before_native_pool_only = pytest.mark.skipif(
    django.VERSION >= (5, 1), reason="Django 5.1+ has the native pool"
)


def db(host: str = "db1", port: int | str = 5432, **extra: Any) -> dict[str, Any]:
    return {"ENGINE": PG, "NAME": "resee", "USER": "app", "HOST": host, "PORT": port, **extra}


ONE = {"default": db()}


@contextmanager
def databases_setting(databases: Mapping[str, Any]) -> Iterator[None]:
    """Override DATABASES for code that only reads it (no connection is made)."""
    with warnings.catch_warnings():
        # Django warns that overriding DATABASES does not reconnect; nothing here connects.
        warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
        with override_settings(DATABASES=databases):
            yield


# -- the contract ----------------------------------------------------------------------------


def test_the_contract_example_itemises_per_server() -> None:
    budget = connection_budget(
        web_workers=2, threads_per_worker=2, celery_workers=1, headroom=0.2, databases=ONE
    )
    # 2 workers x 2 threads + 1 Celery process = 5, +20% = 6.
    assert budget.total == 6
    assert dict(budget.per_server) == {"db1:5432": 6}
    assert [(c.client, c.connections) for c in budget.contributions] == [("web", 4), ("celery", 1)]
    assert budget.fits(max_connections=100, reserved=3)
    assert budget.fits(max_connections=9, reserved=3)
    assert not budget.fits(max_connections=8, reserved=3)
    table = str(budget)
    assert "db1:5432 (primary)" in table
    assert "2 workers x 2 threads x 1 connection" in table
    assert "+20% headroom" in table
    assert "total needed: 6 connections" in table


def test_headroom_rounds_up_without_floating_point_surprises() -> None:
    budget = connection_budget(web_workers=3, threads_per_worker=5, headroom=0.2, databases=ONE)
    assert budget.total == 18  # 15 * 1.2 is 18.000000000000004 in floats: not 19.
    budget = connection_budget(web_workers=1, threads_per_worker=1, headroom=0.2, databases=ONE)
    assert budget.total == 2  # 1.2 rounds up: a fraction of a connection is a connection.


def test_the_result_is_immutable() -> None:
    budget = connection_budget(web_workers=1, databases=ONE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.headroom = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        budget.per_server["db1:5432"] = 0  # type: ignore[index]


def test_json_round_trip_keeps_every_contribution() -> None:
    budget = connection_budget(web_workers=2, threads_per_worker=3, celery_workers=1, databases=ONE)
    data = json.loads(budget.to_json())
    assert data["total"] == budget.total
    assert [item["connections"] for item in data["contributions"]] == [6, 1]
    assert data["servers"][0]["needed"] == 9  # ceil(7 * 1.2)


# -- servers and aliases ---------------------------------------------------------------------


def test_aliases_on_one_server_add_up_whatever_the_spelling() -> None:
    databases = {
        "default": db(host="127.0.0.1"),
        "reports": db(host="localhost", NAME="reports"),  # another database, same cluster
        "socket": db(host="", PORT="5432"),  # the Unix socket of the same local server
    }
    budget = connection_budget(web_workers=2, threads_per_worker=4, headroom=0, databases=databases)
    assert dict(budget.per_server) == {"127.0.0.1:5432": 24}  # 8 threads x 3 aliases
    assert budget.servers[0].aliases == ("default", "reports", "socket")
    assert any("are one server" in note for note in budget.notes)


def test_primary_and_replica_are_separate_servers() -> None:
    databases = {"default": db("primary"), "replica": db("replica")}
    budget = connection_budget(
        web_workers=4,
        threads_per_worker=2,
        celery_workers=2,
        celery_aliases=["default"],  # tasks write: they never read from the replica
        headroom=0,
        databases=databases,
        replicas=["replica"],
    )
    # The replica: 4 x 2 threads, and each web process's own health-check connection.
    assert dict(budget.per_server) == {"primary:5432": 10, "replica:5432": 12}
    assert [server.kind for server in budget.servers] == ["primary", "replica"]
    assert budget.server_of("replica") == "replica:5432"
    assert budget.fits(max_connections={"primary:5432": 13, "replica": 15}, reserved=3)
    assert not budget.fits(max_connections={"default": 12, "replica": 15}, reserved=3)
    assert not budget.fits(max_connections={"default": 13, "replica": 14}, reserved=3)
    with pytest.raises(ValueError, match="no entry for server replica:5432"):
        budget.fits(max_connections={"default": 100})


def test_every_replica_server_is_counted_with_its_check_connections() -> None:
    """Several replicas: each server its own line; two aliases of one server one line that
    adds them up (a thread holds a connection per alias, the router a check per alias)."""
    databases = {
        "default": db("primary"),
        "replica_a": db("replica-a"),
        "replica_b": db("replica-b"),
        "replica_b2": db("replica-b"),  # a second alias of the same server
        "reports": db("replica-c"),  # a replica the router does not use
    }
    budget = connection_budget(
        web_workers=3,
        threads_per_worker=4,
        celery_workers=2,
        celery_aliases=["default", "replica_a"],
        extra_clients={"exporter": {"processes": 1, "aliases": ["replica_b"], "django": False}},
        headroom=0,
        databases=databases,
        replicas=["replica_a", "replica_b", "replica_b2"],
    )
    assert dict(budget.per_server) == {
        "primary:5432": 3 * 4 + 2,
        # web 3 x 4 threads + 3 checks; celery 2 x 1 + 2 checks
        "replica-a:5432": 12 + 3 + 2 + 2,
        # two aliases x (web 3 x 4 + 3 checks), the exporter's 1 (not Django: no check)
        "replica-b:5432": 2 * (12 + 3) + 1,
        "replica-c:5432": 12,
    }
    assert [(server.server, server.kind) for server in budget.servers] == [
        ("primary:5432", "primary"),
        ("replica-a:5432", "replica"),
        ("replica-b:5432", "replica"),
        ("replica-c:5432", "primary"),
    ]
    assert budget.servers[2].aliases == ("replica_b", "replica_b2")
    checks = {
        (item.alias, item.client): item.connections
        for item in budget.contributions
        if item.client.endswith("(replica check)")
    }
    assert checks == {
        ("replica_a", "web (replica check)"): 3,
        ("replica_a", "celery (replica check)"): 2,
        ("replica_b", "web (replica check)"): 3,
        ("replica_b2", "web (replica check)"): 3,
    }
    assert any("replica_b, replica_b2 are one server" in note for note in budget.notes)


def test_replicas_come_from_the_router_setting() -> None:
    databases = {"default": db("primary"), "replica": db("replica")}
    with override_settings(RESEE_PERF={"REPLICAS": ["replica"]}):
        budget = connection_budget(web_workers=1, databases=databases)
    assert [(server.server, server.kind) for server in budget.servers] == [
        ("primary:5432", "primary"),
        ("replica:5432", "replica"),
    ]


def test_without_databases_it_reads_the_settings() -> None:
    with databases_setting({"default": db("a"), "other": db("b", CONN_MAX_AGE=60)}):
        budget = connection_budget(web_workers=3, threads_per_worker=2, headroom=0)
    assert dict(budget.per_server) == {"a:5432": 6, "b:5432": 6}


def test_sqlite_aliases_hold_no_server_connections() -> None:
    databases = {"default": db(), "local": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}
    budget = connection_budget(web_workers=1, databases=databases)
    assert [server.aliases for server in budget.servers] == [("default",)]
    assert any("'local' is SQLite" in note for note in budget.notes)


def test_a_transaction_pooler_is_labelled_with_what_its_numbers_mean() -> None:
    budget = connection_budget(
        web_workers=1,
        databases={"default": db(port=6432)},
        transaction_pooled=["default"],
    )
    assert budget.servers[0].kind == "pooler"
    assert any("max_client_conn" in note for note in budget.notes)


# -- kinds of processes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("celery_pool", "processes", "per_process"),
    [
        ("prefork", 8, 1),  # each child is a process with its own connections
        ("threads", 2, 4),
        ("gevent", 2, 4),  # each greenlet has its own connections
        ("solo", 2, 1),
    ],
)
def test_celery_pools(celery_pool: Any, processes: int, per_process: int) -> None:
    budget = connection_budget(
        celery_workers=2, celery_concurrency=4, celery_pool=celery_pool, databases=ONE
    )
    [celery] = budget.contributions
    assert (celery.processes, celery.per_process) == (processes, per_process)


@native_pool_only
def test_extra_clients_count_django_processes_and_plain_connections() -> None:
    databases = {
        "default": db("primary", OPTIONS={"pool": {"min_size": 2, "max_size": 4}}),
        "replica": db("replica"),
    }
    budget = connection_budget(
        extra_clients={
            "cron": 2,  # Django processes: one connection per alias, through the pool
            "exporter": {"processes": 1, "aliases": ["replica"], "django": False},
            "psql": {"processes": 3, "aliases": ["default"], "django": False},
        },
        headroom=0,
        databases=databases,
    )
    rows = {(c.client, c.alias): c.connections for c in budget.contributions}
    # cron: 2 processes x max(min_size 2, min(4, 1 thread)) = 4; psql ignores the pool.
    assert rows == {
        ("cron", "default"): 4,
        ("psql", "default"): 3,
        ("cron", "replica"): 2,
        ("exporter", "replica"): 1,
    }


def test_web_aliases_limit_what_web_threads_touch() -> None:
    databases = {"default": db("a"), "analytics": db("b")}
    budget = connection_budget(
        web_workers=2,
        threads_per_worker=2,
        celery_workers=1,
        web_aliases=["default"],
        headroom=0,
        databases=databases,
    )
    assert dict(budget.per_server) == {"a:5432": 5, "b:5432": 1}


def test_asgi_counts_concurrent_requests_and_warns_about_persistent_connections() -> None:
    databases = {"default": db(CONN_MAX_AGE=60)}
    budget = connection_budget(web_workers=2, threads_per_worker=50, asgi=True, databases=databases)
    assert "2 workers x 50 concurrent requests x 1 connection" in str(budget)
    assert any("lower bound" in note for note in budget.notes)


# -- Django's native pool --------------------------------------------------------------------


def pooled(pool: Any, **extra: Any) -> dict[str, Any]:
    return {"default": db(OPTIONS={"pool": pool}, **extra)}


@native_pool_only
def test_a_pool_holds_per_process_not_per_thread() -> None:
    budget = connection_budget(
        web_workers=4,
        threads_per_worker=4,
        headroom=0,
        databases=pooled({"min_size": 2, "max_size": 8}),
    )
    # psycopg grows only while a thread waits, so 4 threads never make it hold more than 4.
    assert budget.total == 16
    assert "pool max(min_size 2, min(max_size 8, 4 threads)) = 4" in str(budget)
    assert budget.pool_mismatches == ()


@native_pool_only
def test_pool_true_holds_psycopg_defaults_even_in_single_threaded_processes() -> None:
    budget = connection_budget(
        celery_workers=2, celery_concurrency=3, headroom=0, databases=pooled(True)
    )
    # 6 prefork children, each opening min_size=4 at once for a single thread.
    assert budget.total == 24
    [mismatch] = budget.pool_mismatches
    assert (mismatch.client, mismatch.idle, mismatch.waiting) == ("celery", 3, 0)
    assert "holds 3 connections it can never use" in str(mismatch)


@native_pool_only
def test_a_pool_smaller_than_the_threads_makes_them_wait() -> None:
    budget = connection_budget(
        web_workers=2,
        threads_per_worker=8,
        headroom=0,
        databases=pooled({"min_size": 1, "max_size": 3}),
    )
    assert budget.total == 6
    [mismatch] = budget.pool_mismatches
    assert mismatch.waiting == 5
    assert "PoolTimeout" in str(mismatch)


def test_a_falsy_pool_is_no_pool_as_in_django() -> None:
    budget = connection_budget(web_workers=1, threads_per_worker=3, databases=pooled({}))
    assert budget.contributions[0].how == "1 worker x 3 threads x 1 connection"


@native_pool_only
@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ({"min_size": 5, "max_size": 2}, r"\['max_size'\] should be an integer of at least 1"),
        ({"min_size": -1}, r"\['min_size'\] should be a non-negative integer"),
        ({"min_size": 0, "max_size": 0}, r"at least 1"),
        ("yes", r"should be True or a dict"),
    ],
)
def test_an_impossible_pool_is_a_configuration_error(pool: Any, message: str) -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"DATABASES\['default'\]\['OPTIONS'\]\['pool'\]"
    ):
        connection_budget(web_workers=1, databases=pooled(pool))
    with pytest.raises(ImproperlyConfigured, match=message):
        connection_budget(web_workers=1, databases=pooled(pool))


@before_native_pool_only
@pytest.mark.django_db
def test_before_django_51_a_pool_is_a_configuration_error_not_a_pool() -> None:
    from django.conf import settings

    with pytest.raises(PoolUnavailable, match=r"\['pool'\] is set, but .* needs Django 5\.1"):
        connection_budget(web_workers=1, databases=pooled({"min_size": 2, "max_size": 2}))
    # Why it is an error and not a smaller budget: this Django hands the option to psycopg,
    # so every connection fails at the first query.
    with_pool = {**settings.DATABASES[DEFAULT_DB_ALIAS], "OPTIONS": {"pool": True}}
    connection: Any = ConnectionHandler({DEFAULT_DB_ALIAS: with_pool})[DEFAULT_DB_ALIAS]
    with pytest.raises(ProgrammingError, match='invalid connection option "pool"'):
        connection.ensure_connection()


@native_pool_only
def test_a_pool_without_psycopg_pool_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(PoolUnavailable, match="psycopg_pool is not installed"):
        connection_budget(web_workers=1, databases=pooled(True))
    with pytest.raises(PoolUnavailable, match="psycopg_pool is not installed"):
        recommended_database(db(), threads_per_worker=2, pool=True)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"web_workers": -1}, "web_workers should be a non-negative integer, not -1"),
        ({"threads_per_worker": 0}, "threads_per_worker should be a positive integer, not 0"),
        ({"web_workers": 2.5}, "web_workers should be a non-negative integer, not 2.5"),
        ({"headroom": -0.1}, "headroom should be a number between 0 and 10"),
        ({"celery_pool": "fork"}, "celery_pool should be one of 'prefork'"),
        ({"extra_clients": {"cron": -2}}, "extra_clients should be a dict"),
        ({"web_aliases": ["nope"]}, "web_aliases names the database alias 'nope'"),
    ],
)
def test_bad_numbers_say_what_to_pass(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connection_budget(databases=ONE, **arguments)


def test_fits_rejects_impossible_capacities() -> None:
    budget = connection_budget(web_workers=1, databases=ONE)
    with pytest.raises(ValueError, match="reserved should be a non-negative integer"):
        budget.fits(max_connections=100, reserved=-1)
    with pytest.raises(ValueError, match="max_connections should be a positive integer"):
        budget.fits(max_connections=0)


# -- from the project's settings -------------------------------------------------------------


def test_deployment_setting_is_parsed_and_typed() -> None:
    assert conf.DEPLOYMENT is None
    with override_settings(
        RESEE_PERF={"DEPLOYMENT": {"web_workers": 3, "web_aliases": ["default"]}}
    ):
        assert Deployment(web_workers=3, web_aliases=("default",)) == conf.DEPLOYMENT


def test_a_bad_deployment_setting_names_the_key() -> None:
    with (
        override_settings(RESEE_PERF={"DEPLOYMENT": {"threads_per_worker": 0}}),
        pytest.raises(
            ImproperlyConfigured,
            match=r"RESEE_PERF\['DEPLOYMENT'\]\['threads_per_worker'\] should be a positive",
        ),
    ):
        _ = conf.DEPLOYMENT


def test_budget_from_settings_takes_the_deployment_then_the_overrides() -> None:
    deployment = {"web_workers": 2, "threads_per_worker": 2, "headroom": 0}
    with (
        databases_setting(ONE),
        override_settings(RESEE_PERF={"DEPLOYMENT": deployment}),
    ):
        assert budget_from_settings().total == 4
        assert budget_from_settings(web_workers=5).total == 10


def test_budget_from_settings_detects_asgi() -> None:
    with (
        databases_setting({"default": db(CONN_MAX_AGE=60)}),
        override_settings(
            ASGI_APPLICATION="resee.asgi.application",
            WSGI_APPLICATION=None,
            RESEE_PERF={"DEPLOYMENT": {"web_workers": 1}},
        ),
    ):
        budget = budget_from_settings()
    assert "concurrent request" in budget.contributions[0].how


# -- the recommended configuration -----------------------------------------------------------


def test_recommended_persistent_configuration() -> None:
    base = db(OPTIONS={"options": "-c search_path=app", "sslmode": "prefer"})
    result = recommended_database(base, threads_per_worker=4, conn_max_age=300)
    assert result["CONN_MAX_AGE"] == 300
    assert result["CONN_HEALTH_CHECKS"] is True
    assert result["OPTIONS"] == {
        "options": "-c search_path=app -c statement_timeout=30000",
        "sslmode": "prefer",
        "connect_timeout": 5,
    }
    assert base["OPTIONS"] == {"options": "-c search_path=app", "sslmode": "prefer"}


@native_pool_only
def test_recommended_pool_is_one_connection_per_thread_and_fits_its_budget() -> None:
    result = recommended_database(db(CONN_MAX_AGE=600), threads_per_worker=4, pool=True)
    assert result["CONN_MAX_AGE"] == 0
    assert result["OPTIONS"]["pool"] == {"min_size": 4, "max_size": 4, "timeout": 10.0}
    budget = connection_budget(
        web_workers=3, threads_per_worker=4, headroom=0, databases={"default": result}
    )
    assert budget.total == 12
    assert budget.pool_mismatches == ()


def test_recommended_settings_reject_impossible_input() -> None:
    with pytest.raises(ValueError, match="threads_per_worker should be a positive integer"):
        recommended_database(db(), threads_per_worker=0)


@native_pool_only
def test_recommended_pool_rejects_a_pool_larger_than_the_server() -> None:
    with pytest.raises(ValueError, match="larger than the server"):
        recommended_database(db(), threads_per_worker=40, pool=True, max_connections=40)


@before_native_pool_only
def test_recommended_pool_before_django_51_says_what_to_use_instead() -> None:
    with pytest.raises(PoolUnavailable, match=r"needs Django 5\.1 or newer .* Pass pool=False"):
        recommended_database(db(), threads_per_worker=4, pool=True)


@pytest.mark.django_db
@pytest.mark.parametrize("pool", [False, pytest.param(True, marks=native_pool_only)])
def test_recommended_settings_work_against_postgresql(pool: bool) -> None:
    from django.conf import settings

    base = settings.DATABASES[DEFAULT_DB_ALIAS]
    recommended = recommended_database(
        base, threads_per_worker=2, pool=pool, statement_timeout_ms=1500
    )
    # An alias of its own: Django keeps psycopg pools in a process-wide dict keyed by alias.
    handler = ConnectionHandler({DEFAULT_DB_ALIAS: dict(base), "recommended": recommended})
    connection: Any = handler["recommended"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == ("1500ms",)
        if pool:
            assert connection.pool is not None
        else:
            assert getattr(connection, "pool", None) is None  # no such attribute before 5.1
            # Persistent: what Django does at the end of a request keeps the connection.
            connection.close_if_unusable_or_obsolete()
            assert connection.connection is not None
    finally:
        connection.close()
        if pool:
            connection.close_pool()
