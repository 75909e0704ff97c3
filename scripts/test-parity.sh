#!/usr/bin/env bash
# Cross-language parity scenario (run by scripts/test-bindings.sh after the Python tests):
# a route change (`switchyard apply`) and a live move (`switchyard move-topic --wait`) under
# load, Python producer -> C consumer group and C producer -> Python consumer group, both at
# once; each must lose, duplicate and reorder nothing (bindings/parity/run_parity.py).
#
#   1. builds the cdylib and the `switchyard` CLI (debug profile, shared with `cargo test`);
#   2. compiles bindings/parity/producer.c and consumer.c with the system C compiler under
#      AddressSanitizer + UndefinedBehaviorSanitizer and links them against the cdylib;
#   3. runs run_parity.py with the virtualenv's Python, which must already have the
#      extension and confluent-kafka installed (scripts/test-python.sh does that).
#
# Kafka: uses SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p" when set, else starts two clusters with
# scripts/kafka.sh and stops them at the end.
#
# Exits non-zero when anything fails; prints one line per direction, e.g.
# "parity python->c: sent=N received=N lost=0 duplicated=0 out_of_order=0 ...".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test-parity: %s\n' "$*" >&2; exit 1; }

export CARGO_TERM_COLOR=never
CC=${CC:-cc}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LIB_DIR=$TARGET_DIR/debug
BIN=$LIB_DIR/switchyard
VENV=${SWITCHYARD_PY_VENV:-$TARGET_DIR/python-venv}
PDIR=$ROOT/bindings/parity

WORK=$(mktemp -d /tmp/switchyard-parity-build.XXXXXX)
OWN_KAFKA=
cleanup() {
    if [[ -n "$OWN_KAFKA" ]]; then
        bash "$ROOT/scripts/kafka.sh" stop --dir "$OWN_KAFKA" >&2 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

step "parity: build switchyard-c and the switchyard CLI"
cargo build --locked -p switchyard-c -p switchyard-config
[[ -f "$LIB_DIR/libswitchyard_c.so" ]] || die "no $LIB_DIR/libswitchyard_c.so after the build"
[[ -x "$BIN" ]] || die "no $BIN after the build"
"$VENV/bin/python" -c 'import switchyard, confluent_kafka' ||
    die "the virtualenv $VENV lacks switchyard or confluent-kafka: run scripts/test-python.sh first"

step "parity: compile the C participants with $CC under AddressSanitizer + UBSan"
CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -Wall -Wextra -Werror -pthread)
SAN=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
for prog in producer consumer; do
    "$CC" "${CFLAGS[@]}" "${SAN[@]}" -I"$ROOT/bindings/c/include" "$PDIR/$prog.c" \
        -L"$LIB_DIR" -lswitchyard_c -Wl,-rpath,"$LIB_DIR" -o "$WORK/parity-$prog"
done

if [[ -z "${SWITCHYARD_KAFKA_CLUSTERS:-}" ]]; then
    step "parity: start two real Kafka clusters"
    OWN_KAFKA=$(mktemp -d /tmp/switchyard-parity-kafka.XXXXXX)
    eval "$(bash scripts/kafka.sh start 2 --dir "$OWN_KAFKA")"
fi
export SWITCHYARD_KAFKA_CLUSTERS

# As for the C tests: LeakSanitizer at exit with the documented suppressions (dependency
# allocations that live as long as the process), DWARF unwinding for the Rust frames.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$ROOT/bindings/c/tests/c/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

step "parity: python->c and c->python through a route change and a live move"
timeout 600 "$VENV/bin/python" "$PDIR/run_parity.py" --bin "$BIN" \
    --c-producer "$WORK/parity-producer" --c-consumer "$WORK/parity-consumer" "$@"
