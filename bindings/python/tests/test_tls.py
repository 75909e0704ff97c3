"""HTTPS to the config service (a CA, the system's roots, mutual TLS) and secured Kafka
(SASL_SSL with SCRAM-SHA-512, SSL with client certificates), on the real config service binary
and the secured listeners of `scripts/kafka.sh start N --secure`.

Bad TLS input fails with a typed error within a bounded time: a wrong scheme, an untrusted CA,
a missing client certificate (NoConfigError naming the cause after `initial_timeout`), a
missing or non-PEM file (OSError / InvalidArgumentError before anything is contacted).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import switchyard
from conftest import Service, create_topics, fresh, read_all

# Seconds a connect that cannot succeed waits for a first configuration in these tests.
SHORT = 3.0
# What such a connect may take beyond `initial_timeout` (a connect attempt in flight).
SLACK = 10.0


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(
            f"{name} is not set: the TLS tests need the secured Kafka listeners "
            "(scripts/kafka.sh start N --secure; scripts/test-python.sh starts them)"
        )
    return value


@pytest.fixture(scope="module")
def tls() -> Path:
    """The directory of the test CA (ca.pem), a server certificate for 127.0.0.1
    (broker.pem/.key), a client certificate it signed (client.pem/.key), and a CA and client
    certificate nobody trusts (other-ca.pem, untrusted-client.pem/.key)."""
    d = Path(_env("SWITCHYARD_KAFKA_TLS_DIR"))
    for f in ("ca.pem", "broker.pem", "broker.key", "client.pem", "client.key", "other-ca.pem",
              "untrusted-client.pem", "untrusted-client.key"):
        if not (d / f).is_file():
            raise RuntimeError(f"{d / f} is missing")
    return d


@pytest.fixture(scope="module")
def secured() -> Dict[str, str]:
    """The first test cluster's listeners and a SCRAM user of it."""
    users = dict(u.split(":", 1) for u in _env("SWITCHYARD_KAFKA_SCRAM_USERS").split())
    if "alice" not in users:
        raise RuntimeError("SWITCHYARD_KAFKA_SCRAM_USERS has no user alice")
    return {
        "plain": _env("KAFKA_BOOTSTRAP_1"),
        "sasl_ssl": _env("KAFKA_SASL_SSL_BOOTSTRAP_1"),
        "mtls": _env("KAFKA_MTLS_BOOTSTRAP_1"),
        "user": "alice",
        "password": users["alice"],
    }


def _mint(binary: Path, app: str) -> Tuple[str, str]:
    """A client token for `app` and its client-tokens file line (`switchyard token new`)."""
    r = subprocess.run([str(binary), "token", "new", "--app", app], capture_output=True, text=True,
                       timeout=60, check=True)
    token = re.search(r"^token: (\S+)$", r.stdout, re.M)
    line = re.search(rf"^{re.escape(app)} [0-9a-f]{{64}}$", r.stdout, re.M)
    assert token and line, r.stdout
    return token.group(1), line.group(0)


APP = "py-tls"


@pytest.fixture(scope="module")
def tls_service(switchyard_bin: Path, workdir: Path, tls: Path,
                secured: Dict[str, str]) -> Iterator[Tuple[Service, str]]:
    """An https config service (certificate signed by ca.pem) that serves the clusters' secret
    properties to client tokens: clusters `east` (plaintext), `sasl` (SASL_SSL, SCRAM-SHA-512)
    and `certs` (mTLS), all the first test cluster. Yields it and APP's client token."""
    token, line = _mint(switchyard_bin, APP)
    tokens = workdir / "tls-client-tokens"
    tokens.write_text(line + "\n")
    admin = fresh("admin-token")
    (workdir / "tls-admin-token").write_text(admin + "\n")
    ca = str(tls / "ca.pem")
    svc = Service(
        switchyard_bin,
        {"east": secured["plain"], "sasl": secured["sasl_ssl"], "certs": secured["mtls"]},
        workdir,
        name="tls-serve",
        serve_args=["--tls-cert", str(tls / "broker.pem"), "--tls-key", str(tls / "broker.key"),
                    "--client-tokens", str(tokens),
                    "--admin-token-file", str(workdir / "tls-admin-token")],
        cli_args=["--ca-cert", ca],
        cli_env={"SWITCHYARD_TOKEN": admin},
        scheme="https",
        cluster_properties={
            "sasl": {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": secured["user"],
                "sasl.password": secured["password"],
                "ssl.ca.location": ca,
            },
            "certs": {
                "security.protocol": "SSL",
                "ssl.ca.location": ca,
                "ssl.certificate.location": str(tls / "client.pem"),
                "ssl.key.location": str(tls / "client.key"),
            },
        },
    )
    try:
        yield svc, token
    finally:
        svc.close()


@pytest.fixture(scope="module")
def mtls_service(switchyard_bin: Path, workdir: Path, tls: Path,
                 secured: Dict[str, str]) -> Iterator[Service]:
    """An https config service that requires a client certificate signed by ca.pem."""
    svc = Service(
        switchyard_bin,
        {"east": secured["plain"]},
        workdir,
        name="mtls-serve",
        serve_args=["--tls-cert", str(tls / "broker.pem"), "--tls-key", str(tls / "broker.key"),
                    "--tls-client-ca", str(tls / "ca.pem")],
        cli_args=["--ca-cert", str(tls / "ca.pem"), "--client-cert", str(tls / "client.pem"),
                  "--client-key", str(tls / "client.key")],
        scheme="https",
    )
    try:
        yield svc
    finally:
        svc.close()


def _topic(service: Service, bootstrap: str, prefix: str, cluster: str) -> str:
    """A fresh topic (3 partitions) created on `bootstrap` and routed to `cluster`."""
    name = fresh(prefix)
    create_topics(bootstrap, [name])
    service.route(name, cluster)
    return name


def _topic_applied(svc: Service, secured: Dict[str, str], prefix: str, cluster: str) -> str:
    """A fresh topic on the first test cluster routed to `cluster`, applied."""
    t = _topic(svc, secured["plain"], prefix, cluster)
    svc.apply(f"python TLS tests: {prefix}")
    return t


def _round_trip(sy: switchyard.Switchyard, topic: str, cluster: str, n: int) -> None:
    """Sends `n` records to `topic` and reads them back in a fresh group; every record lands on
    and comes from `cluster`."""
    sent = {f"{topic}-{i}".encode() for i in range(n)}
    with sy.producer() as p:
        for v in sorted(sent):
            d = p.send(topic, v, key=v[-2:], timeout=60)
            assert d.cluster == cluster, d.cluster
    got: List[bytes] = []
    deadline = time.monotonic() + 60
    with sy.consumer(fresh("group"), [topic]) as c:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(timeout=1.0)
            if m is None:
                continue
            assert m.cluster == cluster, m.cluster
            got.append(m.value)
            c.commit(m)
    assert sorted(got) == sorted(sent), f"{len(got)} of {n} records read back"


def _connect_fails(endpoint: str, **kw) -> switchyard.NoConfigError:
    """Connects where no configuration can come from: NoConfigError within the bounded time."""
    started = time.monotonic()
    with pytest.raises(switchyard.NoConfigError) as e:
        switchyard.Switchyard.connect(endpoint, APP, no_cache=True, initial_timeout=SHORT, **kw)
    took = time.monotonic() - started
    assert took < SHORT + SLACK, f"the failed connect took {took:.1f} s"
    return e.value


def test_https_with_the_ca_as_a_path_and_as_pem_round_trips(tls_service, tls, secured):
    svc, token = tls_service
    t = _topic(svc, secured["plain"], "https", "east")
    version = svc.apply("python TLS tests: https")
    ca = tls / "ca.pem"
    forms = {
        "str path": str(ca),
        "pathlib.Path": ca,
        "bytes": ca.read_bytes(),
        "bytearray": bytearray(ca.read_bytes()),
        "PEM str": ca.read_text(),
    }
    for form, ca_cert in forms.items():
        with switchyard.Switchyard.connect(svc.endpoint, APP, token=token, no_cache=True,
                                           ca_cert=ca_cert, initial_timeout=30) as sy:
            assert sy.version >= version, form
            assert sy.last_watch_error is None, form
            with sy.producer() as p:
                assert p.send(t, form.encode(), timeout=60).cluster == "east"
    assert sorted(v for _, _, _, v in read_all(secured["plain"], t, len(forms))) == sorted(
        f.encode() for f in forms)
    # A full round trip through the binding, the configuration coming over TLS.
    rt = _topic_applied(svc, secured, "https-rt", "east")
    with switchyard.Switchyard.connect(svc.endpoint, APP, token=token, no_cache=True,
                                       ca_cert=str(ca), initial_timeout=30) as sy:
        assert sy.version >= svc.version
        _round_trip(sy, rt, "east", 20)


def test_a_service_requiring_client_certificates_accepts_a_trusted_one(mtls_service, tls, secured):
    svc = mtls_service
    t = _topic_applied(svc, secured, "mtls-service", "east")
    ca = str(tls / "ca.pem")
    # The certificate and key as paths, then as PEM.
    for cert, key in [(tls / "client.pem", str(tls / "client.key")),
                      ((tls / "client.pem").read_bytes(), (tls / "client.key").read_text())]:
        with switchyard.Switchyard.connect(svc.endpoint, APP, no_cache=True, ca_cert=ca,
                                           client_cert=cert, client_key=key,
                                           initial_timeout=30) as sy:
            assert sy.version >= svc.version
    with switchyard.Switchyard.connect(svc.endpoint, APP, no_cache=True, ca_cert=ca,
                                       client_cert=tls / "client.pem",
                                       client_key=tls / "client.key", initial_timeout=30) as sy:
        _round_trip(sy, t, "east", 20)


def test_a_service_requiring_client_certificates_refuses_a_client_without_one(mtls_service, tls):
    svc = mtls_service
    ca = str(tls / "ca.pem")
    # No client certificate, then one signed by a CA the service does not trust: a typed error
    # within the bounded time, never a hang, that points at the client certificate. (Under
    # TLS 1.3 the refusal arrives after the client's handshake completed: the first call fails
    # with the TLS alert under it — "requires a client certificate", "refused the client
    # certificate" — or, when the connection closed first, with the generic "the service closed
    # the TLS connection: if it requires a client certificate (mTLS), ...".)
    for kw in ({}, {"client_cert": tls / "untrusted-client.pem",
                    "client_key": tls / "untrusted-client.key"}):
        for _ in range(2):
            e = _connect_fails(svc.endpoint, ca_cert=ca, **kw)
            assert "client certificate" in str(e), (kw, str(e))


def test_a_scheme_that_does_not_match_the_service_fails_with_a_hint(tls_service, service, tls):
    svc, token = tls_service
    # http:// to the TLS service.
    e = _connect_fails(svc.endpoint.replace("https://", "http://"), token=token)
    assert "use an https:// endpoint" in str(e), str(e)
    # https:// to a plaintext service.
    e = _connect_fails(service.endpoint.replace("http://", "https://"),
                       ca_cert=tls / "ca.pem")
    assert "use an http:// endpoint" in str(e), str(e)


def test_an_untrusted_service_certificate_fails_with_a_hint(tls_service, tls):
    svc, token = tls_service
    # Another CA, then the system's roots (no ca_cert): neither signed the service's certificate.
    for kw in ({"ca_cert": tls / "other-ca.pem"}, {}):
        e = _connect_fails(svc.endpoint, token=token, **kw)
        assert "not signed by a trusted CA" in str(e), (kw, str(e))


def test_bad_tls_arguments_raise_precise_errors_at_once(tls_service, tls, workdir):
    svc, token = tls_service
    ca = tls / "ca.pem"

    def connect(**kw):
        started = time.monotonic()
        try:
            switchyard.Switchyard.connect(svc.endpoint, APP, token=token, no_cache=True,
                                          initial_timeout=30, **kw)
        finally:
            # Refused before anything is contacted: no wait for initial_timeout.
            assert time.monotonic() - started < 5

    missing = workdir / "no-such-ca.pem"
    with pytest.raises(FileNotFoundError) as e:
        connect(ca_cert=missing)
    assert str(missing) in str(e.value) and "ca_cert" in str(e.value), str(e.value)
    assert e.value.filename == str(missing)
    with pytest.raises(IsADirectoryError, match="client_key"):
        connect(client_cert=tls / "client.pem", client_key=tls)
    not_pem = workdir / "not-a-ca.pem"
    not_pem.write_text("just some text\n")
    with pytest.raises(switchyard.InvalidArgumentError,
                       match=f"ca_cert: file {re.escape(str(not_pem))} is not PEM text"):
        connect(ca_cert=not_pem)
    with pytest.raises(switchyard.InvalidArgumentError, match="ca_cert: the bytes given are not PEM text .*a path must be"):
        connect(ca_cert=b"\x00\x01 binary")
    # PEM, but not what the argument needs (the SDK's check).
    with pytest.raises(switchyard.InvalidArgumentError,
                       match="the CA certificate holds no PEM block of type CERTIFICATE"):
        connect(ca_cert=tls / "client.key")
    with pytest.raises(switchyard.InvalidArgumentError, match="the client key holds no PEM block"):
        connect(ca_cert=ca, client_cert=tls / "client.pem", client_key=tls / "client.pem")
    with pytest.raises(ValueError, match="client_cert needs client_key"):
        connect(client_cert=tls / "client.pem")
    with pytest.raises(ValueError, match="client_key needs client_cert"):
        connect(client_key=tls / "client.key")
    with pytest.raises(TypeError, match="ca_cert must be a path .* not int"):
        connect(ca_cert=42)
    with pytest.raises(TypeError, match="client_cert must be a path .* not list"):
        connect(client_cert=[str(tls / "client.pem")], client_key=tls / "client.key")
    with pytest.raises(ValueError, match="ca_cert must not be an empty path"):
        connect(ca_cert="")


def test_produce_and_consume_over_sasl_ssl_and_mtls_kafka(tls_service, secured):
    svc, token = tls_service
    scram = _topic(svc, secured["plain"], "scram", "sasl")
    certs = _topic(svc, secured["plain"], "certs", "certs")
    svc.apply("python TLS tests: secured Kafka")
    n = 30
    with switchyard.Switchyard.connect(svc.endpoint, APP, token=token, no_cache=True,
                                       ca_cert=Path(os.environ["SWITCHYARD_KAFKA_TLS_DIR"]) / "ca.pem",
                                       initial_timeout=30) as sy:
        assert sy.route(scram) == ("sasl", scram)
        assert sy.route(certs) == ("certs", certs)
        _round_trip(sy, scram, "sasl", n)
        _round_trip(sy, certs, "certs", n)
    # What went over the secured listeners is in the cluster's log.
    assert len(read_all(secured["plain"], scram, n)) == n
    assert len(read_all(secured["plain"], certs, n)) == n
