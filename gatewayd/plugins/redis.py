"""Kong's shared Redis config record (``kong/tools/redis/schema.lua``), as its plugins embed it."""

from __future__ import annotations

from gatewayd.config.schema import array, boolean, integer, record, ref_string, secret_string, string

_PORT = (0, 65535)
_REDIS_TIMEOUT = (0, 2147483646)

#: Kong's shared Redis record (vectordb, ai-rate-limiting-advanced, ...).
REDIS = record({
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
