"""Switchyard from Python: produce to a logical topic and read it back.

    python examples/python/quickstart.py http://127.0.0.1:7070 orders 5     # config service
    python examples/python/quickstart.py desired-state.yaml orders 5         # static file

The first argument is a config service endpoint (http:// or https://) or a desired-state file
(the format of `switchyard apply -f`). Install the module first: see README.md, "Python".
"""

from __future__ import annotations

import sys
import time
import uuid

import switchyard


def main(source: str, topic: str, count: int) -> int:
    if source.startswith(("http://", "https://")):
        sy = switchyard.Switchyard.connect(source, "python-example")
    else:
        sy = switchyard.Switchyard.from_file(source, "python-example")
    with sy:
        print(f"configuration version {sy.version}; {topic} is routed to {sy.route(topic)}")
        run = uuid.uuid4().hex[:8]

        # Non-blocking sends; callbacks run on this thread inside flush() (or poll()).
        def on_delivery(err, delivery):
            if err is not None:
                print(f"send failed ({err.kind}, retriable={err.retriable}): {err}; record {err.record}")
            else:
                print(f"delivered to {delivery.cluster}/{delivery.physical_topic} "
                      f"partition {delivery.partition} offset {delivery.offset}")

        with sy.producer() as producer:
            for i in range(count):
                producer.produce(topic, f"hello {i}".encode(), key=f"{run}-{i}",
                                 headers={"run": run}, on_delivery=on_delivery)
            left = producer.flush(30)
            if left:
                print(f"{left} records not delivered in time")
                return 1
            # Or one blocking send that returns where the record went:
            d = producer.send(topic, b"and one more", key=f"{run}-last", headers={"run": run})
            print(f"sent synchronously: offset {d.offset} on {d.cluster}")

        # Read this run's records back (a fresh group starts at the earliest record).
        mine = 0
        with sy.consumer(f"python-example-{run}", [topic]) as consumer:
            deadline = time.monotonic() + 60
            while mine < count + 1 and time.monotonic() < deadline:
                msg = consumer.poll(timeout=1.0)
                if msg is None:
                    continue
                if dict(msg.headers).get("run") == run.encode():
                    mine += 1
                consumer.commit(msg)
        print(f"consumed {mine} records")
        return 0 if mine == count + 1 else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    except switchyard.SwitchyardError as e:
        print(f"error ({e.kind}): {e}", file=sys.stderr)
        sys.exit(1)
