"""What one request did, gathered as it goes, and the log record made from it.

The record follows Kong's basic log serializer, so the same ``jq`` filters
work on gatewayd's file-log as on Kong's, with the ``ai.proxy`` section of
ai-proxy-advanced when the target has ``logging.log_statistics`` on.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.web.server import Request

from gatewayd.config import Consumer, KeyCredential
from gatewayd.plugins.file_log import REDACTED, redact_headers

# Fixed namespace, so entity ids are stable across restarts and machines.
ENTITY_NAMESPACE = uuid.UUID("5f1e3d2c-7b4a-4e8f-9a61-0c2d9e8b7a10")


def entity_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(ENTITY_NAMESPACE, f"{kind}:{name}"))


@define
class Exchange:
    """The mutable account of one request, turned into a record when it ends."""

    started: float  # reactor seconds
    started_at: float = field(factory=time.time)  # wall clock, for started_at
    #: Kong's request id (nginx's ``$request_id``: 16 random bytes in hex), in error bodies and the log.
    request_id: str = field(factory=lambda: secrets.token_hex(16))
    request_size: int = 0
    route: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    upstream_uri: str | None = None
    proxy_started: float | None = None
    proxy_finished: float | None = None
    #: When the upstream's response head arrived (reactor seconds): Kong's latencies.proxy ends there.
    proxy_first_byte: float | None = None
    #: One entry per connection attempt to the service, as Kong's ``balancer_data.tries``.
    tries: list[dict[str, Any]] = field(factory=list)
    #: The upstream's status, or nginx's 502/504 for a failed last try (``$upstream_status``).
    upstream_status: int | None = None
    tried_targets: list[dict[str, Any]] = field(factory=list)
    ai_meta: dict[str, Any] | None = None
    ai_usage: dict[str, Any] | None = None
    ai_payload: dict[str, Any] | None = None
    ai_log_statistics: bool = False
    notes: list[str] = field(factory=list)
    client_gone: bool = False
    #: Fires when the handler has noted all it did; the record waits for it.
    handled: Deferred[None] | None = None
    #: Who key-auth found the request to come from, and by which credential.
    consumer: Consumer | None = None
    credential: KeyCredential | None = None
    #: Where a client key may travel (key-auth's key_names): never logged.
    hidden_headers: frozenset[str] = frozenset()
    hidden_query: frozenset[str] = frozenset()
    #: Per plugin id, what its access phase leaves for its log phase (Kong's ``ctx.plugin``).
    plugin_data: dict[str, Any] = field(factory=dict)
    #: The plugin instances collected for this request, in Kong's order: their response
    #: and log phases run.
    plugins: list[Any] = field(factory=list)
    #: The router's match (route, matched path, captures), None when no route matched.
    match: Any = None

    def record(self, request: Request, finished: float) -> dict[str, Any]:
        """Kong's log record for ``request``, answered by ``finished``."""
        total_ms = round((finished - self.started) * 1000)
        proxy_ms = 0
        kong_ms = None
        if self.proxy_started is not None and self.proxy_first_byte is not None:
            # Kong's split: kong until the request left, proxy until the upstream's head came back.
            proxy_ms = round((self.proxy_first_byte - self.proxy_started) * 1000)
            kong_ms = round((self.proxy_started - self.started) * 1000)
        elif self.proxy_started is not None:
            proxy_ms = round(((self.proxy_finished or finished) - self.proxy_started) * 1000)
        request_headers = redact_headers(
            {k.decode("latin-1").lower(): v[-1].decode("latin-1") for k, v in request.requestHeaders.getAllRawHeaders()},
            self.hidden_headers,
        )
        response_headers = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in request.responseHeaders.getAllRawHeaders()
        }
        host = request.getHost()
        uri = _redact_uri(request.uri.decode("latin-1"), self.hidden_query)
        scheme = "https" if request.isSecure() else "http"
        record: dict[str, Any] = {
            "request": {
                "id": self.request_id,
                "method": request.method.decode("latin-1"),
                "uri": uri,
                "url": f"{scheme}://{request_headers.get('host', f'{host.host}:{host.port}')}{uri}",
                "size": self.request_size,
                "querystring": _querystring(request, self.hidden_query),
                "headers": request_headers,
            },
            "response": {
                "status": request.code,
                "size": request.sentLength,
                "headers": response_headers,
            },
            "latencies": {
                "request": total_ms,
                "kong": max(0, total_ms - proxy_ms) if kong_ms is None else kong_ms,
                "proxy": proxy_ms,
            },
            "client_ip": _client_ip(request),
            "started_at": round(self.started_at * 1000),
            "source": "upstream" if self.proxy_started is not None else "kong",
        }
        if self.upstream_uri is not None:
            record["upstream_uri"] = _redact_uri(self.upstream_uri, self.hidden_query)
        if self.upstream_status is not None:
            record["upstream_status"] = str(self.upstream_status)
        if self.tries:
            record["tries"] = self.tries
        if self.route is not None:
            record["route"] = self.route
        if self.service is not None:
            record["service"] = self.service
        if self.consumer is not None:
            record["consumer"] = consumer_entity(self.consumer)
        if self.credential is not None and self.consumer is not None:
            record["authenticated_entity"] = {
                "id": self.credential.id,
                "consumer_id": {"id": self.consumer.id},
            }
        if self.ai_log_statistics or self.ai_payload:
            proxy: dict[str, Any] = {}
            if self.ai_log_statistics:
                proxy["tried_targets"] = self.tried_targets
                if self.ai_meta is not None:
                    proxy["meta"] = self.ai_meta
                if self.ai_usage is not None:
                    proxy["usage"] = self.ai_usage
            if self.ai_payload:
                proxy["payload"] = self.ai_payload
            record["ai"] = {"proxy": proxy}
        if self.notes:
            # gatewayd's own remarks (e.g. tools the target could not take), beside Kong's fields.
            record["gatewayd"] = {"notes": list(self.notes)}
        return record


def consumer_entity(consumer: Consumer) -> dict[str, Any]:
    """A consumer as Kong's log serializer writes it (its entity, credentials left out)."""
    entity: dict[str, Any] = {"id": consumer.id}
    if consumer.username is not None:
        entity["username"] = consumer.username
    if consumer.custom_id is not None:
        entity["custom_id"] = consumer.custom_id
    entity["tags"] = list(consumer.tags) or None
    return entity


def _redact_uri(uri: str, names: frozenset[str]) -> str:
    if not names or "?" not in uri:
        return uri
    path, query = uri.split("?", 1)
    pairs = []
    for pair in query.split("&"):
        name = pair.split("=", 1)[0]
        pairs.append(f"{name}={REDACTED}" if name in names else pair)
    return f"{path}?{'&'.join(pairs)}"


def _querystring(request: Request, hidden: frozenset[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, values in (request.args or {}).items():
        name = key.decode("latin-1")
        decoded = [REDACTED if name in hidden else v.decode("latin-1") for v in values]
        # Kong logs a bare flag as true and a repeated key as a list.
        result[name] = True if decoded == [""] else decoded[0] if len(decoded) == 1 else decoded
    return result


def _client_ip(request: Request) -> str | None:
    address = request.getClientAddress()
    return getattr(address, "host", None)
