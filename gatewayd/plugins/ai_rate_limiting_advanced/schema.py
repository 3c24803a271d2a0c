"""ai-rate-limiting-advanced's config schema: Kong 3.15, AiRateLimitingAdvanced.json.

A config 3.13 accepted still loads: 3.15 only added ``policies`` (refused here)
and made ``llm_providers`` optional, with the entity check that exactly one of
the two is given.
"""

from __future__ import annotations

from typing import Any

from gatewayd.config.schema import PluginSchema, SchemaError, array, boolean, integer, number, record, string
from gatewayd.plugins.redis import REDIS

_LUA = "Lua functions are not run by gatewayd"
_POLICIES = "policy-based limits: use llm_providers"
_PATH = "the 'path' identifier: use consumer, credential, ip, header or service"
_MATCH_TYPES = ("consumer", "consumer_group", "header", "ip", "model", "path", "provider")
_COUNT = ("completion_tokens", "cost", "prompt_tokens", "total_tokens")

AI_RATE_LIMITING_ADVANCED_CONFIG = record({
    "custom_cost_count_function": string(refused=_LUA),
    "decrease_by_fractions_in_redis": boolean(default=False),
    "dictionary_name": string(default="kong_rate_limiting_counters"),
    "disable_penalty": boolean(default=False),
    "error_code": number(default=429),
    "error_hide_providers": boolean(default=False),
    "error_message": string(default="AI token rate limit exceeded for provider(s): "),
    "header_name": string(),
    "hide_client_headers": boolean(default=False),
    "identifier": string(default="consumer", one_of=(
        "consumer", "consumer-group", "credential", "header", "ip", "path", "service"),
        refusing={"consumer-group": "consumer groups are refused at load", "path": _PATH}),
    "llm_format": string(one_of=("anthropic", "bedrock", "cohere", "gemini", "huggingface", "openai")),
    "llm_providers": array(record({
        "limit": array(number(), required=True),
        "name": string(required=True, one_of=(
            "anthropic", "azure", "bedrock", "cohere", "customCost", "gemini", "huggingface",
            "llama2", "mistral", "openai", "requestPrompt"),
            refusing={"customCost": _LUA, "requestPrompt": _LUA}),
        "window_size": array(number(), required=True),
    })),
    "namespace": string(),
    "path": string(match=r"^/(?!.*//)", match_err="should start with: / and have no empty segments",
                   refused=_PATH),
    "policies": array(record({
        "id": string(refused=_POLICIES),
        "limits": array(record({
            "limit": number(required=True, refused=_POLICIES),
            "tokens_count_strategy": string(default="total_tokens", one_of=_COUNT, refused=_POLICIES),
            "window_size": integer(required=True, refused=_POLICIES),
        }), len_min=1, refused=_POLICIES),
        "match": array(record({
            "key": string(refused=_POLICIES),
            "partition_by": boolean(default=False, refused=_POLICIES),
            "type": string(one_of=_MATCH_TYPES, refused=_POLICIES),
            "values": array(string(), refused=_POLICIES),
        }), refused=_POLICIES),
        "window_type": string(default="sliding", one_of=("fixed", "sliding"), refused=_POLICIES),
    }), refused=_POLICIES),
    "redis": REDIS,
    "request_prompt_count_function": string(refused=_LUA),
    "retry_after_jitter_max": number(default=0),
    "strategy": string(default="local", one_of=("cluster", "local", "redis"),
                       refusing={"cluster": "it needs Kong's database; use local or redis"}),
    "sync_rate": number(),
    "tokens_count_strategy": string(default="total_tokens", one_of=_COUNT),
    "window_type": string(default="sliding", one_of=("fixed", "sliding")),
})


#: Kong's smallest sync interval, in seconds.
MIN_SYNC_RATE = 0.02


def _check_limit_windows(config: dict[str, Any]) -> dict[str, Any]:
    """Kong's entity checks: exactly one of ``llm_providers`` and ``policies``; as many
    ``window_size`` entries as ``limit`` entries; a ``sync_rate`` of -1, 0 or at least 20 ms."""
    given = [name for name in ("llm_providers", "policies") if config.get(name)]
    if not given:
        raise SchemaError("config", "at least one of these fields must be non-empty: "
                                    "'llm_providers', 'policies'")
    if len(given) == 2:
        raise SchemaError("config", "'llm_providers' and 'policies' are mutually exclusive")
    sync_rate = config.get("sync_rate")
    if isinstance(sync_rate, (int, float)) and not isinstance(sync_rate, bool) \
            and sync_rate not in (-1, 0) and sync_rate < MIN_SYNC_RATE:
        raise SchemaError("config.sync_rate", f"expected -1, 0, or at least {MIN_SYNC_RATE} "
                                              f"(seconds), got {sync_rate!r}")
    for index, provider in enumerate(config.get("llm_providers") or ()):
        if not isinstance(provider, dict):
            continue
        limits, windows = provider.get("limit"), provider.get("window_size")
        if isinstance(limits, list) and isinstance(windows, list) and len(limits) != len(windows):
            raise SchemaError(f"config.llm_providers[{index}]",
                              "You must provide the same number of windows and limits")
    return config


AI_RATE_LIMITING_ADVANCED = PluginSchema(
    name="ai-rate-limiting-advanced",
    config=AI_RATE_LIMITING_ADVANCED_CONFIG,
    protocols_allowed=("grpc", "grpcs", "http", "https"),
    protocols_default=("grpc", "grpcs", "http", "https"),
    normalize=_check_limit_windows,
)
