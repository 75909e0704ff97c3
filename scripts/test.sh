#!/usr/bin/env bash
# Installs what the tests need and runs every test: formatting, lints, Rust unit and
# integration tests (config service, SDK on two real Kafka clusters), C and Python bindings,
# and the config service's web dashboard in headless chromium.
#
#   ./scripts/test.sh            # everything
#   SWITCHYARD_SKIP_KAFKA=1 ...  # local shortcut: no Kafka (Kafka tests then fail, not skip)
#
# Exits non-zero when any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*" >&2; }

export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

step "toolchain"
cargo --version >&2
rustup component list --installed 2>/dev/null | grep -qE '^(rustfmt|clippy)' || rustup component add rustfmt clippy >&2

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build tests"
cargo test --workspace --locked --no-run

KAFKA_DIR="${SWITCHYARD_KAFKA_DIR:-$(mktemp -d /tmp/switchyard-kafka.XXXXXX)}"
cleanup() {
    if [[ -z "${SWITCHYARD_SKIP_KAFKA:-}" ]]; then
        bash "$ROOT/scripts/kafka.sh" stop --dir "$KAFKA_DIR" >&2 || true
    fi
}
trap cleanup EXIT

if [[ -z "${SWITCHYARD_SKIP_KAFKA:-}" ]]; then
    # The secured listeners' certificates are generated with the openssl command.
    if ! command -v openssl >/dev/null 2>&1; then
        step "install openssl (the secured Kafka listeners' certificates)"
        apt-get install -y -q openssl >&2 || sudo apt-get install -y -q openssl >&2
    fi
    step "start two real Kafka clusters (with SASL_SSL and mTLS listeners)"
    eval "$(bash scripts/kafka.sh start 2 --dir "$KAFKA_DIR" --secure)"
    echo "SWITCHYARD_KAFKA_CLUSTERS=$SWITCHYARD_KAFKA_CLUSTERS" >&2
fi

step "cargo test (Rust: unit, config service, SDK on real Kafka)"
cargo test --workspace --locked

if [[ -x scripts/test-bindings.sh ]]; then
    step "C and Python bindings"
    scripts/test-bindings.sh
fi

step "dashboard in a real browser (Debian chromium, headless)"
scripts/test-dashboard.sh

step "the demo (in-process mock clusters; exits non-zero unless nothing is lost, duplicated or reordered and the migration completes)"
cargo run --locked -q -p switchyard-demo -- --duration 6 --move-after 2 2>&1 | grep -v '^\[.*sent ' | tail -n 12
test "${PIPESTATUS[0]}" -eq 0

step "benchmark smoke runs"
cargo bench -p switchyard-config --bench watch_fanout --locked -- --quick
if [[ -z "${SWITCHYARD_SKIP_KAFKA:-}" ]]; then
    # A live migration of 200,000 keyed records (moved after 20 %) on the two real clusters, with
    # the consumer faults (a group offline through the switch, a member restarted in DRAIN, a
    # group on auto.offset.reset=latest) and a producer cut off from the config service until
    # COMPLETE (its late writes copied; a 5-s client lease instead of 30 s, so the seal waits
    # for it 5 s): exits non-zero when a record is lost, duplicated or out of order, or the late
    # writes counted and copied disagree (17-44 s on a 2-core machine; COMPLETE waits for the
    # late writes' copy). Group `latest` lost west records in 3 of 51 such runs on a loaded
    # machine before f1eec23 (a put-back rewind racing the positioning seek; BENCHMARKS.md,
    # "With a producer cut off from the config service").
    cargo bench -p switchyard-sdk --bench migration --locked -- --messages 200000 --move-at 0.2 --faults --client-lease-s 5
    # The Kafka-log store against the file store (3 replicas, 150 watchers; a few seconds).
    cargo bench -p switchyard-config --bench kafka_store --locked -- --quick
    # The C producer bench, one short round (raw librdkafka, the floor, switchyard-c through a
    # topic handle and by name): it compiles with -Werror, and each side must get every
    # delivery report without an error, else it exits non-zero. Its ratios say nothing here.
    timeout 900 bindings/c/bench/run.sh 20000 1
fi

step "all tests passed"
