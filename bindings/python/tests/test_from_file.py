"""A client configured from a desired-state file, with no config service."""

from __future__ import annotations

import time

import switchyard
from conftest import fresh, read_all


def test_from_file_routes_produces_and_consumes(topics, clusters, tmp_path):
    t = topics.new("file", cluster="west")
    path = tmp_path / "desired.yaml"
    path.write_text(
        "clusters:\n"
        f"  - name: east\n    bootstrap: [\"{clusters['east']}\"]\n"
        f"  - name: west\n    bootstrap: [\"{clusters['west']}\"]\n"
        f"topics:\n  - name: {t}\n    cluster: west\n    partitions: 3\n"
    )
    with switchyard.Switchyard.from_file(str(path), "py-file") as sy:
        assert sy.version == 1
        assert sy.route(t) == ("west", t)
        with sy.producer() as p:
            for i in range(5):
                d = p.send(t, f"f{i}".encode(), key=b"same-key")
                assert (d.cluster, d.physical_topic) == ("west", t)
        with sy.consumer(fresh("g"), [t]) as c:
            got = []
            deadline = time.monotonic() + 60
            while len(got) < 5 and time.monotonic() < deadline:
                m = c.poll(1.0)
                if m is not None:
                    got.append(m.value)
                    c.commit(m)
        assert got == [f"f{i}".encode() for i in range(5)]
    # A pathlib.Path works too.
    with switchyard.Switchyard.from_file(path, "py-file") as sy:
        assert sy.route(t) == ("west", t)
    assert sorted(v for *_, v in read_all(clusters["west"], t, 5)) == [f"f{i}".encode() for i in range(5)]
