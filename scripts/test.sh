#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates .venv, starts PostgreSQL and Redis if they
# are installed but stopped, then runs ruff, mypy and pytest: the whole suite on one Redis, the
# cache and invalidation contract again on Sentinel and on a Redis Cluster, and the coverage
# floor over the three runs. Extra arguments run that subset once, on one Redis, unmeasured.
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
# The Redis Cluster (3 primaries + 3 replicas, ports 7000-7005) of the cluster run below.
bash scripts/redis_cluster.sh

echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== mypy" >&2
mypy
echo "== docs" >&2
mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest" >&2
if [ "$#" -gt 0 ]; then
  # A subset: no other topology, no coverage floor.
  exec pytest "$@"
fi
# Coverage is measured over the three runs (the cluster and Sentinel code paths run in theirs)
# and checked once at the end against pyproject.toml's fail_under.
cov=(--cov --cov-append --cov-report= --cov-fail-under=0)
rm -f .coverage
pytest --create-db "${cov[@]}"
# The cache and invalidation contract, unchanged, on a Sentinel-managed primary (django-redis's
# Sentinel client); tests marked single_redis skip themselves there. About 2 minutes.
echo "== pytest: cache and invalidation contract on Sentinel" >&2
RESEE_TEST_REDIS=sentinel pytest -p no:cacheprovider "${cov[@]}" \
  tests/test_cache*.py tests/test_invalidation*.py
echo "== pytest on Redis Cluster (RESEE_TEST_REDIS=cluster)" >&2
# The cache and invalidation contract on the cluster of scripts/redis_cluster.sh; tests marked
# single_redis skip. Not the harness's self-check (it tests the harness, not the topology).
RESEE_TEST_REDIS=cluster pytest -q "${cov[@]}" \
  tests/test_cache.py tests/test_cache_invalidate.py tests/test_cache_entries.py \
  tests/test_cache_switch.py tests/test_cache_checks.py tests/test_cache_concurrency.py \
  tests/test_invalidation.py tests/test_invalidation_db_on_delete.py \
  tests/test_invalidation_race.py -k "not the_same_harness_catches"
echo "== coverage (the three runs)" >&2
coverage report
