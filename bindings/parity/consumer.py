"""Parity scenario consumer in Python (bindings/parity/run_parity.py starts it).

    python consumer.py ENDPOINT APP GROUP TOPIC

The same program as consumer.c, through ``import switchyard``: joins consumer group GROUP over
logical TOPIC and, until standard input closes, prints every record it receives and commits
synchronously: a batch (the next record, then up to 31 more already there) is printed, then the
last record of each partition in it is committed, each commit awaited before the next poll. The
bearer token comes from SWITCHYARD_TOKEN when set.
Output lines are those of consumer.c:

    ready                                                      (after the first poll returned)
    r KEY SEQ CLUSTER PHYSICAL PARTITION OFFSET LOGICAL        (one per record received)
    bad CLUSTER PHYSICAL PARTITION OFFSET                      (a payload that is not KEY:SEQ)
    commit_failed CLUSTER/PHYSICAL/PARTITION@OFFSET KIND MESSAGE
    poll_error KIND MESSAGE
    summary received=N commit_failures=C poll_errors=E

Exits 0 after the summary, 1 when it cannot connect, 2 on bad arguments.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import switchyard

PAYLOAD = re.compile(rb"k(\d{2,3}):(\d+)")
# Records handed out before one round of commits.
BATCH_MAX = 32


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def main() -> int:
    if len(sys.argv) != 5:
        print(f"usage: {sys.argv[0]} ENDPOINT APP GROUP TOPIC", file=sys.stderr)
        return 2
    endpoint, app, group, topic = sys.argv[1:5]

    stop = threading.Event()

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(256):
                pass
        finally:
            stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    try:
        sy = switchyard.Switchyard.connect(
            endpoint, app, token=os.environ.get("SWITCHYARD_TOKEN") or None, no_cache=True
        )
        consumer = sy.consumer(group, [topic], auto_commit=False)
    except switchyard.SwitchyardError as e:
        print(f"connect: {e.kind}: {e}", file=sys.stderr)
        return 1

    received = commit_failures = poll_errors = 0
    ready = False
    out = sys.stdout
    while not stop.is_set():
        # A batch: the next record (waiting up to 200 ms), then whatever is already there.
        batch = []
        timeout = 0.2
        while len(batch) < BATCH_MAX:
            try:
                m = consumer.poll(timeout)
            except switchyard.SwitchyardError as e:
                poll_errors += 1
                print(f"poll_error {e.kind} {one_line(e)}", flush=True)
                time.sleep(0.1)
                break
            if not ready:
                print("ready", flush=True)
                ready = True
            if m is None:
                break
            batch.append(m)
            timeout = 0.0
        for m in batch:
            match = PAYLOAD.fullmatch(m.value or b"")
            if match is None:
                out.write(f"bad {m.cluster} {m.physical_topic} {m.partition} {m.offset}\n")
            else:
                key, seq = f"k{int(match.group(1)):02d}", int(match.group(2))
                received += 1
                out.write(f"r {key} {seq} {m.cluster} {m.physical_topic} {m.partition} {m.offset} {m.topic}\n")
        out.flush()
        # Processed (printed); now commit, in poll order, the last record of each partition in
        # the batch (a commit covers the earlier records of its partition).
        last = {(m.cluster, m.physical_topic, m.partition): i for i, m in enumerate(batch)}
        for i in sorted(last.values()):
            m = batch[i]
            try:
                consumer.commit(m)
            except switchyard.SwitchyardError as e:
                commit_failures += 1
                print(f"commit_failed {m.cluster}/{m.physical_topic}/{m.partition}@{m.offset} {e.kind} {one_line(e)}",
                      flush=True)
    consumer.close()
    sy.close()
    print(f"summary received={received} commit_failures={commit_failures} poll_errors={poll_errors}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
