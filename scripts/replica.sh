#!/usr/bin/env bash
# A PostgreSQL streaming replica of the local primary, for the router tests and benchmarks.
# Idempotent: `ensure` (the default) does nothing but clear injected lag when a healthy replica
# of this primary is already streaming, restarts a stopped one, and rebuilds (pg_basebackup -R,
# a second or two on the test data) anything else.
#
#   scripts/replica.sh [ensure]      # create or repair, start, wait until it streams
#   scripts/replica.sh start | stop  # the tests stop it to prove reads fall back to the primary
#   scripts/replica.sh lag SECONDS   # recovery_min_apply_delay (decimal seconds; 0 clears it)
#   scripts/replica.sh status        # exit 0 when the replica is up, in recovery and streaming
#   scripts/replica.sh destroy       # stop it and delete its data directory
#
# Faults, for a PRIVATE replica only (they refuse the shared ports 5433, 5435, 5436):
#   scripts/replica.sh hang | resume            # SIGSTOP / SIGCONT the postmaster and all its
#                                               # children: a hung server whose kernel still
#                                               # accepts connections and ACKs queries
#   scripts/replica.sh disconnect | reconnect   # point primary_conninfo at a dead port (the
#                                               # replica keeps serving, frozen) / back again
# All four are idempotent; `ensure` resumes and reconnects a replica left hung or cut off.
#
# Environment: PGHOST/PGPORT (the primary, default 127.0.0.1:5432), RESEE_REPLICA_PORT (5433),
# RESEE_REPLICA_DIR (the data directory; default under the postgres user's home when run as
# root, which PostgreSQL refuses to run as, else .services/ in the repository).
#
# Several replicas: RESEE_REPLICAS=N (1 to 3, without RESEE_REPLICA_PORT) runs the command for
# each of the first N shared replicas, on ports 5433, 5435 and 5436 (5434 is pg_small.sh's),
# one after the other: `RESEE_REPLICAS=2 scripts/replica.sh` ensures 5433 and 5435.
#
# The primary needs one thing: a pg_hba.conf entry allowing replication connections from
# 127.0.0.1 (PostgreSQL 15's defaults already give wal_level=replica and max_wal_senders=10).
# The script adds it and reloads the primary (never restarts it), only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The shared replicas, in order: RESEE_REPLICAS=N uses the first N; faults refuse them all.
SHARED_PORTS=(5433 5435 5436)
if [ -z "${RESEE_REPLICA_PORT:-}" ] && [ "${RESEE_REPLICAS:-1}" != 1 ]; then
  count="${RESEE_REPLICAS}"
  [[ "$count" =~ ^[1-9][0-9]*$ ]] && [ "$count" -le "${#SHARED_PORTS[@]}" ] \
    || { echo "replica: RESEE_REPLICAS should be 1 to ${#SHARED_PORTS[@]}, not '$count'" >&2; exit 1; }
  [ -z "${RESEE_REPLICA_DIR:-}" ] \
    || { echo "replica: RESEE_REPLICA_DIR names one data directory; unset it with RESEE_REPLICAS" >&2; exit 1; }
  for port in "${SHARED_PORTS[@]:0:$count}"; do
    RESEE_REPLICAS=1 RESEE_REPLICA_PORT="$port" bash "$PWD/scripts/replica.sh" "$@"
  done
  exit 0
fi

PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PORT="${RESEE_REPLICA_PORT:-5433}"
HOST=127.0.0.1

log() { echo "replica: $*" >&2; }
die() { log "$*"; exit 1; }

if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user to run the replica as"
  as_pg() { runuser -u postgres -- "$@"; }
  PG_HOME="$(getent passwd postgres | cut -d: -f6)"
  DATA="${RESEE_REPLICA_DIR:-$PG_HOME/resee-perf-replica-$PORT}"
else
  as_pg() { "$@"; }
  DATA="${RESEE_REPLICA_DIR:-$PWD/.services/replica-$PORT}"
fi
LAG_CONF="$DATA/resee_lag.conf"
# The replica's own primary_conninfo while `disconnect` has replaced it.
SAVED_CONNINFO="$DATA/resee_primary_conninfo"

primary_sql() { psql -X -q -At -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -c "$1"; }

pg_isready -q -h "$PGHOST" -p "$PGPORT" || die "the primary does not answer on $PGHOST:$PGPORT (run scripts/services.sh)"
# The replica must run the primary's major version. Debian keeps the server binaries out of
# PATH, one directory per major version.
MAJOR="$(primary_sql "SELECT current_setting('server_version_num')::int / 10000")"
BIN="/usr/lib/postgresql/$MAJOR/bin"
[ -x "$BIN/pg_ctl" ] || BIN="$(pg_config --bindir 2>/dev/null || dirname "$(command -v pg_ctl || echo .)")"
[ -x "$BIN/pg_ctl" ] || die "pg_ctl for PostgreSQL $MAJOR not found (Debian: apt-get install postgresql-$MAJOR)"
replica_sql() { psql -X -q -At -h "$HOST" -p "$PORT" -U postgres -d postgres -c "$1" 2>/dev/null; }

replica_up() { pg_isready -q -h "$HOST" -p "$PORT"; }
pg_ctl_() { as_pg "$BIN/pg_ctl" -D "$DATA" "$@"; }

wait_until() {  # wait_until <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

ensure_primary_allows_replication() {
  if psql -X -q -h "$PGHOST" -p "$PGPORT" -U postgres \
      "dbname=replication replication=true" -c IDENTIFY_SYSTEM >/dev/null 2>&1; then
    return 0
  fi
  local hba
  hba="$(primary_sql "SHOW hba_file")"
  [ -w "$hba" ] || die "the primary refuses replication connections and $hba is not writable: add 'host replication all 127.0.0.1/32 trust' to it"
  log "adding a replication entry for 127.0.0.1 to $hba and reloading the primary"
  # First in the file: pg_hba.conf is first-match, and Debian's default file already has a
  # password-only replication line for 127.0.0.1.
  { printf '# Added by resee-perf scripts/replica.sh: the local streaming replica.\n'
    printf 'host replication all 127.0.0.1/32 trust\n\n'
    cat "$hba"; } >"$hba.resee-perf.new"
  chown --reference="$hba" "$hba.resee-perf.new" 2>/dev/null || true
  chmod --reference="$hba" "$hba.resee-perf.new"
  mv "$hba.resee-perf.new" "$hba"
  primary_sql "SELECT pg_reload_conf()" >/dev/null
  wait_until 10 psql -X -q -h "$PGHOST" -p "$PGPORT" -U postgres \
    "dbname=replication replication=true" -c IDENTIFY_SYSTEM || die "the primary still refuses replication connections"
}

# Hot standby refuses to start when these are lower than on the primary.
standby_minimums() {
  primary_sql "SELECT name || ' = ' || setting FROM pg_settings WHERE name IN
    ('max_connections', 'max_worker_processes', 'max_wal_senders',
     'max_prepared_transactions', 'max_locks_per_transaction') ORDER BY name"
}

write_config() {
  # Debian keeps postgresql.conf and pg_hba.conf in /etc, so the base backup has neither.
  as_pg tee "$DATA/postgresql.conf" >/dev/null <<EOF
# Written by resee-perf scripts/replica.sh; rewritten on every rebuild.
port = $PORT
listen_addresses = '$HOST'
unix_socket_directories = ''
hot_standby = on
# A throwaway test replica: rebuilt by "ensure" if a crash ever leaves it unusable.
fsync = off
logging_collector = off
$(standby_minimums)
# Injected lag (scripts/replica.sh lag SECONDS) lives in its own file.
include_if_exists = 'resee_lag.conf'
EOF
  as_pg tee "$DATA/pg_hba.conf" >/dev/null <<EOF
local all all trust
host all all $HOST/32 trust
EOF
  : | as_pg tee "$DATA/pg_ident.conf" >/dev/null
  write_lag 0
}

write_lag() {  # write_lag <milliseconds>
  echo "recovery_min_apply_delay = '${1}ms'" | as_pg tee "$LAG_CONF" >/dev/null
}

system_id() { "$1" "SELECT system_identifier FROM pg_control_system()"; }

streaming_from_primary() {
  [ "$(replica_sql "SELECT pg_is_in_recovery()")" = t ] || return 1
  [ "$(replica_sql "SELECT status FROM pg_stat_wal_receiver")" = streaming ] || return 1
  [ "$(system_id replica_sql)" = "$(system_id primary_sql)" ]
}

caught_up() {  # the replica has replayed everything the primary had written when asked
  local target
  target="$(primary_sql "SELECT pg_current_wal_lsn()")"
  wait_until 20 bash -c "[ \"\$(psql -X -q -At -h $HOST -p $PORT -U postgres -d postgres \
    -c \"SELECT pg_last_wal_replay_lsn() >= '$target'::pg_lsn\")\" = t ]"
}

start() {
  replica_up && return 0
  [ -f "$DATA/PG_VERSION" ] || return 1
  # A server killed without a shutdown leaves postmaster.pid behind; pg_ctl ignores it when
  # the process is gone, so start works either way.
  pg_ctl_ -l "$DATA/server.log" -w -t 30 start >/dev/null || return 1
  wait_until 15 replica_up
}

stop() {
  [ -f "$DATA/PG_VERSION" ] || return 0
  pg_ctl_ -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

# A standby can only make a restartpoint at a checkpoint record of the primary, and a restart
# replays everything after the last one (up to checkpoint_timeout of WAL: seconds of replay
# when tests have created databases). So before a stop: checkpoint the primary, let the
# replica replay that record, and make a restartpoint there; the next start is then instant.
restartpoint() {
  replica_up || return 0
  primary_sql "CHECKPOINT" >/dev/null
  caught_up && replica_sql "CHECKPOINT" >/dev/null || true
}

rebuild() {
  log "building a replica of $PGHOST:$PGPORT in $DATA (port $PORT)"
  stop
  if replica_up; then die "something else answers on $HOST:$PORT"; fi
  rm -rf "$DATA"
  mkdir -p "$DATA"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$DATA"; fi
  chmod 700 "$DATA"
  # -c fast: an immediate checkpoint, not a spread one (which can take minutes).
  as_pg "$BIN/pg_basebackup" -h "$PGHOST" -p "$PGPORT" -U postgres -D "$DATA" \
    -R -X stream -c fast --no-sync
  write_config
  start || { tail -n 20 "$DATA/server.log" >&2; die "the new replica did not start"; }
}

# While hung or cut off, the replica asks the primary for nothing, and a busy primary recycles
# the WAL it will need (other test runs create databases): a physical slot keeps that WAL for the
# duration of the fault only. resume, reconnect, ensure and destroy drop it.
SLOT="resee_perf_replica_$PORT"
create_slot() {
  primary_sql "SELECT pg_create_physical_replication_slot('$SLOT', true)
    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$SLOT')" >/dev/null
}
drop_slot() {
  primary_sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
    WHERE slot_name = '$SLOT' AND NOT active" >/dev/null
}

postmaster_pid() { head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true; }

shared() { [[ " ${SHARED_PORTS[*]} " == *" $PORT "* ]]; }

refuse_shared() {
  ! shared || die "'$1' is for a private replica (RESEE_REPLICA_PORT=...), never a shared one (${SHARED_PORTS[*]})"
}

# The postmaster first: stopped, it forks no child that the list below would miss.
hang() {
  refuse_shared hang
  local pid
  pid="$(postmaster_pid)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || die "the replica in $DATA is not running"
  create_slot
  kill -STOP "$pid"
  # shellcheck disable=SC2046
  kill -STOP $(pgrep -P "$pid") 2>/dev/null || true
}

resume() {
  local pid
  pid="$(postmaster_pid)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  # shellcheck disable=SC2046
  kill -CONT $(pgrep -P "$pid") 2>/dev/null || true
  kill -CONT "$pid"
  if [ ! -f "$SAVED_CONNINFO" ] && [ -n "$(primary_sql "SELECT 1 FROM pg_replication_slots WHERE slot_name = '$SLOT'")" ]; then
    caught_up || die "the replica did not catch up after resume"
    drop_slot
  fi
}

not_streaming() { [ "$(replica_sql "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")" = 0 ]; }

# primary_conninfo lives in postgresql.auto.conf (pg_basebackup -R), so ALTER SYSTEM is the way
# to change it; PostgreSQL 13+ restarts the WAL receiver on reload.
disconnect() {
  refuse_shared disconnect
  replica_up || die "the replica in $DATA is not running"
  create_slot
  if [ ! -f "$SAVED_CONNINFO" ]; then
    replica_sql "SHOW primary_conninfo" | as_pg tee "$SAVED_CONNINFO.new" >/dev/null
    as_pg mv "$SAVED_CONNINFO.new" "$SAVED_CONNINFO"
  fi
  replica_sql "ALTER SYSTEM SET primary_conninfo = 'host=$HOST port=1 user=postgres connect_timeout=1'" >/dev/null
  replica_sql "SELECT pg_reload_conf()" >/dev/null
  wait_until 15 not_streaming || die "the replica still streams from its primary"
}

reconnect() {
  [ -f "$SAVED_CONNINFO" ] || return 0
  replica_up || die "the replica in $DATA is not running"
  local conninfo q="'"
  conninfo="$(cat "$SAVED_CONNINFO")"
  # A SQL string literal: quotes doubled (the passfile path is quoted inside the conninfo).
  replica_sql "ALTER SYSTEM SET primary_conninfo = '${conninfo//$q/$q$q}'" >/dev/null
  replica_sql "SELECT pg_reload_conf()" >/dev/null
  rm -f "$SAVED_CONNINFO"
  wait_until 20 streaming_from_primary || die "the replica did not stream again after reconnect"
  caught_up || die "the replica did not catch up after reconnect"
  drop_slot
}

ensure() {
  ensure_primary_allows_replication
  resume
  if [ -f "$SAVED_CONNINFO" ] && replica_up; then reconnect || true; fi
  if start && wait_until 10 streaming_from_primary; then
    if [ "$(cat "$LAG_CONF" 2>/dev/null)" != "recovery_min_apply_delay = '0ms'" ]; then
      set_lag 0
    fi
  else
    rebuild
    wait_until 20 streaming_from_primary || { tail -n 20 "$DATA/server.log" >&2; die "the replica does not stream"; }
  fi
  caught_up || die "the replica did not catch up with the primary within 20 s"
  shared || drop_slot
  log "streaming replica of $PGHOST:$PGPORT up on $HOST:$PORT ($DATA)"
}

set_lag() {  # set_lag <decimal seconds>
  local ms
  ms="$(awk -v s="$1" 'BEGIN { if (s !~ /^[0-9]+(\.[0-9]+)?$/) exit 1; printf "%d", s * 1000 }')" \
    || die "lag should be a number of seconds, not '$1'"
  write_lag "$ms"
  replica_sql "SELECT pg_reload_conf()" >/dev/null || pg_ctl_ reload >/dev/null
  # New backends see the reloaded file once the postmaster has read it; the startup process
  # that applies WAL rereads it before applying the next record.
  wait_until 10 bash -c "[ \"\$(psql -X -q -At -h $HOST -p $PORT -U postgres -d postgres \
    -c \"SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'\")\" = $ms ]" \
    || die "the replica did not pick up recovery_min_apply_delay = ${ms}ms"
}

case "${1:-ensure}" in
  ensure) ensure ;;
  start) start || die "could not start the replica in $DATA (run scripts/replica.sh ensure)"
         wait_until 20 streaming_from_primary || die "the replica started but does not stream" ;;
  stop) restartpoint; stop ;;
  lag) [ $# -eq 2 ] || die "usage: $0 lag SECONDS"; set_lag "$2" ;;
  status) replica_up && streaming_from_primary ;;
  destroy) resume; stop; rm -rf "$DATA"; shared || drop_slot ;;
  hang) hang ;;
  resume) resume ;;
  disconnect) disconnect ;;
  reconnect) reconnect ;;
  *) die "usage: $0 [ensure|start|stop|lag SECONDS|status|destroy|hang|resume|disconnect|reconnect]" ;;
esac
