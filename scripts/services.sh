#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis the tests use are up, starting them if they are installed
# but stopped. Idempotent: does nothing when both already answer.
#
#   PGHOST/PGPORT (default 127.0.0.1:5432), REDIS_HOST/REDIS_PORT (default 127.0.0.1:6379)
set -euo pipefail

PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"

log() { echo "services: $*" >&2; }

wait_for() {  # wait_for <what> <command...>: up to 30 s
  local what="$1"; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up"; return 1
}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT"; }
redis_up() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping | grep -q PONG; }

if ! command -v pg_isready >/dev/null; then
  log "PostgreSQL client tools are not installed (Debian: apt-get install postgresql)"; exit 1
fi
if pg_up; then
  log "PostgreSQL is up on $PGHOST:$PGPORT"
else
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    log "starting PostgreSQL $version (cluster main)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  elif [ -n "${PGDATA:-}" ] && command -v pg_ctl >/dev/null; then
    log "starting PostgreSQL from PGDATA=$PGDATA"
    pg_ctl -D "$PGDATA" -l "$PGDATA/server.log" start || true
  else
    log "PostgreSQL is not running and I do not know how to start it here"; exit 1
  fi
  wait_for PostgreSQL pg_up
fi

if ! command -v redis-cli >/dev/null; then
  log "Redis is not installed (Debian: apt-get install redis-server)"; exit 1
fi
if redis_up; then
  log "Redis is up on $REDIS_HOST:$REDIS_PORT"
else
  log "starting Redis on $REDIS_HOST:$REDIS_PORT"
  redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no
  wait_for Redis redis_up
fi
