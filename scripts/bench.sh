#!/usr/bin/env bash
# Benchmarks, in a release build: the generator into a null sink and into the local broker (tansu
# with its fast in-memory storage), the embedded demo end to end, and streaming jobs (`riskstream
# run`) from the broker to Delta: throughput, fixed overhead per batch, and latency at 10,000, 50,000
# and 100,000 events/s from event time to the Delta commit and to the alert on Kafka.
# Prints one line per figure, and writes the latency percentiles to bench/results/latency-RATE.json
# (or $RISKSTREAM_BENCH_RESULTS); BENCHMARKS.md records the results with this command.
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
# The latency percentiles go here too, for bench/plot.py.
RESULTS=${RISKSTREAM_BENCH_RESULTS:-$ROOT/bench/results}
mkdir -p "$RESULTS"
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

# The JSON decoder alone, one thread: every column, and the three the windowed benchmark reads.
"$BIN" bench decode --columns event_time,user_id,amount 2>/dev/null

# The engine without a broker: the transactions job's decoding, SQL and Delta sinks over events
# generated into an in-process log beforehand.
"$BIN" bench engine jobs/specs/transactions.toml --events 2000000 --seed 1 --out "$WORK/engine" 2>/dev/null

# Streaming jobs (`riskstream run`), against the same memory-storage broker. tansu's memory storage
# answers ListOffsets "latest" short of the log end (DESIGN.md), so availableNow may stop a little
# early: rates are computed from the records actually read, as the progress reports count them.
PY=$RISKSTREAM_TEST_VENV/bin/python
export KAFKA_BOOTSTRAP_SERVERS=$RISKSTREAM_TEST_KAFKA
stream_env() {  # prefix lake checkpoints
  export RISKSTREAM_TOPIC_PREFIX=$1 RISKSTREAM_LAKE=$2 RISKSTREAM_CHECKPOINTS=$3
}
progress_stats() {  # checkpoint-folder [wall-seconds]
  "$PY" - "$@" <<'PYEOF'
import json, pathlib, sys
reports = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1], "progress").iterdir()]
rows = sum(r["numInputRows"] for r in reports)
busy = sum(r["durationMs"]["triggerExecution"] for r in reports) / 1000
wall = float(sys.argv[2]) if len(sys.argv) > 2 else busy
print(f"{rows} {len(reports)} {rows / wall:.0f} {busy / len(reports) * 1000:.0f}")
phases = ["getOffsets", "walCommit", "getBatch", "decode", "query", "commit", "commitOffsets"]
total = {k: sum(r["durationMs"].get(k, 0) for r in reports) for k in phases}
print("  time per phase (ms, all batches): " + ", ".join(f"{k} {v}" for k, v in total.items()), file=sys.stderr)
PYEOF
}

STREAM_EVENTS=2000000
stream_env bench1. "$WORK/stream-lake" "$WORK/stream-cp"
"$BIN" generate --to "kafka://$RISKSTREAM_TEST_KAFKA" --topic-prefix bench1. --source transactions \
  --count "$STREAM_EVENTS" --seed 2 --quiet 2>/dev/null
START=$(date +%s.%N)
"$BIN" run jobs/specs/transactions.toml --available-now >/dev/null 2>&1
WALL=$(python3 -c "import time; print(time.time() - $START)")
read -r ROWS BATCHES RATE _ < <(progress_stats "$WORK/stream-cp/score-transactions" "$WALL")
echo "Kafka -> decode -> score SQL -> Delta (riskstream run, availableNow, batches of 500K): $RATE events/s ($ROWS events in $BATCHES batches, wall time incl. start-up)"

stream_env bench2. "$WORK/tiny-lake" "$WORK/tiny-cp"
"$BIN" generate --to "kafka://$RISKSTREAM_TEST_KAFKA" --topic-prefix bench2. --source transactions \
  --count 6000 --rate 3000 --seed 3 --quiet 2>/dev/null
RISKSTREAM_MAX_OFFSETS_PER_TRIGGER=120 "$BIN" run jobs/specs/transactions.toml --available-now >/dev/null 2>&1
read -r ROWS BATCHES _ AVG < <(progress_stats "$WORK/tiny-cp/score-transactions")
echo "fixed overhead per batch (batches of 120 records): $AVG ms per batch on average ($BATCHES batches)"

# Latency at fixed input rates: the generator paces events (event time = send time) while the job
# runs with no trigger (next batch as soon as the last ends). A row's latency to Delta is its
# batch's commit time (progress timestamp + triggerExecution) minus its event time; an alert's
# latency to Kafka is its record's timestamp (set by the job's producer when it sends) minus its
# event time.
sed '/^trigger = /d' jobs/specs/transactions.toml > "$WORK/latency.toml"
sed -i "s#\"sql/#\"$ROOT/sql/#; s#\"jobs/models/#\"$ROOT/jobs/models/#" "$WORK/latency.toml"
for RATE in 10000 50000 100000; do
  stream_env "lat$RATE." "$WORK/lat$RATE-lake" "$WORK/lat$RATE-cp"
  "$BIN" generate --to "kafka://$RISKSTREAM_TEST_KAFKA" --topic-prefix "lat$RATE." --source transactions \
    --count 10 --seed 4 --quiet 2>/dev/null
  "$BIN" run "$WORK/latency.toml" >/dev/null 2>&1 &
  JOB=$!
  sleep 3
  "$BIN" generate --to "kafka://$RISKSTREAM_TEST_KAFKA" --topic-prefix "lat$RATE." --source transactions \
    --rate "$RATE" --duration 20s --out-of-order 0 --late 0 --seed 5 --quiet 2>/dev/null
  sleep 5
  kill -TERM $JOB; wait $JOB || true
  "$PY" - "$RATE" "$WORK/lat$RATE-lake/risk_scores" "$WORK/lat$RATE-cp/score-transactions" \
    "$RISKSTREAM_TEST_KAFKA" "lat$RATE.risk-alerts" "$RESULTS/latency-$RATE.json" <<'PYEOF'
import datetime, json, pathlib, sys
from deltalake import DeltaTable
from kafka import KafkaConsumer, TopicPartition
rate, table, checkpoint, bootstrap, topic, results = sys.argv[1:]
ts = lambda text: datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
commit = {}
for p in pathlib.Path(checkpoint, "progress").iterdir():
    r = json.loads(p.read_text())
    commit[r["batchId"]] = ts(r["timestamp"]) + r["durationMs"]["triggerExecution"] / 1000
t = DeltaTable(table).to_pyarrow_table(columns=["batch_id", "event_time"]).to_pydict()
# Batch 0 holds the warm-up events; the checkpoint keeps the last 100 batches' reports.
delta = sorted(commit[b] - e.timestamp() for b, e in zip(t["batch_id"], t["event_time"]) if b > 0 and b in commit)
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
consumer.assign(parts)
consumer.seek_to_beginning(*parts)
alerts = []
for record in consumer:
    alert = json.loads(record.value)
    if alert["batch_id"] > 0:
        alerts.append(record.timestamp / 1000 - ts(alert["event_time"]))
alerts.sort()
def q(values, f):
    return values[min(len(values) - 1, int(f * len(values)))] * 1000 if values else float("nan")
for name, values in (("committed in Delta", delta), ("alert on Kafka", alerts)):
    print(f"event -> {name} at {int(rate):,} events/s (no trigger): p50 {q(values, 0.5):.0f} ms, "
          f"p95 {q(values, 0.95):.0f} ms, p99 {q(values, 0.99):.0f} ms ({len(values)} rows, {len(commit)} batches)")
# Every percentile, for bench/plot.py's latency curves.
points = [p / 1000 for p in range(0, 1000, 5)] + [0.999]
pathlib.Path(results).write_text(json.dumps({
    "rate": int(rate), "batches": len(commit), "percentiles": points,
    "delta_ms": [q(delta, f) for f in points], "alert_ms": [q(alerts, f) for f in points],
}, indent=1) + "\n")
PYEOF
done
