"""What ai-proxy-advanced's config must satisfy before it is served.

Two kinds of refusal, both at load, both naming the field:

- Kong's own entity checks (kong/llm/schemas/init.lua), which its JSON schema
  does not carry: the Vertex options set together, ``param_*`` together,
  ``header_*`` together, gemini with ``allow_override = false``, costs above
  zero, ``upstream_url`` a URL.
- Values gatewayd does not serve of fields it otherwise serves (another
  ``llm_format``, ``route_type`` or provider, ...): each is refused with "... is
  not served by gatewayd" rather than silently ignored.  Whole fields it does not
  serve are refused by the schema itself (``refused=`` in ``schema.py``).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from gatewayd.providers.usage import parse_threshold

NOT_SERVED = "is not served by gatewayd"


class Refusal(ValueError):
    """A config field that cannot be served; ``field`` is its path below ``config``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_COSTS = ("input_cost", "output_cost", "cache_read_cost", "cache_write_cost")
#: Gemini's temperature range (Vertex and the Gemini API); Kong's schema allows up to 5.
GEMINI_MAX_TEMPERATURE = 2.0


def check(config: Mapping[str, Any]) -> None:
    """Raise :class:`Refusal` for the first field of a validated config that cannot be served."""
    for refusal in _refusals(config):
        raise refusal


def _refusals(config: Mapping[str, Any]) -> Iterator[Refusal]:
    if config.get("llm_format") != "anthropic":
        yield Refusal(
            "llm_format",
            f"{config.get('llm_format')!r} {NOT_SERVED}; it speaks the Anthropic Messages API "
            "(llm_format: anthropic)",
        )
    if config.get("genai_category") != "text/generation":
        yield Refusal("genai_category", f"{config.get('genai_category')!r} {NOT_SERVED} (it serves text/generation)")
    if (config.get("balancer") or {}).get("slots") not in (None, 10000):
        yield Refusal(
            "balancer.slots",
            f"{NOT_SERVED}: consistent-hashing here is rendezvous hashing, which has no ring of slots",
        )
    for index, target in enumerate(config.get("targets") or ()):
        yield from _target(f"targets[{index}]", target)


def _target(where: str, target: Mapping[str, Any]) -> Iterator[Refusal]:
    model = target.get("model") or {}
    options = model.get("options") or {}
    auth = target.get("auth") or {}
    provider = model.get("provider")
    # Kong's entity checks first, with Kong's messages.
    if provider in ("bedrock", "gemini") and auth.get("allow_override"):
        yield Refusal(f"{where}.auth.allow_override", "bedrock and gemini only support auth.allow_override = false")
    for group in (("header_name", "header_value"), ("param_name", "param_value", "param_location")):
        set_ = [name for name in group if auth.get(name) is not None]
        if set_ and len(set_) != len(group):
            names = ", ".join(f"'auth.{name}'" for name in group)
            yield Refusal(f"{where}.auth", f"all or none of these fields must be set: {names}")
    gemini = options.get("gemini") or {}
    vertex = ("api_endpoint", "project_id", "location_id")
    set_ = [name for name in vertex if gemini.get(name) is not None]
    if set_ and len(set_) != len(vertex):
        names = ", ".join(f"'{name}'" for name in vertex)
        yield Refusal(f"{where}.model.options.gemini", f"all or none of these fields must be set: {names}")
    for name in _COSTS:
        value = options.get(name)
        if value is not None and value <= 0:
            yield Refusal(f"{where}.model.options.{name}", "value must be greater than 0")
    for index, entry in enumerate(options.get("cache_write_cost_list") or ()):
        if entry["cost"] <= 0:
            yield Refusal(f"{where}.model.options.cache_write_cost_list[{index}].cost", "value must be greater than 0")
    upstream_url = options.get("upstream_url")
    if upstream_url is not None:
        parts = urlsplit(upstream_url)
        if parts.scheme not in ("http", "https"):
            yield Refusal(f"{where}.model.options.upstream_url", "missing or unsupported scheme in url (http or https)")
        elif not parts.hostname:
            yield Refusal(f"{where}.model.options.upstream_url", "missing host in url")
    # Then what gatewayd does not serve.
    if provider != "gemini":
        yield Refusal(f"{where}.model.provider", f"{provider!r} {NOT_SERVED} (it serves 'gemini')")
    if target.get("route_type") != "llm/v1/chat":
        yield Refusal(f"{where}.route_type", f"{target.get('route_type')!r} {NOT_SERVED} (it serves llm/v1/chat)")
    if gemini.get("endpoint_id") is not None:
        yield Refusal(f"{where}.model.options.gemini.endpoint_id", f"{NOT_SERVED} (Vertex model garden endpoints)")
    if auth.get("gcp_metadata_url") is not None:
        yield Refusal(
            f"{where}.auth.gcp_metadata_url",
            f"{NOT_SERVED}; set GCE_METADATA_HOST in the daemon's environment for Application Default Credentials",
        )
    if auth.get("gcp_oauth_token_url") is not None and not auth.get("gcp_service_account_json"):
        yield Refusal(
            f"{where}.auth.gcp_oauth_token_url",
            f"{NOT_SERVED} without gcp_service_account_json (it replaces the key's token_uri)",
        )
    temperature = options.get("temperature")
    if temperature is not None and temperature > GEMINI_MAX_TEMPERATURE:
        yield Refusal(
            f"{where}.model.options.temperature",
            f"Gemini takes a temperature from 0 to {GEMINI_MAX_TEMPERATURE:g}, got {temperature!r}",
        )
    for index, entry in enumerate(options.get("context_window_factor") or ()):
        try:
            parse_threshold(entry["above"])
        except ValueError as error:
            yield Refusal(f"{where}.model.options.context_window_factor[{index}].above", str(error))
