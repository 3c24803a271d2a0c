"""The file-log record as Kong's basic serializer writes it.

Cases from Kong/kong ``spec/01-unit/10-log_serializer_spec.lua`` (master), each
cited by its ``it(...)`` line, played through the real gateway in memory
(:mod:`tests.inmemory`: the daemon's Site over a StringTransport, so sizes can
be checked byte for byte against what crossed the wire).
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.error import ConnectionRefusedError

from gatewayd.plugins import read_config
from gatewayd.daemon.gateway import GatewayRoot, GatewaySite, build
from gatewayd.exchange import WORKSPACE_ID
from tests.inmemory import Gateway, answer, ask, google_error, target

#: The top-level fields ``kong.log.serialize`` builds for http (kong/pdk/log.lua, ``root``).
KONG_FIELDS = {"request", "upstream_uri", "upstream_status", "response", "latencies", "client_ip",
               "started_at", "source", "workspace", "workspace_name"}


@pytest.fixture
def gateway():
    made = Gateway("{algorithm: priority, failover_criteria: [error, http_429]}",
                   [target(0, weight=100), target(1, weight=50)])
    yield made
    made.close()


def post(gateway: Gateway, extra: str = "") -> tuple[object, bytes]:
    client = gateway.client()
    data = json.dumps(ask("hi")).encode()
    head = ("POST /anything/v1/messages?a=1&b=2&b=3&flag HTTP/1.1\r\nHost: gateway.test\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Authorization: Bearer secret-token\r\nX-Multi: one\r\nX-Multi: two\r\n" + extra + "\r\n").encode()
    client.send(head + data)
    return client, head + data


def test_serializes_without_consumer_or_authenticated_entity(gateway):
    """Spec line 68, 'serializes without API, Consumer or Authenticated entity'."""
    client, sent = post(gateway)
    gateway.reactor.advance(0.25)
    gateway.upstream.accept().respond(200, answer("hello"))
    status, headers, _ = client.response()
    assert status == 200
    (record,) = gateway.records()
    assert KONG_FIELDS <= set(record)
    assert "consumer" not in record and "authenticated_entity" not in record
    request = record["request"]
    # request.id: nginx's $kong_request_id, the same one the client got in X-Kong-Request-Id.
    assert request["id"] == headers["x-kong-request-id"] and len(request["id"]) == 32
    assert request["uri"] == "/anything/v1/messages?a=1&b=2&b=3&flag"
    # var.scheme://var.host:server_port..request_uri (spec line 85: "http://test.test:80/request_uri")
    port = client.channel.transport.getHost().port
    assert request["url"] == f"http://gateway.test:{port}/anything/v1/messages?a=1&b=2&b=3&flag"
    assert request["method"] == "POST"
    assert request["querystring"] == {"a": "1", "b": ["2", "3"], "flag": True}
    # Authorization redacted; a repeated header is an array, as ngx.req.get_headers gives it.
    assert request["headers"]["authorization"] == "REDACTED"
    assert request["headers"]["x-multi"] == ["one", "two"]
    assert "tls" not in request  # only on TLS requests
    # $request_length and $bytes_sent: lines, headers and bodies, byte for byte.
    assert request["size"] == len(sent)
    assert record["response"]["size"] == len(client.transport.value())
    assert record["response"]["status"] == 200
    assert record["response"]["headers"]["x-kong-request-id"] == request["id"]
    assert record["upstream_uri"].endswith(":generateContent")
    assert record["upstream_status"] == "200"
    assert set(record["latencies"]) == {"kong", "proxy", "request", "receive"}
    assert record["latencies"]["request"] == 250
    assert record["latencies"]["proxy"] >= 0
    assert record["latencies"]["kong"] + record["latencies"]["proxy"] + record["latencies"]["receive"] \
        <= record["latencies"]["request"]
    assert record["tries"] == [{"ip": "127.0.0.1", "port": 9100}]
    assert record["source"] == "upstream"
    assert (record["workspace"], record["workspace_name"]) == (WORKSPACE_ID, "default")
    assert record["client_ip"] == "127.0.0.1"


def test_serializes_the_tries_and_failure_information(gateway):
    """Spec line 155, 'serializes the tries and failure information': a failed try has
    ``state`` and ``code``; upstream_status lists every try (spec line 91)."""
    client, _ = post(gateway)
    gateway.upstream.accept().respond(429, google_error(429, "RESOURCE_EXHAUSTED"))
    gateway.upstream.accept().respond(200, answer("hello"))
    assert client.response()[0] == 200
    (record,) = gateway.records()
    assert record["tries"] == [
        {"ip": "127.0.0.1", "port": 9100, "state": "failed", "code": 429},
        {"ip": "127.0.0.1", "port": 9101},
    ]
    assert record["upstream_status"] == "429, 200"


def test_a_connection_that_failed_counts_as_nginx_would(gateway):
    client, _ = post(gateway)
    gateway.upstream.refuse(ConnectionRefusedError())
    gateway.upstream.accept().respond(200, answer("hello"))
    assert client.response()[0] == 200
    (record,) = gateway.records()
    assert record["tries"][0]["state"] == "failed" and record["tries"][0]["code"] == 502
    assert record["upstream_status"] == "502, 200"


KEY_AUTH = """
  - name: key-auth
    route: claude
    config: {key_names: [x-api-key], hide_credentials: false}
consumers:
  - username: alice
    custom_id: A-1
    tags: [team-a]
    keyauth_credentials:
      - key: sk-alice-0123456789
        id: 0c0ffee0-0000-4000-8000-000000000001
  - custom_id: B-2
    keyauth_credentials:
      - key: sk-b2-0123456789
"""


@pytest.fixture
def keyed():
    """The gateway with key-auth on its route and two consumers (one with only a custom_id)."""
    made = Gateway("{algorithm: round-robin}", [target(0)])
    config = made.workdir / "gatewayd.yaml"
    text = config.read_text().replace("plugins:\n", "plugins:" + KEY_AUTH.split("consumers:")[0], 1)
    config.write_text(text + "\nconsumers:" + KEY_AUTH.split("consumers:")[1])
    _, made.gateway = build(read_config(str(made.workdir), {}), made.reactor, listen=[])
    made.site = GatewaySite(GatewayRoot(made.gateway), made.gateway.stats, reactor=made.reactor, timeout=60)
    yield made
    made.close()


def test_serializes_the_consumer_and_the_authenticated_entity(keyed):
    """Spec lines 131 and 142, 'serializes the Consumer object' and 'serializes the
    Authenticated Entity object': ``{id = credential id, consumer_id = consumer id}``."""
    client, _ = post(keyed, "x-api-key: sk-alice-0123456789\r\n")
    keyed.upstream.accept().respond(200, answer("hello"))
    assert client.response()[0] == 200
    (record,) = keyed.records()
    consumer = record["consumer"]
    assert consumer == {"id": consumer["id"], "username": "alice", "custom_id": "A-1", "tags": ["team-a"]}
    assert record["authenticated_entity"] == {"id": "0c0ffee0-0000-4000-8000-000000000001",
                                              "consumer_id": consumer["id"]}
    assert record["request"]["headers"]["x-api-key"] == "REDACTED"  # stricter than Kong: a key


def test_a_refusal_is_kongs_answer_with_nothing_proxied(keyed):
    """Spec line 182, 'serializes the response.source' (kong when Kong answered), with
    latencies.proxy -1 (spec line 79's ``KONG_WAITING_TIME or -1``), no tries (spec line
    200) and an empty upstream_status and upstream_uri."""
    client, _ = post(keyed)
    keyed.reactor.advance(0)
    status, headers, _ = client.response()
    assert status == 401
    (record,) = keyed.records()
    assert record["source"] == "kong"
    assert record["latencies"]["proxy"] == -1 and record["latencies"]["receive"] == 0
    assert record["latencies"]["kong"] == record["latencies"]["request"]
    assert "tries" not in record
    assert record["upstream_status"] == "" and record["upstream_uri"] == ""
    assert record["request"]["id"] == headers["x-kong-request-id"]
    assert "consumer" not in record and "authenticated_entity" not in record


def test_a_consumer_without_username_is_named_by_custom_id(keyed):
    client, _ = post(keyed, "x-api-key: sk-b2-0123456789\r\n")
    keyed.upstream.accept().respond(200, answer("hello"))
    assert client.response()[0] == 200
    (record,) = keyed.records()
    assert record["consumer"]["custom_id"] == "B-2" and "username" not in record["consumer"]


def test_a_streamed_answer_counts_its_chunk_framing(gateway):
    """$bytes_sent of a chunked stream: every chunk's size line and CRLFs, and the last chunk."""
    client = gateway.client()
    client.post(ask("hi", stream=True))
    upstream = gateway.upstream.accept()
    upstream.start_stream()
    for text in ("one ", "two"):
        upstream.chunk(answer(text, finish=None))
    upstream.chunk(answer("", finish="STOP"))
    upstream.end_stream()
    gateway.settle()
    assert b"transfer-encoding: chunked" in client.transport.value().lower()
    (record,) = gateway.records()
    assert record["response"]["size"] == len(client.transport.value())


def test_the_log_phase_runs_once_the_answer_is_out(gateway):
    """As Kong's log phase: the answer is written first; the record (and every plugin's log
    phase) comes after the reactor's poll that sends it, not before it."""
    client, _ = post(gateway)
    gateway.upstream.accept().respond(200, answer("hello"))
    assert client.response()[0] == 200
    assert len(gateway.gateway.in_flight) == 1 and not gateway.log_path.exists()
    gateway.reactor.advance(0)  # the reactor turns (a memory reactor runs both turns at once)
    assert gateway.gateway.in_flight == set()
    (record,) = gateway.records()
    assert record["response"]["status"] == 200


@pytest.mark.parametrize("header", [
    None, b"", b"Gateway.Test", b"gateway.test:8000", b"[::1]:8443", b"[::1]", b"10.0.0.1:80", b"h:notaport",
])
def test_the_logged_host_is_the_one_twisted_web_reads(header):
    """The record's host is worked out once per Host header, as ``getRequestHostname`` reads it."""
    from twisted.internet.address import IPv4Address
    from twisted.web.http import Request as TwistedRequest

    from gatewayd.exchange import _host_name

    class Stand:  # what getRequestHostname asks of a request
        def getHeader(self, name):
            return header

        def getHost(self):
            return IPv4Address("TCP", "127.0.0.1", 8000)

    expected = TwistedRequest.getRequestHostname(Stand()).decode("latin-1").lower()  # type: ignore[arg-type]
    found = _host_name(None if header is None else [header])
    assert (found if found is not None else "127.0.0.1") == expected
