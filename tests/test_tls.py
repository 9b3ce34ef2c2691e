"""amqps:// against a RabbitMQ TLS listener the suite sets up itself: a private node (its own
name, ports and files; the machine's broker is not touched) with certificates made here, and
a plain Python TLS server for the certificate the node cannot serve at the same time (an
expired one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from beatd.core.config import BrokerConfig, TlsConfig, parse_config, read_config
from beatd.core.errors import BrokerError, ConfigError
from beatd.runtime import rabbitmq
from tests.rabbitnode import RabbitNode, free_port

NOW = datetime.now(UTC)  # certificates are checked against the real clock by OpenSSL
PASSWORD = "guest"


# Certificates


@dataclass
class Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # fast to make, and Erlang and OpenSSL speak it


def make_ca(directory: Path, name: str) -> Issuer:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issuer(subject, key)


def make_cert(
    directory: Path,
    name: str,
    issuer: Issuer,
    *,
    dns: tuple[str, ...] = (),
    server: bool = True,
    expired: bool = False,
) -> tuple[Path, Path]:
    """A leaf certificate and its key, as PEM files NAME.pem and NAME.key."""
    key = _key()
    not_after = NOW - timedelta(days=1) if expired else NOW + timedelta(days=30)
    usage = (
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        if server
        else (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    cert = builder.sign(issuer.key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Pki:
    dir: Path
    ca: Path
    other_ca: Path
    server: tuple[Path, Path]
    expired_server: tuple[Path, Path]
    client: tuple[Path, Path]
    expired_client: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    make_ca(d, "other-ca")
    return Pki(
        dir=d,
        ca=d / "ca.pem",
        other_ca=d / "other-ca.pem",
        server=make_cert(d, "server", ca, dns=("localhost",)),
        expired_server=make_cert(d, "expired-server", ca, dns=("localhost",), expired=True),
        client=make_cert(d, "client", ca, server=False),
        expired_client=make_cert(d, "expired-client", ca, server=False, expired=True),
    )


@dataclass
class TlsBroker:
    node: RabbitNode
    port: int


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """One private node with a TLS listener that requires a client certificate, for every
    test in this module (starting a node takes seconds)."""
    port = free_port()
    conf = [
        f"listeners.ssl.default = 127.0.0.1:{port}",
        f"ssl_options.cacertfile = {pki.ca}",
        f"ssl_options.certfile = {pki.server[0]}",
        f"ssl_options.keyfile = {pki.server[1]}",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
    ]
    with RabbitNode(tmp_path_factory.mktemp("node"), conf) as node:
        yield TlsBroker(node, port)


def connect(url: str, tls: TlsConfig) -> str:
    """Open and close a connection the way the daemons do; the error text, or 'ok'."""

    async def attempt() -> str:
        config = BrokerConfig(urls=(url,), tls=tls)
        try:
            link = await rabbitmq.one_shot(config, "tls test", timeout_s=20)
        except BrokerError as exc:
            return str(exc)
        channel = await link.channel(timeout=5)
        await channel.declare_exchange("amq.topic", "topic", passive=True)
        await link.close()
        return "ok"

    return asyncio.run(attempt())


SECRET = "hunter2-not-for-logs"  # refused before login, so it need not be the real password


def url(port: int, host: str = "localhost") -> str:
    return f"amqps://guest:{SECRET}@{host}:{port}/%2F"


def assert_one_line_naming(message: str, port: int, host: str = "localhost") -> None:
    assert "\n" not in message
    assert message.startswith(f"amqps://guest:***@{host}:{port}/%2F: TLS: ")
    assert SECRET not in message


@pytest.fixture
def client(pki: Pki) -> TlsConfig:
    return TlsConfig(ca_file=pki.ca, cert_file=pki.client[0], key_file=pki.client[1])


# Against the private node


@pytest.mark.broker
def test_a_client_certificate_and_the_right_ca_connect(tls_broker: TlsBroker, pki: Pki) -> None:
    good = TlsConfig(ca_file=pki.ca, cert_file=pki.client[0], key_file=pki.client[1])
    assert connect(f"amqps://guest:guest@localhost:{tls_broker.port}/%2F", good) == "ok"


@pytest.mark.broker
def test_a_server_certificate_from_another_ca_is_refused(
    tls_broker: TlsBroker, client: TlsConfig, pki: Pki
) -> None:
    message = connect(url(tls_broker.port), replace(client, ca_file=pki.other_ca))
    assert_one_line_naming(message, tls_broker.port)
    assert "certificate verify failed: self-signed certificate in certificate chain" in message


@pytest.mark.broker
def test_without_ca_file_the_systems_cas_do_not_trust_a_private_ca(
    tls_broker: TlsBroker, client: TlsConfig
) -> None:
    message = connect(url(tls_broker.port), replace(client, ca_file=None))
    assert_one_line_naming(message, tls_broker.port)
    assert "certificate verify failed" in message


@pytest.mark.broker
def test_a_host_the_certificate_does_not_name_is_refused(
    tls_broker: TlsBroker, client: TlsConfig
) -> None:
    # The certificate names localhost, not 127.0.0.1: the same broker, the wrong name.
    message = connect(url(tls_broker.port, "127.0.0.1"), client)
    assert_one_line_naming(message, tls_broker.port, "127.0.0.1")
    assert "IP address mismatch, certificate is not valid for '127.0.0.1'" in message


@pytest.mark.broker
def test_a_missing_client_certificate_is_refused_by_the_broker(
    tls_broker: TlsBroker, pki: Pki
) -> None:
    message = connect(url(tls_broker.port), TlsConfig(ca_file=pki.ca))
    assert_one_line_naming(message, tls_broker.port)
    assert message.endswith("refused by the broker: tlsv13 alert certificate required")


@pytest.mark.broker
def test_an_expired_client_certificate_is_refused_by_the_broker(
    tls_broker: TlsBroker, client: TlsConfig, pki: Pki
) -> None:
    cert, key = pki.expired_client
    message = connect(url(tls_broker.port), replace(client, cert_file=cert, key_file=key))
    assert_one_line_naming(message, tls_broker.port)
    assert message.endswith("refused by the broker: sslv3 alert certificate expired")


@pytest.mark.broker
def test_verify_false_connects_to_an_unknown_name_and_ca_and_says_so_loudly(
    tls_broker: TlsBroker, client: TlsConfig, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    lax = replace(client, ca_file=pki.other_ca, verify=False)
    target = f"amqps://guest:guest@127.0.0.1:{tls_broker.port}/%2F"
    with caplog.at_level(logging.WARNING, "beatd.broker"):
        assert connect(target, lax) == "ok"
        assert connect(target, lax) == "ok"
    warnings = [r.getMessage() for r in caplog.records if "VERIFICATION IS OFF" in r.getMessage()]
    assert len(warnings) == 1  # once per URL, not on every reconnect
    assert f"amqps://guest:***@127.0.0.1:{tls_broker.port}/%2F" in warnings[0]
    assert "guest:guest" not in warnings[0]


# Against a plain TLS server: the node serves one certificate, and these need others


@contextlib.contextmanager
def tls_server(cert: tuple[Path, Path]) -> Iterator[int]:
    """Accepts TLS handshakes on a free port with cert (and says nothing after)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), conn:
                conn.settimeout(5)
                context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_an_expired_server_certificate_is_refused(pki: Pki, client: TlsConfig) -> None:
    with tls_server(pki.expired_server) as port:
        message = connect(url(port), client)
    assert_one_line_naming(message, port)
    assert message.endswith("certificate verify failed: certificate has expired")


def test_a_certificate_for_another_dns_name_is_refused(tmp_path: Path, client: TlsConfig) -> None:
    ca = make_ca(tmp_path, "ca")
    cert = make_cert(tmp_path, "elsewhere", ca, dns=("broker.example.org",))
    with tls_server(cert) as port:
        message = connect(url(port), replace(client, ca_file=tmp_path / "ca.pem"))
    assert_one_line_naming(message, port)
    assert "Hostname mismatch, certificate is not valid for 'localhost'" in message


def test_an_unreadable_ca_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    message = connect(url(5671), TlsConfig(ca_file=missing))
    assert (
        message
        == f"amqps://guest:***@localhost:5671/%2F: TLS: cannot load ca_file {missing}: "
        + ("No such file or directory")
    )


def test_a_plain_amqp_url_ignores_the_tls_section(tmp_path: Path) -> None:
    """No TLS attempted (the missing file is never read); the plain port answers or not."""
    message = connect(
        f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", TlsConfig(ca_file=tmp_path / "x")
    )
    assert "TLS" not in message


# The broker.tls section


def config_text(tls: str, url_: str = "amqps://broker.example:5671/%2F") -> str:
    return f"broker:\n  url: {url_}\n  tls:\n" + "".join(
        f"    {line}\n" for line in tls.strip().splitlines()
    )


def load(directory: Path, text: str, env: dict[str, str] | None = None) -> BrokerConfig:
    path = directory / "beatd.yaml"
    path.write_text(text)
    return read_config(path, env or {}).broker


def test_tls_files_are_beside_the_config_file_and_verify_is_on_by_default(pki: Pki) -> None:
    text = config_text("ca_file: ca.pem\ncert_file: client.pem\nkey_file: client.key")
    assert load(pki.dir, text).tls == TlsConfig(
        ca_file=pki.ca, cert_file=pki.client[0], key_file=pki.client[1], verify=True
    )


def test_tls_files_can_come_from_systemd_credentials(pki: Pki, tmp_path: Path) -> None:
    text = config_text("ca_file: $CREDENTIALS_DIRECTORY/ca.pem\nverify: false")
    env = {"CREDENTIALS_DIRECTORY": str(pki.dir)}
    assert load(tmp_path, text, env).tls == TlsConfig(ca_file=pki.ca, verify=False)


def test_check_names_each_unreadable_tls_file_and_every_misuse(tmp_path: Path) -> None:
    text = config_text("ca_file: nope.pem\nkey_file: k.key\nverify: 1\nciphers: x")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    f = tmp_path / "beatd.yaml"
    assert [str(p) for p in caught.value.problems] == [
        f"{f}:4: broker: tls: ca_file: {tmp_path}/nope.pem: no such file",
        f"{f}:5: broker: tls: key_file: {tmp_path}/k.key: no such file",
        f"{f}:5: broker: tls: key_file: given without cert_file",
        f"{f}:6: broker: tls: verify: must be true or false, got int 1",
        f"{f}:7: broker: tls: unknown key 'ciphers' (allowed: ca_file, cert_file, key_file, "
        "verify)",
    ]


def test_a_tls_section_without_an_amqps_url_is_a_mistake() -> None:
    text = config_text("verify: true", url_="amqp://localhost")
    with pytest.raises(
        ConfigError, match=r"b.yaml:3: broker: tls: given, but no broker URL is amqps"
    ):
        parse_config(text, "b.yaml", {})


def test_credentials_directory_unset_is_named() -> None:
    text = config_text("ca_file: $CREDENTIALS_DIRECTORY/ca.pem")
    with pytest.raises(ConfigError, match=r"ca_file: \$CREDENTIALS_DIRECTORY is not set"):
        parse_config(text, "b.yaml", {})


def test_beatd_check_names_a_missing_tls_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from beatd.cli import main

    path = tmp_path / "beatd.yaml"
    path.write_text(config_text("cert_file: client.pem"))
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: broker: tls: cert_file: {tmp_path}/client.pem: no such file" in err
    assert "Traceback" not in err


@pytest.mark.broker
def test_the_private_node_restarts_with_its_data_and_serves_tls_again(
    tls_broker: TlsBroker, client: TlsConfig
) -> None:
    """Last in this module: the node other tests (broker restarts) can crash and bring back."""
    node = tls_broker.node
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    connection.channel().queue_declare("kept", durable=True)
    connection.close()
    before = node.ctl("eval", "os:getpid().")
    node.restart(kill=True)
    assert node.ctl("eval", "os:getpid().") != before  # a new VM
    # From the node's metadata: list_queues asks each queue's process, which after a SIGKILL
    # may still be recovering (it once timed out at 60 s here, listing nothing).
    assert "kept" in node.ctl("eval", "rabbit_amqqueue:list_names().")
    good = f"amqps://guest:guest@localhost:{tls_broker.port}/%2F"
    assert connect(good, client) == "ok"
