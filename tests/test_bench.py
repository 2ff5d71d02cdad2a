"""A short run of the bench (benchmarks/resee_bench.py) on a tiny seed: it produces the table,
counts queries, hits and writes, and finds no stale read. Timings are not asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from benchmarks.resee_bench import READS, markdown_table, table_rows

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
    assert report["off"]["hit_rate"] is None  # caching off: no hit, no miss counted
    assert report["on"]["hit_rate"] is not None
    assert report["on"]["user_lookup_hit_rate"] > 0
    assert "sparse_hit_rate" in report
    table = markdown_table(table_rows(report))
    assert "| GET /api/review/today/ | 200 ms | 10 ms (TTL 1 h) |" in table
    assert "DB queries per minute" in table
    assert "stale reads after writes" in table
