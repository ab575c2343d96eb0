#!/usr/bin/env bash
# Two-node run (issue 6): the same load on one node and on two nodes of a cluster, both
# on Redis + PostgreSQL, printed side by side. Each room's members alternate between the
# nodes, so in the two-node run every message crosses from one node to the other.
#   bash bench/cluster.sh            (defaults: 100 rooms x 10, 200 msg/s, then the same
#                                     open-ended step search as bench/run.sh)
#   FANOUT=10,50,200 bash bench/cluster.sh   (and a fan-out table on each setup)
# Needs Redis and PostgreSQL (the machine's own, or REDIS_URL / PG_DSN); uses a key
# prefix and a schema of its own and removes them after.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ROOMS=${ROOMS:-100}; PER=${PER:-10}; RATE=${RATE:-200}; DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}; PROCS=${PROCS:-2}
STEPS=${STEPS:-400}; STEP_FACTOR=${STEP_FACTOR:-1.5}; STEP_MAX=${STEP_MAX:-25600}
MAX_STEPS=${MAX_STEPS:-14}; REFINE=${REFINE:-1}; P99_LIMIT_MS=${P99_LIMIT_MS:-100}
FANOUT=${FANOUT-}; FANOUT_RATE=${FANOUT_RATE:-100}; FANOUT_CONNS=${FANOUT_CONNS:-1000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/8}
PG_DSN=${PG_DSN:-postgresql://postgres@127.0.0.1:5432/test}
OUT=bench/results/cluster-$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$OUT"
DATA=$(mktemp -d)
PIDS=()
SCHEMAS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for s in "${SCHEMAS[@]}"; do
    $PY - "$PG_DSN" "$s" <<'PYEOF' || true
import asyncio, sys, asyncpg
async def main():
    c = await asyncpg.connect(sys.argv[1]); await c.execute(f"DROP SCHEMA IF EXISTS {sys.argv[2]} CASCADE"); await c.close()
asyncio.run(main())
PYEOF
  done
  rm -rf "$DATA"
}
trap cleanup EXIT
COMMAND="ROOMS=$ROOMS PER=$PER RATE=$RATE DURATION=$DURATION WARMUP=$WARMUP PROCS=$PROCS"
COMMAND+=" STEPS=$STEPS STEP_FACTOR=$STEP_FACTOR STEP_MAX=$STEP_MAX MAX_STEPS=$MAX_STEPS"
COMMAND+=" REFINE=$REFINE P99_LIMIT_MS=$P99_LIMIT_MS FANOUT=\"$FANOUT\""
COMMAND+=" FANOUT_RATE=$FANOUT_RATE FANOUT_CONNS=$FANOUT_CONNS bash bench/cluster.sh"
$PY bench/report.py --meta "$OUT" "$COMMAND"

free_port() {  # a port nobody listens on now (so we never measure someone else's server)
  $PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

wait_up() {  # port pid
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || { echo "node (pid $2) exited; see $OUT" >&2; exit 1; }
    if $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1/readyz', timeout=0.5)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "node on port $1 did not become ready" >&2; exit 1
}

run() {  # label nodes
  local label=$1 n=$2 tag
  tag="b$(date +%s%N | tail -c 9)"
  SCHEMAS+=("$tag")
  export CHATSERVER_BROKER_URL=$REDIS_URL CHATSERVER_BROKER_PREFIX=$tag
  export CHATSERVER_STORE_URL="$PG_DSN?schema=$tag"
  export CHATSERVER_AUTH_SECRET="bench-cluster-secret-$(printf 'x%.0s' {1..40})"
  export CHATSERVER_ROOMS_REQUIRE_FACILITATOR=false CHATSERVER_LIMITS_RATE_MESSAGES=100000
  export CHATSERVER_LIMITS_FRAME_RATE=100000 CHATSERVER_LIMITS_FRAME_BURST=100000
  export CHATSERVER_LIMITS_JOINS_PER_ADDRESS=1000000 CHATSERVER_LIMITS_HELLOS_PER_ADDRESS=1000000
  export CHATSERVER_LIMITS_LOGINS_PER_ADDRESS=1000
  echo "benchops-password-1" | CHATSERVER_SERVER_DATA_DIR="$DATA" .venv/bin/chatserver \
    users add benchops --role ops --password-stdin > /dev/null
  local bases=() pids=()
  for i in $(seq 1 "$n"); do
    local port; port=$(free_port)
    CHATSERVER_SERVER_DATA_DIR="$DATA/$label-$i" CHATSERVER_SERVER_PORT=$port \
      CHATSERVER_SERVER_METRICS_PORT=0 \
      .venv/bin/chatserver serve --node-id "n$i" > "$OUT/$label-$i.log" 2>&1 &
    pids+=("$!"); PIDS+=("$!"); wait_up "$port" "$!"; bases+=("http://127.0.0.1:$port")
  done
  local common=(--kind chat --label "$label" --base "$(IFS=,; echo "${bases[*]}")"
                --server-pid "$(IFS=,; echo "${pids[*]}")" --procs "$PROCS"
                --warmup "$WARMUP" --duration "$DURATION" --p99-limit-ms "$P99_LIMIT_MS"
                --ops benchops:benchops-password-1)
  timeout 900 $PY bench/loadgen.py "${common[@]}" --rooms "$ROOMS" --per-room "$PER" \
    --rate "$RATE" --steps "$STEPS" --step-factor "$STEP_FACTOR" --step-max "$STEP_MAX" \
    --max-steps "$MAX_STEPS" --refine "$REFINE" --json "$OUT/$label.json" > "$OUT/$label.out"
  if [ -n "$FANOUT" ]; then
    mkdir -p "$OUT/fanout"
    for per in ${FANOUT//,/ }; do
      timeout 900 $PY bench/loadgen.py "${common[@]}" --rooms $(( (FANOUT_CONNS + per - 1) / per )) \
        --per-room "$per" --room-prefix "fan$per-" --rate "$FANOUT_RATE" \
        --json "$OUT/fanout/$label-$per.json" > "$OUT/fanout/$label-$per.out"
    done
  fi
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
}

run one-node 1
run two-nodes 2
$PY bench/report.py "$OUT" | tee "$OUT/report.txt"
