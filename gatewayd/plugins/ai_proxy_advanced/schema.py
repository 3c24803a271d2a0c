"""ai-proxy-advanced's config schema: Kong 3.15, AiProxyAdvanced.json.

Kong's entity checks, and the fields gatewayd refuses, are in ``checks.py``.
"""

from __future__ import annotations

from typing import Any

from gatewayd.config.schema import (
    PluginSchema,
    SchemaError,
    anything,
    array,
    boolean,
    integer,
    number,
    record,
    ref_string,
    secret_string,
    string,
    type_name,
    validate,
)
from gatewayd.plugins.redis import REDIS

_AUTH = record({
    "allow_override": boolean(default=False),
    "aws_access_key_id": secret_string(refused="it applies to other providers"),
    "aws_secret_access_key": secret_string(refused="it applies to other providers"),
    "azure_client_id": ref_string(refused="it applies to other providers"),
    "azure_client_secret": secret_string(refused="it applies to other providers"),
    "azure_tenant_id": ref_string(refused="it applies to other providers"),
    "azure_use_managed_identity": boolean(default=False, refused="it applies to other providers"),
    "gcp_metadata_url": ref_string(),
    "gcp_oauth_token_url": ref_string(),
    "gcp_service_account_json": secret_string(),
    "gcp_use_service_account": boolean(default=False),
    "header_name": ref_string(),
    "header_value": secret_string(),
    "param_location": string(one_of=("body", "query")),
    "param_name": ref_string(),
    "param_value": secret_string(),
})

_BEDROCK = record({
    "aws_assume_role_arn": string(),
    "aws_region": string(),
    "aws_role_session_name": string(),
    "aws_sts_endpoint_url": string(),
    "batch_bucket_prefix": string(),
    "batch_role_arn": string(),
    "embeddings_normalize": boolean(default=False),
    "performance_config_latency": string(),
    "video_output_s3_uri": string(),
}, nullable=True, refused="it applies to other providers")

_HUGGINGFACE = record({
    "use_cache": boolean(),
    "wait_for_model": boolean(),
}, nullable=True, refused="it applies to other providers")

_MODEL_OPTIONS = record({
    "anthropic_version": string(),
    "azure_api_version": string(default="2023-05-15", refused="it applies to other providers"),
    "azure_deployment_id": string(refused="it applies to other providers"),
    "azure_instance": string(refused="it applies to other providers"),
    "bedrock": _BEDROCK,
    "cache_read_cost": number(),
    "cache_write_cost": number(),
    "cache_write_cost_list": array(record({
        "cost": number(required=True),
        "ttl": string(required=True),
    })),
    "cohere": record({
        "embedding_input_type": string(default="classification", one_of=(
            "classification", "clustering", "image", "search_document", "search_query")),
        "wait_for_model": boolean(),
    }, nullable=True, refused="it applies to other providers"),
    "context_window_factor": array(record({
        "above": string(required=True),
        "input_factor": number(required=True),
        "output_factor": number(required=True),
    })),
    "dashscope": record({
        "international": boolean(default=True),
    }, nullable=True, refused="it applies to other providers"),
    "databricks": record({
        "workspace_instance_id": string(),
    }, nullable=True, refused="it applies to other providers"),
    "embeddings_dimensions": integer(refused="it applies to other providers"),
    "gemini": record({
        "api_endpoint": string(),
        "endpoint_id": string(),
        "location_id": string(),
        "project_id": string(),
    }, nullable=True),
    "huggingface": _HUGGINGFACE,
    "input_cost": number(),
    "llama2_format": string(one_of=("ollama", "openai", "raw"), refused="it applies to other providers"),
    "max_tokens": integer(),
    "mistral_format": string(one_of=("ollama", "openai"), refused="it applies to other providers"),
    "output_cost": number(),
    "service_tier_factor": array(record({
        "factor": number(required=True),
        "tier": string(required=True),
    })),
    "temperature": number(between=(0, 5)),
    "top_k": integer(between=(0, 500)),
    "top_p": number(between=(0, 1)),
    "upstream_path": string(refused="it applies to other providers"),
    "upstream_url": string(),
})

_TARGET = record({
    "auth": _AUTH,
    "description": string(),
    "logging": record({
        "log_payloads": boolean(default=False),
        "log_statistics": boolean(default=False),
    }),
    "metadata": anything(nullable=True),
    "model": record({
        "model_alias": string(),
        "name": string(),
        "options": _MODEL_OPTIONS,
        "provider": string(required=True, one_of=(
            "anthropic", "azure", "bedrock", "cerebras", "cohere", "dashscope", "databricks",
            "deepseek", "gemini", "huggingface", "llama2", "mistral", "ollama", "openai", "vllm",
            "xai")),
    }, required=True),
    "route_type": string(required=True, one_of=(
        "audio/v1/audio/speech", "audio/v1/audio/transcriptions", "audio/v1/audio/translations",
        "image/v1/images/edits", "image/v1/images/generations", "llm/v1/assistants",
        "llm/v1/batches", "llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings",
        "llm/v1/files", "llm/v1/responses", "preserve", "realtime/v1/realtime",
        "video/v1/videos/generations")),
    "weight": integer(default=100, between=(1, 65535)),
})

_TIMEOUT = (1, 2147483646)

_BALANCER = record({
    "algorithm": string(default="round-robin", one_of=(
        "consistent-hashing", "least-connections", "lowest-latency", "lowest-usage", "priority",
        "round-robin", "semantic")),
    "connect_timeout": integer(default=60000, between=_TIMEOUT),
    "fail_timeout": integer(default=10000, between=_TIMEOUT),
    "failover_criteria": array(string(one_of=(
        "error", "http_403", "http_404", "http_429", "http_500", "http_502", "http_503",
        "http_504", "invalid_header", "non_idempotent", "timeout")),
        default=["error", "timeout"]),
    "hash_on_header": string(default="X-Kong-LLM-Request-ID"),
    "latency_strategy": string(default="tpot", one_of=("e2e", "tpot")),
    "max_fails": integer(default=0, between=(0, 32767)),
    "read_timeout": integer(default=60000, between=_TIMEOUT),
    "retries": integer(default=5, between=(0, 32767)),
    "slots": integer(default=10000, between=(10, 65536)),
    "tokens_count_strategy": string(default="total-tokens", one_of=(
        "completion-tokens", "cost", "llm-accuracy", "prompt-tokens", "total-tokens")),
    "write_timeout": integer(default=60000, between=_TIMEOUT),
})

_EMBEDDINGS = record({
    "auth": _AUTH,
    "model": record({
        "name": string(required=True),
        "options": record({
            "azure": record({
                "api_version": string(default="2023-05-15"),
                "deployment_id": string(),
                "instance": string(),
            }, nullable=True),
            "bedrock": _BEDROCK,
            "gemini": record({
                "api_endpoint": string(),
                "location_id": string(),
                "project_id": string(),
            }, nullable=True),
            "huggingface": _HUGGINGFACE,
            "upstream_url": string(),
        }),
        "provider": string(required=True, one_of=(
            "azure", "bedrock", "gemini", "huggingface", "mistral", "ollama", "openai")),
    }, required=True),
}, nullable=True, refused="it serves no semantic balancing")

_VECTORDB = record({
    "dimensions": integer(required=True),
    "distance_metric": string(required=True, one_of=("cosine", "euclidean")),
    "pgvector": record({
        "database": string(default="kong-pgvector"),
        "host": string(default="127.0.0.1"),
        "password": secret_string(),
        "port": integer(default=5432),
        "ssl": boolean(default=False),
        "ssl_cert": string(),
        "ssl_cert_key": string(),
        "ssl_required": boolean(default=False),
        "ssl_verify": boolean(default=True),
        "ssl_version": string(default="tlsv1_2", one_of=("any", "tlsv1_2", "tlsv1_3")),
        "timeout": number(default=5000),
        "user": ref_string(default="postgres"),
    }),
    "redis": REDIS,
    "strategy": string(required=True, one_of=("pgvector", "redis")),
    "threshold": number(),
}, nullable=True, refused="it serves no semantic balancing")

_ACL_RULES = array(record({
    "match": array(record({
        "key": string(),
        "type": string(required=True, one_of=(
            "consumer", "consumer_group", "header", "ip", "model", "path", "provider")),
        "values": array(string(), required=True, len_min=1),
    }), required=True, len_min=1),
}), len_min=1, refused="per-model access lists (Kong 3.15's acls) are not served yet")

AI_PROXY_ADVANCED_CONFIG = record({
    "acls": record({
        "allow": _ACL_RULES,
        "deny": _ACL_RULES,
    }),
    "balancer": _BALANCER,
    "embeddings": _EMBEDDINGS,
    "genai_category": string(default="text/generation", one_of=(
        "audio/speech", "audio/transcription", "image/generation", "realtime/generation",
        "text/embeddings", "text/generation", "video/generation")),
    "llm_format": string(default="openai", one_of=(
        "anthropic", "bedrock", "cohere", "gemini", "huggingface", "openai")),
    # Kong's default is 1048576; gatewayd's is Anthropic's own limit, 32 MiB, since
    # Claude Code's requests with screenshots or PDFs pass 1 MiB.  Set it to lower it.
    "max_request_body_size": integer(default=32 * 1024 * 1024),
    "model_name_header": boolean(default=True),
    "response_streaming": string(default="allow", one_of=("allow", "always", "deny")),
    "targets": array(_TARGET, required=True),
    "vectordb": _VECTORDB,
})

_MODEL_MAX_TOKENS = integer()


def _move_model_max_tokens(config: dict[str, Any]) -> dict[str, Any]:
    """Accept ``targets[].model.max_tokens`` (as the walk-through writes it) for Kong's
    ``targets[].model.options.max_tokens``."""
    targets = config.get("targets")
    if not isinstance(targets, list):
        return config
    moved = []
    for index, target in enumerate(targets):
        model = target.get("model") if isinstance(target, dict) else None
        if not isinstance(model, dict) or "max_tokens" not in model:
            moved.append(target)
            continue
        path = f"config.targets[{index}].model"
        model = dict(model)
        value = validate(_MODEL_MAX_TOKENS, model.pop("max_tokens"), f"{path}.max_tokens")
        options = model.get("options")
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise SchemaError(f"{path}.options", f"expected a record, got {type_name(options)}")
        current = options.get("max_tokens")
        if current is not None and value is not None and current != value:
            raise SchemaError(f"{path}.max_tokens",
                              f"conflicts with {path}.options.max_tokens ({current!r}); set only one")
        if current is None and value is not None:
            options = {**options, "max_tokens": value}
        model["options"] = options
        moved.append({**target, "model": model})
    return {**config, "targets": moved}


AI_PROXY_ADVANCED = PluginSchema(
    name="ai-proxy-advanced",
    config=AI_PROXY_ADVANCED_CONFIG,
    protocols_allowed=("grpc", "grpcs", "http", "https", "ws", "wss"),
    protocols_default=("grpc", "grpcs", "http", "https", "ws", "wss"),
    normalize=_move_model_max_tokens,
)
