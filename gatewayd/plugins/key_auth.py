"""key-auth: which consumer a request comes from, by the key it carries.

Besides Kong's ``key_names`` (header, then query string), the key may come the
way Anthropic clients send theirs: ``x-api-key``, or ``Authorization: Bearer``
(Claude Code with ``apiKeyHelper``).  The key is only compared here: the
upstream gets the gateway's own Google credentials, and every place a key can
travel is redacted in the log record.
"""

from __future__ import annotations

from typing import Mapping

from attrs import frozen
from twisted.web.server import Request

from gatewayd import errors
from gatewayd.config import Consumer, KeyCredential, Plugin
from gatewayd.config.schema import PluginSchema, array, boolean, record, string
from gatewayd.exchange import Exchange
from gatewayd.plugins import CompileContext, KongPlugin, refuse

#: Where Anthropic's clients put their key, tried after the configured key names.
ANTHROPIC_HEADER = "x-api-key"
MISSING = "No API key found in request"
INVALID = "Invalid authentication credentials"

# Kong 3.13, KeyAuth.json
KEY_AUTH_CONFIG = record({
    "anonymous": string(),
    "hide_credentials": boolean(default=False),
    "identity_realms": array(record({
        "id": string(),
        "region": string(),
        "scope": string(one_of=("cp", "realm")),
    })),
    "key_in_body": boolean(default=False),
    "key_in_header": boolean(default=True),
    "key_in_query": boolean(default=True),
    "key_names": array(string(match=r"^[A-Za-z0-9_-]+$",
                              match_err="key names may only contain [a-z], [A-Z], [0-9], "
                                        "[_] underscore, and [-] hyphen"),
                       default=["apikey"]),
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


@frozen
class KeyAuth:
    """One key-auth plugin instance, with the consumers of one configuration."""

    key_names: tuple[str, ...]
    in_header: bool
    in_query: bool
    hide_credentials: bool
    run_on_preflight: bool
    realm: str | None
    keys: Mapping[str, tuple[Consumer, KeyCredential]]
    anonymous: Consumer | None = None

    @classmethod
    def compile(cls, plugin: Plugin, context: CompileContext) -> "KeyAuth":
        settings, config = plugin.config, context.config
        if settings["key_in_body"]:
            raise refuse(plugin, "key_in_body", "not supported by gatewayd yet (keys come in "
                                                "headers or the query string)")
        if settings.get("identity_realms"):
            raise refuse(plugin, "identity_realms", "Konnect identity realms are not supported")
        anonymous = None
        if settings.get("anonymous"):
            wanted = settings["anonymous"]
            anonymous = next((c for c in config.consumers.values()
                              if wanted in (c.id, c.username)), None)
            if anonymous is None:
                raise refuse(plugin, "anonymous", f"no consumer has id or username {wanted!r}")
        return cls(
            key_names=tuple(settings["key_names"]),
            in_header=settings["key_in_header"],
            in_query=settings["key_in_query"],
            hide_credentials=settings["hide_credentials"],
            run_on_preflight=settings["run_on_preflight"],
            realm=settings.get("realm"),
            keys=key_index(config.consumers),
            anonymous=anonymous,
        )

    async def access(self, request: Request, exchange: Exchange) -> None:
        exchange.hidden_headers = frozenset(name.lower() for name in self.key_names)
        if self.in_query:
            exchange.hidden_query = frozenset(self.key_names)
        if request.method == b"OPTIONS" and not self.run_on_preflight:
            return
        key = self.find_key(request)
        found = self.keys.get(key) if key is not None else None
        if found is not None:
            exchange.consumer, exchange.credential = found
        elif self.anonymous is not None:
            exchange.consumer = self.anonymous
        else:
            challenge = f'Key realm="{self.realm}"' if self.realm else "Key"
            raise errors.APIError(
                401, "authentication_error", MISSING if key is None else INVALID,
                headers=(("www-authenticate", challenge),),
            )
        if self.hide_credentials:
            for name in (*self.key_names, ANTHROPIC_HEADER):
                request.requestHeaders.removeHeader(name)
            if key is not None and _bearer(request) == key:
                request.requestHeaders.removeHeader("authorization")

    def find_key(self, request: Request) -> str | None:
        """The first key the request carries, in Kong's order, then Anthropic's places."""
        for name in self.key_names:
            if self.in_header:
                value = request.getHeader(name)
                if value:
                    return value
            if self.in_query:
                values = (request.args or {}).get(name.encode("latin-1"))
                if values and values[0]:
                    return values[0].decode("latin-1")
        return request.getHeader(ANTHROPIC_HEADER) or _bearer(request)


def _bearer(request: Request) -> str | None:
    value = request.getHeader("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


plugin = KongPlugin("key-auth", priority=1250, version="3.13.0", schema=KEY_AUTH, compile=KeyAuth.compile)
