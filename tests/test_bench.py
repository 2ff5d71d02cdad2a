"""A short run of the bench (benchmarks/resee_bench.py) on a tiny seed: it produces the table,
counts queries, hits and writes, and finds no stale read. Timings are not asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from benchmarks.bench_gunicorn import _results, _with_cache_header
from benchmarks.resee_bench import (
    CONTENT,
    READS,
    STATS,
    TODAY,
    TTL,
    Sample,
    cause_rows,
    markdown_table,
    miss_causes,
    server_failures,
    table_rows,
)

from tests.settings import REDIS_URL

ROOT = Path(__file__).resolve().parents[1]
PRIMARY = "postgres://postgres@127.0.0.1:5432"
DATABASE = f"resee_bench_smoke_{os.environ.get('RESEE_TEST_DB_SUFFIX') or 'default'}"


@pytest.fixture
def database() -> Iterator[str]:
    with psycopg.connect(f"{PRIMARY}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    try:
        yield f"{PRIMARY}/{DATABASE}"
    finally:
        with psycopg.connect(f"{PRIMARY}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


@pytest.mark.slow
def test_a_short_bench_produces_the_table_without_stale_reads(database: str) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "REPLICA_DATABASE_URL"}
    }
    # The suite's own Redis (tests/settings.py: REDIS_URL, or its default).
    env.update(DATABASE_URL=database, REDIS_URL=REDIS_URL)
    command = [sys.executable, "-m", "benchmarks.resee_bench", "--json", "--rounds", "1"]
    command += ["--duration", "3", "--rate", "30", "--writes", "0.2", "--sparse", "1"]
    command += ["--users", "12", "--contents", "240", "--history", "1200"]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)

    assert report["workload"]["users"] == 12
    assert report["workload"]["database"] == "postgresql"
    for side in ("off", "on"):
        assert report[side]["stale"] == 0, report[side]["stale_examples"]
        assert report[side]["writes"] > 0
        assert report[side]["queries_per_minute"] > 0
        assert set(READS) <= set(report[side]["endpoints"])
        assert report[side]["server_errors"] == 0, report[side]["error_examples"]
    assert report["off"]["hit_rate"] is None  # caching off: no hit, no miss counted
    assert set(report["on"]["hit_rates"]) == set(READS)
    # Every read of the cached server was told what the cache did (X-Bench-Cache).
    causes = report["on"]["miss_causes"]
    results = {r for path in READS for by in causes[path].values() for r in by}
    assert results, causes
    assert "?" not in results, causes
    assert report["workload"]["users_per_server"] == {"on": 6, "off": 6}
    assert {"primary"} <= set(report["connections"])
    assert report["on"]["hit_rate"] is not None
    assert report["on"]["user_lookup_hit_rate"] > 0
    assert "sparse_hit_rate" in report
    table = markdown_table(table_rows(report))
    assert "| GET /api/review/today/ | 200 ms | 10 ms (TTL 1 h) |" in table
    assert "DB queries per minute" in table
    assert "stale reads after writes" in table
    assert "| endpoint | what came before the read (same user) |" in markdown_table(
        cause_rows(report)
    )


def read(user: int, path: str, at: float, cache: str) -> Sample:
    return Sample(path, 0.01, 200, user, at, "", cache)


def write(user: int, kind: str, at: float) -> Sample:
    return Sample("POST write", 0.01, 201 if kind == "create" else 200, user, at, kind)


def test_misses_are_explained_by_what_came_before_them() -> None:
    samples = [
        read(1, TODAY, 0, "miss"),
        read(1, TODAY, 1, "hit"),
        write(1, "create", 2),
        read(1, TODAY, 3, "hit"),  # a new content: today's list stays cached
        read(1, CONTENT, 4, "miss"),
        write(1, "create", 5),
        read(1, CONTENT, 6, "miss"),
        read(1, STATS, 7, "miss"),
        read(1, STATS, 7 + TTL[STATS] + 1, "miss"),
        read(1, CONTENT, 8, "miss"),  # nothing explains it
        read(2, TODAY, 9, "miss"),
    ]
    causes = miss_causes(samples)

    assert causes[TODAY] == {
        "first read (cold key)": {"miss": 2},
        "no write since the last read": {"hit": 1},
        "after a write: create": {"hit": 1},
    }
    assert causes[CONTENT] == {
        "first read (cold key)": {"miss": 1},
        "after a write: create": {"miss": 1},
        "no write since the last read": {"miss": 1},
    }
    assert causes[STATS] == {"first read (cold key)": {"miss": 1}, "TTL passed": {"miss": 1}}
    other = miss_causes(
        [read(1, TODAY, 0, "miss"), read(1, TODAY, 9, "miss")], [write(1, "complete", 8.5)]
    )
    assert other[TODAY]["after a write: complete (other server)"] == {"miss": 1}


def test_the_bench_servers_say_what_the_cache_did_for_each_request() -> None:
    def application(environ: dict[str, str], start_response: Callable[..., object]) -> list[bytes]:
        _results.seen.append("review.views.TodayView.due_on=hit")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    headers: list[tuple[str, str]] = []
    body = _with_cache_header(application)({}, lambda status, h: headers.extend(h))

    assert body == [b"{}"]
    assert ("X-Bench-Cache", "review.views.TodayView.due_on=hit") in headers


def test_a_5xx_is_shown_with_the_traceback_the_server_logged(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn-off.log"
    log.write_text(
        "[2026-12-04 08:00:00 +0000] [1] [INFO] Booting worker with pid: 2\n"
        "2026-12-04 08:00:01,000 ERROR django.request: Internal Server Error: /api/me/\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "psycopg.OperationalError: connection failed: sorry, too many clients already\n"
        "2026-12-04 08:00:02,000 ERROR django.request: Internal Server Error: /api/me/\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "psycopg.OperationalError: connection failed: sorry, too many clients already\n"
    )

    shown = server_failures(log)

    assert "1 distinct error(s)" in shown
    assert "too many clients already" in shown
    assert "Internal Server Error: /api/me/" in shown
