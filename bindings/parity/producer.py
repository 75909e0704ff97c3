"""Parity scenario producer in Python (bindings/parity/run_parity.py starts it).

    python producer.py ENDPOINT APP TOPIC KEYS RATE

The same program as producer.c, through ``import switchyard``: sends keyed records to logical
TOPIC at about RATE records/s, round-robin over KEYS keys "k00", "k01", ... with payload
"KEY:SEQ" (SEQ counts per key from 0), until standard input closes; then flushes, closes and
prints its summary. The bearer token comes from SWITCHYARD_TOKEN when set. Output lines are
those of producer.c:

    ready
    progress sent=N delivered=D failed=F [CLUSTER/PHYSICAL=COUNT ...]   (every ~200 ms)
    key KEY sent=N delivered=D
    failed KEY SEQ KIND MESSAGE                                         (one per failed send)
    location CLUSTER/PHYSICAL COUNT
    summary sent=N delivered=D failed=F

Exits 0 after the summary, 1 when it cannot connect, 2 on bad arguments.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import switchyard

MAX_KEYS = 1000


def parse_int(what: str, s: str, lo: int, hi: int) -> int:
    try:
        v = int(s, 10)
    except ValueError:
        v = lo - 1
    if not lo <= v <= hi:
        print(f'{what} must be an integer in [{lo}, {hi}], got "{s}"', file=sys.stderr)
        sys.exit(2)
    return v


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def main() -> int:
    if len(sys.argv) != 6:
        print(f"usage: {sys.argv[0]} ENDPOINT APP TOPIC KEYS RATE", file=sys.stderr)
        return 2
    endpoint, app, topic = sys.argv[1:4]
    keys = parse_int("KEYS", sys.argv[4], 1, MAX_KEYS)
    rate = parse_int("RATE", sys.argv[5], 1, 1_000_000)

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
    except switchyard.SwitchyardError as e:
        print(f"connect: {e.kind}: {e}", file=sys.stderr)
        return 1

    sent_per_key = [0] * keys
    delivered_per_key = [0] * keys
    locations: Dict[str, int] = {}
    failures: List[Tuple[int, int, str, str]] = []
    totals = {"delivered": 0}

    def on_delivery(k: int, seq: int):
        def cb(err: Optional[switchyard.SwitchyardError], d: Optional[switchyard.Delivery]) -> None:
            if err is not None:
                failures.append((k, seq, err.kind, one_line(err)))
                return
            assert d is not None
            totals["delivered"] += 1
            delivered_per_key[k] += 1
            loc = f"{d.cluster}/{d.physical_topic}"
            locations[loc] = locations.get(loc, 0) + 1

        return cb

    def progress(sent: int) -> None:
        locs = "".join(f" {name}={n}" for name, n in locations.items())
        print(f"progress sent={sent} delivered={totals['delivered']} failed={len(failures)}{locs}", flush=True)

    producer = sy.producer()
    print("ready", flush=True)
    sent = 0
    next_key = 0
    start = last_progress = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now - last_progress >= 0.2:
            progress(sent)
            last_progress = now
        due = min(int((now - start) * rate) - sent, 200)
        if due <= 0:
            # Serves delivery callbacks while it waits for the next send to be due.
            producer.poll(0.002)
            continue
        for _ in range(due):
            k = next_key
            next_key = (next_key + 1) % keys
            seq = sent_per_key[k]
            sent_per_key[k] += 1
            key = f"k{k:02d}"
            sent += 1
            try:
                producer.produce(topic, f"{key}:{seq}", key=key, on_delivery=on_delivery(k, seq))
            except switchyard.SwitchyardError as e:
                failures.append((k, seq, e.kind, one_line(e)))
        producer.poll(0)

    left = producer.flush(60)
    if left:
        print(f"flush timeout {left} still in flight", flush=True)
    # Sends still in flight fail with ClosedError; their callbacks run here.
    producer.close()
    sy.close()

    progress(sent)
    for k in range(keys):
        print(f"key k{k:02d} sent={sent_per_key[k]} delivered={delivered_per_key[k]}")
    for k, seq, kind, message in failures:
        print(f"failed k{k:02d} {seq} {kind} {message}")
    for name, n in locations.items():
        print(f"location {name} {n}")
    print(f"summary sent={sent} delivered={totals['delivered']} failed={len(failures)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
