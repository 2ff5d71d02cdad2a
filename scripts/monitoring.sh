#!/usr/bin/env bash
# The monitoring stack on one machine, on loopback, from Debian's packages: the example project
# under gunicorn (3 workers, PROMETHEUS_MULTIPROC_DIR), Prometheus scraping it and
# postgres_exporter and redis_exporter with deploy/prometheus/resee-perf.rules.yml loaded, and
# Alertmanager with deploy/alertmanager/alertmanager.yml. Never as system services: each
# program runs from here with its own directory and pid file. Idempotent.
#
#   scripts/monitoring.sh [start]   # start what is not running; waits until each answers
#   scripts/monitoring.sh stop | status
#
# Environment (defaults in brackets):
#   MONITORING_DIR [.services/monitoring]   configs, data, logs, pid files
#   DATABASE_URL [postgres://postgres@127.0.0.1:5432/resee_monitoring]   the example's database
#   REPLICA_DATABASE_URL []                 optional: the example reads from this replica
#   REDIS_URL [redis://127.0.0.1:6379/2]    the example's cache
#   APP_SETUP [1]                           create the database if missing and migrate it
#   APP_PORT [18000] PROMETHEUS_PORT [19090] ALERTMANAGER_PORT [19093]
#   PG_EXPORTER_PORT [19187] REDIS_EXPORTER_PORT [19121] APP_WORKERS [3]
#   SCRAPE_INTERVAL [15s] EVALUATION_INTERVAL [$SCRAPE_INTERVAL]
#   DJANGO_SECRET_KEY [a random one, kept in the directory]
#   SLACK_WEBHOOK_URL []                    written to a 0600 file Alertmanager reads; without
#                                           it, notifications go nowhere (and fail in its log)
# Needs: apt-get install prometheus prometheus-alertmanager prometheus-postgres-exporter
# prometheus-redis-exporter (.ci/run does), and the .venv of scripts/bootstrap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DIR="${MONITORING_DIR:-$ROOT/.services/monitoring}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/resee_monitoring}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/2}"
APP_SETUP="${APP_SETUP:-1}"
APP_PORT="${APP_PORT:-18000}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-19093}"
PG_EXPORTER_PORT="${PG_EXPORTER_PORT:-19187}"
REDIS_EXPORTER_PORT="${REDIS_EXPORTER_PORT:-19121}"
APP_WORKERS="${APP_WORKERS:-3}"
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-15s}"
EVALUATION_INTERVAL="${EVALUATION_INTERVAL:-$SCRAPE_INTERVAL}"
VENV="${VENV:-$ROOT/.venv}"
HOST=127.0.0.1

log() { echo "monitoring: $*" >&2; }
die() { log "$*"; exit 1; }

need() {
  command -v "$1" >/dev/null || die "$1 is missing: apt-get install $2"
}

port_of() {
  case "$1" in
    app) echo "$APP_PORT" ;;
    prometheus) echo "$PROMETHEUS_PORT" ;;
    alertmanager) echo "$ALERTMANAGER_PORT" ;;
    postgres_exporter) echo "$PG_EXPORTER_PORT" ;;
    redis_exporter) echo "$REDIS_EXPORTER_PORT" ;;
  esac
}

# running NAME: its pid file names a live process whose command line has our address (a
# recycled pid of something else does not).
running() {
  local pidfile="$DIR/$1.pid" pid
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$HOST:$(port_of "$1")"
}

wait_http() {  # URL WHAT: until it answers 200, at most 60 s
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "$2 did not answer $1 (log: $DIR/$3.log)"
    sleep 0.2
  done
}

spawn() {  # NAME COMMAND...: in the background, detached, pid in NAME.pid
  local name="$1"
  shift
  nohup "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

host_port() {  # URL -> host:port
  local rest="${1#*://}"
  rest="${rest#*@}"
  echo "${rest%%/*}"
}

start_app() {
  if running app; then return; fi
  # The example refuses to start without a key (DEBUG is off); keep one per directory unless
  # the caller gives theirs (sessions made elsewhere are signed with it).
  if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    [ -s "$DIR/secret_key" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret_key"
    DJANGO_SECRET_KEY="$(cat "$DIR/secret_key")"
  fi
  export DATABASE_URL REDIS_URL DJANGO_SECRET_KEY ALLOWED_HOSTS="$HOST,localhost"
  export DJANGO_SETTINGS_MODULE=resee.settings
  [ -n "${REPLICA_DATABASE_URL:-}" ] && export REPLICA_DATABASE_URL
  if [ "$APP_SETUP" = 1 ]; then
    local dbname="${DATABASE_URL##*/}"
    dbname="${dbname%%\?*}"
    local server="${DATABASE_URL%/*}/postgres"
    if ! psql "$server" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$dbname'" | grep -q 1; then
      psql "$server" -qc "CREATE DATABASE \"$dbname\""
    fi
    (cd example_project && "$VENV/bin/python" manage.py migrate --noinput >"$DIR/migrate.log" 2>&1) \
      || die "migrate failed: $DIR/migrate.log"
  fi
  mkdir -p "$DIR/multiproc"
  # gunicorn reads example_project/gunicorn.conf.py: its when_ready empties multiproc/.
  (
    cd example_project
    PROMETHEUS_MULTIPROC_DIR="$DIR/multiproc" spawn app "$VENV/bin/gunicorn" resee.wsgi:application \
      --bind "$HOST:$APP_PORT" --workers "$APP_WORKERS" --timeout 30 --graceful-timeout 5
  )
  wait_http "http://$HOST:$APP_PORT/metrics" "the example project" app
}

write_configs() {
  mkdir -p "$DIR/prometheus-data" "$DIR/alertmanager-data"
  cat >"$DIR/prometheus.yml" <<YAML
# Written by scripts/monitoring.sh; edits are overwritten at the next start.
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: $EVALUATION_INTERVAL
rule_files:
  - $ROOT/deploy/prometheus/resee-perf.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["$HOST:$ALERTMANAGER_PORT"]
scrape_configs:
  - job_name: resee-perf
    static_configs:
      - targets: ["$HOST:$APP_PORT"]
  - job_name: postgres
    static_configs:
      - targets: ["$HOST:$PG_EXPORTER_PORT"]
  - job_name: redis
    static_configs:
      - targets: ["$HOST:$REDIS_EXPORTER_PORT"]
YAML
  local webhook="$DIR/slack-webhook-url"
  (umask 077 && printf '%s' "${SLACK_WEBHOOK_URL:-http://$HOST:9/no-slack-webhook-configured}" >"$webhook")
  sed "s#/etc/alertmanager/slack-webhook-url#$webhook#" deploy/alertmanager/alertmanager.yml \
    >"$DIR/alertmanager.yml"
}

start() {
  need prometheus prometheus
  need prometheus-alertmanager prometheus-alertmanager
  need prometheus-postgres-exporter prometheus-postgres-exporter
  need prometheus-redis-exporter prometheus-redis-exporter
  need psql postgresql-client
  need curl curl
  [ -x "$VENV/bin/gunicorn" ] || die "$VENV/bin/gunicorn is missing: source scripts/bootstrap.sh all dev"
  mkdir -p "$DIR"
  write_configs
  start_app
  if ! running postgres_exporter; then
    local dsn="$DATABASE_URL"
    case "$dsn" in *\?*) ;; *) dsn="$dsn?sslmode=disable" ;; esac
    DATA_SOURCE_NAME="$dsn" spawn postgres_exporter prometheus-postgres-exporter \
      --web.listen-address="$HOST:$PG_EXPORTER_PORT"
  fi
  if ! running redis_exporter; then
    spawn redis_exporter prometheus-redis-exporter \
      --redis.addr="redis://$(host_port "$REDIS_URL")" \
      --web.listen-address="$HOST:$REDIS_EXPORTER_PORT" --namespace=redis
  fi
  if ! running alertmanager; then
    spawn alertmanager prometheus-alertmanager --config.file="$DIR/alertmanager.yml" \
      --storage.path="$DIR/alertmanager-data" --web.listen-address="$HOST:$ALERTMANAGER_PORT" \
      --cluster.listen-address=
  fi
  if ! running prometheus; then
    spawn prometheus prometheus --config.file="$DIR/prometheus.yml" \
      --storage.tsdb.path="$DIR/prometheus-data" --web.listen-address="$HOST:$PROMETHEUS_PORT"
  fi
  wait_http "http://$HOST:$PG_EXPORTER_PORT/metrics" postgres_exporter postgres_exporter
  wait_http "http://$HOST:$REDIS_EXPORTER_PORT/metrics" redis_exporter redis_exporter
  wait_http "http://$HOST:$ALERTMANAGER_PORT/-/ready" alertmanager alertmanager
  wait_http "http://$HOST:$PROMETHEUS_PORT/-/ready" prometheus prometheus
  log "up: app http://$HOST:$APP_PORT, prometheus http://$HOST:$PROMETHEUS_PORT, alertmanager http://$HOST:$ALERTMANAGER_PORT ($DIR)"
}

stop() {
  local name pid
  for name in prometheus alertmanager redis_exporter postgres_exporter app; do
    running "$name" || { rm -f "$DIR/$name.pid"; continue; }
    pid="$(cat "$DIR/$name.pid")"
    kill -TERM "$pid"
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    rm -f "$DIR/$name.pid"
  done
}

status() {
  local name rc=0
  for name in app postgres_exporter redis_exporter alertmanager prometheus; do
    if running "$name"; then
      echo "$name: running (pid $(cat "$DIR/$name.pid"))"
    else
      echo "$name: stopped"
      rc=3
    fi
  done
  return "$rc"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
