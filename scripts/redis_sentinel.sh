#!/usr/bin/env bash
# A Sentinel-managed Redis for the tests (RESEE_TEST_REDIS=sentinel): a primary, one replica
# and three sentinels watching them as service "resee", all on 127.0.0.1, none persisting.
# Idempotent: does nothing when the sentinels already name a primary that answers (after a
# failover that may be the second server: the tests ask the sentinels, never a fixed port).
#
#   scripts/redis_sentinel.sh [start|stop] [PORT_BASE]
#
# PORT_BASE (default 6380): primary PORT_BASE, replica PORT_BASE+1, sentinels PORT_BASE+20000
# to PORT_BASE+20002. Files (configs, logs, pids) in ${TMPDIR:-/tmp}/resee-sentinel-PORT_BASE.
# tests/test_redis_sentinel_failover.py starts and stops its own set the same way (6480).
set -euo pipefail

action="${1:-start}"
base="${2:-6380}"
service=resee
host=127.0.0.1
dir="${TMPDIR:-/tmp}/resee-sentinel-$base"
ports=("$base" "$((base + 1))")
sentinels=("$((base + 20000))" "$((base + 20001))" "$((base + 20002))")

log() { echo "redis_sentinel: $*" >&2; }

answers() { redis-cli -h "$host" -p "$1" ping 2>/dev/null | grep -q PONG; }

primary_named() {  # the sentinel on port $1 names a primary that answers
  local address
  address="$(redis-cli -h "$host" -p "$1" sentinel get-master-addr-by-name "$service" 2>/dev/null)" \
    || return 1
  [ -n "$address" ] && answers "$(echo "$address" | sed -n 2p)"
}

wait_for() {  # wait_for <what> <command...>: up to 30 s
  local what="$1"; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up (logs in $dir)"; return 1
}

stop() {
  local port
  for port in "${sentinels[@]}" "${ports[@]}"; do
    if [ -f "$dir/$port.pid" ]; then
      kill "$(cat "$dir/$port.pid")" 2>/dev/null || true
      rm -f "$dir/$port.pid"
    fi
  done
  for port in "${sentinels[@]}" "${ports[@]}"; do
    for _ in $(seq 1 40); do answers "$port" || break; sleep 0.25; done
  done
}

all_up() {
  local port
  for port in "${ports[@]}"; do answers "$port" || return 1; done
  for port in "${sentinels[@]}"; do primary_named "$port" || return 1; done
}

start() {
  if all_up; then
    log "up: sentinels ${sentinels[*]} name $service's primary"
    return 0
  fi
  if ! command -v redis-server >/dev/null; then
    log "redis-server is not installed (Debian: apt-get install redis-server)"; return 1
  fi
  # Half a set (a crashed member, a sentinel left over from a failover): start afresh.
  stop
  # Nothing from an earlier set: a full resync leaves a dump.rdb that a restart would load.
  rm -rf "$dir"
  mkdir -p "$dir"
  local port
  for port in "${ports[@]}"; do
    local role=()
    [ "$port" = "$base" ] || role=(--replicaof "$host" "$base")
    redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
      --dir "$dir" --pidfile "$dir/$port.pid" --logfile "$dir/$port.log" "${role[@]}"
  done
  wait_for "redis $base" answers "$base"
  wait_for "replica $((base + 1))" \
    sh -c "redis-cli -h $host -p $((base + 1)) info replication | grep -q master_link_status:up"
  for port in "${sentinels[@]}"; do
    # A sentinel rewrites its config file (what it learnt of replicas, peers, failovers).
    cat >"$dir/sentinel-$port.conf" <<EOF
bind $host
port $port
daemonize yes
pidfile $dir/$port.pid
logfile $dir/sentinel-$port.log
dir $dir
sentinel monitor $service $host $base 2
sentinel down-after-milliseconds $service 2000
sentinel failover-timeout $service 20000
sentinel parallel-syncs $service 1
EOF
    redis-server "$dir/sentinel-$port.conf" --sentinel
  done
  for port in "${sentinels[@]}"; do wait_for "sentinel $port" primary_named "$port"; done
  # A failover needs a quorum that has seen the replica and each other.
  wait_for "sentinels' view of the replica" sh -c \
    "redis-cli -h $host -p ${sentinels[0]} sentinel replicas $service | grep -q $((base + 1))"
  wait_for "sentinels' view of each other" sh -c \
    "redis-cli -h $host -p ${sentinels[0]} sentinel sentinels $service | grep -c ^runid | grep -q 2"
  log "started: primary $base, replica $((base + 1)), sentinels ${sentinels[*]} ($service)"
}

case "$action" in
  start) start ;;
  stop) stop; log "stopped ($base)" ;;
  *) log "usage: $0 [start|stop] [PORT_BASE]"; exit 2 ;;
esac
