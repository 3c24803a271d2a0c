"""key-auth's access phase as Kong 3.15's handler.lua runs it, on twisted.web requests."""

from __future__ import annotations

import json
from io import BytesIO

import pytest
from twisted.internet.defer import Deferred
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from gatewayd import errors
from gatewayd.config import Consumer, KeyCredential
from gatewayd.exchange import Exchange
from gatewayd.plugins.key_auth import KEY_AUTH, KeyAuth

KEY = "sk-alice-0123456789"
ALICE = Consumer(id="c-alice", username="alice", custom_id="A-1",
                 keyauth_credentials=(KeyCredential(key=KEY, id="cred-1"),))
GUEST = Consumer(id="c-guest", username="guest")


def key_auth(anonymous: Consumer | None = None, **config) -> KeyAuth:
    settings = KEY_AUTH.validate_config({"key_names": ["x-api-key", "apikey"], **config})
    return KeyAuth(key_names=tuple(settings["key_names"]), in_header=settings["key_in_header"],
                   in_query=settings["key_in_query"], in_body=settings["key_in_body"],
                   hide_credentials=settings["hide_credentials"],
                   run_on_preflight=settings["run_on_preflight"], realm=settings["realm"],
                   keys={KEY: (ALICE, ALICE.keyauth_credentials[0])}, anonymous=anonymous)


def request(uri: bytes = b"/v1/messages", headers=(), body: bytes = b"",
            content_type: str | None = None, method: bytes = b"POST") -> Request:
    made = Request(DummyChannel())
    made.method, made.uri = method, uri
    for name, value in headers:
        made.requestHeaders.addRawHeader(name, value)
    if content_type:
        made.requestHeaders.setRawHeaders("content-type", [content_type])
    made.content = BytesIO(body)
    made.args = {}
    return made


def run(plugin: KeyAuth, req: Request) -> tuple[Exchange, errors.APIError | None]:
    exchange = Exchange(started=0.0, request_size=0)
    done = Deferred.fromCoroutine(plugin.access(req, exchange))
    failures = []
    done.addErrback(lambda f: failures.append(f.trap(errors.APIError) and f.value))
    return exchange, (failures[0] if failures else None)


def test_header_then_query_then_body_and_the_consumer_told_upstream():
    for req in (request(headers=[("x-api-key", KEY)]), request(b"/v1/messages?apikey=" + KEY.encode())):
        exchange, refused = run(key_auth(), req)
        assert refused is None and exchange.consumer is ALICE
        assert req.requestHeaders.getRawHeaders("X-Consumer-ID") == ["c-alice"]
        assert req.requestHeaders.getRawHeaders("X-Consumer-Username") == ["alice"]
        assert req.requestHeaders.getRawHeaders("X-Consumer-Custom-ID") == ["A-1"]
        assert req.requestHeaders.getRawHeaders("X-Credential-Identifier") == ["cred-1"]
        assert not req.requestHeaders.hasHeader("X-Anonymous-Consumer")


def test_forged_consumer_headers_are_cleared():
    req = request(headers=[("x-api-key", KEY), ("X-Consumer-Custom-ID", "admin"), ("X-Anonymous-Consumer", "x")])
    run(key_auth(), req)
    assert req.requestHeaders.getRawHeaders("X-Consumer-Custom-ID") == ["A-1"]
    assert not req.requestHeaders.hasHeader("X-Anonymous-Consumer")


@pytest.mark.parametrize("config, req, message", [
    ({}, request(), "No API key found in request"),
    ({}, request(headers=[("x-api-key", "")]), "No API key found in request"),
    ({}, request(headers=[("x-api-key", "sk-guess")]), "Unauthorized"),
    ({}, request(headers=[("x-api-key", KEY), ("x-api-key", KEY)]), "Duplicate API key found"),
    ({}, request(b"/m?apikey=a&apikey=b"), "Duplicate API key found"),
    ({}, request(headers=[("authorization", f"Bearer {KEY}")]), "No API key found in request"),
    ({"key_in_header": False}, request(headers=[("x-api-key", KEY)]), "No API key found in request"),
    ({"key_in_query": False}, request(b"/m?apikey=" + KEY.encode()), "No API key found in request"),
    ({}, request(body=json.dumps({"apikey": KEY}).encode(), content_type="application/json"),
     "No API key found in request"),
])
def test_refusals_are_kongs(config, req, message):
    exchange, refused = run(key_auth(**config), req)
    assert refused is not None and (refused.status, refused.message) == (401, message)
    assert dict(refused.headers)["www-authenticate"] == "Key"
    assert exchange.consumer is None


def test_realm_in_the_challenge():
    _, refused = run(key_auth(realm="gemini"), request())
    assert dict(refused.headers)["www-authenticate"] == 'Key realm="gemini"'


def test_key_in_body_json_and_form_hidden_from_the_upstream():
    body = json.dumps({"apikey": KEY, "model": "m"}).encode()
    req = request(body=body, content_type="application/json")
    exchange, refused = run(key_auth(key_in_body=True), req)
    assert refused is None and exchange.consumer is ALICE
    assert json.loads(req.content.read()) == {"model": "m"}
    assert req.requestHeaders.getRawHeaders("content-length") == [str(len(b'{"model": "m"}'))]
    req = request(body=f"apikey={KEY}&x=1".encode(), content_type="application/x-www-form-urlencoded")
    exchange, refused = run(key_auth(key_in_body=True), req)
    assert refused is None and exchange.consumer is ALICE
    assert req.content.read() == b"x=1"


def test_hide_credentials_takes_header_and_query_argument_out():
    req = request(b"/m?beta=true&apikey=" + KEY.encode(), headers=[("apikey", "other")])
    run(key_auth(key_names=["apikey"], key_in_header=False), req)
    # Kong clears the name from both places, wherever the key was found.
    assert req.uri == b"/m?beta=true" and not req.requestHeaders.hasHeader("apikey")
    req = request(headers=[("x-api-key", KEY)])
    run(key_auth(), req)
    assert not req.requestHeaders.hasHeader("x-api-key")
    req = request(b"/m?apikey=" + KEY.encode())
    run(key_auth(hide_credentials=False), req)
    assert req.uri == b"/m?apikey=" + KEY.encode()


def test_anonymous_consumer_when_no_key_matches():
    req = request(headers=[("x-api-key", "sk-guess"), ("X-Consumer-Username", "alice")])
    exchange, refused = run(key_auth(anonymous=GUEST), req)
    assert refused is None and exchange.consumer is GUEST and exchange.credential is None
    assert req.requestHeaders.getRawHeaders("X-Consumer-Username") == ["guest"]
    assert req.requestHeaders.getRawHeaders("X-Anonymous-Consumer") == ["true"]
    assert not req.requestHeaders.hasHeader("X-Credential-Identifier")


def test_preflight_passes_only_when_told():
    _, refused = run(key_auth(run_on_preflight=False), request(method=b"OPTIONS"))
    assert refused is None
    _, refused = run(key_auth(), request(method=b"OPTIONS"))
    assert refused is not None


def test_hide_credentials_is_on_by_default_since_kong_3_14():
    assert KEY_AUTH.validate_config({})["hide_credentials"] is True
