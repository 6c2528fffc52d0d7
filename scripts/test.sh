#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing (the test broker, the Python
# peers), starts the test services on loopback, checks formatting and
# lints, runs the Rust tests (unit and end-to-end) and the Python end-to-end tests, then stops
# the services.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export RISKSTREAM_CACHE=${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}
export RISKSTREAM_SERVICES_DIR=${RISKSTREAM_SERVICES_DIR:-$(mktemp -d /tmp/riskstream-services.XXXXXX)}

log() { echo "[test] $*" >&2; }

# The target folder outlives clones and keeps what every build left: test binaries linked
# against earlier dependency sets (a quarter of a GB each) and incremental caches of earlier
# sessions, tens of GB within days, until the disk fills. Executables (test and bench binaries:
# no extension; libraries and proc-macros have one) and incremental caches no build touched for
# a day go; cargo links again whatever it still needs.
for profile in debug release; do
  dir=$CARGO_TARGET_DIR/$profile
  if [ -d "$dir/deps" ]; then
    find "$dir/deps" -maxdepth 1 -type f -executable ! -name '*.*' -mtime +1 -delete
  fi
  if [ -d "$dir/incremental" ]; then
    find "$dir/incremental" -mindepth 1 -maxdepth 1 -mtime +1 -exec rm -rf {} +
  fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

scripts/test-services.sh start >/dev/null
trap 'scripts/test-services.sh stop' EXIT
# shellcheck disable=SC1091
source "$RISKSTREAM_SERVICES_DIR/env"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "building"
cargo build --workspace --all-targets --quiet
export RISKSTREAM_BIN=$CARGO_TARGET_DIR/debug/riskstream

log "Rust tests"
cargo nextest run --workspace --no-fail-fast

log "Python end-to-end tests"
"$RISKSTREAM_TEST_VENV/bin/python" -m pytest -q tests/python
