"""key-auth: which consumer a request comes from, by the key it carries, as Kong 3.15 does it.

Only ``key_names`` are looked up, name by name: the header (``key_in_header``),
then the query string (``key_in_query``), then the body (``key_in_body``: JSON,
form or multipart).  A name given twice is "Duplicate API key found", an empty or
absent key "No API key found in request", an unknown one "Unauthorized" (Kong
3.7+), each a 401 with ``WWW-Authenticate``.  Anthropic clients send their key as
``x-api-key``: ``key_names: [x-api-key]`` is what serves them.  The upstream hears
who the consumer is (``X-Consumer-*``, ``X-Credential-Identifier``,
``X-Anonymous-Consumer``), never the key when ``hide_credentials``; the key is
redacted in the log record wherever it travelled.
"""

from __future__ import annotations

import json
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode

from attrs import frozen
from twisted.web.server import Request

from gatewayd import errors
from gatewayd.config import Consumer, KeyCredential, Plugin
from gatewayd.config.schema import PluginSchema, array, boolean, record, string
from gatewayd.exchange import Exchange
from gatewayd.plugins import CompileContext, KongPlugin, refuse

MISSING = "No API key found in request"
INVALID = "Unauthorized"
DUPLICATE = "Duplicate API key found"
#: What Kong tells the upstream about the consumer (``kong.constants.HEADERS``).
CONSUMER_ID = "X-Consumer-ID"
CONSUMER_CUSTOM_ID = "X-Consumer-Custom-ID"
CONSUMER_USERNAME = "X-Consumer-Username"
CREDENTIAL_IDENTIFIER = "X-Credential-Identifier"
ANONYMOUS = "X-Anonymous-Consumer"
_REALMS = "Konnect identity realms"
_PRINCIPALS = "Kong Identity principals"

# Kong 3.15, KeyAuth.json (3.14 turned hide_credentials on by default)
KEY_AUTH_CONFIG = record({
    "anonymous": string(),
    "hide_credentials": boolean(default=True),
    "identity_realms": array(record({
        "id": string(refused=_REALMS),
        "region": string(refused=_REALMS),
        "scope": string(one_of=("cp", "realm"), refused=_REALMS),
    }), refused=_REALMS),
    "key_in_body": boolean(default=False),
    "key_in_header": boolean(default=True),
    "key_in_query": boolean(default=True),
    "key_names": array(string(match=r"^[A-Za-z0-9_-]+$",
                              match_err="key names may only contain [a-z], [A-Z], [0-9], "
                                        "[_] underscore, and [-] hyphen"),
                       default=["apikey"]),
    "principals": record({
        "directory": string(default="default", refused=_PRINCIPALS),
        "enabled": boolean(default=False, refused=_PRINCIPALS),
        "error_on_miss": boolean(default=True, refused=_PRINCIPALS),
    }),
    "realm": string(),
    "run_on_preflight": boolean(default=True),
})

KEY_AUTH = PluginSchema(
    name="key-auth",
    config=KEY_AUTH_CONFIG,
    protocols_allowed=("grpc", "grpcs", "http", "https", "ws", "wss"),
    protocols_default=("grpc", "grpcs", "http", "https", "ws", "wss"),
    no_consumer=True,
)


def key_index(consumers: Mapping[str, Consumer]) -> dict[str, tuple[Consumer, KeyCredential]]:
    return {
        credential.key: (consumer, credential)
        for consumer in consumers.values()
        for credential in consumer.keyauth_credentials
    }


class _Duplicate(Exception):
    """A key name given more than once where Kong reads it as a table."""


@frozen
class KeyAuth:
    """One key-auth plugin instance, with the consumers of one configuration."""

    key_names: tuple[str, ...]
    in_header: bool
    in_query: bool
    in_body: bool
    hide_credentials: bool
    run_on_preflight: bool
    realm: str | None
    keys: Mapping[str, tuple[Consumer, KeyCredential]]
    anonymous: Consumer | None = None

    @classmethod
    def compile(cls, plugin: Plugin, context: CompileContext) -> "KeyAuth":
        settings, config = plugin.config, context.config
        anonymous = None
        if settings.get("anonymous"):
            wanted = settings["anonymous"]
            anonymous = next((c for c in config.consumers.values()
                              if wanted in (c.id, c.username)), None)
            if anonymous is None:
                # Kong would answer every unauthenticated request 500; refuse it at load instead.
                raise refuse(plugin, "anonymous", f"no consumer has id or username {wanted!r}")
        return cls(
            key_names=tuple(settings["key_names"]),
            in_header=settings["key_in_header"],
            in_query=settings["key_in_query"],
            in_body=settings["key_in_body"],
            hide_credentials=settings["hide_credentials"],
            run_on_preflight=settings["run_on_preflight"],
            realm=settings.get("realm"),
            keys=key_index(config.consumers),
            anonymous=anonymous,
        )

    async def access(self, request: Request, exchange: Exchange) -> None:
        if self.in_header:
            exchange.hidden_headers = exchange.hidden_headers | {n.lower() for n in self.key_names}
        if self.in_query:
            exchange.hidden_query = exchange.hidden_query | set(self.key_names)
        if request.method == b"OPTIONS" and not self.run_on_preflight:
            return
        if exchange.credential is not None and self.anonymous is not None:
            return  # Kong's "logical OR": another auth plugin already found the client
        try:
            key = self.take_key(request)
        except _Duplicate:
            found, message = None, DUPLICATE
        else:
            found = self.keys.get(key) if key else None
            message = MISSING if not key else INVALID
        if found is not None:
            exchange.consumer, exchange.credential = found
            _tell_upstream(request, *found)
        elif self.anonymous is not None:
            exchange.consumer = self.anonymous
            _tell_upstream(request, self.anonymous, None)
        else:
            challenge = f'Key realm="{self.realm}"' if self.realm else "Key"
            raise errors.APIError(401, "authentication_error", message,
                                  headers=(("www-authenticate", challenge),))

    def take_key(self, request: Request) -> str | None:
        """The key under the first of ``key_names`` the request carries, in Kong's order
        (header, query, body); with ``hide_credentials``, taken out of where it was."""
        body: dict[str, Any] | None = None
        for name in self.key_names:
            value: Any = None
            if self.in_header:
                values = request.requestHeaders.getRawHeaders(name)
                if values:
                    value = values[0] if len(values) == 1 else values
                    value = value.decode("latin-1") if isinstance(value, bytes) else value
            if value is None and self.in_query:
                values = [v for k, v in _query(request) if k == name]
                if values:
                    value = values[0] if len(values) == 1 else values
            if value is None and self.in_body:
                if body is None:
                    body = _body(request)
                value = body.get(name)
            if isinstance(value, str):
                if self.hide_credentials:
                    self._hide(request, name, body)
                return value
            if isinstance(value, list):
                raise _Duplicate()
        return None

    def _hide(self, request: Request, name: str, body: dict[str, Any] | None) -> None:
        """Kong's ``hide_credentials``: the header, query argument and body field go."""
        request.requestHeaders.removeHeader(name)
        path, mark, query = request.uri.partition(b"?")
        if mark:
            kept = [(k, v) for k, v in _query(request) if k != name]
            request.uri = path + (b"?" + urlencode(kept).encode("latin-1") if kept else b"")
        if self.in_body and name in (body if body is not None else _body(request)):
            _drop_body_field(request, name)


def _tell_upstream(request: Request, consumer: Consumer, credential: KeyCredential | None) -> None:
    """Kong's ``set_consumer``: who the client is, and nothing a client could have forged."""
    headers = request.requestHeaders
    for name, value in ((CONSUMER_ID, consumer.id), (CONSUMER_CUSTOM_ID, consumer.custom_id),
                        (CONSUMER_USERNAME, consumer.username),
                        (CREDENTIAL_IDENTIFIER, credential.id if credential else None),
                        (ANONYMOUS, None if credential else "true")):
        if value is None:
            headers.removeHeader(name)
        else:
            headers.setRawHeaders(name, [value])


def _query(request: Request) -> list[tuple[str, str]]:
    _, _, query = request.uri.partition(b"?")
    return parse_qsl(query.decode("latin-1"), keep_blank_values=True)


def _content_type(request: Request) -> str:
    return (request.getHeader("content-type") or "").split(";")[0].strip().lower()


def _content(request: Request) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read()
    content.seek(0)
    return data


def _body(request: Request) -> dict[str, Any]:
    """The body's fields as Kong's ``kong.request.get_body()`` reads them: a JSON object,
    an urlencoded form, a multipart form (twisted.web parsed that one into ``args``, after
    the query's); a field given twice is a list; anything else is empty."""
    kind = _content_type(request)
    if kind == "application/json":
        try:
            parsed = json.loads(_content(request))
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    if kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(_content(request).decode("latin-1"), keep_blank_values=True)
    elif kind == "multipart/form-data":
        skip = {}
        for key, _ in _query(request):
            skip[key] = skip.get(key, 0) + 1
        pairs = [(raw.decode("latin-1"), value.decode("latin-1"))
                 for raw, values in (request.args or {}).items()
                 for value in values[skip.get(raw.decode("latin-1"), 0):]]
    else:
        return {}
    fields: dict[str, Any] = {}
    for key, value in pairs:
        fields[key] = [*fields[key], value] if isinstance(fields.get(key), list) else \
            [fields[key], value] if key in fields else value
    return fields


def _drop_body_field(request: Request, name: str) -> None:
    """Kong's ``set_body`` without the key: JSON and urlencoded bodies are rewritten; a
    multipart body keeps its parts (gatewayd does not re-encode multipart)."""
    kind = _content_type(request)
    if kind == "application/json":
        data = json.dumps({k: v for k, v in _body(request).items() if k != name}).encode("utf-8")
    elif kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(_content(request).decode("latin-1"), keep_blank_values=True)
        data = urlencode([(k, v) for k, v in pairs if k != name]).encode("latin-1")
    else:
        return
    request.content.seek(0)
    request.content.truncate()
    request.content.write(data)
    request.content.seek(0)
    request.requestHeaders.setRawHeaders("content-length", [str(len(data)).encode("ascii")])


plugin = KongPlugin("key-auth", priority=1250, version="3.15.0", schema=KEY_AUTH, compile=KeyAuth.compile)
