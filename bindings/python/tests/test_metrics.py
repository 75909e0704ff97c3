"""The client's metrics text (Switchyard.metrics()) on real Kafka, parsed with the Prometheus
client library's text-format parser: sends and receives counted under their logical topic and
cluster, the latency histogram and the configuration version."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

import switchyard
from conftest import fresh

APP = "py-metrics"


def parse(text):
    """(sample name, labels) -> value, and family name -> type."""
    values, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values, types


def key(name, **labels):
    labels["app"] = APP
    return (name, tuple(sorted(labels.items())))


def test_metrics_count_sends_and_receives(service, topics):
    t = topics.new("metrics")
    service.apply()
    group = fresh("metrics-group")
    n = 7
    with switchyard.Switchyard.connect(service.endpoint, APP, no_cache=True) as sy:
        with sy.producer() as p:
            for i in range(n):
                assert p.send(t, b"0123456789", key=f"k{i}").cluster == "east"
        with sy.consumer(group, [t]) as c:
            got = 0
            deadline = time.monotonic() + 60
            while got < n and time.monotonic() < deadline:
                if c.poll(1.0) is not None:
                    got += 1
            assert got == n
            values, types = parse(sy.metrics())
        version = sy.version
    sent = dict(topic=t, cluster="east")
    assert values[key("switchyard_client_messages_sent_total", **sent)] == n
    assert values[key("switchyard_client_bytes_sent_total", **sent)] == 10 * n
    assert values[key("switchyard_client_send_latency_seconds_count", **sent)] == n
    assert values[key("switchyard_client_send_latency_seconds_bucket", le="+Inf", **sent)] == n
    received = dict(topic=t, cluster="east", group=group)
    assert values[key("switchyard_client_messages_received_total", **received)] == n
    assert values[key("switchyard_client_config_version")] == version
    assert values[key("switchyard_client_config_age_seconds")] >= 0
    assert types["switchyard_client_send_latency_seconds"] == "histogram"
    assert types["switchyard_client_messages_sent"] == "counter"
