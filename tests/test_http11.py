"""The model calls' HTTP/1.1 client (gatewayd.http11): requests written, responses read as
``Agent`` delivers them, connections kept, reused, stopped and dropped.

Most tests drive one :class:`HTTP11Connection` over a ``StringTransport``, answering by hand;
the last ones use real sockets on 127.0.0.1, in plain HTTP and in TLS with a throwaway CA.
"""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived, BrowserLikePolicyForHTTPS
from twisted.web.http import PotentialDataLoss
from twisted.web.error import SchemeNotSupported
from twisted.web.resource import Resource
from twisted.web.server import Site

from gatewayd.http11 import HTTP11Connection, UpstreamClient, UpstreamPool, destination, header_lines
from gatewayd.upstream import TimedBody
from tests.certs import CA

KEY = ("http", "127.0.0.1", 9100)
HEAD = destination("http://127.0.0.1:9100/v1/models/x:generateContent").head


class Reader(Protocol):
    """Collects a body and how it ended."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ended: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.ended = reason

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


class Lossy(StringTransport):
    """A transport whose closing, like TCP's, tells the protocol a turn later (here: on ``lose``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        super().loseConnection()

    def abortConnection(self) -> None:
        self.calls.append("abortConnection")
        super().loseConnection()

    def stopProducing(self) -> None:
        self.calls.append("stopProducing")
        super().loseConnection()


def connected(pool: UpstreamPool | None = None) -> tuple[HTTP11Connection, Lossy]:
    pool = pool or UpstreamPool(MemoryReactorClock(), size=2)
    connection = HTTP11Connection(pool, KEY)
    transport = Lossy()
    connection.makeConnection(transport)
    return connection, transport


def result(deferred: Deferred):
    """What ``deferred`` fired with (a success stays its result; a failure is handled here)."""
    out: list = []
    deferred.addBoth(lambda value: out.append(value) or (None if isinstance(value, Failure) else value))
    assert out, "the Deferred has not fired"
    return out[0]


def test_a_url_is_taken_apart_into_pool_key_and_request_head():
    where = destination("https://aiplatform.googleapis.com/v1/projects/p:streamGenerateContent?alt=sse")
    assert where.key == ("https", "aiplatform.googleapis.com", 443)
    assert where.head == (b"POST /v1/projects/p:streamGenerateContent?alt=sse HTTP/1.1\r\n"
                          b"Host: aiplatform.googleapis.com\r\n")
    assert destination("http://[::1]:8080").key == ("http", "::1", 8080)
    assert destination("http://[::1]:8080").head == b"POST / HTTP/1.1\r\nHost: [::1]:8080\r\n"


def test_a_header_value_cannot_add_a_header():
    assert header_lines({"anthropic-beta": "a\r\nX-Evil: 1"}) == b"anthropic-beta: a  X-Evil: 1\r\n"


def test_the_request_goes_in_one_write_and_the_answer_comes_back_whole_then_the_connection_is_kept():
    pool = UpstreamPool(MemoryReactorClock(), size=2)
    connection, transport = connected(pool)
    pending = connection.request(HEAD + header_lines({"Authorization": "Bearer t"}), b'{"a":1}')
    assert transport.value() == (
        b"POST /v1/models/x:generateContent HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n"
        b"Authorization: Bearer t\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
    )
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n")
    response = result(pending)
    assert (response.code, response.phrase, response.length) == (200, b"OK", 4)
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    reader = Reader()
    response.deliverBody(reader)
    connection.dataReceived(b"{}{}")
    assert reader.body == b"{}{}"
    assert reader.ended.check(ResponseDone)
    assert pool.idle(KEY) is connection  # kept, and handed out again
    assert transport.calls == []


def test_a_response_split_at_every_byte_reads_the_same():
    raw = (b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    for split in range(1, len(raw)):
        connection, _ = connected()
        pending = connection.request(HEAD, b"")
        reader = Reader()
        for piece in (raw[:split], raw[split:]):
            connection.dataReceived(piece)
            if pending.called and reader.ended is None and not reader.parts and reader.transport is None:
                result(pending).deliverBody(reader)
        response = result(pending)
        assert (response.code, response.phrase) == (429, b"Too Many Requests"), split
        assert response.headers.getRawHeaders(b"retry-after") == [b"7"]
        assert reader.body == b"hello world", split
        assert reader.ended.check(ResponseDone), split


def test_body_bytes_that_come_before_deliver_body_wait_for_it():
    connection, _ = connected()
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    reader = Reader()
    result(pending).deliverBody(reader)
    assert reader.body == b"ok" and reader.ended.check(ResponseDone)


def test_an_interim_100_continue_is_passed_over():
    connection, _ = connected()
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert not pending.called
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert result(pending).code == 200


def test_connection_close_is_honoured_and_the_connection_not_kept():
    pool = UpstreamPool(MemoryReactorClock())
    connection, transport = connected(pool)
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    result(pending).deliverBody(Reader())
    assert transport.calls == ["loseConnection"]
    assert pool.idle(KEY) is None


@pytest.mark.parametrize("head, reason, ended", [
    # No length: the body ends with its connection, and may have lost data.
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", ConnectionDone, PotentialDataLoss),
    # A length not reached: the body was cut.
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", ConnectionLost, ResponseFailed),
])
def test_a_body_its_connection_ends_ends_as_agents_would(head, reason, ended):
    connection, _ = connected()
    pending = connection.request(HEAD, b"")
    connection.dataReceived(head + b"abc")
    reader = Reader()
    result(pending).deliverBody(reader)
    connection.connectionLost(Failure(reason()))
    assert reader.body == b"abc" and reader.ended.check(ended)


def test_a_connection_lost_before_the_head_fails_the_request():
    connection, _ = connected()
    pending = connection.request(HEAD, b"")
    connection.connectionLost(Failure(ConnectionLost()))
    assert result(pending).check(ResponseNeverReceived)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 2x0 OK\r\n\r\n",  # malformed
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
])
def test_an_answer_that_cannot_be_read_fails_the_call_and_drops_the_connection(answer):
    connection, transport = connected()
    pending = connection.request(HEAD, b"")
    connection.dataReceived(answer)
    assert result(pending).check(ResponseNeverReceived)
    assert transport.calls == ["abortConnection"]


def test_a_reader_that_raises_gets_the_body_failed_and_the_connection_is_dropped():
    class Broken(Reader):
        def dataReceived(self, data: bytes) -> None:
            raise KeyError("bug")

    connection, transport = connected()
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    reader = Broken()
    result(pending).deliverBody(reader)
    connection.dataReceived(b"abc")
    assert reader.ended.check(ResponseFailed)
    assert reader.ended.value.reasons[0].check(KeyError)
    assert transport.calls == ["abortConnection"]


def test_cancelling_before_the_head_aborts_the_connection():
    connection, transport = connected()
    pending = connection.request(HEAD, b"")
    pending.cancel()
    assert result(pending).check(CancelledError)
    assert transport.calls == ["abortConnection"]
    connection.connectionLost(Failure(ConnectionDone()))  # the close arrives; nothing more fires


def test_a_reader_pauses_resumes_and_stops_the_upstream_socket():
    pool = UpstreamPool(MemoryReactorClock())
    connection, transport = connected(pool)
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    reader = Reader()
    result(pending).deliverBody(reader)
    reader.transport.pauseProducing()
    assert transport.producerState == "paused"
    reader.transport.resumeProducing()
    assert transport.producerState == "producing"
    reader.transport.stopProducing()
    assert transport.calls == ["stopProducing"]
    connection.dataReceived(b"3\r\ndef\r\n0\r\n\r\n")  # what was in flight is not delivered
    assert reader.body == b"abc"
    assert pool.idle(KEY) is None  # a stopped connection is never reused


def test_the_pool_keeps_at_most_its_size_and_forgets_connections_the_upstream_closed():
    pool = UpstreamPool(MemoryReactorClock(), size=1)
    first, first_transport = connected(pool)
    second, second_transport = connected(pool)
    pool.release(first)
    pool.release(second)
    assert second_transport.calls == ["loseConnection"]
    first.connectionLost(Failure(ConnectionDone()))
    assert pool.idle(KEY) is None


def test_an_idle_connection_that_talks_out_of_turn_is_closed():
    connection, transport = connected()
    connection.dataReceived(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert transport.calls == ["loseConnection"]


def test_a_producer_body_follows_the_head_and_the_connection_is_its_consumer():
    clock = MemoryReactorClock()
    connection, transport = connected(UpstreamPool(clock))
    sent: list[bool] = []
    body = TimedBody(io.BytesIO(b"x" * 10), 10, clock, 60.0, lambda: sent.append(True), lambda: None)
    connection.request(HEAD, body)
    assert transport.value().endswith(b"Content-Length: 10\r\n\r\n" + b"x" * 10)
    assert sent == [True]
    assert transport.producer is None  # unregistered once all of it is out


def test_a_producer_that_gives_up_drops_the_connection():
    clock = MemoryReactorClock()
    connection, transport = connected(UpstreamPool(clock))
    body = TimedBody(io.BytesIO(b"x" * 200_000), 200_000, clock, 5.0, lambda: None, lambda: None)
    body.piece = 100_000
    pending = connection.request(HEAD, body)
    transport.producer.pauseProducing()  # the upstream takes no more
    clock.advance(5.0)
    assert transport.calls == ["abortConnection"]
    connection.connectionLost(Failure(ConnectionLost()))
    assert result(pending).check(ResponseNeverReceived)


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        request.setHeader(b"content-type", b"application/json")
        return b'{"got":' + request.content.read() + b"}"


@pytest_twisted.ensureDeferred
async def test_real_sockets_reuse_one_connection_for_calls_in_turn():
    port = global_reactor.listenTCP(0, Site(Echo()), interface="127.0.0.1")
    pool = UpstreamPool(global_reactor)
    client = UpstreamClient(pool, connect_timeout=5)
    url = f"http://127.0.0.1:{port.getHost().port}/v1/x"
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        peers = set()
        for n in range(3):
            response = await client.post(url, b"%d" % n, {"Content-Type": "application/json"})
            reader = Reader()
            response.deliverBody(reader)
            while reader.ended is None:
                await _turn()
            assert (response.code, reader.body) == (200, b'{"got":%d}' % n)
            assert response.peer_ip == "127.0.0.1"
            peers.add(id(pool._idle[("http", "127.0.0.1", port.getHost().port)][0]))
        assert len(peers) == 1
        # A new upstream connection says nothing in the daemon's log (Factory's "Starting factory").
        assert [e for e in logged if "factory" in (e.get("log_format") or "")] == []
    finally:
        globalLogPublisher.removeObserver(logged.append)
        await pool.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_real_sockets_over_tls_check_the_upstreams_certificate(tmp_path):
    ca = CA.make()
    certificate, key = ca.issue("localhost")
    server = ssl.PrivateCertificate.loadPEM(key + certificate).options()
    port = global_reactor.listenSSL(0, Site(Echo()), server, interface="127.0.0.1")
    number = port.getHost().port
    trusted = UpstreamPool(global_reactor, tls=BrowserLikePolicyForHTTPS(ssl.Certificate.loadPEM(ca.pem())))
    untrusted = UpstreamPool(global_reactor)
    try:
        response = await UpstreamClient(trusted, 5).post(f"https://localhost:{number}/v1/x", b"1")
        reader = Reader()
        response.deliverBody(reader)
        while reader.ended is None:
            await _turn()
        assert (response.code, reader.body) == (200, b'{"got":1}')
        with pytest.raises(ResponseNeverReceived):
            await UpstreamClient(untrusted, 5).post(f"https://localhost:{number}/v1/x", b"1")
    finally:
        await trusted.close()
        await untrusted.close()
        await port.stopListening()


def _turn() -> Deferred[None]:
    waiter: Deferred[None] = Deferred()
    global_reactor.callLater(0.01, waiter.callback, None)
    return waiter


def test_a_bytes_body_counts_as_sent_once_handed_to_the_connection_not_before():
    pool = UpstreamPool(MemoryReactorClock())
    sent: list[bytes] = []
    connection = HTTP11Connection(pool, KEY)
    transport = Lossy()
    connection.makeConnection(transport)
    connection.request(HEAD, b"{}", lambda: sent.append(transport.value()))
    assert sent == [transport.value()] and sent[0].endswith(b"\r\n\r\n{}")


def test_a_response_that_came_whole_in_one_read_is_announced_whole():
    """Its reader has the whole body on deliverBody, so it needs no read timer."""
    connection, _ = connected()
    seen: list[Reader] = []

    def deliver(response):
        reader = Reader()
        response.deliverBody(reader)
        seen.append(reader)

    connection.request(HEAD, b"").addCallback(deliver)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    (reader,) = seen
    assert reader.body == b"ok" and reader.ended.check(ResponseDone)


def test_a_connection_its_reader_paused_goes_back_to_the_pool_reading():
    pool = UpstreamPool(MemoryReactorClock())
    connection, transport = connected(pool)
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    reader = Reader()
    result(pending).deliverBody(reader)
    reader.transport.pauseProducing()
    connection.dataReceived(b"67890")
    assert reader.ended.check(ResponseDone)
    assert transport.producerState == "producing"
    assert pool.idle(KEY) is connection


def test_a_finished_reader_no_longer_holds_the_connection():
    pool = UpstreamPool(MemoryReactorClock())
    connection, transport = connected(pool)
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    reader = Reader()
    result(pending).deliverBody(reader)
    reader.transport.pauseProducing()
    reader.transport.stopProducing()
    assert transport.producerState == "producing" and transport.calls == []
    assert pool.idle(KEY) is connection


def test_a_second_response_nobody_asked_for_drops_the_connection_after_the_first():
    pool = UpstreamPool(MemoryReactorClock())
    connection, transport = connected(pool)
    pending = connection.request(HEAD, b"")
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    connection.dataReceived(ok + ok)
    reader = Reader()
    result(pending).deliverBody(reader)
    assert reader.body == b"ok" and reader.ended.check(ResponseDone)
    assert transport.calls == ["loseConnection"]
    assert pool.idle(KEY) is None


def test_a_reader_that_stops_while_the_request_body_still_goes_out_closes_at_once():
    clock = MemoryReactorClock()
    connection, transport = connected(UpstreamPool(clock))
    body = TimedBody(io.BytesIO(b"x" * 200_000), 200_000, clock, 60.0, lambda: None, lambda: None)
    body.piece = 100_000
    pending = connection.request(HEAD, body)
    transport.producer.pauseProducing()
    connection.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 10\r\n\r\n")
    reader = Reader()
    result(pending).deliverBody(reader)
    reader.transport.stopProducing()
    assert transport.producer is None and transport.calls == ["stopProducing"]


def test_a_url_that_cannot_be_called_fails_the_call_rather_than_raise():
    client = UpstreamClient(UpstreamPool(MemoryReactorClock()))
    assert result(client.post("ftp://example.test/x", b"")).check(SchemeNotSupported)


def test_what_one_read_carries_reaches_the_reader_in_one_piece():
    """Many chunks in a read are one dataReceived (a reader can share its work out per read);
    each read is its own, and the end comes after the body it ends."""
    connection, _ = connected()
    pending = connection.request(HEAD, b"")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n")
    reader = Reader()
    result(pending).deliverBody(reader)
    assert reader.parts == [b"abcde"]  # came with the head: handed over whole when delivered
    connection.dataReceived(b"1\r\nf\r\n1\r\ng\r\n1\r\nh\r\n")
    connection.dataReceived(b"2\r\nij\r\n0\r\n\r\n")
    assert reader.parts == [b"abcde", b"fgh", b"ij"]
    assert reader.ended.check(ResponseDone)
