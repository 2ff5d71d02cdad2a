#!/usr/bin/env bash
# A Redis Cluster on loopback for the tests: 6 nodes (3 primaries, 3 replicas) on ports
# BASE..BASE+5, from Debian's redis-server. Idempotent: does nothing when the cluster already
# answers with every slot covered; otherwise stops its own nodes (by their pid files), wipes
# their data and creates the cluster anew. Nothing is persisted (no RDB, no AOF).
#
#   scripts/redis_cluster.sh            # the shared test cluster, ports 7000-7005
#   scripts/redis_cluster.sh 7100       # a private one (fault tests), ports 7100-7105
#   scripts/redis_cluster.sh 7100 stop  # stop it and remove its files
set -euo pipefail

BASE="${1:-7000}"
ACTION="${2:-start}"
HOST=127.0.0.1
DIR="${RESEE_CLUSTER_DIR:-/tmp/resee-redis-cluster}-$BASE"
PORTS=()
for i in 0 1 2 3 4 5; do PORTS+=("$((BASE + i))"); done

log() { echo "redis_cluster: $*" >&2; }

cluster_ok() {
  local info
  for port in "${PORTS[@]}"; do
    info="$(redis-cli -h "$HOST" -p "$port" cluster info 2>/dev/null)" || return 1
    grep -q '^cluster_state:ok' <<<"$info" || return 1
    grep -q '^cluster_slots_assigned:16384' <<<"$info" || return 1
    grep -q '^cluster_known_nodes:6' <<<"$info" || return 1
  done
  # Every primary has its replica (the failover tests promote one).
  [ "$(redis-cli -h "$HOST" -p "$BASE" cluster nodes | grep -c slave)" -eq 3 ]
}

stop_nodes() {
  for port in "${PORTS[@]}"; do
    local pidfile="$DIR/$port/redis.pid"
    if [ -f "$pidfile" ]; then
      local pid
      pid="$(cat "$pidfile")"
      # Only our own node: a pid reused by another process keeps running.
      if kill -0 "$pid" 2>/dev/null && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
    fi
  done
  rm -rf "$DIR"
}

if [ "$ACTION" = stop ]; then
  stop_nodes
  log "stopped the cluster on $HOST:$BASE-$((BASE + 5))"
  exit 0
fi

if ! command -v redis-server >/dev/null; then
  log "redis-server is not installed (Debian: apt-get install redis-server)"; exit 1
fi

if cluster_ok; then
  log "the cluster is up on $HOST:$BASE-$((BASE + 5))"
  exit 0
fi

log "creating a cluster on $HOST:$BASE-$((BASE + 5)) in $DIR"
stop_nodes
for port in "${PORTS[@]}"; do
  if redis-cli -h "$HOST" -p "$port" ping >/dev/null 2>&1; then
    log "port $port is taken by a server this script did not start; stop it or pick another base"
    exit 1
  fi
  mkdir -p "$DIR/$port"
  redis-server --daemonize yes --bind "$HOST" --port "$port" \
    --dir "$DIR/$port" --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log" \
    --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
    --cluster-node-timeout 2000 --save "" --appendonly no
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 1 50); do
    redis-cli -h "$HOST" -p "$port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
done
nodes=()
for port in "${PORTS[@]}"; do nodes+=("$HOST:$port"); done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log"
for _ in $(seq 1 120); do
  if cluster_ok; then
    log "the cluster is up on $HOST:$BASE-$((BASE + 5))"
    exit 0
  fi
  sleep 0.5
done
log "the cluster did not reach cluster_state:ok (see $DIR/*/redis.log)"
exit 1
