#!/usr/bin/env bash
# Runs the moderated server, the ceiling and the python-socketio peer under the same load,
# in the same run, on 127.0.0.1 only; then a step search for the highest load each holds
# with p99 send→delivery ≤ 100 ms and no errors. Prints one comparison table.
#   bench/run.sh                      (defaults: 100 rooms × 10, 200 msg/s, steps below)
#   ROOMS=1000 PER=5 IDLE=20 bench/run.sh   (idle run: memory per connection, heartbeat CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ROOMS=${ROOMS:-100}; PER=${PER:-10}; RATE=${RATE:-200}; DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}; STEPS=${STEPS:-400,600,800,1200,1600}; IDLE=${IDLE:-0}
KINDS=${KINDS:-chat chat-rules ceiling socketio}
# chat: both moderation stages (the default); chat-rules: the same server with the learned
# second stage switched off (moderation.model.enabled = false), to show what it costs.
OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$OUT"
DATA=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DATA"; }
trap cleanup EXIT

wait_up() {  # port
  for _ in $(seq 1 100); do
    if $PY -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2; exit 1
}

run_one() {  # kind port pid extra...
  local kind=$1 port=$2 pid=$3; shift 3
  local proto=$kind; [ "$kind" = chat-rules ] && proto=chat
  local args=(--base "http://127.0.0.1:$port" --kind "$proto" --server-pid "$pid"
              --rooms "$ROOMS" --per-room "$PER" --json "$OUT/$kind.json")
  if [ "$IDLE" != "0" ]; then args+=(--idle "$IDLE")
  else args+=(--rate "$RATE" --warmup "$WARMUP" --duration "$DURATION" --steps "$STEPS"); fi
  timeout 600 $PY bench/loadgen.py "${args[@]}" "$@" > "$OUT/$kind.out"
}

for kind in $KINDS; do
  case $kind in
    chat|chat-rules)
      model=true; [ "$kind" = chat-rules ] && model=false
      rm -rf "${DATA:?}"/*
      echo "benchops-password-1" | CHATSERVER_SERVER_DATA_DIR="$DATA" .venv/bin/chatserver \
        users add benchops --role ops --password-stdin > /dev/null
      CHATSERVER_SERVER_DATA_DIR="$DATA" CHATSERVER_SERVER_PORT=8090 \
      CHATSERVER_ROOMS_REQUIRE_FACILITATOR=false CHATSERVER_LIMITS_RATE_MESSAGES=10000 \
      CHATSERVER_LIMITS_FRAME_RATE=10000 CHATSERVER_LIMITS_FRAME_BURST=10000 \
      CHATSERVER_MODERATION_MODEL_ENABLED=$model \
        .venv/bin/chatserver serve > "$OUT/$kind.log" 2>&1 &
      pid=$!; PIDS+=("$pid"); wait_up 8090
      run_one "$kind" 8090 "$pid" --ops benchops:benchops-password-1 ;;
    ceiling)
      $PY -m bench.ceiling --port 8091 > "$OUT/ceiling.log" 2>&1 &
      pid=$!; PIDS+=("$pid"); wait_up 8091
      run_one ceiling 8091 "$pid" ;;
    socketio)
      $PY -m bench.peer_socketio --port 8092 > "$OUT/socketio.log" 2>&1 &
      pid=$!; PIDS+=("$pid"); wait_up 8092
      run_one socketio 8092 "$pid" ;;
  esac
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
$PY bench/report.py "$OUT"
