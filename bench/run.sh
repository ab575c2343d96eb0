#!/usr/bin/env bash
# Runs the moderated server (second stage of moderation on, then off), the ceiling and the
# python-socketio peer under the same load, in the same run, on 127.0.0.1 only: a fixed
# load, then a step search that goes on until each server fails (or a cap), then a
# fan-out table (members per room at a fixed rate). Prints one report, with the commit
# and the command, and keeps everything under bench/results/<time>/.
#   bash bench/run.sh                        (defaults below; each window is WARMUP + DURATION + ~3 s)
#   KINDS="chat chat-rules" FANOUT= bash bench/run.sh   (the second stage on and off only)
#   ROOMS=1000 PER=5 IDLE=20 KINDS=chat bash bench/run.sh   (idle: memory per connection)
#   DURATION=3 WARMUP=1 bash bench/run.sh      (a quick look; figures are noisier)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ROOMS=${ROOMS:-100}; PER=${PER:-10}; RATE=${RATE:-200}; DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}; IDLE=${IDLE:-0}; PROCS=${PROCS:-2}
# The search starts at STEPS and goes on, STEP_FACTOR times each step, until a step fails;
# STEP_MAX and MAX_STEPS bound it; REFINE bisections after the first failure.
STEPS=${STEPS:-400}; STEP_FACTOR=${STEP_FACTOR:-1.5}; STEP_MAX=${STEP_MAX:-25600}
MAX_STEPS=${MAX_STEPS:-14}; REFINE=${REFINE:-1}; P99_LIMIT_MS=${P99_LIMIT_MS:-100}
KINDS=${KINDS-chat chat-rules ceiling socketio}
# chat: both moderation stages (the default config); chat-rules: the same server with the
# learned second stage switched off (moderation.model.enabled = false), to show its cost.
# Fan-out: FANOUT members per room, FANOUT_CONNS connections in all, FANOUT_RATE msg/s.
FANOUT=${FANOUT-10,50,200}; FANOUT_RATE=${FANOUT_RATE:-100}; FANOUT_CONNS=${FANOUT_CONNS:-1000}
FANOUT_KINDS=${FANOUT_KINDS-chat ceiling}
[ "$IDLE" != "0" ] && FANOUT=

OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$OUT"
DATA=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DATA"; }
trap cleanup EXIT

# What was run, so the report can say it exactly (bench/report.py reads meta.json).
COMMAND="ROOMS=$ROOMS PER=$PER RATE=$RATE DURATION=$DURATION WARMUP=$WARMUP PROCS=$PROCS"
COMMAND+=" STEPS=$STEPS STEP_FACTOR=$STEP_FACTOR STEP_MAX=$STEP_MAX MAX_STEPS=$MAX_STEPS"
COMMAND+=" REFINE=$REFINE P99_LIMIT_MS=$P99_LIMIT_MS IDLE=$IDLE KINDS=\"$KINDS\""
COMMAND+=" FANOUT=\"$FANOUT\" FANOUT_RATE=$FANOUT_RATE FANOUT_CONNS=$FANOUT_CONNS"
COMMAND+=" FANOUT_KINDS=\"$FANOUT_KINDS\" bash bench/run.sh"
$PY bench/report.py --meta "$OUT" "$COMMAND"

free_port() {  # a port nobody listens on now (so we never measure someone else's server)
  $PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

wait_up() {  # port pid [path: a URL that answers 200 once ready; none: the port accepts]
  local probe="import socket; socket.create_connection(('127.0.0.1', $1), 0.5)"
  [ -n "${3:-}" ] && probe="import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1$3', timeout=0.5)"
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || { echo "server (pid $2) exited; see $OUT" >&2; exit 1; }
    if $PY -c "$probe" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2; exit 1
}

start_server() {  # kind log → sets PORT, PID
  local kind=$1 log=$2 model
  PORT=$(free_port)
  case $kind in
    chat|chat-rules)
      model=true; [ "$kind" = chat-rules ] && model=false
      rm -rf "${DATA:?}"/*
      echo "benchops-password-1" | CHATSERVER_SERVER_DATA_DIR="$DATA" .venv/bin/chatserver \
        users add benchops --role ops --password-stdin > /dev/null
      # Per-participant and per-address budgets raised: 1,000 simulated people on one
      # address, sending far above the 0.5 msg/s each the real limit allows.
      CHATSERVER_SERVER_DATA_DIR="$DATA" CHATSERVER_SERVER_PORT=$PORT \
      CHATSERVER_SERVER_METRICS_PORT=0 \
      CHATSERVER_ROOMS_REQUIRE_FACILITATOR=false CHATSERVER_LIMITS_RATE_MESSAGES=100000 \
      CHATSERVER_LIMITS_FRAME_RATE=100000 CHATSERVER_LIMITS_FRAME_BURST=100000 \
      CHATSERVER_LIMITS_JOINS_PER_ADDRESS=1000000 CHATSERVER_LIMITS_HELLOS_PER_ADDRESS=1000000 \
      CHATSERVER_LIMITS_LOGINS_PER_ADDRESS=1000 \
      CHATSERVER_MODERATION_MODEL_ENABLED=$model \
        .venv/bin/chatserver serve > "$log" 2>&1 &
      PID=$!; PIDS+=("$PID"); wait_up "$PORT" "$PID" /readyz
      # The comparison is only honest if the server runs what its label says.
      local banner=""; for _ in $(seq 1 50); do
        banner=$(grep -o "Chat server ready (.*)" "$log" || true); [ -n "$banner" ] && break
        sleep 0.1; done
      local want="model off)" ok=no
      if [ "$model" = true ]; then [[ "$banner" == *"$want" ]] || ok=yes
      else [[ "$banner" == *"$want" ]] && ok=yes; fi
      if [ -z "$banner" ] || [ "$ok" = no ]; then
        echo "$kind: the server's banner does not match moderation.model.enabled=$model; see $log" >&2
        exit 1
      fi ;;
    ceiling)
      $PY -m bench.ceiling --port "$PORT" > "$log" 2>&1 &
      PID=$!; PIDS+=("$PID"); wait_up "$PORT" "$PID" ;;
    socketio)
      $PY -m bench.peer_socketio --port "$PORT" > "$log" 2>&1 &
      PID=$!; PIDS+=("$PID"); wait_up "$PORT" "$PID" ;;
  esac
}

stop_server() { kill "$PID"; wait "$PID" 2>/dev/null || true; }

loadgen() {  # kind json out extra...
  local kind=$1 json=$2 out=$3; shift 3
  local proto=$kind ops=(); [ "$kind" = chat-rules ] && proto=chat
  [ "$proto" = chat ] && ops=(--ops benchops:benchops-password-1)
  timeout 900 $PY bench/loadgen.py --base "http://127.0.0.1:$PORT" --kind "$proto" \
    --label "$kind" --server-pid "$PID" --procs "$PROCS" --json "$json" "${ops[@]}" "$@" > "$out"
}

for kind in $KINDS; do
  echo "== $kind" >&2
  start_server "$kind" "$OUT/$kind.log"
  if [ "$IDLE" != "0" ]; then
    loadgen "$kind" "$OUT/$kind.json" "$OUT/$kind.out" --rooms "$ROOMS" --per-room "$PER" \
      --idle "$IDLE"
  else
    loadgen "$kind" "$OUT/$kind.json" "$OUT/$kind.out" --rooms "$ROOMS" --per-room "$PER" \
      --rate "$RATE" --warmup "$WARMUP" --duration "$DURATION" --steps "$STEPS" \
      --step-factor "$STEP_FACTOR" --step-max "$STEP_MAX" --max-steps "$MAX_STEPS" \
      --refine "$REFINE" --p99-limit-ms "$P99_LIMIT_MS"
  fi
  stop_server
done

if [ -n "$FANOUT" ]; then
  mkdir -p "$OUT/fanout"
  for kind in $FANOUT_KINDS; do
    # One server for every room size (each size has rooms of its own; the moderated
    # server takes tens of seconds to start on a busy machine).
    echo "== fan-out $kind" >&2
    start_server "$kind" "$OUT/fanout/$kind.log"
    for per in ${FANOUT//,/ }; do
      loadgen "$kind" "$OUT/fanout/$kind-$per.json" "$OUT/fanout/$kind-$per.out" \
        --rooms $(( (FANOUT_CONNS + per - 1) / per )) --per-room "$per" \
        --room-prefix "fan$per-" --rate "$FANOUT_RATE" --warmup "$WARMUP" \
        --duration "$DURATION" --p99-limit-ms "$P99_LIMIT_MS"
    done
    stop_server
  done
fi
$PY bench/report.py "$OUT" | tee "$OUT/report.txt"
