"""A client that hangs up: gatewayd itself drops the upstream call at once and still logs the request.

The memory harness (:mod:`tests.inmemory`) runs the real upstream client, so
these tests see the connection the pool would otherwise keep busy.
"""

from __future__ import annotations

import pytest

from tests.inmemory import Gateway, answer, ask, target

BALANCER = "{algorithm: priority, failover_criteria: [error, timeout, http_503], max_fails: 1, fail_timeout: 60000}"


@pytest.fixture
def gateway():
    made = Gateway(BALANCER, [target(0, weight=200), target(1, weight=100)])
    yield made
    made.close()


def without_twisteds_producer_path(client) -> None:
    """Twisted stops a registered producer when the client's socket closes; take that
    path away, so only gatewayd's own ``notifyFinish`` errback can stop the upstream."""
    client.channel.registerProducer = lambda producer, streaming: None
    client.channel.unregisterProducer = lambda: None


def test_leaving_mid_stream_stops_the_upstream_at_once(gateway):
    client = gateway.client()
    without_twisteds_producer_path(client)
    client.post(ask(stream=True))
    upstream = gateway.upstream.accept()
    upstream.start_stream()
    upstream.chunk(answer("part one", finish=None))
    assert upstream.transport.calls == []

    client.leave()
    assert upstream.transport.calls == ["stopProducing"]  # synchronously, in the errback
    (record,) = gateway.records()
    assert record["request"]["uri"] == "/anything/v1/messages"
    assert gateway.gateway.in_flight == set()
    assert gateway.upstream.pending() == []


def test_leaving_before_the_upstream_answered_cancels_the_call_and_frees_the_connection(gateway):
    client = gateway.client()
    client.post(ask())
    upstream = gateway.upstream.accept()  # the request is written; no answer yet
    client.leave()
    assert upstream.transport.calls == ["abortConnection"]
    gateway.settle()
    # No failover for a client that is gone, and no blame on the target either.
    assert gateway.upstream.pending() == []
    (record,) = gateway.records()
    assert [t.get("outcome") for t in record["ai"]["proxy"]["tried_targets"]] == [None]
    assert gateway.gateway.in_flight == set()

    again = gateway.client()
    again.post(ask())
    assert gateway.upstream.pending() == [0]  # target 0 is not cooling down
    gateway.upstream.accept().respond(200, answer())
    assert again.response()[0] == 200


def test_leaving_while_the_gateway_connects_stops_connecting(gateway):
    client = gateway.client()
    client.post(ask())
    (connector,) = gateway.reactor.connectors
    client.leave()
    assert connector.stoppedConnecting
    gateway.settle()
    gateway.reactor.advance(1.0)
    assert gateway.upstream.pending() == [0]  # only the attempt that was cut
    assert len(gateway.records()) == 1


def test_leaving_while_the_answer_is_read_drops_the_upstream(gateway):
    client = gateway.client()
    client.post(ask())
    upstream = gateway.upstream.accept()
    upstream.protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"candi"
    )
    client.leave()
    assert upstream.transport.closed
    assert len(gateway.records()) == 1
    assert gateway.upstream.pending() == []
