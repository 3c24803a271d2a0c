"""ai-proxy-advanced with ``llm_format: anthropic``: the Messages API on Gemini.

``schema.py`` holds Kong's config schema; ``handler.py`` the calls to the
targets and their translation; ``resources.py`` the endpoints below the route
(``v1/messages``, ``v1/messages/count_tokens``, ``v1/models``); ``balancer.py``
Kong's balancer over the targets; ``stream.py`` the SSE bridge with backpressure.
The plugin answers in the place of the route's service, as Kong's does.
"""

from __future__ import annotations

from twisted.logger import Logger

from gatewayd.config import Plugin
from gatewayd.plugins import CompileContext, ConfigurationError, KongPlugin, refuse
from gatewayd.providers.auth import CredentialsError, TokenSource
from gatewayd.providers.gemini import Target, target_from_config
from gatewayd.translate import SignatureMemory

from .balancer import Balancer, BalancerConfig, Candidate, UnsupportedBalancer
from .checks import Refusal, check
from .handler import MAX_BODY, AIProxy
from .resources import AIRoute
from .schema import AI_PROXY_ADVANCED

log = Logger()


def compile(plugin: Plugin, context: CompileContext) -> AIRoute:
    """The route's answerer: its targets, their credentials and a balancer that remembers
    their health across reloads while they stay the same."""
    where = f"{plugin.source}: plugins ({plugin.name}): config"
    try:
        check(plugin.config)
    except Refusal as refusal:
        raise refuse(plugin, refusal.field, refusal.message) from None
    targets = []
    tokens: dict[str, TokenSource] = {}
    for index, target_config in enumerate(plugin.config["targets"]):
        try:
            target = target_from_config(target_config, index)
        except ValueError as error:
            raise ConfigurationError(f"{where}.{error}") from None
        if target.auth.kind == "api_key" and (target_config.get("auth") or {}).get("gcp_service_account_json"):
            log.warn(
                "{source}: targets[{index}].auth.gcp_service_account_json is not JSON; "
                "using it as a Google API key (x-goog-api-key)",
                source=plugin.source,
                index=index,
            )
        if target.auth.kind in ("service_account", "adc"):
            identity = target.auth.identity()
            tokens[identity] = context.keep(
                ("gcp-token", identity), lambda: _token_source(where, index, target, context)
            )
        targets.append(target)
    try:
        settings = BalancerConfig.from_config(plugin.config.get("balancer"))
    except UnsupportedBalancer as error:
        raise ConfigurationError(f"{where}.{error}") from None
    candidates = tuple(
        Candidate(target.model, target_config.get("weight") or 100, target.alias)
        for target, target_config in zip(targets, plugin.config["targets"])
    )
    balancer = context.keep(
        ("ai-proxy-advanced.balancer", plugin.id, tuple(targets), candidates, settings),
        lambda: Balancer(list(candidates), settings, context.reactor),
    )
    proxy = AIProxy(
        plugin_id=plugin.id,
        targets=tuple(targets),
        client=context.facility("client_for")(settings.connect_timeout),
        tokens=tokens,
        reactor=context.reactor,
        signatures=context.keep(("ai-proxy-advanced.signatures",), SignatureMemory),
        balancer=balancer,
        max_body=plugin.config.get("max_request_body_size") or MAX_BODY,
        response_streaming=plugin.config["response_streaming"],
        model_name_header=plugin.config["model_name_header"],
    )
    return AIRoute.serving(proxy)


def _token_source(where: str, index: int, target: Target, context: CompileContext) -> TokenSource:
    try:
        source: TokenSource = context.facility("token_source_for")(target)
    except CredentialsError as error:
        raise ConfigurationError(f"{where}.targets[{index}].auth: {error}") from None
    return source


plugin = KongPlugin(
    "ai-proxy-advanced", priority=770, version="3.15.0", schema=AI_PROXY_ADVANCED, compile=compile
)
