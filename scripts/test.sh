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

echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== mypy" >&2
mypy
echo "== docs" >&2
mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest" >&2
pytest --create-db --cov --cov-report=term "$@"
