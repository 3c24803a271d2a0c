"""The whole gateway in memory, with the real upstream client: no reactor, no sockets, no sleeps.

The gateway runs on a ``MemoryReactorClock``: its ``Site`` serves an
``HTTPChannel`` over a ``StringTransport`` (:class:`Client`), and its upstream
calls go through the real :class:`~gatewayd.http11.UpstreamClient` (its connections
and their pool), whose connection attempts the test accepts and answers by
hand (:class:`Upstream`).  So what the client really does on a timeout,
a cancellation or a lost connection is what the gateway sees, and the clock
moves only when the test advances it.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from gatewayd.plugins import read_config
from gatewayd.daemon.gateway import GatewayRoot, GatewaySite, build

API_KEY = "upstream-api-key-0123456789"
FIRST_PORT = 9100


def target(index: int, *, weight: int = 100, model: str = "gemini-2.0-flash") -> str:
    """One ai-proxy-advanced target on the Gemini API at 127.0.0.1:FIRST_PORT+index."""
    return f"""
      - route_type: llm/v1/chat
        weight: {weight}
        logging: {{log_statistics: true}}
        auth: {{header_name: x-goog-api-key, header_value: {API_KEY}}}
        model:
          provider: gemini
          name: {model}
          options:
            upstream_url: "http://127.0.0.1:{FIRST_PORT + index}"
"""


def config_text(balancer: str, targets: list[str], log_path: Path) -> str:
    return f"""_format_version: "3.0"
services:
  - name: llm
    url: http://example.test
routes:
  - name: claude
    paths: ["/anything"]
    service: {{name: llm}}
plugins:
  - name: file-log
    config: {{path: "{log_path}"}}
  - name: ai-proxy-advanced
    route: claude
    config:
      llm_format: anthropic
      balancer: {balancer}
      targets:{''.join(targets)}"""


class Gateway:
    """A gateway built from ``balancer`` and ``targets`` on a memory reactor, with the daemon's
    Site (idle timeout 60 s, ``request_read_timeout`` for a whole request)."""

    def __init__(self, balancer: str, targets: list[str], request_read_timeout: float = 300.0) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="gatewayd-test-"))
        self.log_path = self.workdir / "claude.json"
        (self.workdir / "gatewayd.yaml").write_text(config_text(balancer, targets, self.log_path))
        self.reactor = MemoryReactorClock()
        _, self.gateway = build(read_config(str(self.workdir), {}), self.reactor, listen=[])
        self.site = GatewaySite(GatewayRoot(self.gateway), self.gateway.stats, reactor=self.reactor, timeout=60)
        self.site.request_read_timeout = request_read_timeout
        self.upstream = Upstream(self.reactor)

    def close(self) -> None:
        shutil.rmtree(self.workdir)

    def client(self) -> "Client":
        return Client(self.site)

    def settle(self) -> None:
        """Run what is due now: lost connections, then the file-log's write of that turn."""
        for _ in range(3):
            self.reactor.advance(0)

    def records(self) -> list[dict[str, Any]]:
        self.settle()
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]


class Client:
    """One client connection to the gateway's Site."""

    def __init__(self, site: GatewaySite) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.channel = site.buildProtocol(self.transport.getPeer())
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def post(self, body: dict[str, Any] | bytes, path: str = "/anything/v1/messages",
             headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        lines = [f"POST {path} HTTP/1.1", "Host: gateway.test", "Content-Type: application/json",
                 f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def leave(self) -> None:
        """The client hangs up."""
        self.channel.connectionLost(Failure(ConnectionDone()))

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and the body received so far (a stream may still be open)."""
        raw = self.transport.value()
        assert raw, "no response yet"
        response = http.client.HTTPResponse(_Socket(raw))  # type: ignore[arg-type]
        response.begin()
        try:
            body = response.read()
        except http.client.IncompleteRead as partial:
            body = partial.partial
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


class _Socket:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of a (possibly unfinished) stream body."""
    parsed = []
    for frame in body.decode().split("\n\n"):
        if frame.strip():
            fields = dict(line.split(": ", 1) for line in frame.splitlines())
            parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


class Upstream:
    """The upstream side of the memory reactor: connection attempts, accepted by hand."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.taken = 0

    def attempts(self) -> list[int]:
        """The target index of every connection attempt so far."""
        return [port - FIRST_PORT for _, port, _, _, _ in self.reactor.tcpClients]

    def pending(self) -> list[int]:
        return self.attempts()[self.taken:]

    def accept(self) -> "Connection":
        """Connect the oldest connection attempt not yet taken."""
        _, port, factory, timeout, _ = self.reactor.tcpClients[self.taken]
        self.taken += 1
        return Connection(self.reactor, port - FIRST_PORT, factory, timeout)

    def refuse(self, reason: Exception) -> None:
        """Fail the oldest connection attempt not yet taken with ``reason``."""
        _, _, factory, _, _ = self.reactor.tcpClients[self.taken]
        self.taken += 1
        factory.clientConnectionFailed(None, Failure(reason))
        # HostnameEndpoint gives up once its next connection attempt is due.
        self.reactor.advance(0.3)


class UpstreamTransport(StringTransport):
    """Records what the gateway does to an upstream connection, in order.

    Like a TCP transport, closing it (``stopProducing`` too) tells the
    protocol its connection is lost, on a later reactor turn.
    """

    def __init__(self, reactor: MemoryReactorClock, lost: Any) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 9999))
        self.calls: list[str] = []
        self._reactor = reactor
        self._lost = lost

    def _close(self, how: str) -> None:
        self.calls.append(how)
        if not self.disconnecting:
            self.disconnecting = True
            self._reactor.callLater(0, self._lost)

    def stopProducing(self) -> None:
        self._close("stopProducing")

    def loseConnection(self) -> None:
        self._close("loseConnection")

    def abortConnection(self) -> None:
        self._close("abortConnection")

    @property
    def closed(self) -> bool:
        return self.disconnecting


class Connection:
    """One accepted upstream connection: read the request, answer it."""

    def __init__(self, reactor: MemoryReactorClock, target: int, factory: Any, connect_timeout: float) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.transport = UpstreamTransport(reactor, self.lost)
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self._lost = False

    def request(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        first, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        return first.split()[1], headers, json.loads(body)

    def respond(self, status: int, body: dict[str, Any] | list[Any]) -> None:
        data = json.dumps(body).encode()
        self.protocol.dataReceived(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode() + data
        )

    def start_stream(self) -> None:
        self.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )

    def chunk(self, gemini_chunk: dict[str, Any]) -> None:
        data = b"data: " + json.dumps(gemini_chunk).encode() + b"\r\n\r\n"
        self.protocol.dataReceived(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.protocol.dataReceived(b"0\r\n\r\n")

    def lost(self) -> None:
        """The connection is gone (the upstream closed it, or the gateway did a turn ago)."""
        if not self._lost:
            self._lost = True
            self.transport.disconnecting = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


def answer(text: str = "hello", finish: str | None = "STOP") -> dict[str, Any]:
    """A Gemini generateContent answer (or stream chunk)."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
        "modelVersion": "gemini-2.0-flash",
    }


def google_error(code: int, status: str = "UNAVAILABLE") -> dict[str, Any]:
    return {"error": {"code": code, "message": f"upstream said {code}", "status": status}}


def ask(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gemini-2.0-flash", "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}
