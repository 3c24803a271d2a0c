"""Plain proxying to a service, as Kong 3.x does: headers, timeouts, retries, streaming both ways.

Most tests run in memory: a real twisted.web Site on a StringTransport calls
:meth:`ServiceProxy.forward`, whose upstream connections (the real pool and
HTTP client) are accepted by hand on a ``MemoryReactorClock``, so timeouts are
clock advances and backpressure is a transport's producer state.  The last
tests use real sockets on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from gatewayd.config import Service
from gatewayd.exchange import Exchange
from gatewayd.kong_response import SERVER_TOKENS, kong_error, nginx_error, response_type
from gatewayd.proxy import ServiceProxy, upstream_uri
from gatewayd.upstream import connection_pool
from tests.inmemory import FIRST_PORT, Client, Connection

VIA = f"1.1 {SERVER_TOKENS}"
SERVICE = Service(name="plain", host="127.0.0.1", port=FIRST_PORT, retries=2,
                  connect_timeout=1000, write_timeout=2000, read_timeout=3000)


class Forward(Resource):
    """The pipeline's part, reduced: an exchange per request, then the proxy (``path`` below /api)."""

    isLeaf = True

    def __init__(self, proxy: ServiceProxy, reactor: Any, preserve_host: bool = False) -> None:
        super().__init__()
        self.proxy, self.reactor, self.preserve_host = proxy, reactor, preserve_host
        self.exchanges: list[Exchange] = []
        self.requests: list[Request] = []
        self.finished: list[Deferred[None]] = []

    def render(self, request: Request) -> object:
        exchange = Exchange(started=self.reactor.seconds())
        request.gatewayd_exchange = exchange  # type: ignore[attr-defined]
        self.exchanges.append(exchange)
        self.requests.append(request)
        path = "/base" + request.path.decode().removeprefix("/api")
        self.finished.append(Deferred.fromCoroutine(
            self.proxy.forward(request, exchange, path, self.preserve_host, prefix="/api")
        ))
        return NOT_DONE_YET


class Harness:
    def __init__(self, service: Service = SERVICE, preserve_host: bool = False) -> None:
        self.reactor = MemoryReactorClock()
        self.proxy = ServiceProxy(service, self.reactor, connection_pool(self.reactor))
        self.resource = Forward(self.proxy, self.reactor, preserve_host)
        self.site = Site(self.resource, reactor=self.reactor)
        self.taken = 0

    def client(self, head: str, body: bytes = b"") -> Client:
        client = Client(self.site)
        client.send(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        return client

    def accept(self) -> Connection:
        _, port, factory, timeout, _ = self.reactor.tcpClients[self.taken]
        self.taken += 1
        return Connection(self.reactor, port - FIRST_PORT, factory, timeout)

    def refuse(self) -> None:
        _, _, factory, _, _ = self.reactor.tcpClients[self.taken]
        self.taken += 1
        factory.clientConnectionFailed(None, ConnectionRefusedError())
        self.reactor.advance(0.3)  # HostnameEndpoint gives up once its next attempt is due

    @property
    def attempts(self) -> int:
        return len(self.reactor.tcpClients)

    @property
    def exchange(self) -> Exchange:
        return self.resource.exchanges[-1]

    def done(self) -> bool:
        return self.resource.finished[-1].called


def head_of(connection: Connection) -> tuple[str, dict[str, list[str]], bytes]:
    raw, _, body = connection.transport.value().partition(b"\r\n\r\n")
    first, *lines = raw.decode().split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, value = line.split(":", 1)
        headers.setdefault(name.lower(), []).append(value.strip())
    return first, headers, body


GET = """GET /api/things/%C3%A9?b=2&a=1&key HTTP/1.1
Host: gateway.test:8000
Accept: application/json
Connection: keep-alive, X-Secret-Hop
X-Secret-Hop: drop me
Keep-Alive: timeout=5
TE: trailers, deflate
Upgrade: h2c
Proxy: http://evil
Proxy-Connection: keep-alive
Via: 1.0 somewhere
X-Forwarded-For: 10.0.0.1
X-Forwarded-Proto: https
X-Forwarded-Host: spoofed.test
X-Forwarded-Path: /spoofed
X-Real-IP: 10.9.9.9
X-Custom: kept
"""


def test_request_goes_out_as_kong_sends_it() -> None:
    h = Harness()
    h.client(GET)
    upstream = h.accept()
    first, headers, _ = head_of(upstream)
    assert first == "GET /base/things/%C3%A9?b=2&a=1&key HTTP/1.1"
    assert headers["host"] == [f"127.0.0.1:{FIRST_PORT}"]
    assert headers["connection"] == ["keep-alive"]
    for hop in ("x-secret-hop", "keep-alive", "upgrade", "proxy", "proxy-connection", "content-length"):
        assert hop not in headers, hop
    assert headers["te"] == ["trailers"]
    assert headers["x-custom"] == ["kept"]
    assert headers["accept"] == ["application/json"]
    # trusted_ips empty: the client's X-Forwarded-* are replaced, its X-Forwarded-For extended.
    assert headers["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["gateway.test"]
    assert headers["x-forwarded-path"] == ["/api/things/%C3%A9"]
    assert headers["x-forwarded-prefix"] == ["/api"]
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["via"] == [f"1.0 somewhere, 1.1 {SERVER_TOKENS}"]
    assert headers["x-kong-request-id"] == [h.exchange.request_id]
    assert len(h.exchange.request_id) == 32 and int(h.exchange.request_id, 16) >= 0
    assert h.exchange.upstream_uri == "/base/things/%C3%A9?b=2&a=1&key"


def test_upstream_uri_escapes_the_path_and_keeps_the_query_as_sent() -> None:
    assert upstream_uri("/a b/é", b"/x?q=a%20b&") == "/a%20b/%C3%A9?q=a%20b&"
    assert upstream_uri("/a", b"/x?") == "/a?"
    assert upstream_uri("/a%2Fb", b"/x") == "/a%2Fb"


def test_preserve_host_sends_the_clients_host() -> None:
    h = Harness(preserve_host=True)
    h.client("GET /api/x HTTP/1.1\nHost: Gateway.Test:8000\n")
    _, headers, _ = head_of(h.accept())
    assert headers["host"] == ["Gateway.Test:8000"]
    assert headers["x-forwarded-host"] == ["gateway.test"]


def test_default_port_is_left_out_of_host() -> None:
    proxy = ServiceProxy(attrs.evolve(SERVICE, host="api.test", port=80), MemoryReactorClock(), None)
    assert proxy.host_header == "api.test"
    proxy = ServiceProxy(attrs.evolve(SERVICE, protocol="https", host="api.test", port=80), MemoryReactorClock(), None)
    assert proxy.host_header == "api.test:80"


def test_response_streams_back_with_kongs_headers() -> None:
    h = Harness()
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\n")
    h.reactor.advance(0.25)
    upstream = h.accept()
    h.reactor.advance(0.5)
    upstream.protocol.dataReceived(
        b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: no\r\nKeep-Alive: timeout=5\r\nVia: 1.1 backend\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Accel-Buffering: no\r\nTrailer: X-Sum\r\n\r\n"
        b"5\r\nhello\r\n"
    )
    status, headers, body = client.response()
    assert status == 201 and body == b"hello"
    assert headers["content-type"] == "text/plain"
    assert headers["via"] == f"1.1 backend, {VIA}"
    assert headers["server"] == SERVER_TOKENS
    # Kong's clock for the upstream starts before connecting, when the balancer is done.
    assert headers["x-kong-upstream-latency"] == "750"
    assert headers["x-kong-proxy-latency"] == "0"
    for hop in ("x-hop", "keep-alive", "x-accel-buffering", "trailer"):
        assert hop not in headers, hop
    raw = client.transport.value()
    assert raw.count(b"Set-Cookie") == 2
    assert not h.done()
    upstream.protocol.dataReceived(b"6\r\n world\r\n0\r\n\r\n")
    assert client.response()[2] == b"hello world"
    assert h.done()
    exchange = h.exchange
    assert exchange.upstream_status == 201
    assert exchange.proxy_first_byte - exchange.proxy_started == pytest.approx(0.75)
    (entry,) = exchange.tries
    assert entry["ip"] == "127.0.0.1" and entry["port"] == FIRST_PORT and "state" not in entry
    record = exchange.record(h.resource.requests[-1], 1.0)
    assert record["upstream_status"] == "201" and record["latencies"]["proxy"] == 750
    assert record["latencies"]["kong"] == 0 and record["tries"] == exchange.tries


def test_refused_is_502_after_every_try() -> None:
    h = Harness()
    client = h.client("POST /api/x HTTP/1.1\nHost: gateway.test\nContent-Length: 2\n", b"{}")
    for _ in range(SERVICE.retries + 1):
        h.refuse()
    assert h.attempts == SERVICE.retries + 1  # connect errors are retried, even for POST
    status, headers, body = client.response()
    assert status == 502
    assert headers["content-type"] == "text/plain; charset=utf-8"  # nginx's error: error_default_type
    assert body.decode() == (
        f"An invalid response was received from the upstream server\nrequest_id: {h.exchange.request_id}\n"
    )
    assert headers["via"] == VIA and "x-kong-upstream-latency" in headers
    assert [t.get("state") for t in h.exchange.tries] == ["failed"] * 3
    assert [t.get("code") for t in h.exchange.tries] == [502] * 3
    assert h.exchange.upstream_status == 502
    assert h.done()


def test_connect_timeout_is_504_after_every_try() -> None:
    h = Harness(attrs.evolve(SERVICE, retries=1))
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\nAccept: application/json\n")
    h.reactor.advance(0.999)
    assert h.attempts == 1
    h.reactor.advance(0.001)
    assert h.reactor.connectors[0].stoppedConnecting
    assert h.attempts == 2
    h.reactor.advance(1.0)
    status, headers, body = client.response()
    assert status == 504
    assert json.loads(body) == {"message": "The upstream server is timing out", "request_id": h.exchange.request_id}
    assert [t["code"] for t in h.exchange.tries] == [504, 504]


def test_read_timeout_runs_from_the_request_sent_and_retries_only_idempotent_methods() -> None:
    h = Harness()
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\n")
    h.reactor.advance(0.5)
    first = h.accept()
    h.reactor.advance(2.999)
    assert not first.transport.closed
    h.reactor.advance(0.001)
    assert first.transport.calls == ["abortConnection"]
    second = h.accept()  # GET: tried again
    second.respond(200, {"ok": True})
    assert client.response()[0] == 200
    assert [t.get("code") for t in h.exchange.tries] == [504, None]

    h = Harness()
    client = h.client("POST /api/x HTTP/1.1\nHost: gateway.test\nContent-Length: 2\n", b"{}")
    h.accept()
    h.reactor.advance(3.0)
    assert h.attempts == 1  # POST was sent: not again
    assert client.response()[0] == 504
    assert h.exchange.tries[0].get("state") is None  # Kong marks the last try only past `retries`


def test_a_silent_upstream_mid_body_cuts_the_clients_connection() -> None:
    h = Harness()
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\n")
    upstream = h.accept()
    upstream.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
    h.reactor.advance(2.9)
    upstream.protocol.dataReceived(b"more")
    h.reactor.advance(2.9)
    assert not upstream.transport.closed
    h.reactor.advance(0.2)
    assert upstream.transport.closed
    h.reactor.advance(0)
    assert client.transport.disconnecting
    assert h.done() and "read timed out" in h.exchange.notes[-1]


def test_a_slow_client_pauses_the_upstream_and_one_that_leaves_stops_it() -> None:
    h = Harness()
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\n")
    upstream = h.accept()
    upstream.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 65536)
    assert upstream.transport.producerState == "producing"
    client.transport.producer.pauseProducing()  # the client's socket buffer is full
    assert upstream.transport.producerState == "paused"
    h.reactor.advance(60)  # not reading is not the upstream's silence
    assert not upstream.transport.closed
    client.transport.producer.resumeProducing()
    assert upstream.transport.producerState == "producing"
    upstream.protocol.dataReceived(b"x" * 65536)
    client.leave()
    assert upstream.transport.calls == ["stopProducing"]
    h.reactor.advance(0)
    assert h.done()


def test_a_client_that_leaves_while_connecting_stops_connecting() -> None:
    h = Harness()
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\n")
    client.leave()
    assert h.reactor.connectors[0].stoppedConnecting
    h.reactor.advance(5)
    assert h.attempts == 1 and h.done()


def test_a_large_body_is_streamed_a_piece_at_a_time_and_a_stalled_upstream_times_out() -> None:
    size = 1_000_000
    h = Harness()
    h.client(f"PUT /api/x HTTP/1.1\nHost: gateway.test\nContent-Length: {size}\n", b"z" * size)
    upstream = h.accept()
    _, headers, sent = head_of(upstream)
    assert headers["content-length"] == [str(size)]
    assert len(sent) == 65536  # one piece per reactor turn, not the whole body
    upstream.transport.producer.pauseProducing()  # the upstream's socket buffer is full
    h.reactor.advance(1.999)
    assert len(head_of(upstream)[2]) == 65536
    h.reactor.advance(0.001)  # write_timeout between two writes
    assert upstream.transport.closed
    h.reactor.advance(0)
    h.accept()  # PUT is idempotent: tried again, from the start
    assert h.attempts == 2


def test_a_large_body_reaches_the_upstream_whole() -> None:
    size = 300_000
    h = Harness()
    body = bytes(range(256)) * (size // 256)
    client = h.client(f"POST /api/x HTTP/1.1\nHost: gateway.test\nContent-Length: {len(body)}\n", body)
    upstream = h.accept()
    for _ in range(10):
        h.reactor.advance(0)
    assert head_of(upstream)[2] == body
    upstream.respond(200, {})
    assert client.response()[0] == 200


@implementer(IHostnameResolver)
class NoSuchHost:
    def resolveHostName(self, receiver: Any, hostName: str, portNumber: int = 0, **kwargs: Any) -> Any:
        receiver.resolutionBegan(None)
        receiver.resolutionComplete()


def test_an_unknown_host_is_kongs_503_before_any_try() -> None:
    h = Harness(attrs.evolve(SERVICE, host="nowhere.invalid"))
    h.reactor.installNameResolver(NoSuchHost())
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\n")
    status, headers, body = client.response()
    assert status == 503
    assert json.loads(body)["message"] == "name resolution failed"  # kong.response.error: JSON
    assert h.exchange.tries == [] and h.exchange.proxy_started is None
    assert "via" not in headers


# Kong's error bodies


class Answer(Resource):
    isLeaf = True

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer

    def render(self, request: Request) -> object:
        request.gatewayd_exchange = Exchange(started=0.0, request_id="0" * 32)  # type: ignore[attr-defined]
        self.answer(request)
        return NOT_DONE_YET


def answered(answer: Any, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    client = Client(Site(Answer(answer), reactor=MemoryReactorClock()))
    client.send(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return client.response()


RID = "0" * 32


def test_kong_error_is_json_by_default_with_kongs_default_message() -> None:
    status, headers, body = answered(lambda r: kong_error(r, 404, "no Route matched with those values"))
    assert status == 404 and headers["content-type"] == "application/json; charset=utf-8"
    assert body == b'{\n  "message":"no Route matched with those values",\n  "request_id":"' + RID.encode() + b'"\n}'
    assert headers["server"] == SERVER_TOKENS
    _, _, body = answered(lambda r: kong_error(r, 429))
    assert json.loads(body)["message"] == "Too many requests"


def test_kong_error_formats_by_accept() -> None:
    _, headers, body = answered(lambda r: kong_error(r, 426, "Please use HTTPS protocol",
                                                     {"Connection": "Upgrade", "Upgrade": "TLS/1.2, HTTP/1.1"}),
                                "Accept: text/html\r\n")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "<p>Please use HTTPS protocol.</p>" in body.decode() and f"<p>request_id: {RID}</p>" in body.decode()
    assert headers["upgrade"] == "TLS/1.2, HTTP/1.1"
    _, headers, body = answered(lambda r: kong_error(r, 401), "Accept: application/xml\r\n")
    assert body.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n<error>\n  <message>Unauthorized</message>\n'
        f"  <requestid>{RID}</requestid>\n</error>\n"
    )
    _, headers, body = answered(lambda r: kong_error(r, 403), "Accept: text/plain\r\n")
    assert body.decode() == f"Forbidden\nrequest_id: {RID}\n"


def test_nginx_error_falls_back_to_content_type_then_text_plain() -> None:
    _, headers, body = answered(lambda r: nginx_error(r, 504), "Content-Type: application/json\r\n")
    assert json.loads(body)["message"] == "The upstream server is timing out"
    _, headers, body = answered(lambda r: nginx_error(r, 503))
    assert body.decode() == f"The upstream server is currently unavailable\nrequest_id: {RID}\n"


@pytest.mark.parametrize("accept, expected", [
    (None, "application/json; charset=utf-8"),
    ("text/html", "text/html; charset=utf-8"),
    ("text/*", "text/plain; charset=utf-8"),
    ("*/*", "application/json; charset=utf-8"),
    ("image/png", "application/json; charset=utf-8"),
    ("text/html;q=0.5, application/xml", "application/xml; charset=utf-8"),
    ("text/html, application/xml", "text/html; charset=utf-8"),  # equal quality: the first
    ("application/xml;q=0, text/plain;q=0.1", "text/plain; charset=utf-8"),
])
def test_response_type_follows_kongs_accept_rules(accept: str | None, expected: str) -> None:
    assert response_type(accept) == expected


# Real sockets


class Upstream(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, dict[str, str], int]] = []

    def render(self, request: Request) -> bytes:
        body = request.content.read()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((request.method, request.uri, headers, len(body)))
        request.setHeader(b"content-type", b"application/octet-stream")
        return b"y" * 500_000


@pytest_twisted.ensureDeferred
async def test_through_real_sockets() -> None:
    upstream = Upstream()
    upstream_port = global_reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
    pool = connection_pool(global_reactor)
    service = Service(name="real", host="127.0.0.1", port=upstream_port.getHost().port, retries=0)
    forward = Forward(ServiceProxy(service, global_reactor, pool), global_reactor)
    gateway_port = global_reactor.listenTCP(0, Site(forward), interface="127.0.0.1")
    try:
        agent = Agent(global_reactor)
        body = b"q" * 250_000  # past twisted.web's 100 KB: spooled to a temporary file
        response = await agent.request(
            b"POST", f"http://127.0.0.1:{gateway_port.getHost().port}/api/up?x=1".encode(),
            Headers({b"content-type": [b"application/octet-stream"]}), FileBodyProducer(io.BytesIO(body)),
        )
        received = await readBody(response)
        assert response.code == 200 and len(received) == 500_000
        assert response.headers.getRawHeaders(b"via") == [VIA.encode()]
        method, uri, headers, length = upstream.seen[0]
        assert (method, uri, length) == (b"POST", b"/base/up?x=1", len(body))
        assert headers["host"] == f"127.0.0.1:{service.port}"

        closed = upstream_port.getHost().port
        await upstream_port.stopListening()
        await pool.closeCachedConnections()
        response = await agent.request(b"GET", f"http://127.0.0.1:{gateway_port.getHost().port}/api/x".encode())
        text = (await readBody(response)).decode()
        assert response.code == 502 and text.startswith("An invalid response was received from the upstream server")
        assert forward.exchanges[-1].tries[0]["port"] == closed
    finally:
        await gateway_port.stopListening()
        await pool.closeCachedConnections()


def test_content_length_is_passed_on_even_for_head() -> None:
    h = Harness()
    client = h.client("HEAD /api/x HTTP/1.1\nHost: gateway.test\n")
    upstream = h.accept()
    upstream.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n")
    raw = client.transport.value()
    assert b"Content-Length: 1234\r\n" in raw and raw.endswith(b"\r\n\r\n")
    assert h.done()

    h = Harness()
    client = h.client("GET /api/x HTTP/1.1\nHost: gateway.test\n")
    h.accept().protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    status, headers, body = client.response()
    assert headers["content-length"] == "5" and body == b"hello" and "transfer-encoding" not in headers
    assert "content-type" not in headers  # nginx adds none (Kong's default_type '')
