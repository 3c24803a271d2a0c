"""What the daemon's own log says about a failing request never carries the client's key."""

from __future__ import annotations

from twisted.logger import formatEvent, globalLogPublisher

from gatewayd.plugins.ai_proxy_advanced.handler import AIProxy
from tests.inmemory import Gateway, ask, target


def test_an_unexpected_error_is_logged_without_the_query_string(monkeypatch):
    gateway = Gateway("{algorithm: round-robin}", [target(0)])
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        async def broken(self, request, exchange):
            raise RuntimeError("a bug")

        monkeypatch.setattr(AIProxy, "messages", broken)
        client = gateway.client()
        client.post(ask(), path="/anything/v1/messages?apikey=client-secret-key")
        assert client.response()[0] == 500
    finally:
        globalLogPublisher.removeObserver(events.append)
        gateway.close()
    failures = [e for e in events if "log_failure" in e and e.get("log_namespace", "").startswith("gatewayd")]
    assert failures and "/anything/v1/messages" in formatEvent(failures[0])
    for event in events:
        assert "client-secret-key" not in formatEvent(event) + repr(event)
