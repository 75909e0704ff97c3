"""Producing and consuming through the binding on real Kafka, checked with confluent-kafka."""

from __future__ import annotations

import threading
import time

import switchyard
from conftest import fresh, read_all


def connect(service, app="py-tests", **kw):
    return switchyard.Switchyard.connect(service.endpoint, app, no_cache=True, **kw)


def test_send_lands_where_the_route_says(service, topics, clusters):
    east = topics.new("east")
    west_phys = fresh("west-phys")
    west = topics.new("west", cluster="west", physical=west_phys)
    version = service.apply()
    with connect(service) as sy:
        assert sy.version >= version
        assert sy.route(east) == ("east", east)
        assert sy.route(west) == ("west", west_phys)
        assert sy.route("not-routed") is None
        with sy.producer() as p:
            d = p.send(east, b"v-east", key=b"k1", headers={"h": b"1"})
            assert (d.topic, d.cluster, d.physical_topic) == (east, "east", east)
            assert d.partition in range(3) and d.offset >= 0 and d.config_version >= version
            d2 = p.send(west, "v-west", key="k2", headers=[("a", b"x"), ("a", "y")])
            assert (d2.cluster, d2.physical_topic) == ("west", west_phys)
            assert p.delivered == 2 and p.failed == 0
    got_east = read_all(clusters["east"], east, 1)
    assert [(k, v) for _, _, k, v in got_east] == [(b"k1", b"v-east")]
    assert got_east[0][:2] == (d.partition, d.offset)
    got_west = read_all(clusters["west"], west_phys, 1)
    assert [(k, v) for _, _, k, v in got_west] == [(b"k2", b"v-west")]


def test_produce_runs_callbacks_on_the_polling_thread(service, topics, clusters):
    t = topics.new("produce")
    service.apply()
    n = 2000
    seen = []
    threads = set()

    def cb(err, delivery):
        threads.add(threading.get_ident())
        seen.append((err, delivery))

    with connect(service) as sy, sy.producer() as p:
        for i in range(n):
            p.produce(t, f"value-{i}".encode(), key=f"key-{i % 10}", on_delivery=cb)
        p.produce(t, b"no-callback")  # counted, no callback
        assert p.flush(60) == 0
        assert len(p) == 0
        assert p.delivered == n + 1
    assert threads == {threading.get_ident()}
    assert len(seen) == n
    assert all(err is None and d.cluster == "east" and d.physical_topic == t for err, d in seen)
    got = read_all(clusters["east"], t, n + 1)
    values = sorted(v for _, _, _, v in got)
    assert values == sorted([f"value-{i}".encode() for i in range(n)] + [b"no-callback"])
    # Per key, offsets follow produce order within the partition.
    by_key = {}
    for part, off, k, v in sorted(got, key=lambda r: (r[0], r[1])):
        if k is not None:
            by_key.setdefault(k, []).append(int(v.split(b"-")[1]))
    for k, seq in by_key.items():
        assert seq == sorted(seq), k


def test_poll_waits_for_a_callback(service, topics):
    t = topics.new("poll")
    service.apply()
    got = []
    with connect(service) as sy, sy.producer() as p:
        p.produce(t, b"x", on_delivery=lambda e, d: got.append(d))
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            p.poll(1.0)
        assert len(got) == 1 and got[0].topic == t
        assert p.poll(0) == 0


def test_callback_exception_propagates_from_flush(service, topics):
    t = topics.new("cb-raise")
    service.apply()

    def boom(err, d):
        raise RuntimeError("from the callback")

    with connect(service) as sy, sy.producer() as p:
        p.produce(t, b"x", on_delivery=boom)
        try:
            p.flush(30)
        except RuntimeError as e:
            assert "from the callback" in str(e)
        else:
            raise AssertionError("the callback's exception was swallowed")
        assert p.flush(30) == 0


def test_consume_and_commit(service, topics):
    t = topics.new("consume")
    service.apply()
    group = fresh("group")
    sent = {f"m{i}".encode() for i in range(20)}
    with connect(service) as sy:
        with sy.producer() as p:
            for v in sorted(sent):
                p.produce(t, v, key=v, headers={"n": v})
            assert p.flush(60) == 0
        got = []
        with sy.consumer(group, [t]) as c:
            assert c.group == group
            deadline = time.monotonic() + 60
            while len(got) < 10 and time.monotonic() < deadline:
                m = c.poll(1.0)
                if m is not None:
                    got.append(m)
            assert len(got) == 10
            m = got[-1]
            assert m.topic == t and m.cluster == "east" and m.physical_topic == t
            assert m.headers == [("n", m.value)] and m.key == m.value
            assert m.timestamp_ms is not None and m.timestamp_ms > 0
            # Commit everything read so far, per partition in order.
            for m in got:
                c.commit(m)
            assert ("east", [t]) in c.assignment()
        # A new member of the group continues after the committed offsets.
        rest = []
        with sy.consumer(group, [t]) as c2:
            deadline = time.monotonic() + 60
            while len(got) + len(rest) < 20 and time.monotonic() < deadline:
                m = c2.poll(1.0)
                if m is not None:
                    rest.append(m)
            extra = c2.poll(2.0)
        values = [m.value for m in got + rest]
        assert sorted(values) == sorted(sent)
        assert extra is None


def test_blocking_calls_release_the_gil(service, topics):
    """A Python thread keeps running while another waits in Consumer.poll."""
    t = topics.new("gil")
    service.apply()
    with connect(service) as sy, sy.consumer(fresh("g"), [t]) as c:
        ticks = []
        stop = threading.Event()

        def ticker():
            while not stop.is_set():
                ticks.append(1)
                time.sleep(0.01)

        th = threading.Thread(target=ticker)
        th.start()
        assert c.poll(1.5) is None
        stop.set()
        th.join()
        assert len(ticks) > 20
