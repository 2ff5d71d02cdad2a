#!/usr/bin/env bash
# Resee's promised before/after table next to a measured one (benchmarks/resee_bench.py):
# the example project under gunicorn with caching off and on side by side, an open-loop
# workload of many users, DB queries per minute, hit rate, floor, stale reads.
#
#   ./scripts/bench.sh                       # defaults: 3 rounds of 20 s per server, 40 req/s
#   ./scripts/bench.sh --duration 30 --rate 40 --sparse 20 --markdown
#
# It exits 1 on a stale read or a 5xx (printing the server's traceback). For figures to record,
# give it a replica and a Redis of its own (docs/benchmarks.md has the command): on a shared
# machine other tests stop and start the shared replica, and a query in flight on it fails.
#
# With DATABASE_URL and REDIS_URL (and optionally REPLICA_DATABASE_URL) it benchmarks
# PostgreSQL + Redis and seeds the full demo data set there unless it is present. Otherwise it
# looks for PostgreSQL and Redis on their default local ports and, finding none, runs on SQLite
# and the local-memory cache: it works, but those figures are not comparable.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bootstrap.sh all example

if [ -z "${DATABASE_URL:-}" ] && [ -z "${REDIS_URL:-}" ] && [ -z "${BENCH_EMBEDDED:-}" ]; then
  if python - <<'PY'
import socket, sys
for port in (5432, 6379):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        sys.exit(1)
PY
  then
    # A database of the bench's own on the local server, created once and reused.
    if psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='resee_bench'" \
        2>/dev/null | grep -q 1 || createdb -h 127.0.0.1 -U postgres resee_bench 2>/dev/null; then
      export DATABASE_URL="postgres://postgres@127.0.0.1:5432/resee_bench"
      export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/15}"
      echo "bench: found PostgreSQL and Redis on 127.0.0.1 (database resee_bench, $REDIS_URL)" >&2
    fi
  fi
fi

exec python -m benchmarks.resee_bench "$@"
