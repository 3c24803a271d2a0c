"""The ``gemini`` provider: Vertex AI (OAuth) or the Gemini API (API key).

A :class:`Target` is one entry of ai-proxy-advanced's ``targets``, reduced to
what a request needs: where to send it, how to authenticate, what to log.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping
from urllib.parse import quote, urlencode, urlsplit

from attrs import field, frozen

from gatewayd.providers.usage import Pricing
from gatewayd.translate import ModelProfile

GEMINI_API_HOST = "generativelanguage.googleapis.com"

_ACTIONS = {"generate": "generateContent", "stream": "streamGenerateContent", "count": "countTokens"}
# Claude on Vertex (publisher ``anthropic``): Kong's gemini driver calls these for ``claude-*``.
_RAW_ACTIONS = {"generate": "rawPredict", "stream": "streamRawPredict", "count": "rawPredict"}
#: The ``anthropic_version`` Vertex takes in the body, Kong's default for Claude on Vertex.
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


@frozen
class Auth:
    """How a target authenticates; secrets are excluded from ``repr``."""

    kind: str  # "service_account", "adc" or "api_key"
    secret: str | None = None  # the key's JSON text, or the API key
    header_name: str | None = None
    param_name: str | None = None
    param_location: str = "query"
    #: ``gcp_oauth_token_url``: the token endpoint to use in place of the key's ``token_uri``.
    token_url: str | None = None
    # Hashed once: identity() is looked up on every upstream call.
    _identity: str = field(init=False, eq=False, repr=False)

    @_identity.default
    def _digest(self) -> str:
        digest = hashlib.sha256(
            ((self.secret or "") + "\0" + (self.token_url or "")).encode("utf-8")
        ).hexdigest()[:16]
        return f"{self.kind}:{digest}"

    def identity(self) -> str:
        """A stable name for these credentials, so equal ones share a token cache."""
        return self._identity

    def __repr__(self) -> str:
        return f"Auth(kind={self.kind!r})"


@frozen
class Target:
    """One ai-proxy-advanced target served by the gemini provider."""

    model: str
    api: str  # "vertex" or "gemini"
    scheme: str
    host: str
    port: int
    base_path: str  # up to and including "models/{model}"
    auth: Auth
    route_type: str = "llm/v1/chat"
    max_tokens: int | None = None
    log_statistics: bool = False
    log_payloads: bool = False
    pricing: Pricing = Pricing()
    index: int = 0
    #: ``model.model_alias``: the request ``model`` that picks this target.
    alias: str | None = None
    #: ``model.options`` temperature, top_p, top_k: they replace the client's (Kong's merge_config_defaults).
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    #: ``model.options.anthropic_version``, for Claude on Vertex.
    anthropic_version: str | None = None
    #: What the translator needs of the model, made once, not per request.
    profile: ModelProfile = field(init=False, eq=False, repr=False)

    _calls: dict[str, tuple[str, str]] = field(init=False, eq=False, repr=False, factory=dict)

    @profile.default
    def _profile(self) -> ModelProfile:
        return ModelProfile(name=self.model, api=self.api, max_tokens=self.max_tokens)

    @property
    def publisher(self) -> str:
        """Vertex's publisher of the model: ``anthropic`` for ``claude-*`` (as Kong's driver decides)."""
        return "anthropic" if self.api == "vertex" and self.model.startswith("claude-") else "google"

    def options_over(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The client's body with the target's sampling options in place of the client's."""
        body = dict(body)
        for key in ("temperature", "top_p", "top_k"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body

    def upstream_uri(self, action: str) -> str:
        """Path and query of an upstream call, as logged (never with an API key)."""
        return self._call(action)[0]

    def url(self, action: str) -> str:
        """The full URL of an upstream call, an API key included when it goes in the query."""
        return self._call(action)[1]

    def _call(self, action: str) -> tuple[str, str]:
        """``upstream_uri`` and ``url`` of ``action``, worked out on its first call."""
        made = self._calls.get(action)
        if made is None:
            made = self._calls[action] = (self._upstream_uri(action), self._url(action))
        return made

    def _upstream_uri(self, action: str) -> str:
        if self.publisher == "anthropic":
            base = self.base_path
            if action == "count":  # Vertex counts Claude tokens at one model-less endpoint
                base = base.rsplit("/", 1)[0] + "/count-tokens"
            return f"{base}:{_RAW_ACTIONS[action]}"
        uri = f"{self.base_path}:{_ACTIONS[action]}"
        if action == "stream":
            uri += "?alt=sse"
        return uri

    def _url(self, action: str) -> str:
        default_port = 443 if self.scheme == "https" else 80
        netloc = self.host if self.port == default_port else f"{self.host}:{self.port}"
        uri = self._upstream_uri(action)
        if self.auth.kind == "api_key" and self.auth.param_name and self.auth.param_location == "query":
            uri += ("&" if "?" in uri else "?") + urlencode({self.auth.param_name: self.auth.secret})
        return f"{self.scheme}://{netloc}{uri}"


class TargetError(ValueError):
    """A target the gateway cannot serve; the message names the field, not its value."""


def target_from_config(config: Mapping[str, Any], index: int) -> Target:
    """Build a :class:`Target` from one validated ``targets[]`` entry."""
    model = config["model"]
    options = model.get("options") or {}
    provider = model.get("provider")
    if provider != "gemini":
        raise TargetError(
            f"targets[{index}].model.provider: {provider!r} is not served by gatewayd (only 'gemini')"
        )
    name = model.get("name")
    if not name:
        raise TargetError(f"targets[{index}].model.name is required for the gemini provider")
    gemini = options.get("gemini") or {}
    auth = _auth(config.get("auth") or {}, index)
    upstream_url = options.get("upstream_url")
    if gemini.get("project_id") or gemini.get("api_endpoint") and auth.kind != "api_key":
        api = "vertex"
        for key in ("api_endpoint", "project_id", "location_id"):
            if not gemini.get(key):
                raise TargetError(
                    f"targets[{index}].model.options.gemini.{key} is required for Vertex AI"
                )
        scheme, host, port = _endpoint(gemini["api_endpoint"])
        base_path = (
            f"/v1/projects/{quote(gemini['project_id'], safe='')}"
            f"/locations/{quote(gemini['location_id'], safe='')}"
            f"/publishers/{'anthropic' if name.startswith('claude-') else 'google'}"
            f"/models/{quote(name, safe='.-_@')}"
        )
    else:
        api = "gemini"
        scheme, host, port = _endpoint(gemini.get("api_endpoint") or GEMINI_API_HOST)
        base_path = f"/v1beta/models/{quote(name, safe='.-_')}"
        if auth.kind != "api_key":
            raise TargetError(
                f"targets[{index}].auth: the Gemini API needs an API key "
                "(header_name/header_value or param_name/param_value)"
            )
    if name.startswith("claude-") and api != "vertex":
        raise TargetError(
            f"targets[{index}].model.name: {name!r} is a Claude model, served by Vertex AI only "
            "(set model.options.gemini's api_endpoint, project_id and location_id)"
        )
    if upstream_url:
        scheme, host, port = _endpoint(upstream_url)
        base_path = _upstream_base_path(urlsplit(upstream_url).path, base_path)
    logging = config.get("logging") or {}
    return Target(
        model=name,
        api=api,
        scheme=scheme,
        host=host,
        port=port,
        base_path=base_path,
        auth=auth,
        route_type=config.get("route_type") or "llm/v1/chat",
        max_tokens=options.get("max_tokens"),
        log_statistics=bool(logging.get("log_statistics")),
        log_payloads=bool(logging.get("log_payloads")),
        pricing=Pricing.from_options(options),
        index=index,
        alias=model.get("model_alias"),
        temperature=options.get("temperature"),
        top_p=options.get("top_p"),
        top_k=options.get("top_k"),
        anthropic_version=options.get("anthropic_version"),
    )


def _upstream_base_path(path: str, default: str) -> str:
    """The base path a ``model.options.upstream_url`` gives, as Kong reads it.

    Kong sends every call to upstream_url as it is; it names one operation. gatewayd calls three
    (generate, stream, count), so the operation after the last ``:`` is replaced per call:
    ``https://host/v1beta/models/m:generateContent`` -> base ``/v1beta/models/m``.  A URL whose
    path ends in ``models/NAME`` is that base; a bare host keeps the provider's usual path; any
    other path is a prefix (a proxy mounted under a path) before the usual path.
    """
    path = path.rstrip("/")
    if not path:
        return default
    head, colon, _ = path.rpartition(":")
    if colon and "/" not in path[len(head):]:
        return head
    if path.rsplit("/", 2)[-2:-1] == ["models"]:
        return path
    return path + default


def _auth(auth: Mapping[str, Any], index: int) -> Auth:
    if auth.get("header_value") and auth.get("header_name"):
        return Auth("api_key", auth["header_value"], header_name=auth["header_name"])
    if auth.get("param_value") and auth.get("param_name"):
        return Auth(
            "api_key",
            auth["param_value"],
            param_name=auth["param_name"],
            param_location=auth.get("param_location") or "query",
        )
    token_url = auth.get("gcp_oauth_token_url")
    key_json = auth.get("gcp_service_account_json")
    if auth.get("gcp_use_service_account") or key_json:
        if key_json and not key_json.lstrip().startswith("{"):
            # The seed stores the key in DECK_GEMINI_API_KEY; someone who put a
            # plain API key there gets what they meant: an API-key call.
            return Auth("api_key", key_json.strip(), header_name="x-goog-api-key")
        if key_json:
            return Auth("service_account", key_json, token_url=token_url)
        return Auth("adc")
    raise TargetError(
        f"targets[{index}].auth: set gcp_use_service_account (with gcp_service_account_json, "
        "or Application Default Credentials) or an API key"
    )


def _endpoint(endpoint: str) -> tuple[str, str, int]:
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    scheme = parts.scheme or "https"
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname or "", port
