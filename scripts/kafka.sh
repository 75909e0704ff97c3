#!/usr/bin/env bash
# scripts/kafka.sh - run real Apache Kafka (KRaft, combined broker+controller
# mode) on loopback for Switchyard's integration tests and benchmarks.
#
# Needs only bash, coreutils, Java 17+ and Maven (the Kafka jars come from
# Maven Central through `mvn`; no tarball download, no docker).
#
#   scripts/kafka.sh fetch                 resolve the Kafka jars into the cache
#   scripts/kafka.sh start N [--dir DIR] [--secure]
#                                          start N independent single-node clusters
#                                          (--secure adds SASL_SSL and mTLS listeners)
#   scripts/kafka.sh stop    [--dir DIR]   stop them and delete their data
#   scripts/kafka.sh status  [--dir DIR]   show what runs
#
#   eval "$(scripts/kafka.sh start 2)"     # exports KAFKA_BOOTSTRAP_1.. and
#                                          # SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p"
#
# Run `scripts/kafka.sh help` for the environment variables.

set -euo pipefail

readonly PROG="${0##*/}"
readonly DEFAULT_KAFKA_VERSIONS="4.1.1 4.1.2 4.0.2"
readonly LOG4J_VERSION="${SWITCHYARD_KAFKA_LOG4J_VERSION:-2.24.3}"
readonly SLF4J_VERSION="${SWITCHYARD_KAFKA_SLF4J_VERSION:-2.0.17}"
readonly DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
readonly STARTED_MARKER="Kafka Server started"
readonly MAX_CLUSTERS=16

KAFKA_VERSION=""  # set by resolve_kafka
CACHE_DIR=""      # set by resolve_kafka
LIB_DIR=""        # set by resolve_kafka
RUN_DIR="${SWITCHYARD_KAFKA_DIR:-/tmp/switchyard-kafka}"
SECURE=0 # start --secure
# SCRAM (and PLAIN) users of --secure clusters.
readonly SCRAM_USERS="alice:alice-secret bob:bob-secret admin:admin-secret"

usage() {
  cat <<EOF
Usage: $PROG <command> [arguments]

Runs real Apache Kafka ${DEFAULT_KAFKA_VERSIONS%% *} (KRaft combined mode) on 127.0.0.1 for tests.

Commands:
  fetch                    Resolve kafka_2.13 + kafka-tools + log4j2 jars with mvn
                           into the cache (no-op when already there).
  start N [--dir DIR] [--secure]
                           Fetch if needed, then start N independent single-node
                           clusters under DIR and wait until each one answers.
                           Prints 'export KAFKA_BOOTSTRAP_<i>=127.0.0.1:PORT' lines and
                           'export SWITCHYARD_KAFKA_CLUSTERS="h:p;h:p"' on stdout (all
                           progress goes to stderr), so: eval "\$($PROG start 2)".
                           The same lines, without 'export', go to DIR/clusters.env.
                           --secure: every cluster also gets a SASL_SSL listener
                           (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN) and an SSL listener
                           that requires a client certificate (mTLS), with a CA and
                           certificates generated with openssl under DIR/tls, and
                           also prints:
                             KAFKA_SASL_SSL_BOOTSTRAP_<i>  the SASL_SSL listener
                             KAFKA_MTLS_BOOTSTRAP_<i>      the mTLS listener
                             SWITCHYARD_KAFKA_TLS_DIR      ca.pem (the CA), client.pem +
                                                           client.key (a client certificate,
                                                           CN=switchyard-client, key PKCS#8
                                                           unencrypted), other-ca.pem (a CA
                                                           the brokers do not trust),
                                                           untrusted-client.pem/.key (a
                                                           client certificate signed by it)
                             SWITCHYARD_KAFKA_SCRAM_USERS  "user:password ..." created for
                                                           SCRAM-SHA-256 and -512 and PLAIN
                                                           (alice, bob, admin)
                           ACLs are enforced (StandardAuthorizer; resources without
                           ACLs stay open; ANONYMOUS, i.e. the plaintext listener,
                           and admin are super users). On cluster 1, topics named
                           alice-* are for User:alice only and bob-* for User:bob.
  stop [--dir DIR]         SIGTERM every broker recorded under DIR, SIGKILL after
                           30 s, delete their data. Safe when nothing runs.
  status [--dir DIR]       Show the clusters under DIR. Exit 0 when all recorded
                           clusters run, 1 when some do not, 3 when none are recorded.
  env [--dir DIR]          Print the export lines of the running clusters again.
  classpath                Print the Java classpath of the fetched jars.
  run CLASS [ARGS...]      Run a Java main class on that classpath, e.g.
                           $PROG run org.apache.kafka.tools.TopicCommand \\
                             --bootstrap-server 127.0.0.1:PORT --list
  help                     This text.

Environment:
  SWITCHYARD_KAFKA_VERSION        Kafka version (default: first of "$DEFAULT_KAFKA_VERSIONS"
                                  that resolves).
  SWITCHYARD_KAFKA_CACHE          Jar cache (default: \$HOME/.cache/switchyard/kafka-<version>).
  SWITCHYARD_KAFKA_DIR            Run directory (default: /tmp/switchyard-kafka); --dir wins.
  SWITCHYARD_KAFKA_START_TIMEOUT  Seconds to wait for all clusters to start (default 90).
  SWITCHYARD_KAFKA_STOP_TIMEOUT   Seconds to wait after SIGTERM before SIGKILL (default 30).
  SWITCHYARD_KAFKA_AUTO_CREATE    auto.create.topics.enable (default false).
  SWITCHYARD_KAFKA_EXTRA_PROPS    Extra server.properties lines (newline separated);
                                  they override the defaults.
  SWITCHYARD_KAFKA_LOG_LEVEL      Root log level of the brokers (default WARN).
  SWITCHYARD_KAFKA_KEEP_DATA      1 = 'stop' keeps the data and logs under DIR.
  SWITCHYARD_KAFKA_MVN_ARGS       Extra arguments for mvn (e.g. -o, -Dmaven.repo.local=...).
  KAFKA_HEAP                      Broker heap flags (default "-Xmx512m -Xms256m");
                                  KAFKA_HEAP_OPTS is honoured too.
  KAFKA_JVM_OPTS                  Extra JVM flags for the brokers.
  KAFKA_TOOL_HEAP                 Heap flags for 'run' (default -Xmx256m).
  MVN / JAVA                      The mvn and java commands (default: mvn, java).
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

now() { date +%s; }

java_cmd() { printf '%s' "${JAVA:-java}"; }

# --------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------

kafka_candidates() {
  if [[ -n "${SWITCHYARD_KAFKA_VERSION:-}" ]]; then
    printf '%s\n' "$SWITCHYARD_KAFKA_VERSION"
  else
    printf '%s\n' "${DEFAULT_KAFKA_VERSIONS// /$'\n'}"
  fi
}

cache_dir_for() { printf '%s' "${SWITCHYARD_KAFKA_CACHE:-$HOME/.cache/switchyard/kafka-$1}"; }

# True when the jars of version $1 are complete in its cache dir.
is_fetched() {
  local dir
  dir="$(cache_dir_for "$1")"
  [[ -f "$dir/libs/.complete" ]] &&
    [[ "$(cat "$dir/libs/.complete")" == "$1" ]] &&
    [[ -f "$dir/libs/kafka_2.13-$1.jar" ]]
}

write_pom() {
  local version=$1 pom=$2
  cat >"$pom" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/kafka.sh: the runtime classpath of a Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.switchyard.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- broker (kafka.Kafka) and kafka.tools.StorageTool -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$version</version>
    </dependency>
    <!-- CLI tools: TopicCommand, ConsoleProducer, consumer.ConsoleConsumer, ... -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$version</version>
      <exclusions>
        <!-- only for the Connect plugin tool; drags in jetty and jersey -->
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>jackson-jakarta-rs-json-provider</artifactId></exclusion>
      </exclusions>
    </dependency>
    <!-- logging: slf4j 2 bound to log4j2 (kafka_2.13 alone resolves slf4j-api 1.7 and no binding) -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

# Resolve the jars of version $1 into its cache dir. Returns non-zero on failure.
fetch_version() {
  local version=$1 dir started count
  dir="$(cache_dir_for "$version")"
  mkdir -p "$dir"
  write_pom "$version" "$dir/pom.xml"
  rm -rf "$dir/libs.tmp"
  log "fetching Apache Kafka $version jars with mvn into $dir/libs ..."
  started=$(now)
  local -a extra=()
  if [[ -n "${SWITCHYARD_KAFKA_MVN_ARGS:-}" ]]; then
    read -r -a extra <<<"$SWITCHYARD_KAFKA_MVN_ARGS"
  fi
  if ! "${MVN:-mvn}" -q -B "${extra[@]}" -f "$dir/pom.xml" \
      "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime \
      -DoutputDirectory="$dir/libs.tmp" >"$dir/mvn.log" 2>&1; then
    log "mvn could not resolve Kafka $version; last lines of $dir/mvn.log:"
    tail -n 25 "$dir/mvn.log" >&2 || true
    rm -rf "$dir/libs.tmp"
    return 1
  fi
  if [[ ! -f "$dir/libs.tmp/kafka_2.13-$version.jar" ]]; then
    log "mvn finished but kafka_2.13-$version.jar is missing"
    return 1
  fi
  printf '%s' "$version" >"$dir/libs.tmp/.complete"
  rm -rf "$dir/libs"
  mv "$dir/libs.tmp" "$dir/libs"
  count=$(find "$dir/libs" -name '*.jar' | wc -l)
  log "fetched $count jars ($(du -sh "$dir/libs" | cut -f1)) in $(($(now) - started)) s"
}

# Sets KAFKA_VERSION, CACHE_DIR and LIB_DIR, fetching when needed.
resolve_kafka() {
  local v
  for v in $(kafka_candidates); do
    if is_fetched "$v"; then
      KAFKA_VERSION=$v
      break
    fi
  done
  if [[ -z "$KAFKA_VERSION" ]]; then
    command -v "${MVN:-mvn}" >/dev/null 2>&1 || die "mvn not found (needed once to fetch the Kafka jars)"
    for v in $(kafka_candidates); do
      if fetch_version "$v"; then
        KAFKA_VERSION=$v
        break
      fi
    done
  fi
  [[ -n "$KAFKA_VERSION" ]] || die "no Kafka version among: $(kafka_candidates | tr '\n' ' ')could be fetched"
  CACHE_DIR="$(cache_dir_for "$KAFKA_VERSION")"
  LIB_DIR="$CACHE_DIR/libs"
}

cmd_fetch() {
  [[ $# -eq 0 ]] || die "fetch takes no arguments"
  resolve_kafka
  log "Kafka $KAFKA_VERSION jars ready in $LIB_DIR"
}

# --------------------------------------------------------------------------
# helpers for start/stop/status
# --------------------------------------------------------------------------

# Prints $1 distinct free loopback TCP ports, space separated.
pick_ports() {
  local n=$1
  if command -v python3 >/dev/null 2>&1; then
    # Bind them all at once so they are distinct, then release them.
    python3 - "$n" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
    return
  fi
  # Fallback: random ports below the kernel's ephemeral range that nothing
  # listens on.
  local low=32768 lo hi p tries=0
  local -a got=()
  if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  fi
  if ((low > 21000)); then lo=20000 hi=$((low - 1)); else lo=10000 hi=19999; fi
  while ((${#got[@]} < n)); do
    ((++tries < 10000)) || die "could not find $n free ports"
    p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
    [[ " ${got[*]} " == *" $p "* ]] && continue
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    got+=("$p")
  done
  printf '%s\n' "${got[*]}"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when the broker on 127.0.0.1:$1 answers a Kafka ApiVersions v0 request
# (api_key 18, correlation id 7, empty client id) with error code 0.
broker_answers() {
  local port=$1 out
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  out=$(timeout 5 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\x00\x00" >&3
      head -c 10 <&3 | od -An -v -tx1
    ' _ "$port" 2>/dev/null) || return 1
  out=$(printf '%s' "$out" | tr -s ' \n' ' ')
  # bytes 4..7: correlation id 7; bytes 8..9: error code 0
  [[ "$out" =~ ^\ ?[0-9a-f]{2}\ [0-9a-f]{2}\ [0-9a-f]{2}\ [0-9a-f]{2}\ 00\ 00\ 00\ 07\ 00\ 00\ ?$ ]]
}

# Cluster directories under $RUN_DIR, in numeric order.
cluster_dirs() {
  local d
  [[ -d "$RUN_DIR" ]] || return 0
  for d in "$RUN_DIR"/cluster-*; do
    [[ -d "$d" ]] && printf '%s\n' "$d"
  done | sort -t- -k2 -n -s
}

# Prints the pid recorded in cluster dir $1 if that process is alive and is
# the broker started there (guards against pid reuse).
live_pid() {
  local cdir=$1 pid args
  [[ -f "$cdir/kafka.pid" ]] || return 1
  pid=$(<"$cdir/kafka.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  args=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
  [[ "$args" == *"-Dswitchyard.kafka.dir=$cdir "* && "$args" == *kafka.Kafka* ]] || return 1
  printf '%s' "$pid"
}

random_cluster_id() {
  # A Kafka Uuid: 16 random bytes, base64url without padding (22 chars). Like
  # Kafka's Uuid.randomUuid(), never one that starts with '-' (CLI parsers
  # would take it for an option).
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ ${#id} -eq 22 && "$id" != -* ]] && break
  done
  printf '%s' "$id"
}

write_cluster_config() {
  local cdir=$1 bport=$2 cport=$3 sport=${4:-} mport=${5:-}
  local listeners="PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$bport"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n "$sport" ]]; then
    listeners+=",SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$mport"
    advertised+=",SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$mport"
    protocols+=",SASL_SSL:SASL_SSL,SSL:SSL"
  fi
  mkdir -p "$cdir/data"
  cat >"$cdir/server.properties" <<EOF
# Generated by scripts/kafka.sh: single-node KRaft cluster for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
log.dirs=$cdir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=${SWITCHYARD_KAFKA_AUTO_CREATE:-false}
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=10
EOF
  if [[ -n "$sport" ]]; then
    local tls=$RUN_DIR/tls plain_users="" u
    for u in $SCRAM_USERS; do plain_users+=" user_${u%%:*}=\"${u#*:}\""; done
    cat >>"$cdir/server.properties" <<EOF
# --secure: SASL_SSL (SCRAM, PLAIN) and SSL with client certificates (mTLS).
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain_users;
ssl.keystore.type=PEM
ssl.keystore.location=$tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
listener.name.ssl.ssl.client.auth=required
# ACLs are enforced (one principal per app); a resource without ACLs stays open to
# everyone, and the plaintext listeners' principal (ANONYMOUS) and admin bypass them.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS;User:admin
EOF
  fi
  if [[ -n "${SWITCHYARD_KAFKA_EXTRA_PROPS:-}" ]]; then
    printf '# SWITCHYARD_KAFKA_EXTRA_PROPS\n%s\n' "$SWITCHYARD_KAFKA_EXTRA_PROPS" >>"$cdir/server.properties"
  fi
  # WARN and above (plus the one INFO line that says the server started) to
  # stdout, which start redirects into server.log.
  cat >"$cdir/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="${SWITCHYARD_KAFKA_LOG_LEVEL:-WARN}"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO" additivity="false"><AppenderRef ref="STDOUT"/></Logger>
  </Loggers>
</Configuration>
EOF
}

# Generates, under $1 (once; kept while the files are there): a CA, the brokers'
# PEM keystore (key + certificate for 127.0.0.1 and localhost, signed by the CA),
# a client certificate signed by the CA (mTLS), and a second CA the brokers do
# not trust with a client certificate of its own (for negative tests).
make_tls() {
  local dir=$1
  [[ -s "$dir/broker-keystore.pem" && -s "$dir/untrusted-client.pem" ]] && return 0
  command -v openssl >/dev/null 2>&1 || { log "--secure needs openssl"; return 1; }
  mkdir -p "$dir"
  (
    set -e
    cd "$dir"
    days=3650
    gen_ca() { # name subject
      openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "$2" \
        -keyout "$1.key" -out "$1.pem" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
    }
    gen_cert() { # name subject ca extension
      openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key.tmp" -out "$1.csr"
      openssl pkcs8 -topk8 -nocrypt -in "$1.key.tmp" -out "$1.key"
      rm -f "$1.key.tmp"
      printf 'basicConstraints=CA:FALSE\n%s\n' "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
        -days "$days" -out "$1.pem" -extfile "$1.ext"
      rm -f "$1.csr" "$1.ext"
    }
    gen_ca ca "/CN=switchyard-test-ca"
    gen_ca other-ca "/CN=switchyard-untrusted-ca"
    gen_cert broker "/CN=localhost" ca "subjectAltName=IP:127.0.0.1,DNS:localhost"
    gen_cert client "/CN=switchyard-client" ca "extendedKeyUsage=clientAuth"
    gen_cert untrusted-client "/CN=switchyard-client" other-ca "extendedKeyUsage=clientAuth"
    cat broker.key broker.pem ca.pem >broker-keystore.pem
    chmod 600 ./*.key broker-keystore.pem
  ) >"$dir/openssl.log" 2>&1 || {
    log "could not generate the certificates; see $dir/openssl.log"
    tail -n 20 "$dir/openssl.log" >&2 || true
    return 1
  }
  log "generated a CA and certificates under $dir"
}

# --------------------------------------------------------------------------
# stop
# --------------------------------------------------------------------------

# Stops every broker under $RUN_DIR; deletes the data unless $1 == keep.
stop_all() {
  local keep=${1:-} cdir pid deadline
  local -a pids=()
  while IFS= read -r cdir; do
    if pid=$(live_pid "$cdir"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      log "sent SIGTERM to broker $(basename "$cdir") (pid $pid)"
    fi
  done < <(cluster_dirs)
  deadline=$(($(now) + ${SWITCHYARD_KAFKA_STOP_TIMEOUT:-30}))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && (($(now) < deadline)); do
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid still alive after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
  done
  if [[ "$keep" != keep ]] && [[ -d "$RUN_DIR" ]]; then
    while IFS= read -r cdir; do
      rm -rf "$cdir"
    done < <(cluster_dirs)
    rm -f "$RUN_DIR/clusters.env"
    rm -rf "$RUN_DIR/tls"
    rmdir "$RUN_DIR" 2>/dev/null || true
  fi
  return 0
}

cmd_stop() {
  [[ $# -eq 0 ]] || die "unexpected argument: $1"
  if [[ ! -d "$RUN_DIR" ]]; then
    log "nothing to stop in $RUN_DIR"
    return 0
  fi
  if [[ "${SWITCHYARD_KAFKA_KEEP_DATA:-0}" == 1 ]]; then
    stop_all keep
  else
    stop_all
  fi
  log "stopped"
}

# --------------------------------------------------------------------------
# start
# --------------------------------------------------------------------------

env_lines() {
  # $1: prefix ("export " or ""); remaining: bootstrap addresses in order
  local prefix=$1 i=0 b joined=""
  shift
  for b in "$@"; do
    i=$((i + 1))
    printf '%sKAFKA_BOOTSTRAP_%d=%s\n' "$prefix" "$i" "$b"
    joined+="${joined:+;}$b"
  done
  printf '%sSWITCHYARD_KAFKA_CLUSTERS="%s"\n' "$prefix" "$joined"
}

START_FAILED_CLEANUP=0
on_start_abort() {
  if ((START_FAILED_CLEANUP)); then
    log "interrupted; stopping the clusters started so far"
    stop_all || true
  fi
  exit 130
}

# Prints the log tail of cluster dir $1 to stderr.
show_log_tail() {
  local cdir=$1 f
  for f in "$cdir/format.log" "$cdir/server.log"; do
    if [[ -s "$f" ]]; then
      log "---- last 50 lines of $f ----"
      tail -n 50 "$f" >&2 || true
    fi
  done
}

# One attempt to start $1 clusters. Returns 0 on success, 2 when a port was
# taken meanwhile (worth retrying with new ports), 1 otherwise.
start_attempt() {
  local n=$1 timeout=$2 i cdir pid deadline
  deadline=$(($(now) + timeout))
  local -a ports bports=() sports=() mports=() cdirs=() fpids=()
  local -a heap jvm_extra=() scram=()
  local per=2
  if ((SECURE)); then
    per=4
    make_tls "$RUN_DIR/tls" || return 1
    local u
    for u in $SCRAM_USERS; do
      scram+=("--add-scram" "SCRAM-SHA-256=[name=${u%%:*},password=${u#*:}]")
      scram+=("--add-scram" "SCRAM-SHA-512=[name=${u%%:*},password=${u#*:}]")
    done
  fi
  read -r -a ports <<<"$(pick_ports $((per * n)))"
  ((${#ports[@]} == per * n)) || die "could not pick $((per * n)) free ports"
  read -r -a heap <<<"${KAFKA_HEAP:-${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}}"
  if [[ -n "${KAFKA_JVM_OPTS:-}" ]]; then
    read -r -a jvm_extra <<<"$KAFKA_JVM_OPTS"
  fi

  mkdir -p "$RUN_DIR"
  for ((i = 1; i <= n; i++)); do
    cdir="$RUN_DIR/cluster-$i"
    cdirs+=("$cdir")
    bports+=("${ports[per * i - per]}")
    if ((SECURE)); then
      sports+=("${ports[per * i - 2]}")
      mports+=("${ports[per * i - 1]}")
      write_cluster_config "$cdir" "${ports[per * i - per]}" "${ports[per * i - per + 1]}" \
        "${ports[per * i - 2]}" "${ports[per * i - 1]}"
    else
      write_cluster_config "$cdir" "${ports[per * i - per]}" "${ports[per * i - per + 1]}"
    fi
    printf '127.0.0.1:%s\n' "${ports[per * i - per]}" >"$cdir/bootstrap"
  done

  # Format the storage of all clusters in parallel (one JVM each).
  log "formatting $n cluster(s) (Kafka $KAFKA_VERSION) under $RUN_DIR"
  for cdir in "${cdirs[@]}"; do
    timeout "$timeout" "$(java_cmd)" -Xmx256m \
      -Dlog4j2.configurationFile="$cdir/log4j2.xml" \
      -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
      "--cluster-id=$(random_cluster_id)" --config "$cdir/server.properties" "${scram[@]}" \
      </dev/null >"$cdir/format.log" 2>&1 &
    fpids+=("$!")
  done
  local failed=0 frc
  for i in "${!fpids[@]}"; do
    frc=0
    wait "${fpids[$i]}" || frc=$?
    if ((frc == 124)); then
      log "formatting ${cdirs[$i]} timed out after ${timeout}s (SWITCHYARD_KAFKA_START_TIMEOUT)"
    elif ((frc != 0)); then
      log "formatting ${cdirs[$i]} failed (exit $frc)"
    fi
    if ((frc != 0)); then
      show_log_tail "${cdirs[$i]}"
      failed=1
    fi
  done
  ((failed == 0)) || return 1

  # Launch the brokers, each in its own session so that the caller's
  # terminal signals and `$(...)` pipes do not reach them.
  local -a launcher=()
  if command -v setsid >/dev/null 2>&1; then launcher=(setsid); fi
  START_FAILED_CLEANUP=1
  for cdir in "${cdirs[@]}"; do
    rm -f "$cdir/kafka.pid"
    # The inner bash records its own pid, then execs (same pid) into java.
    # shellcheck disable=SC2016 # $$ and $1 belong to the inner bash
    "${launcher[@]}" bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$cdir/kafka.pid" \
      nohup "$(java_cmd)" "-Dswitchyard.kafka.dir=$cdir" "${heap[@]}" \
      -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      "-Dlog4j2.configurationFile=$cdir/log4j2.xml" "${jvm_extra[@]}" \
      -cp "$LIB_DIR/*" kafka.Kafka "$cdir/server.properties" \
      </dev/null >"$cdir/server.log" 2>&1 &
  done
  log "started $n broker(s); waiting up to $((deadline - $(now)))s more for them to answer"

  # Wait until every broker logged that it started and answers ApiVersions.
  local -a ready=()
  local nready=0
  while ((nready < n)); do
    for ((i = 0; i < n; i++)); do
      [[ "${ready[$i]:-}" == 1 ]] && continue
      cdir="${cdirs[$i]}"
      if [[ ! -s "$cdir/kafka.pid" ]]; then
        continue # the launcher has not run yet
      fi
      if ! pid=$(live_pid "$cdir"); then
        log "broker $(basename "$cdir") exited during startup"
        show_log_tail "$cdir"
        if grep -q 'Address already in use' "$cdir/server.log" 2>/dev/null; then return 2; fi
        return 1
      fi
      if grep -q "$STARTED_MARKER" "$cdir/server.log" 2>/dev/null &&
        port_open "${bports[$i]}" && broker_answers "${bports[$i]}" &&
        { ((!SECURE)) || { port_open "${sports[$i]}" && port_open "${mports[$i]}"; }; }; then
        ready[i]=1
        nready=$((nready + 1))
        log "cluster $((i + 1)) ready at 127.0.0.1:${bports[$i]} (pid $pid)"
      fi
    done
    ((nready < n)) || break
    if (($(now) >= deadline)); then
      for ((i = 0; i < n; i++)); do
        if [[ "${ready[$i]:-}" != 1 ]]; then
          log "cluster $((i + 1)) did not start within ${timeout}s (SWITCHYARD_KAFKA_START_TIMEOUT)"
          show_log_tail "${cdirs[$i]}"
        fi
      done
      return 1
    fi
    sleep 0.5
  done

  if ((SECURE)); then
    add_acls "127.0.0.1:${bports[0]}" || return 1
  fi
  local -a boots=()
  for ((i = 0; i < n; i++)); do boots+=("127.0.0.1:${bports[$i]}"); done
  {
    env_lines "" "${boots[@]}"
    if ((SECURE)); then
      for ((i = 0; i < n; i++)); do
        printf 'KAFKA_SASL_SSL_BOOTSTRAP_%d=127.0.0.1:%s\n' $((i + 1)) "${sports[$i]}"
        printf 'KAFKA_MTLS_BOOTSTRAP_%d=127.0.0.1:%s\n' $((i + 1)) "${mports[$i]}"
      done
      printf 'SWITCHYARD_KAFKA_TLS_DIR=%s\n' "$RUN_DIR/tls"
      printf 'SWITCHYARD_KAFKA_SCRAM_USERS="%s"\n' "$SCRAM_USERS"
    fi
  } >"$RUN_DIR/clusters.env"
  sed 's/^/export /' "$RUN_DIR/clusters.env"
  return 0
}

# On the cluster at $1: topics whose names start with "alice-" may be used by
# User:alice only, "bob-" by User:bob only (and the super users), so a test can see
# a broker refuse one app's principal on another app's topic.
add_acls() {
  local boot=$1 u
  for u in alice bob; do
    "$(java_cmd)" -Xmx256m -cp "$LIB_DIR/*" org.apache.kafka.tools.AclCommand \
      --bootstrap-server "$boot" --add --allow-principal "User:$u" --operation All \
      --topic "$u-" --resource-pattern-type prefixed >>"$RUN_DIR/acls.log" 2>&1 || {
      log "could not add the ACLs for $u; see $RUN_DIR/acls.log"
      tail -n 20 "$RUN_DIR/acls.log" >&2 || true
      return 1
    }
  done
  log "ACLs on cluster 1: topics alice-* for User:alice only, bob-* for User:bob only"
}

cmd_start() {
  local n=${1:-}
  if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_CLUSTERS)); then
    die "start needs a cluster count between 1 and $MAX_CLUSTERS (see '$PROG help')"
  fi
  shift
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --secure) SECURE=1 ;;
      *) die "unexpected argument: $1" ;;
    esac
    shift
  done
  local timeout=${SWITCHYARD_KAFKA_START_TIMEOUT:-90}
  [[ "$timeout" =~ ^[0-9]+$ ]] || die "SWITCHYARD_KAFKA_START_TIMEOUT must be a number of seconds"

  command -v "$(java_cmd)" >/dev/null 2>&1 || die "java not found (Java 17+ is needed)"
  resolve_kafka

  local cdir
  while IFS= read -r cdir; do
    if live_pid "$cdir" >/dev/null; then
      die "Kafka already runs under $RUN_DIR ($(basename "$cdir")); run '$PROG stop --dir $RUN_DIR' first"
    fi
  done < <(cluster_dirs)
  stop_all # clears stale data of dead clusters

  trap on_start_abort INT TERM
  local started attempt rc
  started=$(now)
  for attempt in 1 2 3; do
    rc=0
    start_attempt "$n" "$timeout" || rc=$?
    if ((rc == 0)); then
      trap - INT TERM
      log "$n cluster(s) up in $(($(now) - started)) s; see $RUN_DIR/clusters.env"
      return 0
    fi
    log "start failed; stopping what was started"
    stop_all keep
    ((rc == 2 && attempt < 3)) || break
    log "a port was taken meanwhile; retrying with new ports"
    stop_all
  done
  trap - INT TERM
  log "logs kept under $RUN_DIR (remove them with '$PROG stop --dir $RUN_DIR')"
  exit 1
}

# --------------------------------------------------------------------------
# status, env, classpath, run
# --------------------------------------------------------------------------

cmd_status() {
  [[ $# -eq 0 ]] || die "unexpected argument: $1"
  local cdir pid boot total=0 up=0 state
  while IFS= read -r cdir; do
    total=$((total + 1))
    boot=$(cat "$cdir/bootstrap" 2>/dev/null || echo '?')
    if pid=$(live_pid "$cdir"); then
      up=$((up + 1))
      if [[ "$boot" != '?' ]] && broker_answers "${boot##*:}"; then
        state="running, answering"
      else
        state="running, not answering"
      fi
      printf '%s\tpid %s\t%s\t%s\n' "$(basename "$cdir")" "$pid" "$boot" "$state"
    else
      printf '%s\t-\t%s\tnot running\n' "$(basename "$cdir")" "$boot"
    fi
  done < <(cluster_dirs)
  if ((total == 0)); then
    echo "no clusters under $RUN_DIR"
    return 3
  fi
  echo "$up of $total cluster(s) running under $RUN_DIR"
  ((up == total)) || return 1
}

cmd_env() {
  [[ $# -eq 0 ]] || die "unexpected argument: $1"
  [[ -f "$RUN_DIR/clusters.env" ]] || die "no clusters.env under $RUN_DIR (nothing started?)"
  sed 's/^/export /' "$RUN_DIR/clusters.env"
}

cmd_classpath() {
  resolve_kafka >/dev/null
  printf '%s/*\n' "$LIB_DIR"
}

cmd_run() {
  [[ $# -ge 1 ]] || die "run needs a Java class name"
  resolve_kafka
  local -a heap
  read -r -a heap <<<"${KAFKA_TOOL_HEAP:--Xmx256m}"
  local log4j="$CACHE_DIR/tools-log4j2.xml"
  if [[ ! -f "$log4j" ]]; then
    cat >"$log4j" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="STDERR" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="STDERR"/></Root></Loggers>
</Configuration>
EOF
  fi
  exec "$(java_cmd)" "${heap[@]}" "-Dlog4j2.configurationFile=$log4j" -cp "$LIB_DIR/*" "$@"
}

# --------------------------------------------------------------------------

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  # --dir DIR may appear anywhere after the command (not for run).
  local -a args=()
  if [[ "$cmd" != run ]]; then
    while [[ $# -gt 0 ]]; do
      case "$1" in
        --dir)
          [[ $# -ge 2 ]] || die "--dir needs a directory"
          RUN_DIR=$2
          shift 2
          ;;
        --dir=*)
          RUN_DIR=${1#--dir=}
          shift
          ;;
        *)
          args+=("$1")
          shift
          ;;
      esac
    done
  else
    args=("$@")
  fi
  [[ -n "$RUN_DIR" ]] || die "empty run directory"
  # One absolute spelling: the pid check matches it in the broker's command line.
  if command -v realpath >/dev/null 2>&1; then
    RUN_DIR=$(realpath -m -- "$RUN_DIR")
  elif [[ "$RUN_DIR" != /* ]]; then
    RUN_DIR="$PWD/$RUN_DIR"
  fi

  case "$cmd" in
    fetch) cmd_fetch "${args[@]}" ;;
    start) cmd_start "${args[@]}" ;;
    stop) cmd_stop "${args[@]}" ;;
    status) cmd_status "${args[@]}" ;;
    env) cmd_env "${args[@]}" ;;
    classpath) cmd_classpath "${args[@]}" ;;
    run) cmd_run "${args[@]}" ;;
    help | -h | --help) usage ;;
    "") usage >&2; exit 2 ;;
    *) log "unknown command: $cmd"; usage >&2; exit 2 ;;
  esac
}

main "$@"
