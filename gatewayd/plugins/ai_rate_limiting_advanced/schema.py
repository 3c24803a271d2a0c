"""ai-rate-limiting-advanced's config schema: Kong 3.13, AiRateLimitingAdvanced.json."""

from __future__ import annotations

from typing import Any

from gatewayd.config.schema import PluginSchema, SchemaError, array, boolean, number, record, string
from gatewayd.plugins.redis import REDIS

AI_RATE_LIMITING_ADVANCED_CONFIG = record({
    "custom_cost_count_function": string(),
    "decrease_by_fractions_in_redis": boolean(default=False),
    "dictionary_name": string(default="kong_rate_limiting_counters"),
    "disable_penalty": boolean(default=False),
    "error_code": number(default=429),
    "error_hide_providers": boolean(default=False),
    "error_message": string(default="AI token rate limit exceeded for provider(s): "),
    "header_name": string(),
    "hide_client_headers": boolean(default=False),
    "identifier": string(default="consumer", one_of=(
        "consumer", "consumer-group", "credential", "header", "ip", "path", "service")),
    "llm_format": string(default="openai", one_of=(
        "anthropic", "bedrock", "cohere", "gemini", "huggingface", "openai")),
    "llm_providers": array(record({
        "limit": array(number(), required=True),
        "name": string(required=True, one_of=(
            "anthropic", "azure", "bedrock", "cohere", "customCost", "gemini", "huggingface",
            "llama2", "mistral", "openai", "requestPrompt")),
        "window_size": array(number(), required=True),
    }), required=True),
    "namespace": string(),
    "path": string(match=r"^/(?!.*//)", match_err="should start with: / and have no empty segments"),
    "redis": REDIS,
    "request_prompt_count_function": string(),
    "retry_after_jitter_max": number(default=0),
    "strategy": string(default="local", one_of=("cluster", "local", "redis")),
    "sync_rate": number(),
    "tokens_count_strategy": string(default="total_tokens", one_of=(
        "completion_tokens", "cost", "prompt_tokens", "total_tokens")),
    "window_type": string(default="sliding", one_of=("fixed", "sliding")),
})


def _check_limit_windows(config: dict[str, Any]) -> dict[str, Any]:
    """Kong requires as many ``window_size`` entries as ``limit`` entries."""
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
