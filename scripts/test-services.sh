#!/usr/bin/env bash
# Test services on loopback: a Kafka-protocol broker (tansu) and an S3 API server (moto_server).
#
#   scripts/test-services.sh install   install what is missing into the cache (tansu, Python venv)
#   scripts/test-services.sh start     install, then start both services on free loopback ports
#   scripts/test-services.sh env       print the environment the tests read (eval-able)
#   scripts/test-services.sh stop      stop them
#
# Everything is cached under $RISKSTREAM_CACHE (default ~/.cache/riskstream) and reused:
#   tools/bin/tansu   cargo install --locked tansu@0.6.0 --features dynostore,libsql
#   venv/             Python venv with tests/python/requirements.txt
# Runtime state (pids, logs, data, the env file) lives in $RISKSTREAM_SERVICES_DIR
# (default /tmp/riskstream-services).
#
# The broker uses tansu's SQLite storage: its offsets are right (ListOffsets latest is the log
# end), which correctness tests need. Its memory storage is faster but misreports the latest
# offset (tansu 0.6.0); only benchmarks use it, via KAFKA_STORAGE=memory.
#
# tansu 0.6.0 reads a record's headers with one query per fetched record, and its schema has no
# index on the header table: each lookup scans every header the broker holds. Over a whole test
# run (tests that write headers, then crash loops fetching thousands of records per partition)
# a fetch grew past librdkafka's request timeout, and the broker's one storage queue filled with
# requests their clients had given up on. index_headers adds the missing index once tansu has
# made its schema.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}
STATE=${RISKSTREAM_SERVICES_DIR:-/tmp/riskstream-services}
TANSU=$CACHE/tools/bin/tansu
VENV=$CACHE/venv
KAFKA_STORAGE=${KAFKA_STORAGE:-sqlite}

log() { echo "[test-services] $*" >&2; }

install_tansu() {
  if [ -x "$TANSU" ]; then return; fi
  log "installing tansu 0.6.0 into $CACHE/tools (about 10-15 minutes on 2 cores, once)"
  cargo install --locked tansu@0.6.0 --features dynostore,libsql --root "$CACHE/tools" >&2
}

install_venv() {
  local req=$ROOT/tests/python/requirements.txt
  local stamp=$VENV/.requirements.sha256
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "installing the Python test venv into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip >&2
  "$VENV/bin/pip" install --quiet -r "$req" >&2
  echo "$want" > "$stamp"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
  local port=$1 name=$2 pidfile=$3
  for _ in $(seq 1 150); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "$name exited during start-up; its log:"; tail -n 30 "$STATE/$name.log" >&2; return 1
    fi
    sleep 0.2
  done
  log "$name did not open port $port in 30s; its log:"; tail -n 30 "$STATE/$name.log" >&2
  return 1
}

index_headers() {
  local db=$STATE/kafka/tansu.db
  python3 - "$db" <<'PY'
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], timeout=30)
for _ in range(150):
    if connection.execute("select 1 from sqlite_master where type = 'table' and name = 'header'").fetchone():
        break
    time.sleep(0.2)
else:
    sys.exit(f"tansu made no header table in {sys.argv[1]} in 30s")
connection.execute("create index if not exists header_topition_offset on header (topition, offset_id)")
connection.commit()
PY
}

stop() {
  for name in tansu moto; do
    local pidfile=$STATE/$name.pid
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  rm -f "$STATE/env"
}

start() {
  install_tansu
  install_venv
  stop
  mkdir -p "$STATE/kafka"
  local kport s3port storage
  kport=$(free_port)
  s3port=$(free_port)
  case "$KAFKA_STORAGE" in
    sqlite) rm -f "$STATE"/kafka/tansu.db*; storage=sqlite://tansu.db ;;
    memory) storage=memory://tansu/ ;;
    *) log "KAFKA_STORAGE must be sqlite or memory, got $KAFKA_STORAGE"; exit 2 ;;
  esac
  # tansu resolves a sqlite:// path against its working directory.
  (cd "$STATE/kafka" && exec "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$kport" \
      --advertised-listener-url "tcp://127.0.0.1:$kport" \
      --storage-engine "$storage" >"$STATE/tansu.log" 2>&1) &
  echo $! > "$STATE/tansu.pid"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$s3port" >"$STATE/moto.log" 2>&1 &
  echo $! > "$STATE/moto.pid"
  wait_port "$kport" tansu "$STATE/tansu.pid"
  if [ "$KAFKA_STORAGE" = sqlite ]; then index_headers; fi
  wait_port "$s3port" moto "$STATE/moto.pid"
  cat > "$STATE/env" <<ENV
export RISKSTREAM_TEST_KAFKA=127.0.0.1:$kport
export RISKSTREAM_TEST_S3_ENDPOINT=http://127.0.0.1:$s3port
export RISKSTREAM_TEST_VENV=$VENV
ENV
  log "tansu ($KAFKA_STORAGE) on 127.0.0.1:$kport, moto_server on 127.0.0.1:$s3port"
  cat "$STATE/env"
}

case "${1:-}" in
  install) install_tansu; install_venv ;;
  start) start ;;
  stop) stop ;;
  env) cat "$STATE/env" ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
