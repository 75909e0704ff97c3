#!/usr/bin/env bash
# Browser test of the config service's web dashboard (run by scripts/test.sh).
#
#   1. installs Debian's chromium when /usr/bin/chromium is missing (apt-get; needs root) and
#      the test's node dependencies (`npm ci` in dashboard-tests/: playwright-core only — it
#      drives the system chromium, nothing downloads a browser);
#   2. builds the `switchyard` binary (debug profile, shared with `cargo test`);
#   3. runs dashboard-tests/dashboard.test.mjs: `switchyard serve --in-memory --listen
#      127.0.0.1:0 --admin-listen 127.0.0.1:0`, the dashboard opened in headless chromium,
#      changes applied with `switchyard apply -f` awaited on the page without a reload (the time
#      from the CLI returning to the change appearing is printed), sign-in with an admin token,
#      a topic moved between the two real Kafka clusters of SWITCHYARD_KAFKA_CLUSTERS (required:
#      the test fails without them; scripts/test.sh starts them) with its migration's phase seen
#      advancing on the page, SWITCH → DRAIN → COMPLETE (the time from each CLI command
#      returning to the phase showing is printed), and screenshots saved under
#      target/dashboard-test/.
#
# Exits non-zero when anything fails; the last line is "dashboard: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test-dashboard: %s\n' "$*" >&2; exit 1; }

export CARGO_TERM_COLOR=never
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [[ ! -x "$CHROMIUM" ]]; then
    step "install chromium (Debian package)"
    [[ $(id -u) -eq 0 ]] || die "$CHROMIUM is missing and installing it needs root (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium >&2
    [[ -x "$CHROMIUM" ]] || die "apt-get installed chromium but $CHROMIUM is still missing"
fi
"$CHROMIUM" --version >&2 2>/dev/null || true

command -v node >/dev/null || die "node is required (nodejs)"
command -v npm >/dev/null || die "npm is required"

step "npm ci (dashboard-tests)"
(cd dashboard-tests && npm ci --no-audit --no-fund --loglevel=error >&2)

step "build the switchyard binary"
cargo build -p switchyard-config --bin switchyard --locked >&2

step "dashboard in headless chromium"
ARTIFACT_DIR="$TARGET_DIR/dashboard-test" \
SWITCHYARD_BIN="$TARGET_DIR/debug/switchyard" \
CHROMIUM="$CHROMIUM" \
KAFKA_SH="$ROOT/scripts/kafka.sh" \
    node dashboard-tests/dashboard.test.mjs
