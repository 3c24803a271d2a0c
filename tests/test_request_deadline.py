"""A client that trickles its request forever meets an overall deadline, answered 408 and logged."""

from __future__ import annotations

import json

import pytest

from tests.inmemory import Gateway, ask, target


@pytest.fixture
def gateway():
    made = Gateway("{algorithm: round-robin}", [target(0)], request_read_timeout=30.0)
    yield made
    made.close()


def trickle(gateway: Gateway, client, data: bytes, every: float = 1.0) -> None:
    """One byte per ``every`` seconds: Twisted's idle timeout never fires."""
    for byte in data:
        client.send(bytes([byte]))
        gateway.reactor.advance(every)


def test_a_body_trickled_past_the_deadline_is_a_408_with_its_record(gateway):
    client = gateway.client()
    body = json.dumps(ask("x" * 200)).encode()
    head = (
        b"POST /anything/v1/messages HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nx-api-key: client-secret\r\n\r\n" % len(body)
    )
    client.send(head)
    trickle(gateway, client, body[:29])
    assert client.transport.value() == b""
    gateway.reactor.advance(1.0)  # 30 s since the first byte
    status, headers, text = client.response()
    assert status == 408 and headers["connection"] == "close"
    body = json.loads(text)
    assert body == {
        "type": "error",
        "error": {"type": "timeout_error", "message": "the request was not received within 30 seconds"},
        "message": "the request was not received within 30 seconds",
        "request_id": body["request_id"],
    }
    assert headers["x-kong-request-id"] == body["request_id"]
    assert client.transport.disconnecting
    assert gateway.upstream.attempts() == []
    (record,) = gateway.records()
    assert record["response"]["status"] == 408 and record["route"]["name"] == "claude"
    # nginx's $request_length: every byte read, request line and headers included.
    assert record["request"]["size"] == len(head) + 29
    # nginx's $bytes_sent: every byte of the answer, status line and headers included.
    assert record["response"]["size"] == len(client.transport.value())
    assert record["request"]["headers"]["x-api-key"] == "REDACTED"
    assert gateway.gateway.in_flight == set()


def test_headers_trickled_past_the_deadline_get_a_bare_408(gateway):
    client = gateway.client()
    trickle(gateway, client, b"POST /anything/v1/messages HTTP/1.1\r\nHost: gateway.t", every=2.0)
    status, _, text = client.response()
    assert status == 408 and json.loads(text)["error"]["type"] == "timeout_error"
    assert client.transport.disconnecting
    assert gateway.records() == []  # it never reached a route


def test_the_deadline_is_per_request_on_a_kept_alive_connection(gateway):
    client = gateway.client()
    client.post(ask())
    gateway.upstream.accept().respond(200, {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}]})
    assert client.response()[0] == 200
    gateway.reactor.advance(29.0)
    client.transport.clear()
    client.post(ask())  # well after the first request began: its own deadline
    gateway.reactor.advance(29.0)
    assert gateway.upstream.pending() == [0]
    assert not client.transport.disconnecting


def test_a_request_sent_in_time_is_not_cut_while_it_is_served(gateway):
    client = gateway.client()
    client.post(ask())
    gateway.reactor.advance(100.0)  # the upstream takes its time; the deadline is only for reading
    assert client.transport.value() == b""
    assert gateway.upstream.pending() == [0]


def test_a_request_read_in_one_go_sets_no_timer_and_a_split_one_keeps_its_first_reads_deadline(gateway):
    client = gateway.client()
    client.post(ask())  # head and body in one read, as nearly every client sends them
    assert client.channel._deadline is None
    assert gateway.upstream.pending() == [0]
    other = gateway.client()
    body = json.dumps(ask()).encode()
    other.send(b"POST /anything/v1/messages HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: %d\r\n" % len(body))
    gateway.reactor.advance(12.0)
    other.send(b"\r\n" + body[:5])
    # The deadline still runs from the first read: 30 s after it, not after the latest.
    assert other.channel._deadline.getTime() == pytest.approx(gateway.reactor.seconds() + 18.0)
