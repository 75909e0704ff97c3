#!/usr/bin/env bash
# C producer benchmark: switchyard-c vs raw librdkafka on the same real broker, same topic,
# same run (issue 8 target: ratio >= 0.95). Builds the release cdylib, links the bench against
# it and against the static librdkafka that rdkafka-sys built for it (same version).
#
#   bindings/c/bench/run.sh [MESSAGES [ROUNDS]]     # default 1000000 x 3 rounds
#
# Needs SWITCHYARD_KAFKA_CLUSTERS="h:p;..." (eval "$(scripts/kafka.sh start 2)"); uses the first
# cluster.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
MESSAGES=${1:-1000000}
ROUNDS=${2:-3}
CC=${CC:-cc}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
: "${SWITCHYARD_KAFKA_CLUSTERS:?set it: eval \"\$(scripts/kafka.sh start 2)\"}"
BOOTSTRAP=${SWITCHYARD_KAFKA_CLUSTERS%%;*}

cargo build --release --locked -p switchyard-c >&2
LIB_DIR=$TARGET_DIR/release
# The librdkafka build of the rdkafka-sys that the release cdylib was linked with.
RDK_OUT=$(ls -td "$TARGET_DIR"/release/build/rdkafka-sys-*/out 2>/dev/null | while read -r d; do
    [[ -f "$d/src/librdkafka.a" ]] && { echo "$d"; break; }
done)
[[ -n "$RDK_OUT" ]] || { echo "no librdkafka.a under $TARGET_DIR/release/build/rdkafka-sys-*/out" >&2; exit 1; }

# librdkafka.a needs the static libraries rdkafka-sys built it with: libcurl (OIDC), the
# vendored OpenSSL, zstd and zlib (the newest build of each).
newest_lib() {
    find "$TARGET_DIR/release/build" -path "*/$1-*/out/*" -name "$2" -printf '%T@ %p\n' 2>/dev/null |
        sort -rn | head -n 1 | cut -d' ' -f2-
}
DEPS=()
for spec in "curl-sys libcurl.a" "openssl-sys libssl.a" "openssl-sys libcrypto.a" \
    "zstd-sys libzstd.a" "libz-sys libz.a"; do
    # shellcheck disable=SC2086 # two words: crate and file
    lib=$(newest_lib $spec)
    [[ -n "$lib" ]] && DEPS+=("$lib")
done

WORK=$(mktemp -d /tmp/switchyard-c-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$CC" -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -g -Wall -Wextra -Werror -pthread \
    -I"$ROOT/bindings/c/include" -isystem "$RDK_OUT/src" bindings/c/bench/producer_bench.c \
    "$RDK_OUT/src/librdkafka.a" "${DEPS[@]}" -L"$LIB_DIR" -lswitchyard_c -Wl,-rpath,"$LIB_DIR" \
    -lz -lm -ldl -lpthread -o "$WORK/producer_bench"

TOPIC="c-bench-$$-$(date +%s)"
bash scripts/kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --create --topic "$TOPIC" --partitions 6 --replication-factor 1 >&2
# A round writes about 600 MB to the broker: the topic goes when the bench ends.
trap 'bash scripts/kafka.sh run org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$BOOTSTRAP" --delete --topic "$TOPIC" >&2 || true; rm -rf "$WORK"' EXIT
cat >"$WORK/desired.yaml" <<YAML
clusters:
  - name: bench
    bootstrap: ["$BOOTSTRAP"]
topics:
  - name: $TOPIC
    cluster: bench
    partitions: 6
YAML
"$WORK/producer_bench" "$BOOTSTRAP" "$TOPIC" "$WORK/desired.yaml" "$MESSAGES" "$ROUNDS"
