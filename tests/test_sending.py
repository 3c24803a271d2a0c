"""``sending`` on a real reactor: an adopted socket's writes leave when the turn ends,
without registering with epoll, and what the socket does not take is left to epoll; a
streamed event reaches the client's socket in the call that writes it (``flush``); a
protocol wrapper (TLS's, which gathers small writes for the next turn by design) is left
alone; a connection that breaks is left for the reactor."""

from __future__ import annotations

import gc
import json
import socket
import weakref

import pytest_twisted
from twisted.internet import error, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gatewayd.plugins.ai_proxy_advanced.stream import SSEBridge
from gatewayd.http11 import HTTP11Connection, UpstreamPool
from gatewayd.sending import adopt, flush
from gatewayd.site import GatewayChannel
from gatewayd.translate import ModelProfile, StreamTranslator, prepare

CHUNK = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}, "index": 0}],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
}


def _received(peer: socket.socket) -> bytes:
    """What has reached ``peer`` so far, left there to be seen again."""
    try:
        return peer.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        return b""


class _Connected:
    """A GatewayChannel on one end of a socketpair, adopted by the real reactor, with a
    request being answered on it; the test holds the other end."""

    def __init__(self, wrapped: bool = False) -> None:
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        self.channel = GatewayChannel()
        self.channel.site = Site(Resource())
        self.lost: Deferred[None] = Deferred()
        lost = self.channel.connectionLost

        def connectionLost(reason):  # noqa: ANN001
            lost(reason)
            self.lost.callback(None)

        self.channel.connectionLost = connectionLost
        factory: Factory = Factory.forProtocol(lambda: self.channel)
        if wrapped:
            factory = WrappingFactory(factory)
        reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, factory)
        ours.close()  # the reactor holds its own copy of the descriptor
        self.channel.factory = self.channel.site  # which logs a finished request, as Site does
        self.request = Request(self.channel)
        self.request.method, self.request.uri, self.request.clientproto = b"POST", b"/v1/messages", b"HTTP/1.1"
        self.channel.requests.append(self.request)

    def close(self) -> None:
        self.channel.transport.loseConnection()
        self.peer.close()


async def _turn() -> None:
    """Let the real reactor end its turn and poll once more."""
    await deferLater(reactor, 0, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_write_leaves_when_the_turn_ends_without_epoll():
    """The listener's channel adopts its socket: a write is not registered with epoll,
    and it is at the peer once the reactor's turn has ended."""
    side = _Connected()
    try:
        side.request.write(b"event one")
        assert side.channel.transport not in reactor.getWriters()
        assert _received(side.peer) == b""
        await _turn()
        assert _received(side.peer).endswith(b"event one\r\n")
        assert side.channel.transport not in reactor.getWriters()
    finally:
        side.close()


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_is_left_to_epoll():
    """More than the socket takes: the rest is registered with epoll, which sends it as the
    peer reads; once all is sent the socket is unregistered again."""
    side = _Connected()
    transport = side.channel.transport
    size = 4_000_000  # more than a socketpair's buffers take
    try:
        side.request.write(b"x" * size)
        await _turn()
        assert transport in reactor.getWriters()
        got = 0
        side.peer.setblocking(False)
        for _ in range(2000):
            try:
                got += len(side.peer.recv(1 << 20))
            except BlockingIOError:
                await deferLater(reactor, 0.001, lambda: None)
            if got >= size:
                break
        assert got >= size
        await _turn()
        assert transport not in reactor.getWriters()
    finally:
        side.close()


def _read_to_end(peer: socket.socket) -> bytes:
    """Everything ``peer`` receives until the other end closes (5 s at most)."""
    peer.setblocking(True)
    peer.settimeout(5)
    received = b""
    while chunk := peer.recv(1 << 20):
        received += chunk
    return received


@pytest_twisted.ensureDeferred
async def test_a_connection_closed_after_a_write_sends_it_first():
    """``loseConnection`` right after a write: the bytes reach the peer, then the end."""
    side = _Connected()
    side.request.write(b"last words")
    side.channel.loseConnection()
    await side.lost.addTimeout(2, reactor)
    assert _read_to_end(side.peer).endswith(b"last words\r\n")
    side.peer.close()


@pytest_twisted.ensureDeferred
async def test_a_connection_closed_after_its_last_send_closes_then():
    """The socket takes the last 100 kB whole but is not writable after it (its peer has
    not read): the connection closes when they are sent, as Twisted's own would, not once
    the peer has read them."""
    side = _Connected()
    side.request.write(b"x" * 100_000)
    side.channel.loseConnection()
    await side.lost.addTimeout(0.5, reactor)
    assert len(_read_to_end(side.peer)) > 100_000
    side.peer.close()


@pytest_twisted.ensureDeferred
async def test_a_send_that_raises_closes_its_connection_and_no_other():
    """``doWrite`` raising (a producer's ``resumeProducing``, say) loses that connection
    with the error, as the reactor does; the other sockets of the turn are still sent,
    even when the protocol's ``connectionLost`` raises too."""
    failing, other = _Connected(), _Connected()
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    reasons: list[Failure] = []

    def connectionLost(reason: Failure) -> None:
        reasons.append(reason)
        raise RuntimeError("and the protocol's connectionLost fails too")

    failing.channel.connectionLost = connectionLost
    failing.channel.transport.doWrite = lambda: 1 / 0
    try:
        failing.request.write(b"never")
        other.request.write(b"sent")
        await _turn()
        assert len(reasons) == 1 and reasons[0].check(ZeroDivisionError)
        assert not failing.channel.transport.connected
        assert _received(other.peer).endswith(b"sent\r\n")
    finally:
        globalLogPublisher.removeObserver(logged.append)
        failing.peer.close()
        other.close()
    assert [e["log_failure"].type for e in logged if "log_failure" in e] == [ZeroDivisionError, RuntimeError]


class _Adopting(Protocol):
    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        adopt(self.transport)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_lost_transport_is_freed_without_the_collector():
    """Adopting puts the transport and its writes in a reference cycle while connected;
    once lost, its methods are its class's again and refcounting frees it."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    made = [_Adopting()]
    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: made[0]))
    ours.close()
    protocol = made.pop()
    gc.disable()
    try:
        transport = weakref.ref(protocol.transport)
        protocol.transport.write(b"bye")
        protocol.transport.loseConnection()
        await protocol.lost.addTimeout(2, reactor)
        peer.close()
        del protocol
        await _turn()
        assert transport() is None
    finally:
        gc.enable()


@pytest_twisted.ensureDeferred
async def test_an_upstream_request_leaves_when_the_turn_ends_without_epoll():
    """The upstream connection adopts its socket as the channel does."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    connection = HTTP11Connection(UpstreamPool(reactor), ("http", "model", 80))
    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: connection))
    ours.close()
    try:
        answered = connection.request(b"POST / HTTP/1.1\r\nHost: model\r\n", b"{}")
        assert connection.transport not in reactor.getWriters()
        await _turn()
        assert _received(peer).startswith(b"POST / HTTP/1.1\r\n")
        assert connection.transport not in reactor.getWriters()
        answered.addErrback(lambda failure: None)
    finally:
        connection.transport.abortConnection()
        peer.close()


def test_what_was_written_is_on_the_socket_once_flushed():
    """Written alone, nothing leaves before the reactor's turn ends (the test never lets
    it); flushed, it is at the peer."""
    side = _Connected()
    try:
        side.request.write(b"event one")
        assert _received(side.peer) == b""
        flush(side.channel.transport)
        assert _received(side.peer).endswith(b"event one\r\n")
        side.request.write(b"event two")
        flush(side.channel.transport)
        assert _received(side.peer).endswith(b"event two\r\n")
    finally:
        side.close()


@pytest_twisted.ensureDeferred
async def test_a_wrapped_transport_is_left_to_the_reactor():
    """A ProtocolWrapper (as TLSMemoryBIOProtocol wraps a TLS listener's channel) may hold
    writes of its own; flush leaves it alone, and the reactor sends at its turn."""
    side = _Connected(wrapped=True)
    try:
        assert isinstance(side.channel.transport, ProtocolWrapper)
        side.request.write(b"event")
        flush(side.channel.transport)
        assert _received(side.peer) == b""
        await deferLater(reactor, 0.01, lambda: None)
        assert _received(side.peer).endswith(b"event\r\n")
    finally:
        side.close()


def _bridge(side: _Connected, turns: object) -> SSEBridge:
    body = {"model": "m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    prepared = prepare(body, ModelProfile("gemini-2.0-flash"))
    return SSEBridge(side.request, StreamTranslator(prepared, message_id="msg_1", model="m"), turns)


def test_a_streamed_chunk_is_sent_as_it_is_translated():
    """SSEBridge flushes what each upstream read gave: message_start and the first text
    are at the client before the reactor's turn ends."""
    side = _Connected()
    bridge = _bridge(side, reactor)
    try:
        bridge.dataReceived(b"data: " + json.dumps(CHUNK).encode() + b"\r\n\r\n")
        sent = _received(side.peer)
        assert b"event: message_start" in sent
        assert b'"text_delta","text":"Hello"' in sent
    finally:
        bridge.client_gone()
        side.close()


@pytest_twisted.ensureDeferred
async def test_what_waited_for_a_turn_of_its_own_leaves_when_the_turn_ends():
    """A read longer than a turn's slice: its first slice is sent at once; the rest,
    translated in a later turn (run here by a Clock, so the real reactor does not turn
    in between), leaves with that turn's other writes when the reactor's turn ends."""
    side = _Connected()
    turns = Clock()
    bridge = _bridge(side, turns)
    event = b"data: " + json.dumps(CHUNK).encode() + b"\r\n\r\n"
    later = b"data: " + json.dumps({**CHUNK, "candidates": [
        {"content": {"role": "model", "parts": [{"text": "Later"}]}, "index": 0}]}).encode() + b"\r\n\r\n"
    bridge.slice_bytes = len(event)
    try:
        bridge.dataReceived(event + later)
        assert b'"text":"Hello"' in _received(side.peer)
        turns.advance(0)  # the next turn translates what waited
        assert b'"text":"Later"' not in _received(side.peer)
        await _turn()
        assert b'"text":"Later"' in _received(side.peer)
    finally:
        bridge.client_gone()
        side.close()


@pytest_twisted.ensureDeferred
async def test_an_end_reached_in_a_later_turn_leaves_when_the_turn_ends():
    """The upstream ends while part of its last read waits for a turn: the stream's last
    events, written in that turn, leave with it when the turn ends, not before."""
    side = _Connected()
    turns = Clock()
    bridge = _bridge(side, turns)
    event = b"data: " + json.dumps(CHUNK).encode() + b"\r\n\r\n"
    last = b"data: " + json.dumps({**CHUNK, "candidates": [
        {"content": {"role": "model", "parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0}]}).encode()
    bridge.slice_bytes = len(event)
    try:
        bridge.dataReceived(event + last + b"\r\n\r\n")
        bridge.connectionLost(Failure(ResponseDone()))
        turns.advance(0)
        assert bridge.done.called
        assert b"message_stop" not in _received(side.peer)
        await _turn()
        assert b"event: message_stop" in _received(side.peer)
    finally:
        side.close()


@pytest_twisted.ensureDeferred
async def test_a_send_that_fails_is_left_to_the_reactor_which_closes_the_connection():
    """flush tries the send; its failure is not raised, and not acted on: the connection is
    still open after it, until the reactor meets the failure itself."""
    side = _Connected()
    transport = side.channel.transport
    tried: list[object] = []
    do_write = transport.doWrite
    transport.doWrite = lambda: tried.append(do_write()) or tried[-1]
    side.peer.close()
    side.request.write(b"event")
    flush(transport)
    assert len(tried) == 1 and isinstance(tried[0], error.ConnectionLost)
    assert transport.connected
    await side.lost
    assert not transport.connected


def test_a_socket_still_holding_earlier_bytes_is_left_to_the_reactor():
    """When the socket did not take all it was given, only its writability event sends."""
    side = _Connected()
    transport = side.channel.transport
    try:
        side.request.write(b"x" * 4_000_000)  # more than a socketpair's buffers take
        flush(transport)
        assert len(transport.dataBuffer) > transport.offset
        tried: list[object] = []
        do_write = transport.doWrite
        transport.doWrite = lambda: tried.append(do_write())
        side.request.write(b"event")
        flush(transport)
        assert tried == []
    finally:
        side.close()
