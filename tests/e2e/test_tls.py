"""HTTPS with the real daemon: the anthropic SDK and Claude Code trusting a throwaway CA, routes'
``snis`` and ``protocols`` decided by the connection, and a certificate renewed by SIGHUP while a
stream is in flight."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Iterator

import anthropic
import pytest

from gatewayd.demo import BIN, source_environment
from tests.certs import CA, common_name
from tests.e2e.harness import Daemon, FakeVertex, config_dir, file_log_override, read_records, settled_records, wait_for
from tests.e2e.test_claude_code import CLAUDE, claude_home
from tests.grammar import check_sdk_stream, check_stream

ROUTES = """_format_version: "3.0"
routes:
  - name: sni-a
    paths: [/sni]
    snis: [a.test]
    protocols: [https]
    service: {name: example-service}
  - name: secure
    paths: [/secure]
    protocols: [https]
    service: {name: example-service}
"""
MESSAGE = {"model": "claude-of-the-client", "max_tokens": 256,
           "messages": [{"role": "user", "content": "Tell me about Anna Komnene's Alexiad."}]}


class TLSDaemon:
    """A daemon serving plain HTTP and HTTPS, the CA its certificate comes from, and its files."""

    def __init__(self, workdir: Path, env: dict[str, str], ca: CA) -> None:
        self.ca = ca
        self.tls_dir = workdir / "tls"
        self.tls_dir.mkdir()
        self.cert, self.key = ca.write_server(self.tls_dir, "first")
        self.ca_file = ca.write(workdir / "ca.pem")
        self.file_log = workdir / "claude.json"
        self.daemon = Daemon(
            config_dir(workdir, ("85-tls-routes.yaml", ROUTES), file_log_override(self.file_log)),
            env, workdir,
            args=("--listen", f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"),
        )
        self.tls_port = int(wait_for(lambda: self.daemon._port(r"Site \(TLS\)"), what="the TLS listener"))
        self.context = ssl.create_default_context(cafile=str(self.ca_file))

    def connection(self, sni: str = "localhost") -> "SNIConnection":
        return SNIConnection(self.tls_port, sni, self.context)

    def sighup(self, expected: str) -> None:
        """SIGHUP, then wait for its configuration reload and the ``expected`` log text."""
        reloads = self.daemon.log().count("SIGHUP: reopening")
        self.daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: self.daemon.log().count("SIGHUP: reopening") > reloads
                 and expected in self.daemon.log().split("SIGHUP: reopening")[-1]
                 and "Configuration reloaded" in self.daemon.log().split("SIGHUP: reopening")[-1],
                 what=f"{expected!r} after SIGHUP")

    def served_name(self, sni: str = "localhost") -> str:
        """The common name of the certificate a new handshake gets."""
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw:
            with self.context.wrap_socket(raw, server_hostname=sni) as tls:
                return common_name(tls.getpeercert(True))

    def stop(self) -> None:
        self.daemon.stop()


class SNIConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with ``sni`` as the TLS server name (and the name verified)."""

    def __init__(self, port: int, sni: str, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=30)
        self.sni = sni

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.sni)


def post(connection: http.client.HTTPConnection, path: str, body: dict) -> http.client.HTTPResponse:
    connection.request("POST", path, json.dumps(body), {"content-type": "application/json", "x-api-key": "x",
                                                      "anthropic-version": "2023-06-01"})
    return connection.getresponse()


def sse_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict]]:
    """The events of a Messages stream as they arrive (bounded by the response's end)."""
    name = None
    for line in response:
        line = line.rstrip(b"\r\n")
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            yield name, json.loads(line[6:])


@pytest.fixture(scope="module")
def ca():
    return CA.make()


@pytest.fixture(scope="module")
def tls_daemon(fake, ca, tmp_path_factory):
    daemon = TLSDaemon(tmp_path_factory.mktemp("tls"), fake.seed_environment(), ca)
    yield daemon
    daemon.stop()


def test_the_sdk_over_https_with_a_custom_ca(tls_daemon):
    before = len(settled_records(tls_daemon.file_log))
    client = anthropic.Anthropic(
        base_url=f"https://localhost:{tls_daemon.tls_port}/anything", api_key="x", max_retries=0,
        http_client=anthropic.DefaultHttpxClient(verify=tls_daemon.context),
    )
    message = client.messages.create(**MESSAGE)
    assert "Alexiad" in message.content[0].text
    with client.messages.stream(**MESSAGE) as stream:
        events = check_sdk_stream(stream)
    assert any(e.type == "message_stop" for e in events)
    records = wait_for(lambda: (r := read_records(tls_daemon.file_log)) and len(r) >= before + 2 and r,
                       what="the file-log records")
    assert all(r["request"]["url"].startswith(f"https://localhost:{tls_daemon.tls_port}/anything/v1/messages")
               for r in records[before:])
    # Kong's request.tls, read while the connection was there (the log phase runs after it).
    assert all(r["request"]["tls"]["version"] in ("TLSv1.2", "TLSv1.3") for r in records[before:])
    # Without the CA the client refuses the daemon's certificate.
    untrusting = anthropic.Anthropic(base_url=f"https://localhost:{tls_daemon.tls_port}/anything",
                                     api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        untrusting.messages.create(**MESSAGE)


@pytest.mark.skipif(CLAUDE is None, reason="Claude Code CLI not installed: .ci/run installs it with npm")
def test_claude_code_over_https_with_node_extra_ca_certs(tls_daemon, tmp_path):
    before = len(settled_records(tls_daemon.file_log))
    workdir = tmp_path / "project"
    workdir.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(claude_home(tmp_path)),
        "ANTHROPIC_BASE_URL": f"https://localhost:{tls_daemon.tls_port}/anything",
        "ANTHROPIC_MODEL": "gemini-2.0-flash",
        "NODE_EXTRA_CA_CERTS": str(tls_daemon.ca_file),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    done = subprocess.run(
        [CLAUDE, "-p", "Tell me about Anna Komnene's Alexiad.", "--output-format", "json"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"claude failed: {done.stdout}\n{done.stderr}\n{tls_daemon.daemon.log()}"
    result = json.loads(done.stdout)
    assert result["is_error"] is False and "Alexiad" in result["result"], result
    records = wait_for(lambda: [r for r in read_records(tls_daemon.file_log)[before:]
                                if r["request"]["uri"].startswith("/anything/v1/messages")],
                       what="a file-log record for Claude Code's request")
    assert records[-1]["request"]["url"].startswith("https://")
    assert records[-1]["request"]["headers"]["user-agent"].startswith("claude-cli/")
    assert records[-1]["ai"]["proxy"]["meta"]["request_mode"] == "stream"


def test_a_route_with_snis_serves_the_name_it_lists_and_no_other(tls_daemon):
    answered = post(tls_daemon.connection("a.test"), "/sni/v1/messages", MESSAGE)
    assert answered.status == 200 and "Alexiad" in json.load(answered)["content"][0]["text"]
    refused = post(tls_daemon.connection("b.test"), "/sni/v1/messages", MESSAGE)
    assert refused.status == 404
    assert json.load(refused)["message"] == "no Route matched with those values"


def test_an_https_only_route_serves_over_tls_and_answers_plain_http_with_426(tls_daemon):
    secure = post(tls_daemon.connection(), "/secure/v1/messages", MESSAGE)
    assert secure.status == 200 and json.load(secure)["type"] == "message"
    plain = post(http.client.HTTPConnection("127.0.0.1", tls_daemon.daemon.port, timeout=30),
                 "/secure/v1/messages", MESSAGE)
    assert plain.status == 426 and plain.getheader("upgrade") == "TLS/1.2, HTTP/1.1"
    assert json.load(plain)["message"] == "Please use HTTPS protocol"


@pytest.fixture
def slow_tls_daemon(ca, tmp_path):
    (tmp_path / "fake").mkdir()
    slow = FakeVertex(tmp_path / "fake", "--stream-delay", "0.3")
    daemon = TLSDaemon(tmp_path, slow.seed_environment(), ca)
    daemon.fake = slow
    yield daemon
    daemon.stop()
    slow.stop()


def test_a_certificate_swapped_by_sighup_serves_new_handshakes_while_a_stream_goes_on(slow_tls_daemon):
    d = slow_tls_daemon
    connection = d.connection()
    response = post(connection, "/anything/v1/messages", {**MESSAGE, "stream": True})
    assert response.status == 200
    assert common_name(connection.sock.getpeercert(True)) == "first"
    events = sse_events(response)
    seen = [next(events)]
    assert seen[0][0] == "message_start"

    # Renewed as certbot does it: new files, then a reload.
    cert_pem, key_pem = d.ca.issue("second")
    for path, pem in ((d.key, key_pem), (d.cert, cert_pem)):
        path.with_suffix(".new").write_bytes(pem)
        path.with_suffix(".new").replace(path)
    d.sighup("TLS certificate reloaded")
    assert d.served_name() == "second"
    assert d.fake.streams()["open"] == 1, "the stream ended before the new certificate served"

    # A broken renewal: the previous certificate goes on serving, the log names the file.
    d.cert.write_text("not a certificate\n")
    d.sighup("TLS certificate not reloaded")
    assert d.served_name() == "second"
    line = next(line for line in d.daemon.log().splitlines() if "TLS certificate not reloaded" in line)
    assert str(d.cert) in line and "still serving the previous one" in line
    key_body = key_pem.decode().splitlines()[1]
    assert key_body not in d.daemon.log()

    seen += list(events)
    check_stream(seen)
    assert seen[-1][0] == "message_stop"
    assert d.fake.streams() == {"open": 0, "cancelled": 0}
    assert common_name(connection.sock.getpeercert(True)) == "first"


def test_workers_serve_tls_on_the_shared_socket_and_all_reload_on_sighup(fake, ca, tmp_path):
    workdir = tmp_path / "workers"
    workdir.mkdir()
    tls_dir = workdir / "tls"
    tls_dir.mkdir()
    cert, key = ca.write_server(tls_dir, "first")
    context = ssl.create_default_context(cafile=str(ca.write(workdir / "ca.pem")))
    daemon = Daemon(
        config_dir(workdir), fake.seed_environment(), workdir,
        args=("--workers", "2", "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"),
    )
    try:
        wait_for(lambda: daemon.log().count("Site (TLS) starting on") == 2, what="the worker's TLS listener")
        port = int(daemon._port(r"Site \(TLS\)"))

        def served_names(count: int) -> list[str]:
            names = []
            for _ in range(count):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost") as tls:
                        names.append(common_name(tls.getpeercert(True)))
            return names

        assert set(served_names(20)) == {"first"}
        ca.write_server(tls_dir, "second")
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.log().count("TLS certificate reloaded") == 2, what="both processes' reloads")
        assert set(served_names(20)) == {"second"}
    finally:
        daemon.stop()


@pytest.mark.parametrize("broken", ["missing", "mismatch"])
def test_a_certificate_that_cannot_serve_stops_the_start_with_one_line(fake, ca, tmp_path, broken):
    cert, key = ca.write_server(tmp_path, "first")
    if broken == "missing":
        key.unlink()
        expected = f"gatewayd: cannot start: cannot read {key}: No such file or directory"
    else:
        key.write_bytes(ca.issue("other")[1])
        expected = f"gatewayd: cannot start: the private key in {key} does not match the certificate in {cert}"
    done = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "gatewayd", "--config", str(config_dir(tmp_path)),
         "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
        env=source_environment(fake.seed_environment()), cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert expected in done.stderr.splitlines(), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
