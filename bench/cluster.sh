#!/usr/bin/env bash
# Two-node run (issue 6): the same load on one node and on two nodes of a cluster, both
# on Redis + PostgreSQL, printed side by side. Each room's members alternate between the
# nodes, so in the two-node run every message crosses from one node to the other.
#   bash bench/cluster.sh            (defaults: 100 rooms x 10, 200 msg/s, steps below)
# Needs Redis and PostgreSQL (the machine's own, or REDIS_URL / PG_DSN); uses a key
# prefix and a schema of its own and removes them after.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ROOMS=${ROOMS:-100}; PER=${PER:-10}; RATE=${RATE:-200}; DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}; STEPS=${STEPS:-400,600,800,1200}
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

wait_up() {  # port
  for _ in $(seq 1 150); do
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
  export CHATSERVER_ROOMS_REQUIRE_FACILITATOR=false CHATSERVER_LIMITS_RATE_MESSAGES=10000
  export CHATSERVER_LIMITS_FRAME_RATE=10000 CHATSERVER_LIMITS_FRAME_BURST=10000
  echo "benchops-password-1" | CHATSERVER_SERVER_DATA_DIR="$DATA" .venv/bin/chatserver \
    users add benchops --role ops --password-stdin > /dev/null
  local bases=() pids=()
  for i in $(seq 1 "$n"); do
    local port=$((8092 + i))
    CHATSERVER_SERVER_DATA_DIR="$DATA/$label-$i" CHATSERVER_SERVER_PORT=$port \
      CHATSERVER_SERVER_METRICS_PORT=$((9464 + i)) \
      .venv/bin/chatserver serve --node-id "n$i" > "$OUT/$label-$i.log" 2>&1 &
    pids+=("$!"); PIDS+=("$!"); wait_up "$port"; bases+=("http://127.0.0.1:$port")
  done
  timeout 600 $PY bench/loadgen.py --kind chat --label "$label" \
    --base "$(IFS=,; echo "${bases[*]}")" --server-pid "$(IFS=,; echo "${pids[*]}")" \
    --rooms "$ROOMS" --per-room "$PER" --rate "$RATE" --warmup "$WARMUP" \
    --duration "$DURATION" --steps "$STEPS" --ops benchops:benchops-password-1 \
    --json "$OUT/$label.json" > "$OUT/$label.out"
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
}

run one-node 1
run two-nodes 2
$PY bench/report.py "$OUT"
