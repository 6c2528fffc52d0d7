#!/usr/bin/env bash
# Trains the models shipped in jobs/models/ from generated data, with riskstream's own commands
# and no servers: the demo's feature and label jobs over a generated stream (seed 101, kept
# apart from the seeds the quality report evaluates on), a point-in-time export per source, and
# `riskstream train`. The same command gives the same models (the manifests' created_at aside).
#
#   scripts/train-default-models.sh [OUT_DIR]     default jobs/models
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/riskstream/target}
OUT=${1:-jobs/models}
BIN=$CARGO_TARGET_DIR/release/riskstream
# A fixed folder, so the manifests name the same paths on every run.
WORK=/tmp/riskstream-train
rm -rf "$WORK"
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin riskstream

# 3,000,000 events at the generator's default 1,000 events/s of event time: 50 minutes of
# stream from 2026-01-01T00:00:00Z, labels drained at the end. The feature jobs are the ones the
# scoring jobs read their features through (as views), so the models see what they will score.
"$BIN" demo --events 3000000 --seed 101 --lake "$WORK/lake" \
  --jobs transaction_features.toml,claim_features.toml,telemetry_features.toml,fraud_labels.toml \
  >/dev/null

# Point in time: features of events from 00:00 to 01:00, labels known by the next day; the last
# ten minutes validate. A quarter of the genuine events, weighted back.
for source in transaction:transactions claim:claims telemetry:telemetry; do
  table=${source%%:*}_features
  name=${source##*:}
  "$BIN" export --lake "$WORK/lake" --features "$table" --labels fraud_labels \
    --from 2026-01-01T00:00:00Z --to 2026-01-01T01:00:00Z \
    --validation-from 2026-01-01T00:40:00Z --cutoff 2026-01-02T00:00:00Z \
    --negative-rate 0.25 --seed 7 --out "$WORK/$name" >/dev/null
  rm -rf "${OUT:?}/$name"
  "$BIN" train --input "$WORK/$name" --out "$OUT/$name" --name "$name" --version 1 --seed 7 \
    >/dev/null
  echo "wrote $OUT/$name"
done
