"""The budget's pure parts, with no service: a Deployment in, the arithmetic and the tables out.

The module layout is tested too: ``pool`` is the public face of private modules (the import
graph of the whole package: tests/test_layers.py).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from resee_perf import pool
from resee_perf._clients import clients_of
from resee_perf._deployment import BUDGET_FIELDS, CAPACITY_FIELDS, FIELDS
from resee_perf._render import verdict_table
from resee_perf._servers import ServerStatus, assess
from resee_perf.pool import Deployment, connection_budget

SRC = Path(pool.__file__).parent
PG = "django.db.backends.postgresql"
TWO = {
    "default": {"ENGINE": PG, "NAME": "app", "HOST": "db1", "PORT": 5432},
    "other": {"ENGINE": PG, "NAME": "app", "HOST": "db1", "PORT": 5432},
}


def budget(deployment: Deployment | None = None, **fields: Any) -> pool.ConnectionBudget:
    return connection_budget(deployment, databases=TWO, replicas=(), **fields)


def test_takes_a_deployment_and_keyword_fields_override_it() -> None:
    deployment = Deployment(web_workers=2, threads_per_worker=3, headroom=0)
    assert budget(deployment).per_server == {"db1:5432": 12}  # 2 x 3 x 2 aliases
    assert budget(deployment, threads_per_worker=1).per_server == {"db1:5432": 4}
    assert budget(web_workers=2, threads_per_worker=3, headroom=0) == budget(deployment)


def test_an_invalid_deployment_object_is_refused_like_keywords() -> None:
    with pytest.raises(ValueError, match="web_workers should be a non-negative integer, not -1"):
        budget(Deployment(web_workers=-1))
    with pytest.raises(ValueError, match="headroom should be a number between 0 and 10"):
        budget(headroom=11)


def test_capacity_fields_are_not_budget_arguments() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_connections'"):
        budget(max_connections=100)


def test_the_field_names_are_written_once() -> None:
    """Deployment's dataclass fields and the validation table name the same keys, and the
    budget takes all of them but the server capacity."""
    assert [field.name for field in fields(Deployment)] == list(FIELDS)
    assert set(BUDGET_FIELDS) == set(FIELDS) - set(CAPACITY_FIELDS)
    assert set(Deployment().budget_arguments()) == set(BUDGET_FIELDS)


def test_clients_of_a_deployment() -> None:
    deployment = Deployment(
        web_workers=2,
        threads_per_worker=4,
        celery_workers=1,
        celery_concurrency=3,
        extra_clients={"cron": 1, "idle": 0},
    )
    clients = {
        client.name: (client.processes, client.concurrency) for client in clients_of(deployment)
    }
    # Prefork children are processes; a client with no processes holds nothing.
    assert clients == {"web": (2, 4), "celery": (3, 1), "cron": (1, 1)}


def status(max_connections: int, in_use: int = 0, ours: int = 0) -> ServerStatus:
    return ServerStatus(
        server="db1:5432",
        max_connections=max_connections,
        superuser_reserved_connections=3,
        reserved_connections=0,
        in_use=in_use,
        in_use_by_project=ours,
        server_version_num=150000,
        superuser=False,
    )


def test_verdicts_subtract_other_applications_not_the_project() -> None:
    needed = budget(web_workers=2, threads_per_worker=2, headroom=0)  # 8 on db1
    [verdict] = assess(needed, statuses={"db1:5432": status(15, in_use=6, ours=4)})
    assert (verdict.usable, verdict.in_use_by_others, verdict.spare) == (12, 2, 2)
    assert verdict.fits is True
    [over] = assess(needed, statuses={"db1:5432": status(10, in_use=2)})
    assert over.spare == -3
    assert "OVER BUDGET by 3 connections (live)" in verdict_table([over])


def test_an_unreachable_server_is_unknown_with_its_error() -> None:
    needed = budget(web_workers=1)
    [verdict] = assess(needed, statuses={"db1:5432": "OperationalError: refused"})
    assert verdict.fits is None
    assert "unknown: OperationalError: refused (unknown)" in verdict_table([verdict])


def test_the_budget_renders_as_a_table() -> None:
    text = str(budget(web_workers=1, threads_per_worker=2, headroom=0))
    rows = [line.split() for line in text.splitlines()]
    assert rows[1] == ["db1:5432", "(primary)", "default", "web", "2", "1", "worker", "x", "2",
                       "threads", "x", "1", "connection"]  # fmt: skip
    assert text.splitlines()[-2:] == [
        "total needed: 4 connections",
        "note: Aliases default, other are one server (db1:5432): each thread holds a "
        "connection per alias, and they add up.",
    ]


PUBLIC = [
    "ConnectionBudget", "Contribution", "Deployment", "PoolMismatch", "PoolUnavailable",
    "ServerBudget", "budget_from_settings", "connection_budget", "recommended_database",
]  # fmt: skip


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_importable_from_pool(name: str) -> None:
    assert hasattr(pool, name)
    assert name in pool.__all__


def test_pool_exports_only_the_public_names() -> None:
    """The command and the checks import the rest from the private modules."""
    assert sorted(pool.__all__) == sorted(PUBLIC)
