#!/usr/bin/env bash
# A throwaway PostgreSQL cluster with a deliberately small max_connections, for the connection
# budget's proof under load (tests/test_pool_load.py) and its benchmark
# (benchmarks/connections.py). Idempotent: `start` (the default) does nothing when the cluster
# already runs with the wanted limits, restarts it when the limits differ, and creates it
# (initdb, about a second) when missing.
#
#   scripts/pg_small.sh [start]   # create or start; prints nothing on success
#   scripts/pg_small.sh stop | status | destroy
#
# Environment: PG_SMALL_PORT (5434), PG_SMALL_MAX_CONNECTIONS (20),
# PG_SMALL_SUPERUSER_RESERVED (3), PG_SMALL_DIR (its directory: .services/ in the repository,
# or the postgres user's home when that user cannot reach the repository).
#
# Trust authentication on 127.0.0.1 only. Besides the superuser `postgres` it has the ordinary
# role `resee_app` (LOGIN CREATEDB), which cannot use the superuser-reserved slots: the role
# that meets "remaining connection slots are reserved" when the budget is exceeded.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PG_SMALL_PORT:-5434}"
MAX="${PG_SMALL_MAX_CONNECTIONS:-20}"
RESERVED="${PG_SMALL_SUPERUSER_RESERVED:-3}"
HOST=127.0.0.1

log() { echo "pg_small: $*" >&2; }
die() { log "$*"; exit 1; }

if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root: run it as the postgres user.
  id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user"
  as_pg() { runuser -u postgres -- "$@"; }
  if as_pg test -x "$PWD"; then
    DIR="${PG_SMALL_DIR:-$PWD/.services/pg_small-$PORT}"
  else
    DIR="${PG_SMALL_DIR:-$(getent passwd postgres | cut -d: -f6)/resee-perf-pg-small-$PORT}"
  fi
else
  as_pg() { "$@"; }
  DIR="${PG_SMALL_DIR:-$PWD/.services/pg_small-$PORT}"
fi
DATA="$DIR/data"

BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
if [ -z "$BIN" ]; then
  command -v initdb >/dev/null || die "initdb not found (Debian: apt-get install postgresql)"
  BIN="$(dirname "$(command -v initdb)")"
fi

sql() { psql -X -q -At -h "$HOST" -p "$PORT" -U postgres -d postgres -c "$1"; }
up() { pg_isready -q -h "$HOST" -p "$PORT"; }

running_with_wanted_limits() {
  up && [ "$(sql "SELECT current_setting('max_connections') || '/' ||
                      current_setting('superuser_reserved_connections')" 2>/dev/null)" \
          = "$MAX/$RESERVED" ]
}

create() {
  log "creating a cluster in $DIR"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
}

start() {
  if running_with_wanted_limits; then return 0; fi
  if up; then
    log "running with other limits: restarting with max_connections=$MAX"
    stop
  elif [ -f "$DATA/postmaster.pid" ]; then
    # A crash leaves the pid file behind; pg_ctl start copes with a stale one.
    log "found a stale postmaster.pid"
  fi
  [ -f "$DATA/PG_VERSION" ] || create
  # The limits are passed at start, not written to postgresql.conf, so that changing
  # PG_SMALL_MAX_CONNECTIONS needs a restart and nothing else. fsync is off: throwaway data.
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 30 start -o "\
    -c port=$PORT -c listen_addresses=$HOST -c unix_socket_directories='$DIR' \
    -c max_connections=$MAX -c superuser_reserved_connections=$RESERVED \
    -c shared_buffers=16MB -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off" >/dev/null
  up || die "did not come up on $HOST:$PORT; see $DIR/server.log"
  sql "DO \$\$ BEGIN
         IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'resee_app') THEN
           CREATE ROLE resee_app LOGIN CREATEDB;
         END IF;
       END \$\$;"
}

stop() {
  if [ -f "$DATA/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -w -t 30 stop -m fast >/dev/null
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) running_with_wanted_limits ;;
  destroy) stop; rm -rf "$DIR" ;;
  *) die "usage: $0 [start|stop|status|destroy]" ;;
esac
