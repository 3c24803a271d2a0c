"""A request leaves no reference cycles behind.

What a request makes is then freed by reference counting as it ends, and the
collector, which the daemon runs seldom (``settle_garbage_collector``), finds
nothing of it to walk.  Two loops did this for every request, one between an
upstream response, its body's reader and the reader's transport, one between a
stream's bridge, its request and the exchange: at c=64 the young collections
came every thousand requests or so, found some 9,000 objects each and took 4 to
14 ms, a pause every stream in flight waited through.  A third loop, through the
site's count of active connections, held each closed client connection.

Error paths are not covered: an upstream error still leaves its exception and
the frames it went through in a loop.
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Callable

import pytest

from tests.inmemory import Gateway, answer, ask, target

REQUESTS = 20


@pytest.fixture
def gateway():
    made = Gateway("{algorithm: round-robin}", [target(0)])
    yield made
    made.close()


def _cyclic_garbage(run: Callable[[], None]) -> Counter[str]:
    """The types of what ``REQUESTS`` runs of ``run`` leave to the collector."""
    return Counter(type(o).__qualname__ for o in _garbage(run))


def _garbage(run: Callable[[], None]) -> list[object]:
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(REQUESTS):
            run()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _exchange(gateway: Gateway, stream: bool) -> Callable[[], None]:
    """One request on a kept-alive client connection, answered on a kept-alive upstream one."""
    client = gateway.client()
    upstream = []

    def run() -> None:
        client.post(ask(stream=stream))
        if not upstream:
            upstream.append(gateway.upstream.accept())
        connection = upstream[0]
        if stream:
            connection.start_stream()
            connection.chunk(answer("one", finish=None))
            connection.chunk(answer("two"))
            connection.end_stream()
        else:
            data = json.dumps(answer()).encode()
            connection.protocol.dataReceived(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(data), data)
            )
        gateway.settle()
        status, _, body = client.response()
        assert status == 200 and (b"message_stop" in body if stream else b'"hello"' in body)
        connection.transport.clear()
        client.transport.clear()

    run()  # the first request makes what lasts: the upstream connection, caches
    return run


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_request_leaves_no_cycle_for_the_collector(gateway, stream):
    assert _cyclic_garbage(_exchange(gateway, stream)) == Counter()
    assert len(gateway.records()) == REQUESTS + 1


def test_a_closed_client_connection_leaves_no_cycle(gateway):
    """The site's count of active connections wraps the channel's ``connectionLost``; the
    wrapper held the channel that held it."""

    def run() -> None:
        client = gateway.client()
        client.post(ask(), path="/nowhere/v1/messages")
        gateway.settle()
        client.leave()
        # What a socket's transport does as it is lost: it lets go of its producer.
        client.transport.producer = None
        gateway.settle()

    assert _cyclic_garbage(run) == Counter()


def test_a_client_that_leaves_mid_stream_leaves_no_cycle(gateway):
    """Twisted keeps the producer of a request whose client left; the bridge held the
    request back.  (The harness's upstream connection, closed each time, is a loop of its
    own: only gatewayd's request objects are looked for.)"""

    def run() -> None:
        client = gateway.client()
        client.post(ask(stream=True))
        upstream = gateway.upstream.accept()
        upstream.start_stream()
        upstream.chunk(answer("part", finish=None))
        client.leave()
        client.transport.producer = None  # as a socket's transport does when it is lost
        gateway.settle()

    left = {type(o).__qualname__ for o in _garbage(run)}
    assert left.isdisjoint({"GatewayRequest", "SSEBridge", "Exchange", "StreamTranslator"})
    assert len(gateway.records()) == REQUESTS


def test_a_closed_upstream_connection_leaves_no_cycle(gateway):
    """The upstream closes after each answer: the connection's parser, whose callbacks
    are the connection's methods, goes with it.  (The harness's own loop between its
    connection and transport is cut first, so only gatewayd's objects are looked at.)"""
    client = gateway.client()

    def run() -> None:
        client.post(ask())
        upstream = gateway.upstream.accept()
        upstream.respond(200, answer())  # with Connection: close
        gateway.settle()
        assert client.response()[0] == 200
        client.transport.clear()
        upstream.transport._lost = None  # the harness's loop, not gatewayd's

    left = {type(o).__qualname__ for o in _garbage(run)}
    assert "HTTP11Connection" not in left
