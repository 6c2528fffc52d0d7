#!/usr/bin/env bash
# The compose stack's topology as local processes, for machines without Docker and for the smoke
# test (tests/python/test_local_stack.py): a Kafka-protocol broker and an S3 server
# (scripts/test-services.sh), a bucket, the generator, the three shipped scoring jobs with their
# metrics, and the Flight SQL server over the jobs' lake.
#
#   scripts/local-stack.sh start [EVENTS]   generate EVENTS events (default 20000), start the rest
#   scripts/local-stack.sh stop             SIGTERM every process (jobs commit their batch), wait
#
# Uses the broker and S3 server of RISKSTREAM_TEST_KAFKA / RISKSTREAM_TEST_S3_ENDPOINT when set,
# else starts them. State, logs and an env file with every address go to $RISKSTREAM_STACK_DIR
# (default /tmp/riskstream-stack). The binary is $RISKSTREAM_BIN (default: the debug build).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${RISKSTREAM_STACK_DIR:-/tmp/riskstream-stack}
BIN=${RISKSTREAM_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/riskstream/target}/debug/riskstream}
JOBS=(transactions claims telemetry)

log() { echo "[local-stack] $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits for a process to write `pattern` to its log; fails if it exits first.
wait_log() {
  local name=$1 pattern=$2
  for _ in $(seq 1 600); do
    if grep -q "$pattern" "$STATE/$name.log" 2>/dev/null; then return 0; fi
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      log "$name exited during start-up; its log:"; tail -n 30 "$STATE/$name.log" >&2; return 1
    fi
    sleep 0.1
  done
  log "$name did not start in 60s; its log:"; tail -n 30 "$STATE/$name.log" >&2
  return 1
}

stop() {
  local pids=()
  for pidfile in "$STATE"/*.pid; do
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
    rm -f "$pidfile"
  done
  # A job stops after its batch in flight commits.
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -f "$STATE/services-started" ]; then
    RISKSTREAM_SERVICES_DIR=$STATE/services "$ROOT/scripts/test-services.sh" stop
    rm -f "$STATE/services-started"
  fi
}

start() {
  local events=${1:-20000}
  [ -x "$BIN" ] || { log "no riskstream binary at $BIN (cargo build first)"; exit 1; }
  mkdir -p "$STATE"
  if [ -z "${RISKSTREAM_TEST_KAFKA:-}" ] || [ -z "${RISKSTREAM_TEST_S3_ENDPOINT:-}" ]; then
    RISKSTREAM_SERVICES_DIR=$STATE/services "$ROOT/scripts/test-services.sh" start >/dev/null
    touch "$STATE/services-started"
    # shellcheck disable=SC1091
    source "$STATE/services/env"
  fi
  local venv=${RISKSTREAM_TEST_VENV:-$HOME/.cache/riskstream/venv}
  local id bucket prefix
  id=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')
  bucket=stack-$id
  prefix=stack-$id.
  export AWS_ENDPOINT_URL=$RISKSTREAM_TEST_S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-riskstream-test}
  export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-riskstream-test-secret}
  "$venv/bin/python" -c "import boto3, sys; boto3.client('s3').create_bucket(Bucket=sys.argv[1])" "$bucket"
  export KAFKA_BOOTSTRAP_SERVERS=$RISKSTREAM_TEST_KAFKA RISKSTREAM_TOPIC_PREFIX=$prefix
  export RISKSTREAM_LAKE=s3://$bucket/live RISKSTREAM_CHECKPOINTS=s3://$bucket/checkpoints

  log "generating $events events into topics $prefix*"
  "$BIN" generate --to "kafka://$RISKSTREAM_TEST_KAFKA" --topic-prefix "$prefix" --count "$events" \
    --quiet --summary "$STATE/generate.json" >"$STATE/generate.log" 2>&1

  {
    echo "export STACK_KAFKA=$RISKSTREAM_TEST_KAFKA"
    echo "export STACK_TOPIC_PREFIX=$prefix"
    echo "export STACK_LAKE=$RISKSTREAM_LAKE"
    echo "export STACK_GENERATE_SUMMARY=$STATE/generate.json"
  } > "$STATE/env"
  for job in "${JOBS[@]}"; do
    local port
    port=$(free_port)
    (cd "$ROOT" && exec "$BIN" run "jobs/specs/$job.toml" --metrics-addr "127.0.0.1:$port") \
      >"$STATE/$job.log" 2>&1 &
    echo $! > "$STATE/$job.pid"
    echo "export STACK_METRICS_${job^^}=http://127.0.0.1:$port" >> "$STATE/env"
  done
  for job in "${JOBS[@]}"; do wait_log "$job" "metrics on http"; done

  local flight flight_metrics
  flight=$(free_port)
  flight_metrics=$(free_port)
  cat > "$STATE/serve.toml" <<TOML
lake = "$RISKSTREAM_LAKE"
bind = "127.0.0.1:$flight"

[auth]
users = [{ name = "analyst", password_env = "STACK_ANALYST_PASSWORD" }]
TOML
  STACK_ANALYST_PASSWORD=${STACK_ANALYST_PASSWORD:-local-stack} \
    "$BIN" serve --config "$STATE/serve.toml" --metrics-addr "127.0.0.1:$flight_metrics" \
    >"$STATE/serve.log" 2>&1 &
  echo $! > "$STATE/serve.pid"
  wait_log serve "metrics on http"
  echo "export STACK_FLIGHT=grpc://127.0.0.1:$flight" >> "$STATE/env"
  echo "export STACK_FLIGHT_METRICS=http://127.0.0.1:$flight_metrics" >> "$STATE/env"
  log "running; addresses in $STATE/env"
  cat "$STATE/env"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [EVENTS] | stop" >&2; exit 2 ;;
esac
