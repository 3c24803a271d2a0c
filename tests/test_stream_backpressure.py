"""A client that reads slowly pauses the upstream: SSEBridge wires the upstream
transport in as the producer of the client's response.

The client side is a real twisted.web Request on an HTTPChannel over a
StringTransport; when that transport's buffer fills, Twisted calls
``pauseProducing`` on the channel, which must reach the upstream transport.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.client import ResponseDone
from twisted.web.http import HTTPChannel
from twisted.python.failure import Failure
from twisted.web.server import Request, Site
from twisted.web.resource import Resource

from gatewayd.plugins.ai_proxy_advanced.stream import SSEBridge
from gatewayd.translate import ModelProfile, StreamTranslator, prepare

CHUNK = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "x" * 100}]}, "index": 0}],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
}
LAST = {
    "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
}


def sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"


def streaming_pair(clock: Clock | None = None) -> tuple[StringTransport, StringTransport, SSEBridge]:
    """A client request being answered by a bridge reading an upstream transport."""
    client = StringTransport()
    channel = HTTPChannel()
    channel.site = Site(Resource())
    channel.makeConnection(client)
    request = Request(channel)
    request.method, request.uri, request.clientproto = b"POST", b"/v1/messages", b"HTTP/1.1"
    channel.requests.append(request)
    body = {"model": "m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    prepared = prepare(body, ModelProfile("gemini-2.0-flash"))
    bridge = SSEBridge(request, StreamTranslator(prepared, message_id="msg_1", model="m"), clock or Clock())
    upstream = StringTransport()
    bridge.makeConnection(upstream)
    return client, upstream, bridge


def test_full_client_buffer_pauses_upstream() -> None:
    client, upstream, bridge = streaming_pair()
    bridge.dataReceived(sse(CHUNK))
    assert b"message_start" in client.value()
    assert upstream.producerState == "producing"

    # The client's socket buffer is full: the reactor pauses the transport's producer.
    client.producer.pauseProducing()
    assert upstream.producerState == "paused"

    client.producer.resumeProducing()
    assert upstream.producerState == "producing"


def test_finished_stream_lets_go_of_the_upstream() -> None:
    client, upstream, bridge = streaming_pair()
    bridge.dataReceived(sse(CHUNK) + sse(LAST))
    bridge.connectionLost(Failure(ResponseDone()))
    assert b"message_stop" in client.value()
    assert bridge.done.called
    # Pausing the client now must not touch the upstream any more.
    client.producer.pauseProducing()
    assert upstream.producerState == "producing"


def test_a_large_read_is_written_a_slice_per_reactor_turn() -> None:
    """Many chunks in one read: the first events go out before the rest is translated,
    and the end of the upstream waits for the slices before it."""
    clock = Clock()
    client, upstream, bridge = streaming_pair(clock)
    many = sse(CHUNK) * 60  # about 12 KB in one piece, several slices
    bridge.dataReceived(many[:-3])
    bridge.dataReceived(many[-3:])  # queued after the slices still waiting
    for _ in range(40):  # one call per chunk, as the client's chunked decoder delivers them
        bridge.dataReceived(sse(CHUNK))
    bridge.dataReceived(sse(LAST))
    first = client.value()
    assert b"message_start" in first
    assert 0 < first.count(b"text_delta") < 100
    bridge.connectionLost(Failure(ResponseDone()))
    assert not bridge.done.called
    while clock.getDelayedCalls():
        clock.advance(0)
    body = client.value()
    assert body.count(b"text_delta") == 100
    assert body.index(b"message_stop") > body.rindex(b"text_delta")
    assert bridge.done.called


def test_client_leaving_drops_pending_slices() -> None:
    clock = Clock()
    client, upstream, bridge = streaming_pair(clock)
    bridge.dataReceived(sse(CHUNK) * 100)
    written = client.value()
    bridge.client_gone()
    assert not clock.getDelayedCalls()
    assert upstream.disconnecting or upstream.producerState == "stopped"
    bridge.connectionLost(Failure(ResponseDone()))
    assert client.value() == written
    assert bridge.done.called


def test_a_long_queue_pauses_the_upstream_until_translated() -> None:
    clock = Clock()
    client, upstream, bridge = streaming_pair(clock)
    bridge.dataReceived(sse(CHUNK) * 600)  # about 170 KB in one read: more than queue_limit
    assert upstream.producerState == "paused"
    clock.advance(0)  # (task.Clock also runs the turns each turn schedules)
    assert client.value().count(b"text_delta") == 600
    assert upstream.producerState == "producing"

    client.producer.pauseProducing()  # a full client holds the upstream even once the queue drains
    bridge.dataReceived(sse(CHUNK) * 600)
    clock.advance(0)
    assert upstream.producerState == "paused"
    client.producer.resumeProducing()
    assert upstream.producerState == "producing"


def test_chunks_read_one_at_a_time_never_wait_a_turn() -> None:
    """A paced stream's reads each get a turn's share: however many have come, none is
    queued behind a timer."""
    clock = Clock()
    client, _, bridge = streaming_pair(clock)
    for n in range(1, 101):  # some 15 KB in all: more than slice_bytes
        bridge.dataReceived(sse(CHUNK))
        assert client.value().count(b"text_delta") == n
        assert not clock.getDelayedCalls()
        clock.advance(0.01)  # the model writes on


def test_many_small_reads_in_one_turn_share_its_budget() -> None:
    """TLS hands one socket read over as one dataReceived per record: within a turn they
    share slice_bytes, and the rest waits for the next turns."""
    clock = Clock()
    client, _, bridge = streaming_pair(clock)
    for _ in range(100):  # some 15 KB within one turn
        bridge.dataReceived(sse(CHUNK))
    first = client.value().count(b"text_delta")
    assert 0 < first < 100 and first * len(sse(CHUNK)) <= bridge.slice_bytes + len(sse(CHUNK))
    clock.advance(0)  # the next turns (task.Clock runs those each turn schedules)
    assert client.value().count(b"text_delta") == 100
