#!/usr/bin/env bash
# Tests of the language bindings (run by scripts/test.sh after `cargo test --workspace`).
#
# C (bindings/c):
#   1. builds the cdylib and the `switchyard` CLI (debug profile, shared with `cargo test`);
#   2. checks that the checked-in header is what cbindgen generates (tests/header.rs);
#   3. creates fresh topics on two real Kafka clusters, starts the real config service
#      (`switchyard serve --in-memory --listen 127.0.0.1:0`) and applies a desired state;
#   4. compiles bindings/c/tests/c/test_*.c with the system C compiler under AddressSanitizer +
#      UndefinedBehaviorSanitizer (LeakSanitizer included), links them against the cdylib and
#      runs them; a test program that crashes, reports a sanitizer error or fails a check fails;
#   5. builds examples/c with its Makefile and runs it against the same service (shared library,
#      under the sanitizers), then statically linked and configured from the desired-state file.
#
# For test_tls.c it also starts two config services over TLS (the secured Kafka's broker
# certificate; the second requires client certificates), with client tokens, whose clusters are
# the SASL_SSL (SCRAM-SHA-512) and mTLS listeners of the first Kafka cluster.
#
# Kafka: uses SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p" when set (scripts/test.sh exports it, and the
# secured listeners' KAFKA_SASL_SSL_BOOTSTRAP_1, KAFKA_MTLS_BOOTSTRAP_1 and
# SWITCHYARD_KAFKA_TLS_DIR), else starts two clusters with `scripts/kafka.sh start 2 --secure`
# and stops them at the end.
#
# Python (bindings/python): then runs scripts/test-python.sh (virtualenv, maturin, pytest on
# the same clusters).
#
# Parity (bindings/parity): then runs scripts/test-parity.sh — a Python producer with a C
# consumer group and a C producer with a Python consumer group through a route change and a
# live move-topic, on the same clusters, with the virtualenv test-python.sh prepared.
#
# Exits non-zero when anything fails; the C part's summary line is "c tests: N passed, M
# failed", the Python part's last line "python tests: passed", the parity part's
# "parity: 2 direction(s) in S s, passed".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test-bindings: %s\n' "$*" >&2; exit 1; }

export CARGO_TERM_COLOR=never
CC=${CC:-cc}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LIB_DIR=$TARGET_DIR/debug
BIN=$LIB_DIR/switchyard
CDIR=$ROOT/bindings/c

WORK=$(mktemp -d /tmp/switchyard-c-tests.XXXXXX)
SERVE_PID=
TLS_PIDS=()
OWN_KAFKA=
cleanup() {
    for p in "$SERVE_PID" "${TLS_PIDS[@]+"${TLS_PIDS[@]}"}"; do
        [[ -n "$p" ]] || continue
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n "$OWN_KAFKA" ]]; then
        bash "$ROOT/scripts/kafka.sh" stop --dir "$OWN_KAFKA" >&2 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

step "C: build switchyard-c (cdylib) and the switchyard CLI"
cargo build --locked -p switchyard-c -p switchyard-config
[[ -f "$LIB_DIR/libswitchyard_c.so" ]] || die "no $LIB_DIR/libswitchyard_c.so after the build"

step "C: the checked-in header matches cbindgen's output"
cargo test --locked -p switchyard-c --test header

if [[ -z "${SWITCHYARD_KAFKA_CLUSTERS:-}" ]]; then
    step "C: start two real Kafka clusters (with SASL_SSL and mTLS listeners)"
    OWN_KAFKA=$(mktemp -d /tmp/switchyard-c-kafka.XXXXXX)
    eval "$(bash scripts/kafka.sh start 2 --dir "$OWN_KAFKA" --secure)"
fi
IFS=';' read -r EAST WEST _ <<<"$SWITCHYARD_KAFKA_CLUSTERS"
[[ -n "$EAST" && -n "$WEST" ]] || die "SWITCHYARD_KAFKA_CLUSTERS must name two clusters"

# Fresh names for this run: A on east, B on west (physical B.phys), S on east then moved to west.
RUN="c$$-$(date +%s)"
TOPIC_A="$RUN-a"
TOPIC_B="$RUN-b"
PHYSICAL_B="$RUN-b.phys"
TOPIC_S="$RUN-s"

step "C: create topics $TOPIC_A, $PHYSICAL_B, $TOPIC_S (east and west)"
create_topic() { # bootstrap topic
    bash scripts/kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" \
        --create --topic "$2" --partitions 3 --replication-factor 1 >"$WORK/create-$2-$1.log" 2>&1
}
pids=()
create_topic "$EAST" "$TOPIC_A" & pids+=($!)
create_topic "$WEST" "$PHYSICAL_B" & pids+=($!)
create_topic "$EAST" "$TOPIC_S" & pids+=($!)
create_topic "$WEST" "$TOPIC_S" & pids+=($!)
for p in "${pids[@]}"; do
    wait "$p" || { cat "$WORK"/create-*.log >&2; die "topic creation failed"; }
done

desired() { # cluster-of-S
    cat <<EOF
clusters:
  - name: east
    bootstrap: ["$EAST"]
  - name: west
    bootstrap: ["$WEST"]
topics:
  - name: $TOPIC_A
    cluster: east
    partitions: 3
  - name: $TOPIC_B
    cluster: west
    physical: $PHYSICAL_B
    partitions: 3
  - name: $TOPIC_S
    cluster: $1
    partitions: 3
quotas:
  - app: c-quota-app
    topic: $TOPIC_A
    produce_msgs_per_sec: 1
    burst: 1
    policy: reject
EOF
}
desired east >"$WORK/desired.yaml"
desired west >"$WORK/rerouted.yaml"

step "C: start the config service and apply the desired state"
"$BIN" serve --in-memory --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVE_PID=$!
ADDR=
for _ in $(seq 1 300); do
    ADDR=$(sed -n 's/^listening on //p' "$WORK/serve.out" | head -n1)
    [[ -n "$ADDR" ]] && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.err" >&2; die "switchyard serve exited"; }
    sleep 0.1
done
[[ -n "$ADDR" ]] || die "switchyard serve did not print its address within 30 s"
ENDPOINT="http://$ADDR"
"$BIN" --endpoint "$ENDPOINT" apply -f "$WORK/desired.yaml" -m "C binding tests" >"$WORK/apply.log"

# test_tls.c: config services over TLS whose clusters are the secured Kafka listeners.
start_tls_service() { # name extra-serve-args... ; sets TLS_ADDR
    local name=$1 addr=
    shift
    "$BIN" serve --in-memory --listen 127.0.0.1:0 --tls-cert "$TLS_DIR/broker.pem" \
        --tls-key "$TLS_DIR/broker.key" --client-tokens "$WORK/client-tokens" \
        --admin-token-file "$WORK/admin-token" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    TLS_PIDS+=($!)
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/^listening on //p' "$WORK/$name.out" | head -n1)
        [[ -n "$addr" ]] && break
        kill -0 "${TLS_PIDS[-1]}" 2>/dev/null || { cat "$WORK/$name.err" >&2; die "$name exited"; }
        sleep 0.1
    done
    [[ -n "$addr" ]] || die "$name did not print its address within 30 s"
    TLS_ADDR=$addr
}
TLS_DIR=${SWITCHYARD_KAFKA_TLS_DIR:-}
if [[ -n "$TLS_DIR" && -n "${KAFKA_SASL_SSL_BOOTSTRAP_1:-}" && -n "${KAFKA_MTLS_BOOTSTRAP_1:-}" ]]; then
    step "C: config services over TLS (one requiring client certificates) for the secured listeners"
    TOPIC_SCRAM="$RUN-scram"
    TOPIC_CERT="$RUN-cert"
    pids=()
    create_topic "$EAST" "$TOPIC_SCRAM" & pids+=($!)
    create_topic "$EAST" "$TOPIC_CERT" & pids+=($!)
    for p in "${pids[@]}"; do
        wait "$p" || { cat "$WORK"/create-*.log >&2; die "topic creation failed"; }
    done
    printf 'c-tls-admin-%s-0123456789\n' "$RUN" >"$WORK/admin-token"
    "$BIN" token new --app c-secure >"$WORK/token.out"
    SECURE_TOKEN=$(sed -n 's/^token: //p' "$WORK/token.out")
    tail -n1 "$WORK/token.out" >"$WORK/client-tokens"
    [[ -n "$SECURE_TOKEN" ]] || die "switchyard token new printed no token"
    cat >"$WORK/secure.yaml" <<EOF
clusters:
  - name: secure
    bootstrap: ["$KAFKA_SASL_SSL_BOOTSTRAP_1"]
    properties:
      security.protocol: SASL_SSL
      sasl.mechanism: SCRAM-SHA-512
      sasl.username: alice
      sasl.password: alice-secret
      ssl.ca.location: $TLS_DIR/ca.pem
  - name: certs
    bootstrap: ["$KAFKA_MTLS_BOOTSTRAP_1"]
    properties:
      security.protocol: SSL
      ssl.ca.location: $TLS_DIR/ca.pem
      ssl.certificate.location: $TLS_DIR/client.pem
      ssl.key.location: $TLS_DIR/client.key
topics:
  - name: $TOPIC_SCRAM
    cluster: secure
    partitions: 3
  - name: $TOPIC_CERT
    cluster: certs
    partitions: 3
EOF
    start_tls_service serve-tls
    TLS_ENDPOINT="https://$TLS_ADDR"
    start_tls_service serve-mtls --tls-client-ca "$TLS_DIR/ca.pem"
    MTLS_ENDPOINT="https://$TLS_ADDR"
    SWITCHYARD_TOKEN=$(cat "$WORK/admin-token") "$BIN" --endpoint "$TLS_ENDPOINT" \
        --ca-cert "$TLS_DIR/ca.pem" apply -f "$WORK/secure.yaml" -m "C TLS tests" \
        >"$WORK/apply-tls.log"
    SWITCHYARD_TOKEN=$(cat "$WORK/admin-token") "$BIN" --endpoint "$MTLS_ENDPOINT" \
        --ca-cert "$TLS_DIR/ca.pem" --client-cert "$TLS_DIR/client.pem" \
        --client-key "$TLS_DIR/client.key" apply -f "$WORK/secure.yaml" -m "C mTLS tests" \
        >"$WORK/apply-mtls.log"
    export SWITCHYARD_TEST_TLS_ENDPOINT="$TLS_ENDPOINT"
    export SWITCHYARD_TEST_MTLS_ENDPOINT="$MTLS_ENDPOINT"
    export SWITCHYARD_TEST_SECURE_TOKEN="$SECURE_TOKEN"
    export SWITCHYARD_TEST_TOPIC_SCRAM="$TOPIC_SCRAM"
    export SWITCHYARD_TEST_TOPIC_CERT="$TOPIC_CERT"
fi

step "C: compile the C tests with $CC under AddressSanitizer + UBSan"
CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -Wall -Wextra -Werror -pthread)
SAN=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
mkdir -p "$WORK/bin" "$WORK/tmp"
passed=0
failed=0
failures=()
todos=()
tests=()
for src in "$CDIR"/tests/c/test_*.c; do
    name=$(basename "$src" .c)
    if "$CC" "${CFLAGS[@]}" "${SAN[@]}" -I"$CDIR/include" -I"$CDIR/tests/c" "$src" \
        -L"$LIB_DIR" -lswitchyard_c -Wl,-rpath,"$LIB_DIR" -o "$WORK/bin/$name"; then
        tests+=("$name")
    else
        failed=$((failed + 1))
        failures+=("$name: does not compile")
    fi
done

# LeakSanitizer runs at exit of every test program; the suppressions file lists (with reasons)
# the allocations that are process-lifetime by design, none of them per call.
# fast_unwind_on_malloc=0: the Rust code has no frame pointers, so leak stacks need the slow
# (DWARF) unwinder to show the frames the suppressions name.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$CDIR/tests/c/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export SWITCHYARD_TEST_CONFIG_FILE="$WORK/desired.yaml"
export SWITCHYARD_TEST_ENDPOINT="$ENDPOINT"
export SWITCHYARD_TEST_TOPIC_A="$TOPIC_A"
export SWITCHYARD_TEST_TOPIC_B="$TOPIC_B"
export SWITCHYARD_TEST_PHYSICAL_B="$PHYSICAL_B"
export SWITCHYARD_TEST_TOPIC_S="$TOPIC_S"
export SWITCHYARD_TEST_REROUTE_CMD="'$BIN' --endpoint '$ENDPOINT' apply -f '$WORK/rerouted.yaml' -m 'C test: move $TOPIC_S to west' >>'$WORK/reroute.log' 2>&1"
export SWITCHYARD_TEST_TMPDIR="$WORK/tmp"
export SWITCHYARD_TEST_RUN="$RUN"
# Default last-known-good cache location of clients that do not name one (the example): a fresh
# directory, so no snapshot of an earlier service instance is picked up.
export SWITCHYARD_CACHE_DIR="$WORK/cache"

run_program() { # name command...
    local name=$1
    shift
    step "C: $name"
    local out=$WORK/$name.out status=0
    timeout 600 "$@" >"$out" || status=$?
    cat "$out"
    local ok nok todo
    ok=$(grep -c '^ok ' "$out" || true)
    nok=$(grep -c '^not ok ' "$out" || true)
    todo=$(grep -c '^ok .* # TODO ' "$out" || true)
    passed=$((passed + ok - todo))
    failed=$((failed + nok))
    while read -r line; do failures+=("$name: ${line#not ok - }"); done < <(grep '^not ok ' "$out" || true)
    while read -r line; do todos+=("$name: ${line#ok - }"); done < <(grep '^ok .* # TODO ' "$out" || true)
    if [[ $status -ne 0 && $nok -eq 0 ]]; then
        # A crash, a sanitizer report (leaks are reported at exit) or a timeout.
        failed=$((failed + 1))
        failures+=("$name: exited with status $status")
    fi
}
for t in "${tests[@]+"${tests[@]}"}"; do
    run_program "$t" "$WORK/bin/$t"
done

step "C: build and run examples/c"
example_status=0
make -s -C examples/c clean all SWITCHYARD_INCLUDE="$CDIR/include" SWITCHYARD_LIB_DIR="$LIB_DIR" \
    CC="$CC" EXTRA_CFLAGS="${SAN[*]}" BUILD_DIR="$WORK/example" || example_status=$?
if [[ $example_status -ne 0 ]]; then
    failed=$((failed + 1))
    failures+=("examples/c: build failed")
else
    out=$WORK/example.out
    if timeout 300 "$WORK/example/switchyard-example" "$ENDPOINT" "$TOPIC_A" 5 >"$out" 2>&1; then
        cat "$out"
        if grep -q '^consumed 5 records' "$out"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            failures+=("examples/c: did not consume its 5 records")
        fi
    else
        cat "$out"
        failed=$((failed + 1))
        failures+=("examples/c: exited with an error")
    fi
fi

step "C: examples/c linked statically (libswitchyard_c.a), configured from a file"
if make -s -C examples/c clean all LINK=static SWITCHYARD_INCLUDE="$CDIR/include" \
    SWITCHYARD_LIB_DIR="$LIB_DIR" CC="$CC" BUILD_DIR="$WORK/example-static"; then
    out=$WORK/example-static.out
    if timeout 300 "$WORK/example-static/switchyard-example" "$WORK/desired.yaml" "$TOPIC_B" 3 \
        >"$out" 2>&1 && grep -q '^consumed 3 records' "$out"; then
        cat "$out"
        passed=$((passed + 1))
    else
        cat "$out"
        failed=$((failed + 1))
        failures+=("examples/c (static, from a file): did not consume its 3 records")
    fi
else
    failed=$((failed + 1))
    failures+=("examples/c: static build failed")
fi

if [[ -s "$WORK/serve.err" ]] && grep -qE 'ERROR|panicked' "$WORK/serve.err"; then
    printf 'config service errors:\n' >&2
    grep -E 'ERROR|panicked' "$WORK/serve.err" >&2 || true
fi

# Expected failures (TAP "# TODO"): known issues outside the binding, listed, not counted.
for f in "${todos[@]+"${todos[@]}"}"; do printf 'KNOWN ISSUE (not counted): %s\n' "$f"; done
for f in "${failures[@]+"${failures[@]}"}"; do printf 'FAILED: %s\n' "$f"; done
echo "c tests: $passed passed, $failed failed"
[[ $failed -eq 0 && $passed -gt 0 ]] || exit 1

# Python (bindings/python): its own script, on the same Kafka clusters.
step "Python binding: scripts/test-python.sh"
scripts/test-python.sh

# Cross-language parity: Python and C participants in one scenario, on the same clusters.
step "Parity: scripts/test-parity.sh"
scripts/test-parity.sh
