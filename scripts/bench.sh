#!/usr/bin/env bash
# Benchmarks of the foundation, in a release build: the generator into a null sink, the generator
# into the local broker (tansu with its fast in-memory storage), and the embedded demo end to end.
# Prints one line per figure; BENCHMARKS.md records the results with this command.
#
#   scripts/bench.sh [EVENTS]        default 5,000,000 events for the null sink
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export RISKSTREAM_CACHE=${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}
EVENTS=${1:-5000000}
BIN=$CARGO_TARGET_DIR/release/riskstream
WORK=$(mktemp -d /tmp/riskstream-bench.XXXXXX)
export RISKSTREAM_SERVICES_DIR=$WORK/services

cargo build --release --quiet --bin riskstream
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m)"

field() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]]))" "$1" "$2"; }

"$BIN" generate --to null --count "$EVENTS" --seed 1 --quiet --summary "$WORK/null.json" 2>/dev/null
echo "generator -> null sink: $(field "$WORK/null.json" events_per_second) events/s ($EVENTS events)"

KAFKA_STORAGE=memory scripts/test-services.sh start >/dev/null
trap 'scripts/test-services.sh stop; rm -rf "$WORK"' EXIT
# shellcheck disable=SC1091
source "$RISKSTREAM_SERVICES_DIR/env"
KAFKA_EVENTS=$((EVENTS / 5))
"$BIN" generate --to "kafka://$RISKSTREAM_TEST_KAFKA" --count "$KAFKA_EVENTS" --seed 1 --quiet \
  --summary "$WORK/kafka.json" 2>/dev/null
echo "generator -> local broker (tansu, memory storage, lz4, acks=1): $(field "$WORK/kafka.json" events_per_second) events/s ($KAFKA_EVENTS events, all acknowledged)"

DEMO_EVENTS=2000000
"$BIN" demo --events "$DEMO_EVENTS" --seed 1 --lake "$WORK/lake" --summary "$WORK/demo.json" >/dev/null 2>&1
echo "demo end to end (generate -> decode -> score SQL -> Delta, local): $(field "$WORK/demo.json" events_per_second) events/s ($DEMO_EVENTS events)"
