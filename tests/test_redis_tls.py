"""Redis over TLS against a real redis-server (Debian's is built with TLS) and a throwaway CA:
``ssl_verify`` checks the certificate, ``server_name`` is the name it is checked against."""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor

from gatewayd.config import Plugin
from gatewayd.plugins.ai_rate_limiting_advanced.handler import Window, counters, redis_store
from gatewayd.plugins.ai_rate_limiting_advanced.schema import AI_RATE_LIMITING_ADVANCED
import time

NAME = "redis.gatewayd.test"


def _certificate(subject: str, key, issuer_key, issuer: x509.Name | None, *, ca: bool):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path, thing) -> str:
    if isinstance(thing, x509.Certificate):
        path.write_bytes(thing.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(thing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def tls_redis(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("gatewayd test CA", ca_key, ca_key, None, ca=True)
    server = _certificate(NAME, server_key, ca_key, ca.subject, ca=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--tls-cert-file", _pem(tmp_path / "server.pem", server),
         "--tls-key-file", _pem(tmp_path / "server.key", server_key),
         "--tls-ca-cert-file", _pem(tmp_path / "ca.pem", ca), "--tls-auth-clients", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # 10 s at most
            if _listening(port):
                break
            time.sleep(0.1)
        else:
            pytest.fail("redis-server with TLS did not start")
        yield port, str(tmp_path / "ca.pem")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as client:
        return client.connect_ex(("127.0.0.1", port)) == 0


def _plugin(port: int, **redis) -> Plugin:
    config = AI_RATE_LIMITING_ADVANCED.validate_config({
        "strategy": "redis",
        "llm_providers": [{"name": "gemini", "limit": [100], "window_size": [60]}],
        "redis": {"host": "127.0.0.1", "port": port, "ssl": True, "connect_timeout": 1000,
                  "send_timeout": 1000, "read_timeout": 1000, **redis},
    })
    return Plugin(name="ai-rate-limiting-advanced", id="p-1", enabled=True, config=config)


async def _counts_in_redis(plugin: Plugin) -> bool:
    """Reserve twice; the second sees the first only if both went to the same Redis."""
    store = redis_store(plugin, reactor)
    found = counters([Window("gemini", 100, 60)], f"tls:{id(plugin)}", reactor.seconds(), False)
    try:
        await store.reserve(found, 7)
        return store.reachable
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_verified_against_server_name(tls_redis, monkeypatch):
    port, ca = tls_redis
    monkeypatch.setenv("SSL_CERT_FILE", ca)  # the trust store, as lua_ssl_trusted_certificate is Kong's
    assert await _counts_in_redis(_plugin(port, server_name=NAME))
    # The certificate names redis.gatewayd.test, not 127.0.0.1: without server_name it fails.
    assert not await _counts_in_redis(_plugin(port))


@pytest_twisted.ensureDeferred
async def test_unknown_ca_refused_unless_ssl_verify_false(tls_redis):
    port, _ = tls_redis
    assert not await _counts_in_redis(_plugin(port, server_name=NAME))
    assert await _counts_in_redis(_plugin(port, ssl_verify=False))
