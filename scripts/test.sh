#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates .venv, starts PostgreSQL and Redis if they
# are installed but stopped, then runs ruff, mypy and pytest (extra arguments go to pytest).
#
#   ./scripts/test.sh              # everything
#   ./scripts/test.sh -k cache -x  # a subset
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bootstrap.sh all dev
bash scripts/services.sh
# The two shared streaming replicas (ports 5433, 5435) of the router tests: created or
# repaired in seconds each.
RESEE_REPLICAS=2 bash scripts/replica.sh
# The throwaway max_connections=20 cluster of the connection-budget proof (port 5434).
bash scripts/pg_small.sh
# A Sentinel-managed primary + replica (6380/6381, sentinels 26380-26382) for the contract run
# on Sentinel below.
bash scripts/redis_sentinel.sh

echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== mypy" >&2
mypy
echo "== docs" >&2
mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest" >&2
pytest --create-db --cov --cov-report=term "$@"
# The cache and invalidation contract, unchanged, on a Sentinel-managed primary (django-redis's
# Sentinel client); tests marked single_redis skip themselves there. About 2 minutes.
echo "== pytest: cache and invalidation contract on Sentinel" >&2
RESEE_TEST_REDIS=sentinel pytest -p no:cacheprovider tests/test_cache*.py tests/test_invalidation*.py
