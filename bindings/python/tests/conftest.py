"""Fixtures: two real Kafka clusters, the real config service binary, fresh topics.

Needs (scripts/test-python.sh provides them):
- SWITCHYARD_KAFKA_CLUSTERS="host:port;host:port": two running Kafka clusters ("east", "west").
- SWITCHYARD_BIN: the `switchyard` CLI (default: target/debug/switchyard of this repository).
- For the TLS tests (test_tls.py), the secured listeners of `scripts/kafka.sh start N --secure`:
  SWITCHYARD_KAFKA_TLS_DIR (its CA, server and client certificates), KAFKA_BOOTSTRAP_1,
  KAFKA_SASL_SSL_BOOTSTRAP_1, KAFKA_MTLS_BOOTSTRAP_1 and SWITCHYARD_KAFKA_SCRAM_USERS.

Nothing is skipped: without Kafka or the binary the tests fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[3]


def _clusters() -> Dict[str, str]:
    raw = os.environ.get("SWITCHYARD_KAFKA_CLUSTERS", "")
    parts = [p for p in raw.split(";") if p]
    if len(parts) < 2:
        raise RuntimeError(
            "SWITCHYARD_KAFKA_CLUSTERS must name two Kafka clusters (host:port;host:port); "
            "scripts/test-python.sh starts them"
        )
    return {"east": parts[0], "west": parts[1]}


def fresh(prefix: str) -> str:
    """A topic or group name no other test (or earlier run) uses."""
    return f"py-{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


class Service:
    """The real config service (`switchyard serve --in-memory`), driven with `switchyard apply`.

    The desired state accumulates: every topic declared by any test stays declared, so
    applying one test's change never removes another's topics.

    `serve_args` are added to `switchyard serve` (TLS, client tokens, an admin token file);
    `cli_args` to every other CLI call (`--ca-cert`, `--client-cert`...), `cli_env` to its
    environment (SWITCHYARD_TOKEN); `scheme` is the endpoint's. `cluster_properties` gives a
    cluster its Kafka client properties (security settings).
    """

    def __init__(self, binary: Path, clusters: Dict[str, str], workdir: Path, *, name: str = "serve",
                 serve_args: Sequence[str] = (), cli_args: Sequence[str] = (),
                 cli_env: Optional[Dict[str, str]] = None, scheme: str = "http",
                 cluster_properties: Optional[Dict[str, Dict[str, str]]] = None) -> None:
        self.binary = binary
        self.clusters = clusters
        self.cluster_properties = cluster_properties or {}
        self.workdir = workdir
        self.cli_args = list(cli_args)
        self.cli_env = dict(os.environ, **(cli_env or {}))
        self.topics: Dict[str, dict] = {}
        self.quotas: List[dict] = []
        self.lock = threading.Lock()
        self.out = open(workdir / f"{name}.out", "w+")
        self.err = open(workdir / f"{name}.err", "w+")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--in-memory", "--listen", "127.0.0.1:0", *serve_args],
            stdout=self.out,
            stderr=self.err,
        )
        deadline = time.monotonic() + 30
        addr = None
        while time.monotonic() < deadline:
            self.out.seek(0)
            m = re.search(r"^listening on (\S+)", self.out.read(), re.M)
            if m:
                addr = m.group(1)
                break
            if self.proc.poll() is not None:
                self.err.seek(0)
                raise RuntimeError(f"switchyard serve exited: {self.err.read()}")
            time.sleep(0.05)
        if addr is None:
            raise RuntimeError("switchyard serve did not print its address within 30 s")
        self.addr = addr
        self.endpoint = f"{scheme}://{addr}"
        self.version = 0

    def desired_yaml(self) -> str:
        lines = ["clusters:"]
        for name, bootstrap in self.clusters.items():
            lines += [f"  - name: {name}", f'    bootstrap: ["{bootstrap}"]']
            props = self.cluster_properties.get(name)
            if props:
                # JSON strings are YAML strings: paths and passwords need no further quoting.
                lines.append("    properties:")
                lines += [f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(props.items())]
        lines.append("topics:")
        for name, t in sorted(self.topics.items()):
            lines += [f"  - name: {name}", f"    cluster: {t['cluster']}", f"    partitions: {t['partitions']}"]
            if t.get("physical"):
                lines.append(f"    physical: {t['physical']}")
        if self.quotas:
            lines.append("quotas:")
            for q in self.quotas:
                lines.append(f"  - app: {q['app']}")
                for k, v in q.items():
                    if k != "app":
                        lines.append(f"    {k}: {v}")
        return "\n".join(lines) + "\n"

    def write_desired(self) -> Path:
        path = self.workdir / f"desired-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(self.desired_yaml())
        return path

    def apply(self, message: str = "python tests") -> int:
        """Applies the accumulated desired state; returns the new configuration version."""
        with self.lock:
            path = self.write_desired()
            r = subprocess.run(
                [str(self.binary), "--endpoint", self.endpoint, *self.cli_args,
                 "apply", "-f", str(path), "-m", message],
                capture_output=True,
                text=True,
                timeout=60,
                env=self.cli_env,
            )
            if r.returncode != 0:
                raise RuntimeError(f"switchyard apply failed: {r.stdout}{r.stderr}")
            m = re.search(r"version (\d+)", r.stdout)
            assert m, r.stdout
            self.version = int(m.group(1))
            return self.version

    def route(self, topic: str, cluster: str, partitions: int = 3, physical: Optional[str] = None) -> None:
        self.topics[topic] = {"cluster": cluster, "partitions": partitions, "physical": physical}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def clusters() -> Dict[str, str]:
    return _clusters()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="switchyard-py-tests.") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def switchyard_bin() -> Path:
    binary = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target" / "debug" / "switchyard"))
    if not binary.exists():
        raise RuntimeError(f"no switchyard binary at {binary} (set SWITCHYARD_BIN)")
    return binary


@pytest.fixture(scope="session")
def service(switchyard_bin: Path, clusters: Dict[str, str], workdir: Path) -> Iterator[Service]:
    # Clients that name no cache directory get a fresh one.
    os.environ["SWITCHYARD_CACHE_DIR"] = str(workdir / "cache")
    svc = Service(switchyard_bin, clusters, workdir)
    yield svc
    svc.close()


def create_topics(bootstrap: str, names: List[str], partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    for _, f in fs.items():
        f.result(timeout=60)
    # Wait until the metadata shows every partition with a leader.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(n in md.topics and len(md.topics[n].partitions) == partitions
               and all(p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {names} not ready on {bootstrap}")


class Topics:
    """Creates fresh physical topics and routes for one test."""

    def __init__(self, service: Service, clusters: Dict[str, str]) -> None:
        self.service = service
        self.clusters = clusters

    def new(self, prefix: str, cluster: str = "east", partitions: int = 3, also_on: Optional[str] = None,
            physical: Optional[str] = None) -> str:
        """A fresh logical topic routed to `cluster` (and created on `also_on` too, for moves)."""
        name = fresh(prefix)
        create_topics(self.clusters[cluster], [physical or name], partitions)
        if also_on:
            create_topics(self.clusters[also_on], [physical or name], partitions)
        self.service.route(name, cluster, partitions, physical)
        return name


@pytest.fixture()
def topics(service: Service, clusters: Dict[str, str]) -> Topics:
    return Topics(service, clusters)


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Every record of `topic` on `bootstrap`, read by an independent confluent-kafka consumer
    (no group commits): waits until `expected` records arrived (or the timeout passed), then
    returns them as (partition, offset, key, value) tuples."""
    c = CKConsumer({
        "bootstrap.servers": bootstrap,
        "group.id": fresh("check"),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    })
    try:
        md = c.list_topics(topic, timeout=10)
        parts = md.topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    raise RuntimeError(str(m.error()))
                out.append((m.partition(), m.offset(), m.key(), m.value()))
        # Anything beyond `expected` (duplicates) that is already there.
        for m in c.consume(num_messages=10000, timeout=1.0):
            if not m.error():
                out.append((m.partition(), m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()
