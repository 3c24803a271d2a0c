"""Kong 3.13 plugin config schemas, transcribed into a small DSL.

Kong validates a plugin's ``config`` against the plugin's schema and fills in
defaults before any request sees it; gatewayd does the same so a decK file that
Kong would refuse is refused here too, and the edge reads one complete dict.

The transcriptions follow the published 3.13 schemas (Kong/developer.konghq.com,
``app/_schemas/gateway/plugins/3.13/<Plugin>.json``): every field name, type,
default, ``one_of`` list, bound and required flag.  Kong's rules for absent
values are kept: a missing field takes its default, else null; a missing
record is filled with its own defaults unless it is ``nullable`` (Kong's
``required = false`` records such as ``embeddings`` or ``model.options.gemini``,
which stay null); strings must not be empty unless ``len_min=0``.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from attrs import field, frozen


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


class SchemaError(ValueError):
    """A value does not fit its schema; ``path`` locates it (``config.targets[0].weight``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@frozen
class Field:
    """One node of a schema tree; build it with the helpers below."""

    type: str
    required: bool = False
    default: Any = NO_DEFAULT
    nullable: bool = False
    one_of: tuple[Any, ...] | None = None
    between: tuple[float, float] | None = None
    len_min: int | None = None
    match: str | None = None
    match_err: str = "invalid value"
    encrypted: bool = False
    referenceable: bool = False
    fields: tuple[tuple[str, Field], ...] = ()
    elements: Field | None = None
    values: Field | None = None

    @property
    def secret(self) -> bool:
        """Never echo the value of an encrypted field in an error message."""
        return self.encrypted

    def field_named(self, name: str) -> Field | None:
        for key, sub in self.fields:
            if key == name:
                return sub
        return None


def string(**kw: Any) -> Field:
    return Field("string", **kw)


def integer(**kw: Any) -> Field:
    return Field("integer", **kw)


def number(**kw: Any) -> Field:
    return Field("number", **kw)


def boolean(**kw: Any) -> Field:
    return Field("boolean", **kw)


def anything(**kw: Any) -> Field:
    return Field("any", **kw)


def record(fields: Mapping[str, Field], **kw: Any) -> Field:
    return Field("record", fields=tuple(fields.items()), **kw)


def array(elements: Field, **kw: Any) -> Field:
    return Field("array", elements=elements, **kw)


def set_of(elements: Field, **kw: Any) -> Field:
    return Field("set", elements=elements, **kw)


def map_of(values: Field, **kw: Any) -> Field:
    return Field("map", values=values, **kw)


def secret_string(**kw: Any) -> Field:
    """Kong's ``encrypted = true, referenceable = true`` strings (keys, passwords)."""
    return Field("string", encrypted=True, referenceable=True, **kw)


def ref_string(**kw: Any) -> Field:
    """Kong's ``referenceable = true`` strings (may name a vault secret)."""
    return Field("string", referenceable=True, **kw)


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "record", type(None): "null"}


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _shown(value: Any, spec: Field) -> str:
    """The value as an error message may show it: never a secret, never a blob."""
    if spec.secret:
        return f"a {type_name(value)}"
    if isinstance(value, str) and (len(value) > 80 or "\n" in value):
        return f"a string of {len(value)} characters"
    return _quote(value)


def validate(spec: Field, value: Any, path: str) -> Any:
    """Check ``value`` against ``spec`` and return it with Kong's defaults filled in."""
    if value is None:
        return _missing(spec, path)
    kind = spec.type
    if kind == "any":
        return copy.deepcopy(value)
    if kind == "record":
        return _record(spec, value, path)
    if kind in ("array", "set"):
        return _array(spec, value, path)
    if kind == "map":
        return _map(spec, value, path)
    value = _scalar(spec, value, path)
    _check_value(spec, value, path)
    return value


def _missing(spec: Field, path: str) -> Any:
    if spec.default is not NO_DEFAULT:
        return copy.deepcopy(spec.default)
    if spec.required:
        raise SchemaError(path, "required field missing")
    if spec.type == "record" and not spec.nullable:
        return _record(spec, {}, path)
    return None


def _record(spec: Field, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected a record, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str) or spec.field_named(key) is None:
            raise SchemaError(f"{path}.{key}", "unknown field")
    return {name: validate(sub, value.get(name), f"{path}.{name}") for name, sub in spec.fields}


def _array(spec: Field, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise SchemaError(path, f"expected {'a set' if spec.type == 'set' else 'an array'}, "
                                f"got {type_name(value)}")
    assert spec.elements is not None
    items = []
    for index, item in enumerate(value):
        checked = validate(spec.elements, item, f"{path}[{index}]")
        if checked is None:
            raise SchemaError(f"{path}[{index}]", "null is not allowed in a list")
        if spec.type == "set" and checked in items:
            continue
        items.append(checked)
    if spec.len_min is not None and len(items) < spec.len_min:
        raise SchemaError(path, f"length must be at least {spec.len_min}")
    return items


def _map(spec: Field, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected a map, got {type_name(value)}")
    assert spec.values is not None
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise SchemaError(path, f"map keys must be strings, got {type_name(key)}")
        result[key] = validate(spec.values, item, f"{path}.{key}")
    return result


def _scalar(spec: Field, value: Any, path: str) -> Any:
    kind = spec.type
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "integer" and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if kind == "number" and not isinstance(value, bool) and isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(path, "expected a finite number")
        return value
    article = "an" if kind == "integer" else "a"
    raise SchemaError(path, f"expected {article} {kind}, got {type_name(value)}")


def _check_value(spec: Field, value: Any, path: str) -> None:
    if spec.one_of is not None and value not in spec.one_of:
        choices = ", ".join(_quote(choice) for choice in spec.one_of)
        raise SchemaError(path, f"expected one of {choices}, got {_shown(value, spec)}")
    if spec.between is not None:
        low, high = spec.between
        if not low <= value <= high:
            raise SchemaError(path, f"value should be between {low} and {high}, "
                                    f"got {_shown(value, spec)}")
    if spec.type == "string":
        len_min = 1 if spec.len_min is None else spec.len_min
        if len(value) < len_min:
            raise SchemaError(path, f"length must be at least {len_min}")
        if spec.match is not None and not re.search(spec.match, value):
            raise SchemaError(path, spec.match_err)


@frozen
class PluginSchema:
    """A plugin's ``config`` tree and the ``protocols`` it may run on."""

    name: str
    config: Field
    protocols_allowed: tuple[str, ...]
    protocols_default: tuple[str, ...]
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, eq=False)

    def validate_config(self, raw: Any) -> dict[str, Any]:
        """The plugin's ``config`` with Kong defaults; raises SchemaError."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise SchemaError("config", f"expected a record, got {type_name(raw)}")
        if self.normalize is not None:
            raw = self.normalize(raw)
        checked = validate(self.config, raw, "config")
        assert isinstance(checked, dict)
        return checked

    def validate_protocols(self, raw: Any) -> tuple[str, ...]:
        spec = set_of(string(one_of=self.protocols_allowed), default=list(self.protocols_default))
        return tuple(validate(spec, raw, "protocols"))


# --- ai-proxy-advanced (Kong 3.13, AiProxyAdvanced.json) -----------------------------------

_AUTH = record({
    "allow_override": boolean(default=False),
    "aws_access_key_id": secret_string(),
    "aws_secret_access_key": secret_string(),
    "azure_client_id": ref_string(),
    "azure_client_secret": secret_string(),
    "azure_tenant_id": ref_string(),
    "azure_use_managed_identity": boolean(default=False),
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
    "embeddings_normalize": boolean(default=False),
    "performance_config_latency": string(),
    "video_output_s3_uri": string(),
}, nullable=True)

_HUGGINGFACE = record({
    "use_cache": boolean(),
    "wait_for_model": boolean(),
}, nullable=True)

_MODEL_OPTIONS = record({
    "anthropic_version": string(),
    "azure_api_version": string(default="2023-05-15"),
    "azure_deployment_id": string(),
    "azure_instance": string(),
    "bedrock": _BEDROCK,
    "cohere": record({
        "embedding_input_type": string(default="classification", one_of=(
            "classification", "clustering", "image", "search_document", "search_query")),
        "wait_for_model": boolean(),
    }, nullable=True),
    "dashscope": record({
        "international": boolean(default=True),
    }, nullable=True),
    "embeddings_dimensions": integer(),
    "gemini": record({
        "api_endpoint": string(),
        "endpoint_id": string(),
        "location_id": string(),
        "project_id": string(),
    }, nullable=True),
    "huggingface": _HUGGINGFACE,
    "input_cost": number(),
    "llama2_format": string(one_of=("ollama", "openai", "raw")),
    "max_tokens": integer(),
    "mistral_format": string(one_of=("ollama", "openai")),
    "output_cost": number(),
    "temperature": number(between=(0, 5)),
    "top_k": integer(between=(0, 500)),
    "top_p": number(between=(0, 1)),
    "upstream_path": string(),
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
        "name": string(),
        "options": _MODEL_OPTIONS,
        "provider": string(required=True, one_of=(
            "anthropic", "azure", "bedrock", "cerebras", "cohere", "dashscope", "gemini",
            "huggingface", "llama2", "mistral", "openai", "xai")),
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
            "azure", "bedrock", "gemini", "huggingface", "mistral", "openai")),
    }, required=True),
}, nullable=True)

_PORT = (0, 65535)
_REDIS_TIMEOUT = (0, 2147483646)

#: Kong's shared Redis block (vectordb, ai-rate-limiting-advanced, ...).
_REDIS = record({
    "cloud_authentication": record({
        "auth_provider": ref_string(one_of=("aws", "azure", "gcp")),
        "aws_access_key_id": secret_string(),
        "aws_assume_role_arn": secret_string(),
        "aws_cache_name": ref_string(),
        "aws_is_serverless": boolean(default=True),
        "aws_region": ref_string(),
        "aws_role_session_name": secret_string(),
        "aws_secret_access_key": secret_string(),
        "azure_client_id": secret_string(),
        "azure_client_secret": secret_string(),
        "azure_tenant_id": secret_string(),
        "gcp_service_account_json": secret_string(),
    }, nullable=True),
    "cluster_max_redirections": integer(default=5),
    "cluster_nodes": array(record({
        "ip": string(default="127.0.0.1"),
        "port": integer(default=6379, between=_PORT),
    }), len_min=1),
    "connect_timeout": integer(default=2000, between=_REDIS_TIMEOUT),
    "connection_is_proxied": boolean(default=False),
    "database": integer(default=0),
    "host": ref_string(default="127.0.0.1"),
    "keepalive_backlog": integer(between=_REDIS_TIMEOUT),
    "keepalive_pool_size": integer(default=256, between=(1, 2147483646)),
    "password": secret_string(),
    "port": integer(default=6379, between=_PORT, referenceable=True),
    "read_timeout": integer(default=2000, between=_REDIS_TIMEOUT),
    "send_timeout": integer(default=2000, between=_REDIS_TIMEOUT),
    "sentinel_master": string(),
    "sentinel_nodes": array(record({
        "host": string(default="127.0.0.1"),
        "port": integer(default=6379, between=_PORT),
    }), len_min=1),
    "sentinel_password": secret_string(),
    "sentinel_role": string(one_of=("any", "master", "slave")),
    "sentinel_username": ref_string(),
    "server_name": ref_string(),
    "ssl": boolean(default=False),
    "ssl_verify": boolean(default=False),
    "username": ref_string(),
})

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
        "ssl_verify": boolean(default=False),
        "ssl_version": string(default="tlsv1_2", one_of=("any", "tlsv1_2", "tlsv1_3")),
        "timeout": number(default=5000),
        "user": ref_string(default="postgres"),
    }),
    "redis": _REDIS,
    "strategy": string(required=True, one_of=("pgvector", "redis")),
    "threshold": number(),
}, nullable=True)

AI_PROXY_ADVANCED_CONFIG = record({
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


# --- file-log (Kong 3.13, FileLog.json) ----------------------------------------------------

FILE_LOG_CONFIG = record({
    "custom_fields_by_lua": map_of(string()),
    "path": string(required=True, match=r"^[^*&%\\`]+$", match_err="not a valid filename"),
    "reopen": boolean(default=False),
})

FILE_LOG = PluginSchema(
    name="file-log",
    config=FILE_LOG_CONFIG,
    protocols_allowed=("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough",
                       "udp", "ws", "wss"),
    protocols_default=("grpc", "grpcs", "http", "https"),
)


# --- key-auth (Kong 3.13, KeyAuth.json) ----------------------------------------------------

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
)


# --- ai-rate-limiting-advanced (Kong 3.13, AiRateLimitingAdvanced.json) --------------------

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
    "redis": _REDIS,
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


# --- prometheus (Kong 3.13, Prometheus.json) -----------------------------------------------

PROMETHEUS_CONFIG = record({
    "ai_metrics": boolean(default=False),
    "bandwidth_metrics": boolean(default=False),
    "latency_metrics": boolean(default=False),
    "per_consumer": boolean(default=False),
    "status_code_metrics": boolean(default=False),
    "upstream_health_metrics": boolean(default=False),
    "wasm_metrics": boolean(),
})

PROMETHEUS = PluginSchema(
    name="prometheus",
    config=PROMETHEUS_CONFIG,
    protocols_allowed=("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough",
                       "udp", "ws", "wss"),
    protocols_default=("grpc", "grpcs", "http", "https"),
)


PLUGIN_SCHEMAS: Mapping[str, PluginSchema] = {
    schema.name: schema for schema in (
        AI_PROXY_ADVANCED, AI_RATE_LIMITING_ADVANCED, FILE_LOG, KEY_AUTH, PROMETHEUS)
}
