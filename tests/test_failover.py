"""AIProxy's attempts loop in memory: failover, retries, passive health, timeouts, a client leaving.

Every test drives the real upstream client (Agent and pool) on a memory
reactor (see :mod:`tests.inmemory`), so cancellations and timeouts surface
exactly as Twisted's client reports them.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.error import ConnectionRefusedError, TimeoutError as ConnectingTimeout

from tests.inmemory import Gateway, answer, ask, events, google_error, target
from tests.grammar import check_stream

ALL = "[error, timeout, http_429, http_500, http_502, http_503, http_504]"


@pytest.fixture
def make():
    made = []

    def make(balancer: str, count: int = 3) -> Gateway:
        # Priority with falling weights: targets are tried in index order.
        gateway = Gateway(balancer, [target(i, weight=100 * (count - i)) for i in range(count)])
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()


def priority(criteria: str = ALL, **settings: object) -> str:
    extra = "".join(f", {k}: {v}" for k, v in settings.items())
    return f"{{algorithm: priority, failover_criteria: {criteria}{extra}}}"


def tried(gateway: Gateway) -> list[tuple[int, str | None]]:
    (record,) = gateway.records()
    return [(t["port"] - 9100, t.get("outcome")) for t in record["ai"]["proxy"]["tried_targets"]]


def fail_first(gateway: Gateway, how: str) -> None:
    """Make the attempt on the first target end with the outcome ``how``."""
    if how == "error":
        gateway.upstream.refuse(ConnectionRefusedError())
    elif how == "timeout":
        gateway.upstream.accept()  # connected, sent, and silent
        gateway.reactor.advance(1.0)  # read_timeout from the request being sent
    else:
        code = int(how.removeprefix("http_"))
        gateway.upstream.accept().respond(code, google_error(code))


@pytest.mark.parametrize(
    "how", ["error", "timeout", "http_429", "http_500", "http_502", "http_503", "http_504"]
)
def test_each_failover_criterion_moves_on_to_the_next_target(make, how):
    gateway = make(priority(read_timeout=1000, write_timeout=1000))
    client = gateway.client()
    client.post(ask())
    fail_first(gateway, how)
    assert gateway.upstream.pending() == [1]
    gateway.upstream.accept().respond(200, answer("from the second"))
    status, _, body = client.response()
    assert (status, b"from the second" in body) == (200, True)
    assert tried(gateway) == [(0, how), (1, None)]


@pytest.mark.parametrize(
    "how, status, kind",
    [
        ("error", 502, "api_error"),
        ("timeout", 504, "timeout_error"),
        ("http_429", 429, "rate_limit_error"),
        ("http_503", 529, "overloaded_error"),
    ],
)
def test_an_outcome_not_in_the_criteria_answers_the_client(make, how, status, kind):
    gateway = make(priority("[http_500]", read_timeout=1000, write_timeout=1000))
    client = gateway.client()
    client.post(ask())
    fail_first(gateway, how)
    assert gateway.upstream.pending() == []
    got, _, body = client.response()
    assert (got, json.loads(body)["error"]["type"]) == (status, kind)
    assert tried(gateway) == [(0, how)]


def test_no_failover_once_the_stream_has_started(make):
    gateway = make(priority())
    client = gateway.client()
    client.post(ask(stream=True))
    upstream = gateway.upstream.accept()
    upstream.start_stream()
    upstream.chunk(answer("part one", finish=None))
    upstream.lost()  # the upstream connection breaks mid-stream
    assert gateway.upstream.pending() == []
    streamed = events(client.response()[2])
    check_stream(streamed)
    names = [name for name, _ in streamed]
    assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names
    assert tried(gateway) == [(0, "error")]


def test_retries_bound_the_attempts(make):
    gateway = make(priority(retries=1))
    client = gateway.client()
    client.post(ask())
    for _ in range(2):
        gateway.upstream.accept().respond(503, google_error(503))
    assert gateway.upstream.pending() == []
    assert client.response()[0] == 529
    assert tried(gateway) == [(0, "http_503"), (1, "http_503")]


def test_each_target_is_tried_once(make):
    gateway = make(priority(retries=10), count=2)
    client = gateway.client()
    client.post(ask())
    for _ in range(2):
        gateway.upstream.accept().respond(429, google_error(429, "RESOURCE_EXHAUSTED"))
    assert gateway.upstream.attempts() == [0, 1]
    assert client.response()[0] == 429


def test_a_failed_target_cools_down_then_comes_back(make):
    gateway = make(priority(max_fails=1, fail_timeout=10000), count=2)
    first = gateway.client()
    first.post(ask())
    gateway.upstream.accept().respond(503, google_error(503))
    gateway.upstream.accept().respond(200, answer())
    assert first.response()[0] == 200

    # Target 0 is cooling down: the next request goes straight to target 1.
    gateway.reactor.advance(9.0)
    second = gateway.client()
    second.post(ask())
    assert gateway.upstream.pending() == [1]
    gateway.upstream.accept().respond(200, answer())

    # fail_timeout later, target 0 is back by itself.
    gateway.reactor.advance(1.0)
    third = gateway.client()
    third.post(ask())
    assert gateway.upstream.pending() == [0]
    gateway.upstream.accept().respond(200, answer())
    assert third.response()[0] == 200


def test_every_target_cooling_down_is_a_529_with_retry_after(make):
    gateway = make(priority(max_fails=1, fail_timeout=30000), count=1)
    first = gateway.client()
    first.post(ask())
    gateway.upstream.accept().respond(503, google_error(503))
    gateway.reactor.advance(10.0)
    second = gateway.client()
    second.post(ask())
    assert gateway.upstream.pending() == []
    status, headers, _ = second.response()
    assert (status, headers["retry-after"]) == (529, "20")


def test_read_timeout_waiting_for_the_first_byte_frees_the_connection(make):
    gateway = make(priority("[timeout]", read_timeout=5000, write_timeout=1000), count=2)
    client = gateway.client()
    client.post(ask())
    silent = gateway.upstream.accept()  # the request is sent at once: read_timeout runs
    gateway.reactor.advance(4.9)
    assert gateway.upstream.pending() == [] and not silent.transport.closed
    gateway.reactor.advance(0.1)
    assert silent.transport.closed
    assert gateway.upstream.pending() == [1]
    gateway.upstream.accept().respond(200, answer())
    assert client.response()[0] == 200
    assert tried(gateway) == [(0, "timeout"), (1, None)]


def test_read_timeout_between_stream_chunks(make):
    gateway = make(priority(read_timeout=3000), count=2)
    client = gateway.client()
    client.post(ask(stream=True))
    upstream = gateway.upstream.accept()
    upstream.start_stream()
    gateway.reactor.advance(2.0)
    upstream.chunk(answer("part one", finish=None))
    gateway.reactor.advance(2.9)  # the timer restarted with the chunk
    assert not upstream.transport.closed
    gateway.reactor.advance(0.1)
    assert upstream.transport.closed
    assert gateway.upstream.pending() == []  # bytes were sent: no failover
    name, data = events(client.response()[2])[-1]
    assert (name, data["error"]["type"]) == ("error", "timeout_error")
    assert tried(gateway) == [(0, "timeout")]


def test_connect_timeout(make):
    gateway = make(priority("[http_500]", connect_timeout=2500), count=2)
    client = gateway.client()
    client.post(ask())
    _, _, _, timeout, _ = gateway.reactor.tcpClients[0]
    assert timeout == 2.5  # the Agent's connect timeout is the balancer's
    gateway.upstream.refuse(ConnectingTimeout())
    status, _, body = client.response()
    assert status == 504 and b"connect" in body
    assert tried(gateway) == [(0, "timeout")]


def test_the_answer_carries_no_upstream_credential(make):
    gateway = make(priority(), count=1)
    client = gateway.client()
    client.post(ask())
    gateway.upstream.accept().respond(403, google_error(403, "PERMISSION_DENIED"))
    status, _, body = client.response()
    assert status == 403 and b"upstream-api-key" not in body
    assert gateway.records() and "upstream-api-key" not in gateway.log_path.read_text()
