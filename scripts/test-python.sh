#!/usr/bin/env bash
# Tests of the Python binding (bindings/python, `import switchyard`); run by
# scripts/test-bindings.sh after the C tests.
#
#   1. builds the `switchyard` CLI (debug profile, shared with `cargo test`);
#   2. creates a virtualenv (under the cargo target dir, reused across runs) and installs
#      maturin, pytest, confluent-kafka and prometheus-client (its text-format parser checks
#      `Switchyard.metrics()`), all pinned, with pip;
#   3. builds the extension with maturin and installs it into the virtualenv;
#   4. runs the pytest suite (bindings/python/tests): real Kafka, the real config service
#      binary started by the tests, confluent-kafka as the independent checker, and the
#      example in examples/python;
#   5. runs the benchmark as a smoke test (bench/producer_bench.py --quick; debug build, so
#      its figures mean nothing).
#
# Kafka: uses SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p" when set, else starts two clusters with
# scripts/kafka.sh (--secure) and stops them at the end. tests/test_tls.py also needs the
# secured listeners' variables (SWITCHYARD_KAFKA_TLS_DIR, KAFKA_SASL_SSL_BOOTSTRAP_1, ...) that
# `kafka.sh start --secure` exports. Nothing is skipped: a missing dependency fails.
#
# Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test-python: %s\n' "$*" >&2; exit 1; }

MATURIN_VERSION=1.16.0
PYTEST_VERSION=9.2.0
CONFLUENT_KAFKA_VERSION=2.16.1
PROMETHEUS_CLIENT_VERSION=0.26.0

export CARGO_TERM_COLOR=never
PYTHON=${PYTHON:-python3}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${SWITCHYARD_PY_VENV:-$TARGET_DIR/python-venv}

OWN_KAFKA=
cleanup() {
    if [[ -n "$OWN_KAFKA" ]]; then
        bash "$ROOT/scripts/kafka.sh" stop --dir "$OWN_KAFKA" >&2 || true
    fi
}
trap cleanup EXIT

step "Python: build the switchyard CLI"
cargo build --locked -p switchyard-config
BIN=$TARGET_DIR/debug/switchyard
[[ -x "$BIN" ]] || die "no $BIN after the build"

step "Python: virtualenv $VENV (maturin $MATURIN_VERSION, pytest $PYTEST_VERSION, confluent-kafka $CONFLUENT_KAFKA_VERSION)"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' || die "needs Python >= 3.9"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin==$MATURIN_VERSION" "pytest==$PYTEST_VERSION" "confluent-kafka==$CONFLUENT_KAFKA_VERSION" \
    "prometheus-client==$PROMETHEUS_CLIENT_VERSION"

step "Python: build and install the extension (maturin develop)"
(
    cd bindings/python
    # Debug profile: most of it is already built by `cargo test`. The benchmark's figures in
    # BENCHMARKS.md come from a release build (`maturin develop --release`).
    VIRTUAL_ENV=$VENV PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --locked
)
"$VENV/bin/python" -c 'import switchyard, sys; print("switchyard", switchyard.__version__, "on", sys.version.split()[0])'

if [[ -z "${SWITCHYARD_KAFKA_CLUSTERS:-}" ]]; then
    step "Python: start two real Kafka clusters (with SASL_SSL and mTLS listeners)"
    command -v openssl >/dev/null 2>&1 || die "--secure Kafka needs the openssl command"
    OWN_KAFKA=$(mktemp -d /tmp/switchyard-py-kafka.XXXXXX)
    eval "$(bash scripts/kafka.sh start 2 --dir "$OWN_KAFKA" --secure)"
fi
export SWITCHYARD_KAFKA_CLUSTERS
export SWITCHYARD_BIN=$BIN

step "Python: pytest bindings/python/tests"
timeout 1800 "$VENV/bin/python" -m pytest bindings/python/tests -v -p no:cacheprovider

step "Python: benchmark smoke run (bench/producer_bench.py --quick)"
timeout 600 "$VENV/bin/python" bindings/python/bench/producer_bench.py --quick

echo "python tests: passed"
