"""Python producer throughput: switchyard vs confluent-kafka, same broker, same run.

Both sides send N x 100-byte keyed records (key ``k<i % 1000>``) to the same fresh 6-partition
topic with the same properties (acks=all, enable.idempotence=true, linger.ms=5: the SDK's
producer defaults, as in sdk/benches/producer.rs), through the same loop: ``produce(topic,
value, key=..., on_delivery=cb)``, ``poll(0)`` every 1,000 records, ``flush()`` at the end. A
record counts once its delivery callback reported success; the clock stops when all have.
Each side first sends and flushes one record (connection, metadata, producer id; for
switchyard also the topic's lane). Rounds alternate confluent / switchyard.

    SWITCHYARD_KAFKA_CLUSTERS="host:port;..." python bench/producer_bench.py [--messages N]
        [--rounds R] [--quick]

Uses the first cluster. Prints each round, then both mean rates and their ratio
(switchyard / confluent; target >= 1.0).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid

from importlib import metadata

import confluent_kafka
from confluent_kafka import Producer as CKProducer
from confluent_kafka.admin import AdminClient, NewTopic

import switchyard

PROPS = {"acks": "all", "enable.idempotence": "true", "linger.ms": "5"}
PAYLOAD = b"x" * 100
PARTITIONS = 6


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)]).values():
        f.result(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        t = admin.list_topics(timeout=10).topics.get(name)
        if t is not None and len(t.partitions) == PARTITIONS and all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {name} not ready")


def run(producer, topic: str, n: int, keys: list) -> float:
    """The common loop; returns records per second (all delivered)."""
    counts = [0, 0]

    def on_delivery(err, _msg):
        counts[0 if err is None else 1] += 1

    produce = producer.produce
    poll = producer.poll
    payload = PAYLOAD
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                produce(topic, payload, key=keys[i % 1000], on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.05)
        if i % 1000 == 0:
            poll(0)
    left = producer.flush(120)
    secs = time.perf_counter() - start
    if left or counts[1] or counts[0] != n:
        raise RuntimeError(f"delivered {counts[0]} of {n}, failed {counts[1]}, {left} outstanding")
    return n / secs


def warm(producer, topic: str) -> None:
    producer.produce(topic, PAYLOAD, key=b"warm")
    if producer.flush(60):
        raise RuntimeError("warm-up record not delivered")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="20,000 messages, 1 round (smoke run)")
    a = ap.parse_args()
    if a.quick:
        a.messages, a.rounds = 20_000, 1
    clusters = os.environ.get("SWITCHYARD_KAFKA_CLUSTERS", "")
    if not clusters:
        print("set SWITCHYARD_KAFKA_CLUSTERS (eval \"$(scripts/kafka.sh start 2)\")", file=sys.stderr)
        return 2
    bootstrap = clusters.split(";")[0]
    topic = f"py-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    try:
        return bench(a, bootstrap, topic)
    finally:
        # A round writes about 300 MB to the broker: the topic goes when the bench ends.
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.delete_topics([topic]).values():
            try:
                f.result(timeout=60)
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"could not delete topic {topic}: {e}", file=sys.stderr)


def bench(a, bootstrap: str, topic: str) -> int:
    keys = [f"k{i}".encode() for i in range(1000)]

    with tempfile.TemporaryDirectory() as d:
        desired = os.path.join(d, "desired.yaml")
        with open(desired, "w") as f:
            f.write(
                f'clusters:\n  - name: east\n    bootstrap: ["{bootstrap}"]\n'
                f"topics:\n  - name: {topic}\n    cluster: east\n    partitions: {PARTITIONS}\n"
            )
        sy = switchyard.Switchyard.from_file(desired, "py-bench")

        print(
            f"python producer throughput: {a.messages} x {len(PAYLOAD)}-byte keyed records, "
            f"acks=all, idempotent, linger.ms=5, {PARTITIONS} partitions, {a.rounds} round(s) each, "
            f"alternating; python {platform.python_version()}, switchyard {switchyard.__version__}, "
            f"confluent-kafka {metadata.version('confluent-kafka')} "
            f"(librdkafka {confluent_kafka.libversion()[0]})"
        )
        ck_rates, sy_rates = [], []
        for r in range(a.rounds):
            ck = CKProducer({"bootstrap.servers": bootstrap, **PROPS})
            warm(ck, topic)
            x = run(ck, topic, a.messages, keys)
            del ck
            print(f"  round {r + 1}: confluent-kafka {x:>10.0f} msg/s", flush=True)
            ck_rates.append(x)

            p = sy.producer()
            warm(p, topic)
            y = run(p, topic, a.messages, keys)
            p.close()
            print(f"  round {r + 1}: switchyard      {y:>10.0f} msg/s   (ratio {y / x:.3f})", flush=True)
            sy_rates.append(y)
        sy.close()

    ck_mean = sum(ck_rates) / len(ck_rates)
    sy_mean = sum(sy_rates) / len(sy_rates)
    print(
        f"RESULT python producer confluent-kafka={ck_mean:.0f} msg/s switchyard={sy_mean:.0f} msg/s "
        f"ratio={sy_mean / ck_mean:.3f} (mean of {a.rounds} round(s); target >= 1.0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
