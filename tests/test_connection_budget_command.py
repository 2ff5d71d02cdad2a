"""``manage.py connection_budget``: the table, the comparison with the servers, --json, and the
exit status deploy scripts gate on.

The command runs with two aliases (``default`` and ``other``) on the PostgreSQL at 5432, so
every web thread counts twice there, whatever other aliases tests.settings grows. The exit
status against a live over-budget server is proven in test_pool_live.py (the small cluster).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dj_database_url
import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from tests.test_pool import databases_setting

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _two_aliases_on_one_server() -> Iterator[None]:
    server = dj_database_url.parse(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    )
    with databases_setting({"default": dict(server), "other": dict(server)}):
        yield


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("connection_budget", *args, stdout=out)
    return out.getvalue()


def test_prints_the_itemised_table_and_the_comparison_offline() -> None:
    output = run(
        "--web-workers=2", "--threads=2", "--extra=cron=1", "--headroom=0",
        "--offline", "--max-connections=20",
    )  # fmt: skip
    assert "127.0.0.1:5432 (primary)  default  web" in output
    assert "other    cron" in output
    assert "note: Aliases default, other are one server (127.0.0.1:5432)" in output
    # (2 x 2 threads + 1 cron) x 2 aliases = 10 of 20 - 3 reserved.
    assert "total needed: 10 connections" in output
    assert "fits (configured)" in output


def test_exits_1_when_a_server_is_over_budget() -> None:
    with pytest.raises(CommandError, match=r"127\.0\.0\.1:5432 needs 8, can give 7") as raised:
        run("--web-workers=2", "--threads=2", "--headroom=0", "--offline", "--max-connections=10")
    assert raised.value.returncode == 1


def test_json_for_machines() -> None:
    with pytest.raises(CommandError):
        run("--web-workers=2", "--threads=2", "--json", "--offline", "--max-connections=10")
    out = io.StringIO()
    call_command(
        "connection_budget", "--web-workers=1", "--json", "--offline", "--max-connections=100",
        stdout=out,
    )  # fmt: skip
    report = json.loads(out.getvalue())
    assert report["fits"] is True
    assert report["budget"]["per_server"] == {"127.0.0.1:5432": 3}  # ceil(2 x 1.2)
    [server] = report["servers"]
    assert (server["source"], server["usable"], server["spare"]) == ("configured", 97, 94)


def test_asks_the_server_for_its_limits() -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as connection:
        row = connection.execute("SHOW max_connections").fetchone()
    assert row is not None
    out = io.StringIO()
    call_command("connection_budget", "--web-workers=1", "--json", stdout=out)
    [server] = json.loads(out.getvalue())["servers"]
    assert server["source"] == "live"
    assert server["max_connections"] == int(row[0])
    assert server["error"] is None


def test_reads_the_deployment_setting_and_the_command_line_wins() -> None:
    deployment: dict[str, Any] = {
        "web_workers": 3,
        "threads_per_worker": 2,
        "extra_clients": {"exporter": {"processes": 1, "django": False, "aliases": ["default"]}},
        "headroom": 0,
        "max_connections": 50,
    }
    with override_settings(RESEE_PERF={"DEPLOYMENT": deployment}):
        assert "total needed: 13 connections" in run("--offline")  # 6 x 2 aliases + 1
        # 3 x 1 thread x 2 aliases + the exporter + a cron process on both aliases.
        assert "total needed: 9 connections" in run("--offline", "--threads=1", "--extra=cron=1")


def test_bad_numbers_are_command_errors() -> None:
    with pytest.raises(CommandError, match="web_workers should be a non-negative integer, not -1"):
        run("--web-workers=-1", "--offline")
    with pytest.raises(CommandError, match="should be NAME=PROCESSES"):
        run("--extra=cron", "--offline")


def test_exits_2_when_no_server_can_be_asked_even_without_strict() -> None:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DJANGO_SETTINGS_MODULE="resee.settings",
        # Nothing listens on port 1: refused at once.
        DATABASE_URL="postgres://postgres@127.0.0.1:1/resee",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "connection_budget", "--web-workers=1"],
        cwd=ROOT / "example_project",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "unknown: OperationalError" in result.stdout
    assert "Could not ask 127.0.0.1:1 (OperationalError" in result.stderr


def test_strict_exits_2_when_a_capacity_is_unknown_offline() -> None:
    assert "unknown: no max_connections given" in run("--web-workers=1", "--offline")
    with pytest.raises(CommandError, match=r"Capacity unknown for 127\.0\.0\.1:5432") as raised:
        run("--web-workers=1", "--offline", "--strict")
    assert raised.value.returncode == 2


def test_max_connections_0_is_refused_not_ignored() -> None:
    with pytest.raises(CommandError, match="--max-connections should be a positive integer, not 0"):
        run("--web-workers=1", "--offline", "--max-connections=0")


def test_reserved_at_or_above_max_connections_is_an_error() -> None:
    with pytest.raises(CommandError, match=r"--reserved \(10\) should be less than"):
        run("--web-workers=1", "--offline", "--max-connections=10", "--reserved=10")
    with pytest.raises(CommandError, match="--reserved should be a non-negative integer"):
        run("--web-workers=1", "--offline", "--max-connections=10", "--reserved=-1")


def test_no_deployment_cannot_be_assessed() -> None:
    """Not "needs 0, fits": a budget of nothing must not pass a deploy gate."""
    with (
        override_settings(RESEE_PERF={}),
        pytest.raises(CommandError, match="Cannot assess") as raised,
    ):
        run("--offline", "--max-connections=100")
    assert raised.value.returncode == 2


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"PORT": 1}, "OperationalError"),
        ({"NAME": "no_such_database_resee"}, "does not exist"),
        ({"USER": "no_such_role_resee"}, "does not exist"),
    ],
    ids=["unreachable", "wrong-database", "unknown-role"],
)
def test_a_server_that_cannot_be_asked_exits_2_without_strict(
    change: dict[str, Any], error: str
) -> None:
    server = dict(
        dj_database_url.parse(
            os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        )
    )
    # Even with a configured limit to fall back on: the deployment would not connect either.
    with (
        databases_setting({"default": {**server, **change}}),
        pytest.raises(CommandError, match="Could not ask") as raised,
    ):
        run("--web-workers=1", "--max-connections=100", "--timeout=2")
    assert raised.value.returncode == 2
    assert error in str(raised.value)
