"""The balancer's timeouts with nginx's meanings, in memory with the real upstream client.

``connect_timeout`` for the connection; ``write_timeout`` between two writes of the
request; ``read_timeout`` from the moment the request has been sent until the response
head, and between two reads after it; each attempt with its own timers.  Also the
record of a client that left: nginx's 499 before any byte of the answer, its status after.
"""

from __future__ import annotations

import json

import pytest

from tests.inmemory import Gateway, answer, ask, events, target

FAILOVER = "{algorithm: priority, failover_criteria: [error, timeout], read_timeout: 5000, write_timeout: 1000}"


@pytest.fixture
def gateway():
    made = Gateway(FAILOVER, [target(0, weight=200), target(1, weight=100)])
    yield made
    made.close()


def big_ask() -> dict:
    """A request larger than one piece of the body producer (64 KiB): it leaves in turns."""
    return ask("x" * 100_000)


def outcomes(gateway: Gateway) -> list[str | None]:
    (record,) = gateway.records()
    return [t.get("outcome") for t in record["ai"]["proxy"]["tried_targets"]]


def test_the_read_timeout_starts_when_the_request_has_been_sent(gateway):
    client = gateway.client()
    client.post(big_ask())
    upstream = gateway.upstream.accept()
    body = upstream.transport.producer
    body.pauseProducing()  # the socket's buffer is full
    gateway.reactor.advance(0.9)  # within write_timeout
    body.resumeProducing()
    gateway.reactor.advance(0)  # the rest leaves: read_timeout starts now
    gateway.reactor.advance(4.9)
    assert not upstream.transport.closed and gateway.upstream.pending() == []
    gateway.reactor.advance(0.1)
    assert upstream.transport.closed and gateway.upstream.pending() == [1]
    gateway.upstream.accept().respond(200, answer())
    assert client.response()[0] == 200
    assert outcomes(gateway) == ["timeout", None]


def test_a_request_the_upstream_does_not_take_within_write_timeout_fails_over(gateway):
    client = gateway.client()
    client.post(big_ask())
    upstream = gateway.upstream.accept()
    upstream.transport.producer.pauseProducing()
    gateway.reactor.advance(0.9)
    assert gateway.upstream.pending() == []
    gateway.reactor.advance(0.1)
    gateway.settle()
    assert upstream.transport.closed and gateway.upstream.pending() == [1]
    gateway.upstream.accept().respond(200, answer())
    assert client.response()[0] == 200
    assert outcomes(gateway) == ["timeout", None]


def test_each_attempt_has_its_own_read_timeout_and_the_last_one_answers_504():
    gateway = Gateway(FAILOVER, [target(0, weight=200), target(1, weight=100)])
    try:
        client = gateway.client()
        client.post(ask())
        gateway.upstream.accept()
        gateway.reactor.advance(5.0)
        second = gateway.upstream.accept()
        gateway.reactor.advance(4.9)
        assert not second.transport.closed
        gateway.reactor.advance(0.1)
        status, _, body = client.response()
        assert status == 504 and json.loads(body)["error"]["type"] == "timeout_error"
        (record,) = gateway.records()
        assert record["upstream_status"] == "504, 504"
        assert record["response"]["status"] == 504
    finally:
        gateway.close()


def test_a_oneshot_body_may_take_longer_than_read_timeout_while_bytes_keep_coming(gateway):
    client = gateway.client()
    client.post(ask())
    upstream = gateway.upstream.accept()
    data = json.dumps(answer("slow")).encode()
    upstream.protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
    )
    for byte in range(3):
        gateway.reactor.advance(4.0)
        upstream.protocol.dataReceived(data[byte:byte + 1])
    gateway.reactor.advance(4.0)  # 16 s in all, never 5 s without a byte
    upstream.protocol.dataReceived(data[3:])
    status, _, body = client.response()
    assert status == 200 and json.loads(body)["content"][0]["text"] == "slow"


def test_a_oneshot_body_that_stops_coming_times_out_at_read_timeout(gateway):
    client = gateway.client()
    client.post(ask())
    upstream = gateway.upstream.accept()
    data = json.dumps(answer()).encode()
    upstream.protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
    )
    upstream.protocol.dataReceived(data[:10])
    gateway.reactor.advance(4.9)
    assert not upstream.transport.closed
    gateway.reactor.advance(0.1)
    gateway.settle()
    assert upstream.transport.closed


def test_latencies_proxy_ends_at_the_response_head(gateway):
    client = gateway.client()
    client.post(ask())
    upstream = gateway.upstream.accept()
    gateway.reactor.advance(2.0)
    data = json.dumps(answer()).encode()
    upstream.protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
    )
    gateway.reactor.advance(1.5)
    upstream.protocol.dataReceived(data)
    assert client.response()[0] == 200
    (record,) = gateway.records()
    assert record["latencies"]["proxy"] == 2000
    assert record["latencies"]["receive"] == 1500


def test_a_stream_paused_by_a_slow_client_is_not_a_read_timeout(gateway):
    client = gateway.client()
    client.post(ask(stream=True))
    upstream = gateway.upstream.accept()
    upstream.start_stream()
    upstream.chunk(answer("part one", finish=None))
    gateway.reactor.advance(0)
    client.channel.transport.producer.pauseProducing()  # the client's socket is full
    gateway.reactor.advance(30.0)
    assert not upstream.transport.closed
    client.channel.transport.producer.resumeProducing()
    upstream.chunk(answer(" and two"))
    upstream.end_stream()
    gateway.settle()
    assert "error" not in [name for name, _ in events(client.response()[2])]


def test_a_client_that_left_before_the_answer_is_logged_499(gateway):
    client = gateway.client()
    client.post(ask())
    gateway.upstream.accept()
    client.leave()
    (record,) = gateway.records()
    assert (record["response"]["status"], record["response"]["size"]) == (499, 0)


def test_a_client_that_left_mid_stream_keeps_the_status_it_was_sent(gateway):
    client = gateway.client()
    client.post(ask(stream=True))
    upstream = gateway.upstream.accept()
    upstream.start_stream()
    upstream.chunk(answer("part one", finish=None))
    gateway.reactor.advance(0)
    client.leave()
    (record,) = gateway.records()
    assert record["response"]["status"] == 200 and record["response"]["size"] > 0
