#!/usr/bin/env bash
# What a model costs per event inside a job: trains a GBDT (100 trees, depth 6) and an isolation
# forest on synthetic rows with the six per-event features bench/model_scoring.sql passes,
# publishes and promotes it in a scratch lake, then runs the transactions engine benchmark with
# and without the model over the same generated events. Release build; prints both rates and the
# cost per event.
#
#   bench/model_scoring.sh [EVENTS]        default 2,000,000
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export RISKSTREAM_CACHE=${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}
EVENTS=${1:-2000000}
BIN=$CARGO_TARGET_DIR/release/riskstream
PY=${RISKSTREAM_TEST_VENV:-$RISKSTREAM_CACHE/venv}/bin/python
WORK=$(mktemp -d /tmp/riskstream-model-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin riskstream

# Synthetic training rows: a label that depends on every feature, so trees grow to full depth.
"$PY" - "$WORK/train.parquet" <<'PYEOF'
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
rng = np.random.default_rng(7)
n = 200_000
amount = rng.lognormal(4, 1.3, n)
age = rng.integers(0, 3000, n)
lat, lon = rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)
foreign = rng.random(n) < 0.1
cnp = rng.random(n) < 0.4
logit = 0.004 * (amount - 100) - 0.002 * age + 1.5 * foreign + 0.8 * cnp + 0.01 * lat + rng.normal(0, 1, n)
pq.write_table(pa.table({
    "amount": amount, "account_age_days": age, "latitude": lat, "longitude": lon,
    "foreign_card": foreign, "card_not_present": cnp, "label": (logit > 1.0).astype(np.int64),
}), sys.argv[1])
PYEOF
"$BIN" train --input "$WORK/train.parquet" --out "$WORK/model" --name bench --version 1 \
  --rounds 100 --max-depth 6 >/dev/null 2>&1
"$BIN" model publish --lake "$WORK/models" --model "$WORK/model" >/dev/null
"$BIN" model promote --lake "$WORK/models" bench 1 >/dev/null
export RISKSTREAM_MODEL_LAKE=$WORK/models

rate() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['events_per_second']))" "$1"; }
RISKSTREAM_BENCH_SQL=bench/model_scoring_baseline.sql "$BIN" bench engine bench/model_scoring.toml \
  --events "$EVENTS" --seed 1 --out "$WORK/baseline" --summary "$WORK/baseline.json" >/dev/null 2>&1
"$BIN" bench engine bench/model_scoring.toml --events "$EVENTS" --seed 1 --out "$WORK/scored" \
  --summary "$WORK/scored.json" >/dev/null 2>&1
BASE=$(rate "$WORK/baseline.json")
SCORED=$(rate "$WORK/scored.json")
echo "transactions engine, same projection without a model: $BASE events/s ($EVENTS events)"
echo "with the GBDT (100 trees, depth <= 6) + isolation forest blend: $SCORED events/s"
python3 -c "import sys; b, s = map(float, sys.argv[1:]); print(f'model cost per event inside the job: {1e9 / s - 1e9 / b:.0f} ns')" "$BASE" "$SCORED"
