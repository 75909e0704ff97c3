"""Exceptions: bad arguments, SDK error kinds, failed sends giving the record back."""

from __future__ import annotations

import builtins
import socket

import pytest

import switchyard
from conftest import fresh


def connect(service, app="py-errors", **kw):
    return switchyard.Switchyard.connect(service.endpoint, app, no_cache=True, **kw)


def test_hierarchy_mirrors_the_sdk_error_kinds():
    kinds = {
        switchyard.InvalidArgumentError: "invalid_argument",
        switchyard.UnknownTopicError: "unknown_topic",
        switchyard.NoConfigError: "no_config",
        switchyard.ConfigServiceError: "config_service",
        switchyard.CacheError: "cache",
        switchyard.KafkaError: "kafka",
        switchyard.TimeoutError: "timeout",
        switchyard.ClosedError: "closed",
        switchyard.QuotaExceededError: "quota_exceeded",
        switchyard.InternalError: "internal",
    }
    for cls, kind in kinds.items():
        assert issubclass(cls, switchyard.SwitchyardError)
        assert cls.kind == kind
    assert issubclass(switchyard.InvalidArgumentError, ValueError)
    assert issubclass(switchyard.TimeoutError, builtins.TimeoutError)


def test_bad_arguments_raise_precise_type_and_value_errors(service, topics):
    t = topics.new("args")
    service.apply()
    with pytest.raises(TypeError, match="endpoint must be a str or a list of str, not int"):
        switchyard.Switchyard.connect(7070, "app")
    with pytest.raises(ValueError, match="endpoint names no config service endpoint"):
        switchyard.Switchyard.connect(" , ", "app")
    with pytest.raises(TypeError, match="app must be str, not bytes"):
        switchyard.Switchyard.connect(service.endpoint, b"app")
    with pytest.raises(ValueError, match="app must not be empty"):
        switchyard.Switchyard.connect(service.endpoint, "")
    with pytest.raises(ValueError, match="initial_timeout must be a number of seconds >= 0"):
        switchyard.Switchyard.connect(service.endpoint, "app", initial_timeout=-1)
    with pytest.raises(TypeError, match="properties must be a dict"):
        switchyard.Switchyard.connect(service.endpoint, "app", properties=["acks"])
    with pytest.raises(ValueError, match="watch_stall_timeout must be a number of seconds >= 0"):
        switchyard.Switchyard.connect(service.endpoint, "app", watch_stall_timeout=-1)
    for stall in (0.05, 7200):
        with pytest.raises(switchyard.InvalidArgumentError, match="between 100 ms and 1 h"):
            switchyard.Switchyard.connect(service.endpoint, "app", no_cache=True,
                                          watch_stall_timeout=stall)
    with switchyard.Switchyard.connect(service.endpoint, "app", no_cache=True,
                                       watch_stall_timeout=2.5) as sy:
        assert sy.version >= 1
    # The SDK's own validation: an app name it refuses.
    with pytest.raises(switchyard.InvalidArgumentError) as e:
        switchyard.Switchyard.connect(service.endpoint, "bad app name!", no_cache=True)
    assert e.value.kind == "invalid_argument" and not e.value.retriable
    with connect(service) as sy:
        with pytest.raises(ValueError, match="max_in_flight must be at least 1, not 0"):
            sy.producer(max_in_flight=0)
        with pytest.raises(ValueError, match="max_in_flight must be at least 1, not -5"):
            sy.producer(max_in_flight=-5)
        with pytest.raises(TypeError):
            sy.producer(max_in_flight="many")
        with pytest.raises(ValueError, match="version must be >= 0, not -1"):
            sy.wait_for_version(-1)
        with sy.producer() as p:
            with pytest.raises(TypeError, match="topic must be str, not int"):
                p.produce(1, b"x")
            with pytest.raises(ValueError, match="topic must not be empty"):
                p.produce("", b"x")
            with pytest.raises(TypeError, match="value must be bytes, bytearray, memoryview, str or None, not int"):
                p.produce(t, 12)
            with pytest.raises(TypeError, match="key must be bytes"):
                p.send(t, b"x", key=3.5)
            with pytest.raises(TypeError, match="headers must be a dict, a list of"):
                p.produce(t, b"x", headers="h=1")
            with pytest.raises(TypeError, match=r"headers\[0\] must be a \(name, value\) tuple"):
                p.produce(t, b"x", headers=[("a", b"1", "extra")])
            with pytest.raises(TypeError, match=r"headers\[0\] name must be str, not bytes"):
                p.produce(t, b"x", headers={b"a": b"1"})
            with pytest.raises(TypeError, match="value must be bytes, bytearray, memoryview or str, not None"):
                p.produce(t, b"x", headers={"a": None})
            with pytest.raises(TypeError, match="on_delivery must be callable or None, not str"):
                p.produce(t, b"x", on_delivery="print")
            with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
                p.flush(-1)
            with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
                p.poll(float("nan"))
            with pytest.raises(TypeError):
                p.flush("1")
            # Accepted forms.
            p.produce(t, bytearray(b"ba"), key=memoryview(b"mv"), headers=[("x", "y")])
            p.produce(t, None, key=None, headers=None)
            assert p.flush(30) == 0 and p.failed == 0
        with pytest.raises(TypeError, match="topics must be a list of str, not a single str"):
            sy.consumer("g", t)
        with pytest.raises(ValueError, match="topics must not be empty"):
            sy.consumer("g", [])
        with pytest.raises(TypeError, match=r"topics\[1\] must be str, not int"):
            sy.consumer("g", [t, 5])
        with pytest.raises(ValueError, match="group must not be empty"):
            sy.consumer("", [t])
        with sy.consumer(fresh("g"), [t]) as c:
            with pytest.raises(TypeError, match="message must be a switchyard.Message, not str"):
                c.commit("offset 5")
            with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
                c.poll(-0.5)


def test_unknown_topic_gives_the_record_back(service):
    service.apply()
    with connect(service) as sy, sy.producer() as p:
        with pytest.raises(switchyard.UnknownTopicError) as e:
            p.send("no-such-topic", b"payload", key=b"k", headers={"h": b"v"})
        err = e.value
        assert err.kind == "unknown_topic" and not err.retriable
        assert "no-such-topic" in str(err)
        r = err.record
        assert (r.topic, r.key, r.value, r.headers) == ("no-such-topic", b"k", b"payload", [("h", b"v")])
        # Through produce: the callback gets the error with the record.
        got = []
        p.produce("no-such-topic", b"v2", on_delivery=lambda err, d: got.append((err, d)))
        assert p.flush(30) == 0
        (err, d), = got
        assert isinstance(err, switchyard.UnknownTopicError) and d is None
        assert err.record.value == b"v2"
        assert p.failed == 2


def test_quota_reject_is_retriable_and_returns_the_record(service, topics):
    t = topics.new("quota")
    app = fresh("quota-app")
    service.quotas.append({"app": app, "topic": t, "produce_msgs_per_sec": 1, "burst": 1, "policy": "reject"})
    service.apply()
    with connect(service, app=app) as sy, sy.producer() as p:
        errors = []
        for i in range(5):
            try:
                p.send(t, f"q{i}".encode(), timeout=30)
            except switchyard.QuotaExceededError as e:
                errors.append(e)
        assert errors, "a 1 msg/s REJECT quota let 5 back-to-back sends through"
        assert all(e.retriable and e.kind == "quota_exceeded" and e.record.topic == t for e in errors)


def test_no_config_when_the_service_is_unreachable(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(switchyard.NoConfigError) as e:
        switchyard.Switchyard.connect(f"http://127.0.0.1:{port}", "py-noconfig",
                                      cache_path=tmp_path / "c.snapshot", initial_timeout=0.5)
    assert e.value.retriable


def test_closed_objects_raise_closed_error(service, topics):
    t = topics.new("closed")
    service.apply()
    sy = connect(service)
    p = sy.producer()
    c = sy.consumer(fresh("g"), [t])
    assert p.close() == 0
    assert p.close() == 0  # idempotent
    with pytest.raises(switchyard.ClosedError):
        p.produce(t, b"x")
    with pytest.raises(switchyard.ClosedError):
        p.send(t, b"x")
    c.close()
    with pytest.raises(switchyard.ClosedError):
        c.poll(0)
    sy.close()
    with pytest.raises(switchyard.ClosedError):
        sy.producer()
    assert "closed" in repr(sy) and "closed" in repr(p) and "closed" in repr(c)


def test_from_file_errors(tmp_path):
    with pytest.raises(switchyard.CacheError, match="unreadable"):
        switchyard.Switchyard.from_file(tmp_path / "missing.yaml", "app")
    bad = tmp_path / "bad.yaml"
    bad.write_text("clusters: [")
    with pytest.raises(switchyard.CacheError):
        switchyard.Switchyard.from_file(bad, "app")
    with pytest.raises(TypeError):
        switchyard.Switchyard.from_file(42, "app")
    with pytest.raises(ValueError, match="path must not be empty"):
        switchyard.Switchyard.from_file("", "app")
