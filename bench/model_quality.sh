#!/usr/bin/env bash
# The shipped models' quality on held-out streams: the demo (every shipped job, the models in
# jobs/models, trained from seed 101 by scripts/train-default-models.sh) over generated streams
# with other seeds, then `riskstream model evaluate` of each score column against the labels.
# Prints one line per source, seed and score: ROC-AUC, PR-AUC and recall at 1% false positives,
# over the whole stream and after its first 20 minutes (when a day's features have some history;
# the stream starts cold).
#
#   bench/model_quality.sh [EVENTS] [SEEDS]        default 3,000,000 events, seeds "202 303"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/riskstream/target}
EVENTS=${1:-3000000}
SEEDS=${2:-202 303}
BIN=$CARGO_TARGET_DIR/release/riskstream
WORK=$(mktemp -d /tmp/riskstream-quality.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin riskstream

SCORES="risk_score;model_score;gbdt_score;anomaly_score;rules_score"
printf '%-12s %5s %-8s %-14s %8s %8s %8s %9s\n' source seed period score roc_auc pr_auc recall rows
for seed in $SEEDS; do
  "$BIN" demo --events "$EVENTS" --seed "$seed" --lake "$WORK/$seed" >/dev/null 2>&1
  for source in transaction claim telemetry; do
    for period in all warm; do
      where="event_type = '$source'"
      if [ "$period" = warm ]; then
        where="$where AND event_time >= '2026-01-01T00:20:00Z'"
      fi
      "$BIN" model evaluate --lake "$WORK/$seed" --columns "$SCORES" --where "$where" |
        python3 -c '
import json, sys
report = json.load(sys.stdin)
for score in sys.argv[4].split(";"):
    q = report[score]
    roc, pr, recall, rows = q["roc_auc"], q["pr_auc"], q["recall_at_fpr"], q["rows"]
    print(f"{sys.argv[1]:<12} {sys.argv[2]:>5} {sys.argv[3]:<8} {score:<14} {roc:8.4f} {pr:8.4f} {recall:8.4f} {rows:9d}")
' "$source" "$seed" "$period" "$SCORES"
    done
  done
done
