"""Cross-language parity scenario: a route change and a live topic move under load, with a
producer in one language and a consumer group in the other, on two real Kafka clusters.

    python run_parity.py --bin target/debug/switchyard \\
        --c-producer BUILD/parity-producer --c-consumer BUILD/parity-consumer

(scripts/test-parity.sh builds the C participants and runs this with the test virtualenv's
Python, which has `switchyard` and confluent-kafka installed.) For each direction (default
both, run at the same time: Python producer -> C consumers, C producer -> Python consumers):

1. a fresh logical topic T (4 partitions) on cluster "east", physical T also created on "west";
2. a consumer group of CONSUMERS processes (default 2) and one producer process start; the
   producer sends KEYS keys round-robin, payload "KEY:SEQ", at RATE records/s;
3. after FIRST records reached east/T, `switchyard apply` re-routes T to west/T;
4. after SECOND records reached west/T and every consumer reports (client status) that it no
   longer reads east/T, `switchyard move-topic T --to east --to-topic T.back --wait` moves it
   back live (python->c: T.back is missing and created by the move; c->python: an empty T.back
   exists and is reused);
5. after THIRD records reached east/T.back the producer stops (stdin closed), flushes and
   reports per key what it sent and every failed send;
6. checks: the group received every delivered record exactly once and, per consumer and key,
   in order; an independent confluent-kafka reader finds every record exactly once in
   east/T + west/T + east/T.back, per key in order across the three; no send failed.

Prints one line per direction, e.g.
`parity python->c: sent=N received=N lost=0 duplicated=0 out_of_order=0
redelivered_after_failed_commit=0`, and details. A record received again because a member's
commit of it failed (a rebalance moved its partition) is Kafka's at-least-once redelivery: it is
counted apart (redelivered_after_failed_commit) and does not fail the run; every other repeat
is a duplicate and does.
Exits non-zero on any mismatch or when any bounded wait times out.

Participants speak a line protocol on stdout (see producer.c / consumer.c); they stop when their
standard input closes. The config service is the real `switchyard serve` on 127.0.0.1:0 with a
data directory and an admin token in a temporary directory; clusters come from
SWITCHYARD_KAFKA_CLUSTERS="host:port;host:port".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
PARTITIONS = 4


class Failure(Exception):
    """The scenario failed: a mismatch, a timeout or a participant that misbehaved."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Kafka


def create_topics(bootstrap: str, names: List[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in names])
    for name, f in fs.items():
        try:
            f.result(timeout=60)
        except Exception as e:  # confluent-kafka raises KafkaException
            raise Failure(f"cannot create topic {name} on {bootstrap}: {e}") from e
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(
            n in md.topics
            and len(md.topics[n].partitions) == PARTITIONS
            and all(p.leader >= 0 for p in md.topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise Failure(f"topics {names} on {bootstrap} had no leaders within 60 s")


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> List[Tuple[int, int, bytes, bytes]]:
    """Every record of `topic` up to its end offsets now, read with confluent-kafka (no group
    commits): (partition, offset, key, value) in partition and offset order."""
    c = CKConsumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"parity-check-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    })
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise Failure(f"{topic} on {bootstrap} cannot be read: {md.topics.get(topic)}")
        parts = sorted(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out = []
        pos = {p: 0 for p in parts}
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in parts):
            if time.monotonic() > deadline:
                raise Failure(f"reading {topic} on {bootstrap}: at {pos}, end offsets {ends} after {timeout} s")
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    raise Failure(f"reading {topic} on {bootstrap}: {m.error()}")
                if m.offset() < ends[m.partition()]:
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
                pos[m.partition()] = max(pos[m.partition()], m.offset() + 1)
        return sorted(out)
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------
# The config service


class Service:
    """`switchyard serve` on 127.0.0.1:0 with a data directory and an admin token, and the
    desired state the scenarios change (one writer at a time: `lock`)."""

    def __init__(self, binary: Path, clusters: Dict[str, str], workdir: Path) -> None:
        self.binary = binary
        self.clusters = clusters
        self.workdir = workdir
        self.token = secrets.token_hex(24)
        token_file = workdir / "admin-token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        self.topics: Dict[str, Tuple[str, str]] = {}  # logical -> (cluster, physical)
        self.lock = threading.Lock()
        self.out = open(workdir / "serve.out", "w+")
        self.err = open(workdir / "serve.err", "w+")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(workdir / "data"),
             "--admin-token-file", str(token_file)],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err,
        )
        deadline = time.monotonic() + 30
        while True:
            self.out.seek(0)
            m = re.search(r"^listening on (\S+)", self.out.read(), re.M)
            if m:
                self.endpoint = f"http://{m.group(1)}"
                break
            if self.proc.poll() is not None:
                self.err.seek(0)
                raise Failure(f"switchyard serve exited with {self.proc.returncode}: {self.err.read()}")
            if time.monotonic() > deadline:
                raise Failure("switchyard serve did not print its address within 30 s")
            time.sleep(0.05)

    def env(self) -> Dict[str, str]:
        return {**os.environ, "SWITCHYARD_TOKEN": self.token, "SWITCHYARD_AUTHOR": "parity"}

    def cli(self, args: List[str], timeout: float = 60) -> str:
        try:
            r = subprocess.run([str(self.binary), "--endpoint", self.endpoint, *args], env=self.env(),
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise Failure(f"switchyard {' '.join(args)} did not finish within {timeout} s") from e
        if r.returncode != 0:
            raise Failure(f"switchyard {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout

    def desired_yaml(self) -> str:
        lines = ["clusters:"]
        for name, bootstrap in self.clusters.items():
            lines += [f"  - name: {name}", f'    bootstrap: ["{bootstrap}"]']
        lines.append("topics:")
        for name, (cluster, physical) in sorted(self.topics.items()):
            lines += [f"  - name: {name}", f"    cluster: {cluster}", f"    physical: {physical}",
                      f"    partitions: {PARTITIONS}"]
        return "\n".join(lines) + "\n"

    def apply(self, comment: str) -> int:
        """Applies the desired state (caller holds `lock`); returns the new version."""
        path = self.workdir / f"desired-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(self.desired_yaml())
        out = self.cli(["apply", "-f", str(path), "-m", comment])
        m = re.search(r"applied: version (\d+)", out)
        if not m:
            raise Failure(f"switchyard apply printed no new version: {out}")
        return int(m.group(1))

    def clients(self) -> dict:
        return json.loads(self.cli(["clients", "-o", "json"]))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# Participants


class Participant:
    """A participant process: its stdout lines go to `on_line` (under the scenario's condition
    variable) and to a file; stdin open until `stop()`."""

    def __init__(self, name: str, argv: List[str], env: Dict[str, str], workdir: Path,
                 cond: threading.Condition, on_line: Callable[[str], None]) -> None:
        self.name = name
        self.cond = cond
        self.on_line = on_line
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     env=env, text=True, errors="replace", bufsize=1)
        self.exited = False
        self.stopped = False
        self.protocol_errors: List[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.out_path, "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                with self.cond:
                    try:
                        self.on_line(line.rstrip("\n"))
                    except (ValueError, KeyError, IndexError) as e:
                        self.protocol_errors.append(f"{line.rstrip()!r}: {e}")
                    self.cond.notify_all()
        self.proc.wait()
        with self.cond:
            self.exited = True
            self.cond.notify_all()

    def stop(self) -> None:
        self.stopped = True
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def wait(self, timeout: float) -> int:
        """Waits for the process to exit and its output to be read; kills it after `timeout`."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure(f"{self.name} did not exit within {timeout} s after its stdin closed")
        self.reader.join(30)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr_tail(self, n: int = 15) -> str:
        self.err.flush()
        try:
            lines = self.err_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in lines[-n:])


class ConsumerState:
    def __init__(self) -> None:
        self.ready = False
        # Receptions in arrival order: (key, seq, location, partition, offset).
        self.records: List[Tuple[str, int, str, int, int]] = []
        self.locations: Dict[str, int] = defaultdict(int)
        self.problems: List[str] = []  # bad payloads, wrong logical topic, poll errors
        self.commit_failures: List[str] = []
        # (location, partition, offset) of each failed commit.
        self.failed_commits: List[Tuple[str, int, int]] = []
        self.summary: Optional[str] = None


class ProducerState:
    def __init__(self) -> None:
        self.ready = False
        self.locations: Dict[str, int] = {}
        self.sent_per_key: Dict[str, int] = {}
        self.delivered_per_key: Dict[str, int] = {}
        self.failed: List[Tuple[str, int, str]] = []
        self.other: List[str] = []
        self.summary: Optional[Dict[str, int]] = None


def kv(fields: List[str]) -> Dict[str, str]:
    return dict(f.split("=", 1) for f in fields if "=" in f)


# ---------------------------------------------------------------------------------------------
# The scenario


class Scenario:
    def __init__(self, direction: str, service: Service, args: argparse.Namespace, workdir: Path) -> None:
        self.direction = direction
        self.producer_lang, self.consumer_lang = direction.split("->")
        self.service = service
        self.args = args
        self.workdir = workdir / direction.replace("->", "-to-")
        self.workdir.mkdir()
        tag = f"{self.producer_lang}2{self.consumer_lang}"
        self.apps = [f"parity-{tag}-consumer-{i}" for i in range(args.consumers)]
        self.producer_app = f"parity-{tag}-producer"
        self.topic = f"parity-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.back = f"{self.topic}.back"
        self.group = f"{self.topic}-group"
        # c->python reuses an empty destination created up front; python->c has it created.
        self.precreate_back = direction == "c->python"
        self.east, self.west = service.clusters["east"], service.clusters["west"]
        self.cond = threading.Condition()
        self.producer_state = ProducerState()
        self.consumer_states: List[ConsumerState] = []
        self.participants: List[Participant] = []
        self.move_output: List[str] = []
        self.received_keys: Set[Tuple[str, int]] = set()
        self.result: Optional[str] = None
        self.details: List[str] = []
        self.error: Optional[str] = None
        # Set by main when directions run at once: every scenario has applied its route change
        # before any live move starts, so the configuration changes come in a fixed order (both
        # whole-state applies, then the migrations) whatever the timing of each direction.
        self.rerouted: Optional[threading.Barrier] = None

    # -- locations
    def loc(self, cluster: str, physical: str) -> str:
        return f"{cluster}/{physical}"

    @property
    def locs(self) -> List[str]:
        return [self.loc("east", self.topic), self.loc("west", self.topic), self.loc("east", self.back)]

    # -- participants
    def env(self) -> Dict[str, str]:
        env = self.service.env()
        env.setdefault("SWITCHYARD_LOG", "info")
        env["SWITCHYARD_CACHE_DIR"] = str(self.workdir / "cache")
        return env

    def argv(self, role: str, lang: str, rest: List[str]) -> List[str]:
        if lang == "c":
            return [str(self.args.c_producer if role == "producer" else self.args.c_consumer), *rest]
        return [sys.executable, str(HERE / f"{role}.py"), *rest]

    def on_producer_line(self, line: str) -> None:
        s = self.producer_state
        parts = line.split(" ")
        if line == "ready":
            s.ready = True
        elif parts[0] == "progress":
            s.locations = {k: int(v) for k, v in kv(parts[1:]).items() if "/" in k}
        elif parts[0] == "key" and len(parts) == 4:
            f = kv(parts[2:])
            s.sent_per_key[parts[1]] = int(f["sent"])
            s.delivered_per_key[parts[1]] = int(f["delivered"])
        elif parts[0] == "failed" and len(parts) >= 4:
            s.failed.append((parts[1], int(parts[2]), " ".join(parts[3:])))
        elif parts[0] == "summary":
            s.summary = {k: int(v) for k, v in kv(parts[1:]).items()}
        elif parts[0] != "location":
            s.other.append(line)

    def on_consumer_line(self, s: ConsumerState, line: str) -> None:
        parts = line.split(" ")
        if line == "ready":
            s.ready = True
        elif parts[0] == "r" and len(parts) == 8:
            key, seq, cluster, physical, logical = parts[1], int(parts[2]), parts[3], parts[4], parts[7]
            location = self.loc(cluster, physical)
            s.records.append((key, seq, location, int(parts[5]), int(parts[6])))
            self.received_keys.add((key, seq))
            s.locations[location] += 1
            if logical != self.topic:
                s.problems.append(f"record {key}:{seq} from logical topic {logical}")
        elif parts[0] == "commit_failed" and len(parts) >= 2:
            s.commit_failures.append(line)
            where, offset = parts[1].rsplit("@", 1)
            location, partition = where.rsplit("/", 1)
            s.failed_commits.append((location, int(partition), int(offset)))
        elif parts[0] == "summary":
            s.summary = line
        else:
            s.problems.append(line)

    def wait_for(self, what: str, pred: Callable[[], bool], timeout: float) -> None:
        """Waits (condition variable, woken by every participant line) until `pred` holds;
        fails after `timeout` seconds or when a participant exits early."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                garbled = [f"{p.name}: {p.protocol_errors[0]}" for p in self.participants if p.protocol_errors]
                if garbled:
                    raise Failure(f"waiting for {what}: unreadable output line(s): {garbled}")
                dead = [p.name for p in self.participants if p.exited and not p.stopped]
                if dead:
                    raise Failure(f"waiting for {what}: {', '.join(dead)} exited early")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"waiting for {what}: not within {timeout:.0f} s")
                self.cond.wait(min(left, 1.0))

    def delivered_at(self, location: str) -> int:
        return self.producer_state.locations.get(location, 0)

    def received_total(self) -> int:
        return sum(len(c.records) for c in self.consumer_states)

    # -- steps
    def run(self) -> None:
        try:
            self._run()
        except Failure as e:
            self.error = str(e)
        except Exception as e:  # a bug in this driver: report it as a failure of the scenario
            self.error = f"{type(e).__name__}: {e}"
        finally:
            if self.rerouted is not None:
                self.rerouted.abort()  # no-op once every scenario has passed it
            for p in self.participants:
                p.stop()
            for p in self.participants:
                if p.proc.poll() is None:
                    try:
                        p.wait(30)
                    except Failure:
                        pass
                p.kill()

    def _run(self) -> None:
        a = self.args
        t, east, west = self.topic, self.loc("east", self.topic), self.loc("west", self.topic)
        back = self.loc("east", self.back)
        env = self.env()
        # Start: the group first, so it is reading when the first records arrive.
        for i in range(a.consumers):
            state = ConsumerState()
            self.consumer_states.append(state)
            app = self.apps[i]
            self.participants.append(Participant(
                f"{self.consumer_lang}-consumer-{i}",
                self.argv("consumer", self.consumer_lang, [self.service.endpoint, app, self.group, t]),
                env, self.workdir, self.cond, lambda line, s=state: self.on_consumer_line(s, line)))
        self.wait_for("the consumers to start", lambda: all(c.ready for c in self.consumer_states), 60)
        # Every member has its partitions before records flow: a member joining later would
        # rebalance the group while another holds records it has not committed yet, and Kafka
        # hands those to the new owner again (at-least-once), which this scenario is not about.
        self.wait_group_stable(self.east, 60)
        producer = Participant(
            f"{self.producer_lang}-producer",
            self.argv("producer", self.producer_lang,
                      [self.service.endpoint, self.producer_app, t, str(a.keys), str(a.rate)]),
            env, self.workdir, self.cond, self.on_producer_line)
        self.participants.append(producer)
        self.wait_for("the producer to start", lambda: self.producer_state.ready, 60)

        # (a) Route change with `switchyard apply`.
        self.wait_for(f"{a.first} records on {east}, some of them consumed",
                      lambda: self.delivered_at(east) >= a.first and self.received_total() > 0, 120)
        with self.service.lock:
            self.service.topics[t] = ("west", t)
            v_reroute = self.service.apply(f"parity {self.direction}: re-route {t} to west")
        log(f"{self.direction}: re-routed {t} to west in version {v_reroute}")
        self.wait_for(f"{a.second} records on {west}", lambda: self.delivered_at(west) >= a.second, 120)
        self.wait_drained(v_reroute, "east", t, 120)

        # (b) Live move back to east with `switchyard move-topic --wait`.
        if self.rerouted is not None:
            try:
                self.rerouted.wait(timeout=120)
            except threading.BrokenBarrierError as e:
                raise Failure("another direction failed or did not re-route its topic within 120 s") from e
        self.move_topic()
        self.wait_for(f"{a.third} records on {back}", lambda: self.delivered_at(back) >= a.third, 120)

        # Stop the producer; it reports what it sent.
        producer.stop()
        rc = producer.wait(120)
        s = self.producer_state
        if rc != 0 or s.summary is None:
            raise Failure(f"{producer.name} exited with {rc} without a summary:\n{producer.stderr_tail()}")
        expected = self.expected()
        # The group receives everything delivered; then a short look for duplicates.
        self.wait_for(f"the group to receive all {len(expected)} records",
                      lambda: len(self.received_keys) >= len(expected) and expected <= self.received_keys, 120)
        deadline = time.monotonic() + 2.0
        with self.cond:
            while time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
        consumers = [p for p in self.participants if p is not producer]
        for p in consumers:
            p.stop()
        for p, state in zip(consumers, self.consumer_states):
            rc = p.wait(60)
            if rc != 0 or state.summary is None:
                raise Failure(f"{p.name} exited with {rc} without a summary:\n{p.stderr_tail()}")
        self.check(expected)

    def wait_group_stable(self, bootstrap: str, timeout: float) -> None:
        """Until the group on `bootstrap` is stable with every consumer process as a member and
        the topic's partitions all assigned (Kafka's own view, with confluent-kafka)."""
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.monotonic() + timeout
        last = "not described yet"
        while True:
            try:
                d = admin.describe_consumer_groups([self.group], request_timeout=10)[self.group].result(timeout=15)
                assigned = sorted(tp.partition for m in d.members for tp in m.assignment.topic_partitions
                                  if tp.topic == self.topic)
                last = f"state {d.state.name}, {len(d.members)} member(s), partitions {assigned}"
                if (d.state == ConsumerGroupState.STABLE and len(d.members) == self.args.consumers
                        and assigned == list(range(PARTITIONS))
                        and all(m.assignment.topic_partitions for m in d.members)):
                    log(f"{self.direction}: group {last}")
                    return
            except Exception as e:  # KafkaException while the group forms
                last = f"describe failed: {e}"
            if time.monotonic() > deadline:
                raise Failure(f"the consumer group did not become stable within {timeout:.0f} s ({last})")
            with self.cond:
                if any(p.exited and not p.stopped for p in self.participants):
                    raise Failure(f"a consumer exited while the group formed ({last})")
                self.cond.wait(0.2)

    def wait_drained(self, version: int, cluster: str, physical: str, timeout: float) -> None:
        """Until every consumer process reports (client status) the version and that it no
        longer reads cluster/physical: the group has drained it. The move that follows must not
        overlap this drain."""
        apps = set(self.apps)
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            clients = [c for c in self.service.clients()["clients"] if c["app"] in apps]
            done = {
                c["app"] for c in clients
                if c["applied_version"] >= version and not any(
                    e["cluster"] == cluster and e["physical_topic"] == physical and e["group"] == self.group
                    for e in c["consuming"])
            }
            if done == apps:
                log(f"{self.direction}: the group drained {cluster}/{physical}")
                langs = sorted({(c["app"], c["language"]) for c in clients})
                self.details.append("consumer clients report " + ", ".join(f"{a}={l}" for a, l in langs))
                return
            last = f"drained: {sorted(done)} of {sorted(apps)}"
            if time.monotonic() > deadline:
                raise Failure(f"the group did not drain {cluster}/{physical} within {timeout:.0f} s ({last})")
            with self.cond:
                if any(p.exited and not p.stopped for p in self.participants):
                    raise Failure(f"a participant exited while the group drained {cluster}/{physical}")
                self.cond.wait(0.5)

    def move_topic(self) -> None:
        argv = [str(self.service.binary), "--endpoint", self.service.endpoint, "move-topic", self.topic,
                "--to", "east", "--to-topic", self.back, "--wait", "--timeout-secs", "120",
                "-m", f"parity {self.direction}: move {self.topic} back to east live"]
        started = time.monotonic()
        # The route change is a compare-and-set on the current version: no other change of this
        # driver may land between the command's read and its write.
        lines: List[str] = []
        proc = None
        killer = None
        try:
            with self.service.lock:
                proc = subprocess.Popen(argv, env=self.service.env(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                killer = threading.Timer(150, proc.kill)
                killer.start()
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line.rstrip("\n"))
                    if line.startswith("switched: version"):
                        self.service.topics[self.topic] = ("east", self.back)
                        break
            # Then it follows the clients (--wait) while other changes may go ahead.
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
            rc = proc.wait()
        finally:
            if killer is not None:
                killer.cancel()
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        took = time.monotonic() - started
        self.move_output = lines
        for line in lines:
            log(f"{self.direction}: move-topic: {line}")
        if rc != 0:
            raise Failure(f"switchyard move-topic exited with {rc} after {took:.1f} s:\n  " + "\n  ".join(lines))
        if not any(line.startswith("complete in") for line in lines):
            raise Failure("switchyard move-topic --wait did not report completion:\n  " + "\n  ".join(lines))
        if any(line.startswith("warning:") for line in lines):
            raise Failure("switchyard move-topic reported late writes:\n  " + "\n  ".join(lines))
        # python->c: the destination was missing; c->python: an empty one was created up front.
        want = "destination existed" if self.precreate_back else "destination created"
        if not any(want in line for line in lines):
            raise Failure(f"switchyard move-topic did not report \"{want}\":\n  " + "\n  ".join(lines))
        self.details.append(f"move-topic --wait took {took:.1f} s ({want})")

    # -- checks
    def expected(self) -> Set[Tuple[str, int]]:
        s = self.producer_state
        assert s.summary is not None
        failed = {(k, q) for k, q, _ in s.failed}
        exp = {(k, q) for k, n in s.sent_per_key.items() for q in range(n) if (k, q) not in failed}
        problems = []
        if s.failed:
            shown = "; ".join(f"{k}:{q} {why}" for k, q, why in s.failed[:5])
            problems.append(f"{len(s.failed)} send(s) failed, e.g. {shown}")
        if s.other:
            problems.append(f"producer reported: {s.other[:5]}")
        if s.summary["sent"] != sum(s.sent_per_key.values()):
            problems.append(f"producer summary sent={s.summary['sent']} but per-key sent adds up to "
                            f"{sum(s.sent_per_key.values())}")
        if s.summary["delivered"] != len(exp) or s.summary["sent"] != s.summary["delivered"] + s.summary["failed"]:
            problems.append(f"producer summary {s.summary} does not add up ({len(exp)} expected records)")
        if problems:
            raise Failure("; ".join(problems))
        return exp

    def check(self, expected: Set[Tuple[str, int]]) -> None:
        problems: List[str] = []
        # (key, seq) -> receptions as (consumer, location, partition, offset).
        got: Dict[Tuple[str, int], List[Tuple[int, str, int, int]]] = defaultdict(list)
        out_of_order = 0
        for i, c in enumerate(self.consumer_states):
            last: Dict[str, int] = {}
            mine: Set[Tuple[str, int]] = set()
            for k, q, location, partition, offset in c.records:
                got[(k, q)].append((i, location, partition, offset))
                # Per consumer and key, each record later than the previous one. A repeat is
                # counted below (duplicate or redelivery), not as a reordering as well.
                if (k, q) in mine:
                    continue
                mine.add((k, q))
                if k in last and q <= last[k]:
                    out_of_order += 1
                last[k] = q
            if c.problems:
                problems.append(f"consumer {i}: {c.problems[:5]}")

        def uncommitted(r: Tuple[int, str, int, int]) -> bool:
            """The consumer reported a failed commit covering this reception."""
            i, location, partition, offset = r
            return any(fl == location and fp == partition and fo >= offset
                       for fl, fp, fo in self.consumer_states[i].failed_commits)

        # A record received again after a member's commit of it failed (a rebalance took the
        # partition: IllegalGeneration), by another member or by the same one, is Kafka's
        # at-least-once redelivery: counted apart, one per failed-commit reception. Any other
        # repeat is a duplicate.
        redelivered = duplicated = 0
        # How the redelivered records came back: to the same member or to another one.
        same_member = other_member = 0
        for recs in got.values():
            extra = len(recs) - 1
            if extra > 0:
                explained = min(extra, sum(1 for r in recs if uncommitted(r)))
                redelivered += explained
                duplicated += extra - explained
                if explained:
                    if len({r[0] for r in recs}) == 1:
                        same_member += 1
                    else:
                        other_member += 1
        failed_commits = [f for c in self.consumer_states for f in c.commit_failures]
        if failed_commits:
            self.details.append(f"failed commits: {failed_commits[:3]}; redelivered records came back to "
                                f"the same member {same_member}, to another member {other_member}")
        received = sum(len(v) for v in got.values())
        lost = len(expected - got.keys())
        unexpected = len(got.keys() - expected)
        sent = len(expected)
        self.result = (f"parity {self.direction}: sent={sent} received={received} lost={lost} "
                       f"duplicated={duplicated} out_of_order={out_of_order} "
                       f"redelivered_after_failed_commit={redelivered}")
        for p in self.participants:
            if p.protocol_errors:
                problems.append(f"{p.name} printed unreadable lines, e.g. {p.protocol_errors[0]}")
        if unexpected:
            problems.append(f"{unexpected} received record(s) were never delivered to the producer")
        commit_failures = sum(len(c.commit_failures) for c in self.consumer_states)
        by_consumer = ", ".join(
            f"{i}: " + " ".join(f"{loc}={n}" for loc, n in sorted(c.locations.items()))
            for i, c in enumerate(self.consumer_states))
        self.details.append(f"producer delivered {self.producer_state.locations}; "
                            f"consumers received [{by_consumer}]; commit failures {commit_failures}")

        # Independent reader: the three physical topics hold every record once, per key in order.
        bootstrap = {"east": self.east, "west": self.west}
        logs: Dict[str, List[Tuple[int, int, bytes, bytes]]] = {}
        for location in self.locs:
            cluster, physical = location.split("/", 1)
            logs[location] = read_topic(bootstrap[cluster], physical)
        in_logs: Dict[Tuple[str, int], int] = defaultdict(int)
        per_key: Dict[str, List[int]] = defaultdict(list)
        bad = 0
        for location in self.locs:
            for _, _, key, value in logs[location]:
                m = re.fullmatch(rb"(k\d{2,3}):(\d+)", value or b"")
                if m is None or key != m.group(1):
                    bad += 1
                    continue
                k, q = m.group(1).decode(), int(m.group(2))
                in_logs[(k, q)] += 1
                per_key[k].append(q)
        log_lost = len(expected - in_logs.keys())
        log_dup = sum(n - 1 for n in in_logs.values())
        log_extra = len(in_logs.keys() - expected) + bad
        # Per key, east/T then west/T then east/T.back (each in offset order) is the send order.
        log_order = sum(1 for seqs in per_key.values() for a, b in zip(seqs, seqs[1:]) if b <= a)
        counts = {loc: len(v) for loc, v in logs.items()}
        self.details.append(f"logs (confluent-kafka): {counts} lost={log_lost} duplicated={log_dup} "
                            f"unexpected={log_extra} out_of_order={log_order}")
        if counts != {loc: self.producer_state.locations.get(loc, 0) for loc in self.locs}:
            problems.append(f"the logs hold {counts} but the producer's deliveries say {self.producer_state.locations}")
        if any(counts[loc] == 0 for loc in self.locs):
            problems.append(f"a location got no records: {counts}")
        if (log_lost, log_dup, log_extra, log_order) != (0, 0, 0, 0):
            problems.append(f"logs: lost={log_lost} duplicated={log_dup} unexpected={log_extra} "
                            f"out_of_order={log_order}")
        if (lost, duplicated, out_of_order) != (0, 0, 0):
            problems.append("the consumer group lost, duplicated or reordered records")
        if problems:
            raise Failure("; ".join(problems))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, required=True, help="the switchyard binary")
    ap.add_argument("--c-producer", type=Path, required=True)
    ap.add_argument("--c-consumer", type=Path, required=True)
    ap.add_argument("--directions", default="python->c,c->python")
    ap.add_argument("--sequential", action="store_true", help="one direction after the other")
    ap.add_argument("--keys", type=int, default=16)
    ap.add_argument("--rate", type=int, default=300, help="records per second per producer")
    ap.add_argument("--consumers", type=int, default=2, help="consumer processes in each group")
    ap.add_argument("--first", type=int, default=2000, help="records on east before the route change")
    ap.add_argument("--second", type=int, default=1000, help="records on west before the move")
    ap.add_argument("--third", type=int, default=500, help="records on the moved topic before the stop")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    directions = [d.strip() for d in a.directions.split(",") if d.strip()]
    for d in directions:
        if d not in ("python->c", "c->python", "python->python", "c->c"):
            ap.error(f"unknown direction {d!r} (python->c, c->python, python->python, c->c)")
    for name in ("keys", "rate", "consumers", "first", "second", "third"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if a.keys > 1000:
        ap.error("--keys must be at most 1000")
    for p in (a.bin, a.c_producer, a.c_consumer):
        if not os.access(p, os.X_OK):
            ap.error(f"{p} is not an executable file")
    parts = [p for p in os.environ.get("SWITCHYARD_KAFKA_CLUSTERS", "").split(";") if p]
    if len(parts) < 2:
        ap.error('SWITCHYARD_KAFKA_CLUSTERS must name two Kafka clusters ("host:port;host:port")')
    clusters = {"east": parts[0], "west": parts[1]}

    workdir = Path(tempfile.mkdtemp(prefix="switchyard-parity."))
    ok = False
    service: Optional[Service] = None
    scenarios: List[Scenario] = []
    started = time.monotonic()
    try:
        service = Service(a.bin, clusters, workdir)
        log(f"config service at {service.endpoint} (data and token in {workdir})")
        scenarios = [Scenario(d, service, a, workdir) for d in directions]
        # Physical topics: T on both clusters; c->python also gets an empty T.back to reuse.
        create_topics(clusters["east"], [s.topic for s in scenarios]
                      + [s.back for s in scenarios if s.precreate_back])
        create_topics(clusters["west"], [s.topic for s in scenarios])
        with service.lock:
            for s in scenarios:
                service.topics[s.topic] = ("east", s.topic)
            service.apply("parity: fresh topics on east")
        if not a.sequential and len(scenarios) > 1:
            barrier = threading.Barrier(len(scenarios))
            for s in scenarios:
                s.rerouted = barrier
        threads = [threading.Thread(target=s.run, name=s.direction) for s in scenarios]
        for th in threads:
            th.start()
            if a.sequential:
                th.join()
        for th in threads:
            th.join()
        ok = all(s.error is None for s in scenarios)
    except Failure as e:
        print(f"parity: {e}", file=sys.stderr)
    finally:
        if service is not None:
            service.close()
    for s in scenarios:
        for d in s.details:
            print(f"  {s.direction}: {d}")
        if s.error is not None:
            print(f"FAILED parity {s.direction}: {s.error}")
            for p in s.participants:
                tail = p.stderr_tail()
                if tail:
                    print(f"  {p.name} stderr (last lines):\n{tail}")
        if s.result:
            print(s.result)
    print(f"parity: {len(scenarios)} direction(s) in {time.monotonic() - started:.1f} s, "
          f"{'passed' if ok else 'FAILED'}")
    if ok and not a.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"parity: work directory kept: {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
