#!/usr/bin/env bash
# Nexmark queries q0, q1, q2, q5 and q7 (bench/nexmark/q*.sql) through the engine: for each, the
# benchmark's bids are generated into an in-process log (not timed), then the job reads, decodes,
# runs the query and commits to Delta on a local folder (availableNow), as `riskstream bench
# nexmark` does. Prints one line per query: bids/s, bids/s per core, rows written, and where the
# time went; writes the same to bench/results/nexmark.csv (or $RISKSTREAM_BENCH_RESULTS).
#
#   bench/nexmark.sh [BIDS] [QUERIES]      default 10,000,000 bids, "q0 q1 q2 q5 q7"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/riskstream/target}
BIDS=${1:-10000000}
QUERIES=${2:-q0 q1 q2 q5 q7}
BIN=$CARGO_TARGET_DIR/release/riskstream
WORK=$(mktemp -d /tmp/riskstream-nexmark.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin riskstream
CORES=$(nproc)
# One row per query, for bench/plot.py.
RESULTS=${RISKSTREAM_BENCH_RESULTS:-$ROOT/bench/results}
mkdir -p "$RESULTS"
echo "query,bids,seconds,bids_per_second,cores,rows,decode_ms,query_ms,commit_ms" > "$RESULTS/nexmark.csv"

printf '%-5s %10s %8s %12s %14s %10s %9s %9s %9s\n' \
  query bids seconds bids/s "bids/s/core" rows decode_ms query_ms commit_ms
for q in $QUERIES; do
  "$BIN" bench nexmark "bench/nexmark/$q.toml" --events "$BIDS" --out "$WORK/$q" \
    --summary "$WORK/$q.json" >/dev/null 2>"$WORK/$q.log" || { cat "$WORK/$q.log" >&2; exit 1; }
  python3 - "$q" "$WORK/$q.json" "$CORES" "$RESULTS/nexmark.csv" <<'PY'
import json, sys
q, path, cores, csv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = json.load(open(path))
d = s["duration_ms"]
rate = s["events_per_second"]
print(f"{q:<5} {s['input_rows']:>10} {s['seconds']:>8.2f} {rate:>12,.0f} {rate / cores:>14,.0f} "
      f"{s['output_rows']:>10} {d['decode']:>9} {d['query']:>9} {d['commit']:>9}")
with open(csv, "a") as out:
    out.write(f"{q},{s['input_rows']},{s['seconds']:.3f},{rate:.0f},{cores},{s['output_rows']},"
              f"{d['decode']},{d['query']},{d['commit']}\n")
PY
  rm -rf "${WORK:?}/$q"
done
echo "($CORES cores; decode is summed over its threads)"
