"""TLS listeners: the descriptions gatewayd takes, certificates loaded and reloaded, SNI read."""

from __future__ import annotations

import signal

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.defer import succeed
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from gatewayd.daemon import workers
from gatewayd.daemon.reload import Reloader
from gatewayd.daemon.tls import Certificates, CertificateError, TLSFiles, load, split_listen
from gatewayd.site import server_name
from tests.certs import CA, common_name
from tests.test_reload import Notifications, config, gateway


@pytest.mark.parametrize(
    "description, inner, files",
    [
        ("tcp:8000:interface=127.0.0.1", "tcp:8000:interface=127.0.0.1", None),
        ("ssl:8443:privateKey=/k.pem:certKey=/c.pem", "tcp:8443", TLSFiles("/k.pem", "/c.pem")),
        ("ssl:port=8443:interface=0.0.0.0:privateKey=/both.pem:backlog=9",
         "tcp:port=8443:interface=0.0.0.0:backlog=9", TLSFiles("/both.pem", "/both.pem")),
        ("ssl:8443:privateKey=/k.pem:certKey=/c.pem:extraCertChain=/chain.pem", "tcp:8443",
         TLSFiles("/k.pem", "/c.pem", "/chain.pem")),
        ("systemd:domain=INET:index=0:privateKey=/k.pem:certKey=/c.pem", "systemd:domain=INET:index=0",
         TLSFiles("/k.pem", "/c.pem")),
        ("adopt:fileno=3:domain=INET:privateKey=/a\\:b/k.pem:certKey=/c.pem", "adopt:fileno=3:domain=INET",
         TLSFiles("/a:b/k.pem", "/c.pem")),
    ],
)
def test_listen_descriptions_split_into_socket_and_tls_files(description, inner, files):
    assert split_listen(description) == (inner, files)


@pytest.mark.parametrize(
    "description, message",
    [
        ("ssl:8443", "needs privateKey=PATH"),
        ("ssl:8443:certKey=/c.pem", "needs privateKey=PATH"),
        ("ssl:8443:privateKey=/k.pem:sslmethod=TLSv1_METHOD", "sslmethod= is not supported"),
        ("ssl:8443:privateKey=/k.pem:dhParameters=/dh.pem", "dhParameters= is not supported"),
        ("tcp:8443:privateKey=/k.pem", "are for ssl:"),
        ("unix:/run/g.sock:privateKey=/k.pem", "are for ssl:"),
        ("systemd:domain=INET:index=0:certKey=/c.pem", "need privateKey=PATH"),
    ],
)
def test_descriptions_that_would_not_mean_what_they_say_are_refused(description, message):
    with pytest.raises(ValueError, match=message) as raised:
        split_listen(description)
    assert description in str(raised.value)


def test_workers_serve_tls_on_the_sockets_they_adopt():
    inner, files = split_listen("ssl:0:interface=127.0.0.1:privateKey=/etc/g\\:w/key.pem:certKey=/c.pem")
    assert files.key == "/etc/g:w/key.pem"
    sock = workers.listening_socket(inner)
    try:
        argv = workers.worker_argv([sock], ("--config", "/etc/gatewayd"), [files.options()])
    finally:
        sock.close()
    description = argv[argv.index("--listen") + 1]
    assert description.startswith("adopt:fileno=3:domain=INET:")
    assert split_listen(description) == ("adopt:fileno=3:domain=INET", files)


@pytest.fixture(scope="module")
def ca():
    return CA.make()


def handshake(certificates: Certificates, ca: CA, sni: bytes | None = b"a.test", *, maximum=None):
    """A TLS handshake in memory between ``certificates`` and a client trusting ``ca``;
    (client, server) connections once done."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_PEER)
    store = context.get_cert_store()
    store.add_cert(crypto.X509.from_cryptography(ca.certificate))
    if maximum is not None:
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        context.set_min_proto_version(SSL.TLS1_VERSION)
        context.set_max_proto_version(maximum)
    client = SSL.Connection(context, None)
    if sni is not None:
        client.set_tlsext_host_name(sni)
    client.set_connect_state()
    server = certificates.serverConnectionForTLS(None)
    server.set_accept_state()
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
        for source, target in ((client, server), (server, client)):
            try:
                target.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
    return client, server


def served_name(client: SSL.Connection) -> str:
    return common_name(client.get_peer_certificate(as_cryptography=True).public_bytes(serialization.Encoding.DER))


def test_a_handshake_gets_the_certificate_tls_1_2_or_later_http_1_1_and_the_sni(tmp_path, ca):
    cert, key = ca.write_server(tmp_path, "first")
    client, server = handshake(Certificates(TLSFiles(str(key), str(cert))), ca)
    assert served_name(client) == "first"
    assert client.get_protocol_version_name() in ("TLSv1.2", "TLSv1.3")
    assert server.get_servername() == b"a.test"


def test_tls_1_1_and_older_are_refused(tmp_path, ca):
    cert, key = ca.write_server(tmp_path, "first")
    # The context itself turns them off, whatever the system's openssl.cnf allows (Debian's
    # MinProtocol would refuse the handshake below on its own).
    options = load(TLSFiles(str(key), str(cert))).set_options(0)
    assert options & SSL.OP_NO_TLSv1 and options & SSL.OP_NO_TLSv1_1
    with pytest.raises(SSL.Error, match="unsupported protocol"):
        handshake(Certificates(TLSFiles(str(key), str(cert))), ca, maximum=SSL.TLS1_1_VERSION)


def test_one_file_may_hold_key_and_certificate_and_the_chain_follows_the_leaf(tmp_path, ca):
    cert_pem, key_pem = ca.issue("combined")
    both = tmp_path / "both.pem"
    both.write_bytes(cert_pem + ca.pem() + key_pem)
    client, _ = handshake(Certificates(TLSFiles(str(both), str(both))), ca)
    assert served_name(client) == "combined"
    assert len(client.get_peer_cert_chain()) == 2


@pytest.fixture
def events():
    logged: list = []
    globalLogPublisher.addObserver(logged.append)
    yield logged
    globalLogPublisher.removeObserver(logged.append)


def test_reload_serves_new_handshakes_while_open_connections_keep_theirs(tmp_path, ca, events):
    cert, key = ca.write_server(tmp_path, "first")
    certificates = Certificates(TLSFiles(str(key), str(cert)))
    old_client, old_server = handshake(certificates, ca)
    ca.write_server(tmp_path, "second")
    assert certificates.reload() is None
    new_client, _ = handshake(certificates, ca)
    assert served_name(new_client) == "second"
    # The open connection goes on with its own session.
    old_client.sendall(b"ping")
    old_server.bio_write(old_client.bio_read(65536))
    assert old_server.recv(4) == b"ping" and served_name(old_client) == "first"
    assert any(e.get("certificate") == str(cert) for e in events)


@pytest.mark.parametrize("breakage", ["garbage", "missing", "mismatch", "encrypted"])
def test_a_certificate_that_does_not_load_leaves_the_old_one_serving(tmp_path, ca, events, breakage):
    cert, key = ca.write_server(tmp_path, "first")
    certificates = Certificates(TLSFiles(str(key), str(cert)))
    secret = key.read_bytes()
    if breakage == "garbage":
        cert.write_text("not a certificate")
        named = str(cert)
    elif breakage == "missing":
        cert.unlink()
        named = str(cert)
    elif breakage == "mismatch":
        _, other_key = ca.issue("other")
        key.write_bytes(other_key)
        secret, named = other_key, str(key)
    else:
        private = serialization.load_pem_private_key(secret, None)
        key.write_bytes(private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        ))
        named = str(key)
    problem = certificates.reload()
    assert problem is not None and named in problem
    (line,) = [e for e in events if e.get("log_level") is not None and e["log_level"].name == "error"]
    assert line["problem"] == problem and "still serving the previous one" in line["log_format"]
    body = b"".join(secret.splitlines()[1:-1]).decode()
    assert body[:40] not in problem
    client, _ = handshake(certificates, ca)
    assert served_name(client) == "first"
    with pytest.raises(CertificateError, match=named.replace(".", r"\.")):
        load(certificates.files)


@implementer(ISSLTransport)
class _TLSTransport:
    def __init__(self, name: bytes | None) -> None:
        self.name = name

    def getHandle(self):
        return self

    def get_servername(self):
        return self.name


class _Channel:
    def __init__(self, transport) -> None:
        self.transport = transport


class _Request:
    def __init__(self, transport) -> None:
        self.channel = _Channel(transport)


def test_the_server_name_is_read_from_the_tls_connection_as_sent():
    assert server_name(_Request(_TLSTransport(b"A.Test"))) == "A.Test"
    assert server_name(_Request(_TLSTransport(None))) is None
    assert server_name(_Request(object())) is None  # plain TCP


@pytest.fixture
def reloader(tmp_path):
    previous = signal.getsignal(signal.SIGHUP)
    g = gateway()
    g.load(config(tmp_path))
    reloader = Reloader(g, "/etc/gatewayd", {}, Clock(), lambda path, env: succeed(config(tmp_path)), Notifications())
    reloader.startService()
    yield reloader
    signal.signal(signal.SIGHUP, previous)


def test_sighup_reads_the_certificates_again_and_acknowledges_a_failure(tmp_path, ca, reloader):
    directory = tmp_path / "tls"
    directory.mkdir()
    cert, key = ca.write_server(directory, "first")
    certificates = Certificates(TLSFiles(str(key), str(cert)))
    reloader.gateway.certificates.append(certificates)
    acknowledged = []
    reloader.acknowledge = lambda started, problem: acknowledged.append(problem)
    ca.write_server(directory, "second")
    assert reloader.reload().result is True
    assert served_name(handshake(certificates, ca)[0]) == "second"
    cert.write_text("broken")
    assert reloader.reload().result is False
    assert acknowledged[0] is None and str(cert) in acknowledged[1]
    assert served_name(handshake(certificates, ca)[0]) == "second"
