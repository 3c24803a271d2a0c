"""What one request did, gathered as it goes, and the log record made from it.

The record follows Kong's basic log serializer, so the same ``jq`` filters
work on gatewayd's file-log as on Kong's, with the ``ai.proxy`` section of
ai-proxy-advanced when the target has ``logging.log_statistics`` on.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from urllib.parse import unquote_plus
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from gatewayd.config import Consumer, KeyCredential
from gatewayd.ids import hex_id

# Fixed namespace, so entity ids are stable across restarts and machines.
ENTITY_NAMESPACE = uuid.UUID("5f1e3d2c-7b4a-4e8f-9a61-0c2d9e8b7a10")

#: Request headers whose values never reach a log.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "set-cookie",
    }
)
REDACTED = "REDACTED"


def entity_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(ENTITY_NAMESPACE, f"{kind}:{name}"))


#: dbless Kong's one workspace, as its record names it (``workspace`` id and ``workspace_name``).
WORKSPACE_NAME = "default"
WORKSPACE_ID = entity_id("workspace", WORKSPACE_NAME)


@define
class Exchange:
    """The mutable account of one request, turned into a record when it ends."""

    started: float  # reactor seconds
    started_at: float = field(factory=time.time)  # wall clock, for started_at
    #: Kong's request id (nginx's ``$request_id``: 16 random bytes in hex), in error bodies and the log.
    request_id: str = field(factory=lambda: hex_id(16))
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
    #: What to stop if the client leaves now (the upstream call or read under way); one
    #: ``notifyFinish`` per request calls it, not one per step.
    on_leave: Callable[[], object] | None = None
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
        """Kong's log record for ``request``, answered by ``finished`` (``kong.log.serialize``)."""
        total_ms = _ms(finished - self.started)
        request_headers = _headers(request.requestHeaders, self.hidden_headers)
        response_headers = _headers(request.responseHeaders, frozenset())
        uri = _redact_uri(request.uri.decode("latin-1"), self.hidden_query)
        scheme = "https" if request.isSecure() else "http"
        host = _host_name(request.requestHeaders.getRawHeaders(b"host"))
        if host is None:
            host = request.getHost().host.lower()
        kong_request: dict[str, Any] = {
            "id": self.request_id,
            "uri": uri,
            # var.scheme://var.host:server_port..request_uri
            "url": f"{scheme}://{host}:{request.getHost().port}{uri}",
            "querystring": _querystring(request, self.hidden_query),
            "method": request.method.decode("latin-1"),
            "headers": request_headers,
            "size": request_length(request, self.request_size),
        }
        tls = getattr(request, "tls", None)
        if tls is not None:
            kong_request["tls"] = tls
        record: dict[str, Any] = {
            "request": kong_request,
            "upstream_uri": _redact_uri(self.upstream_uri, self.hidden_query) if self.upstream_uri else "",
            "upstream_status": self._upstream_status(),
            "response": {
                # nginx's 499 for a client that closed before a byte of the answer was sent
                # (ngx_http_terminate_request); one that leaves mid-answer keeps its status.
                "status": 499 if self.client_gone and not request.startedWriting else request.code,
                "headers": response_headers,
                "size": getattr(request, "bytes_sent", request.sentLength),
            },
            "latencies": self._latencies(finished, total_ms),
            "client_ip": _client_ip(request),
            "started_at": round(self.started_at * 1000),
            "source": "upstream" if self.proxy_started is not None else "kong",
            "workspace": WORKSPACE_ID,
            "workspace_name": WORKSPACE_NAME,
        }
        tries = self._tries()
        if tries:
            record["tries"] = tries
        if self.route is not None:
            record["route"] = self.route
        if self.service is not None:
            record["service"] = self.service
        if self.consumer is not None:
            record["consumer"] = consumer_entity(self.consumer)
        if self.credential is not None and self.consumer is not None:
            # Kong 3.13+: the credential's id and its consumer's id, side by side.
            record["authenticated_entity"] = {"id": self.credential.id, "consumer_id": self.consumer.id}
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

    def _latencies(self, finished: float, total_ms: int) -> dict[str, int]:
        """Kong's meanings: ``kong`` until the request left (or, when Kong answered itself,
        until its answer), ``proxy`` waiting for the upstream's first byte (-1: nothing was
        proxied), ``receive`` from that byte to the upstream's last, ``request`` in all."""
        if self.proxy_started is None:
            return {"kong": total_ms, "proxy": -1, "request": total_ms, "receive": 0}
        first_byte = self.proxy_first_byte
        if first_byte is None:  # no response head came: the wait lasted until the end
            first_byte = self.proxy_finished if self.proxy_finished is not None else finished
        last_byte = self.proxy_finished if self.proxy_finished is not None else finished
        return {
            "kong": _ms(self.proxy_started - self.started),
            "proxy": _ms(first_byte - self.proxy_started),
            "request": total_ms,
            "receive": max(0, _ms(last_byte - first_byte)),
        }

    def _tries(self) -> list[dict[str, Any]]:
        """Kong's ``balancer_data.tries``: the plain proxy's, or one per target the AI
        balancer tried (a failed one with ``state`` and the status nginx would log)."""
        if self.tries:
            return self.tries
        tries = []
        for target in self.tried_targets:
            entry: dict[str, Any] = {"ip": target.get("ip") or target.get("host"), "port": target.get("port")}
            if "outcome" in target:
                entry.update(state="failed", code=_outcome_status(target["outcome"]))
            tries.append(entry)
        return tries

    def _upstream_status(self) -> str:
        """nginx's ``$upstream_status``: one status per try, comma-separated; "" when none."""
        if self.tries:
            statuses = [str(t["code"]) for t in self.tries[:-1] if t.get("code") is not None]
            if self.upstream_status is not None:
                statuses.append(str(self.upstream_status))
            return ", ".join(statuses)
        if self.tried_targets:
            return ", ".join(
                str(_outcome_status(t["outcome"])) if "outcome" in t else "200" for t in self.tried_targets
            )
        return "" if self.upstream_status is None else str(self.upstream_status)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _outcome_status(outcome: str) -> int:
    """The status nginx logs for a failed try: the upstream's own, 504 for a timeout, else 502."""
    if outcome.startswith("http_") and outcome[5:].isdigit():
        return int(outcome[5:])
    return 504 if outcome == "timeout" else 502


def request_length(request: Request, body: int) -> int:
    """nginx's ``$request_length``: request line, header block and body, as the client sent them
    (header lines counted as ``Name: value``)."""
    size = len(request.method) + 1 + len(request.uri) + 1 + len(request.clientproto) + 2
    for name, values in request.requestHeaders.getAllRawHeaders():
        for value in values:  # a loop costs a third of sum() over a generator
            size += len(name) + len(value) + 4  # "Name: value\r\n"
    return size + 2 + body


#: twisted.web's reading of a Host header (``Request.getRequestHostname``).
_HOST_HEADER = re.compile(rb"^\[?(?P<host>.*?)\]?(:\d+)?$")


def _host_name(values: list[bytes] | None) -> str | None:
    """nginx's ``$host`` as twisted.web reads it: the last Host header without its port, in
    lower case; None without one."""
    return _host_of(values[-1]) if values else None


@functools.lru_cache(maxsize=256)
def _host_of(header: bytes) -> str | None:
    found = _HOST_HEADER.match(header)
    return found.group("host").decode("latin-1").lower() if found else None


#: Header names as sent -> as logged, for the names seen first.
_NAMES: dict[bytes, str] = {}


def _headers(headers: Headers, hidden: frozenset[str]) -> dict[str, Any]:
    """Headers as ``ngx.req.get_headers`` gives them: lower-case names, a list for a repeated
    one; credentials (and the names in ``hidden``) replaced by a marker."""
    result: dict[str, Any] = {}
    for raw_name, raw_values in headers.getAllRawHeaders():
        name = _NAMES.get(raw_name)
        if name is None:
            name = raw_name.decode("latin-1").lower()
            if len(_NAMES) < 512:  # bounded: made-up names cannot grow it further
                _NAMES[raw_name] = name
        if name in SECRET_HEADERS or name in hidden:
            result[name] = REDACTED if len(raw_values) == 1 else [REDACTED] * len(raw_values)
        elif len(raw_values) == 1:  # nearly every header: no list made and thrown away
            result[name] = raw_values[0].decode("latin-1")
        else:
            result[name] = [v.decode("latin-1") for v in raw_values]
    return result


def consumer_entity(consumer: Consumer) -> dict[str, Any]:
    """A consumer as Kong's log serializer writes it (its entity, credentials left out)."""
    entity: dict[str, Any] = {"id": consumer.id}
    if consumer.username is not None:
        entity["username"] = consumer.username
    if consumer.custom_id is not None:
        entity["custom_id"] = consumer.custom_id
    if consumer.tags:
        entity["tags"] = list(consumer.tags)
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
    """``kong.request.get_query()``: a bare name is true, ``name=`` an empty string, a
    repeated name a list."""
    result: dict[str, Any] = {}
    query = request.uri.partition(b"?")[2].decode("latin-1")
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, equals, raw_value = pair.partition("=")
        name = unquote_plus(raw_name)
        value: Any = (REDACTED if name in hidden else unquote_plus(raw_value)) if equals else True
        if name in result:
            previous = result[name]
            result[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            result[name] = value
    return result


def _client_ip(request: Request) -> str | None:
    address = request.getClientAddress()
    return getattr(address, "host", None)
