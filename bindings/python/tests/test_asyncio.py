"""The asyncio API: send_async, recv_async, commit_async; cancellation loses nothing."""

from __future__ import annotations

import asyncio

import pytest

import switchyard
from conftest import fresh, read_all


def test_send_async_and_recv_async(service, topics, clusters):
    t = topics.new("async")
    service.apply()

    async def main():
        sy = switchyard.Switchyard.connect(service.endpoint, "py-async", no_cache=True)
        p = sy.producer()
        deliveries = await asyncio.wait_for(
            asyncio.gather(*(p.send_async(t, f"a{i}".encode(), key=b"k") for i in range(50))), 60)
        assert [d.cluster for d in deliveries] == ["east"] * 50
        offsets = [d.offset for d in deliveries]
        assert offsets == sorted(offsets)  # one key: one partition, in send order
        with pytest.raises(switchyard.UnknownTopicError) as e:
            await asyncio.wait_for(p.send_async("no-such-topic", b"v"), 30)
        assert e.value.record.value == b"v"

        c = sy.consumer(fresh("g"), [t])
        got = []
        while len(got) < 50:
            m = await asyncio.wait_for(c.recv_async(), 60)
            got.append(m.value)
        await asyncio.wait_for(c.commit_async(m), 30)
        assert got == [f"a{i}".encode() for i in range(50)]
        # Cancelled receives lose nothing: the next message arrives after the cancellation.
        pending = asyncio.ensure_future(c.recv_async())
        await asyncio.sleep(0.3)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await p.send_async(t, b"after-cancel", key=b"k")
        m = await asyncio.wait_for(c.recv_async(), 60)
        assert m.value == b"after-cancel"
        # Receives that time out repeatedly (wait_for cancels them) lose nothing either.
        for i in range(3):
            await p.send_async(t, f"t{i}".encode(), key=b"k")
        seen = []
        while len(seen) < 3:
            try:
                m = await asyncio.wait_for(c.recv_async(), 0.01)
                seen.append(m.value)
            except asyncio.TimeoutError:
                pass
        assert seen == [b"t0", b"t1", b"t2"]
        c.close()
        p.close()
        sy.close()

    asyncio.run(main())
    assert len(read_all(clusters["east"], t, 54)) == 54


def test_async_calls_need_a_running_loop(service, topics):
    t = topics.new("noloop")
    service.apply()
    with switchyard.Switchyard.connect(service.endpoint, "py-async", no_cache=True) as sy, sy.producer() as p:
        with pytest.raises(RuntimeError, match="no running event loop"):
            p.send_async(t, b"x")
