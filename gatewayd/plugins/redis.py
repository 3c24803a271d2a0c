"""Kong's shared Redis config record (``kong/tools/redis/schema.lua``, Kong 3.15), as its
plugins embed it, and the TLS a connection to it uses.

gatewayd talks to one Redis server (``host``/``port``) with txredisapi.  Sentinel,
Cluster and cloud authentication are refused at load: txredisapi has no Cluster
client, and its Sentinel client is not wired to Kong's ``sentinel_role`` and
credentials; serving them half would count budgets in the wrong place.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import optionsForClientTLS

from gatewayd.config.schema import array, boolean, integer, record, ref_string, secret_string, string
from gatewayd.upstream import UnverifiedTLS

_PORT = (0, 65535)
_SENTINEL = "Redis Sentinel: point host/port at the master, or at a proxy in front of it"
_CLUSTER = "Redis Cluster: txredisapi has no Cluster client; use one Redis server"
_POOL = ("a pool of cosockets per nginx worker: gatewayd keeps one persistent connection "
         "per Redis server")
_CLOUD = "cloud authentication to Redis (AWS, Azure, GCP): use username/password"
_REDIS_TIMEOUT = (0, 2147483646)

#: Kong's shared Redis record (vectordb, ai-rate-limiting-advanced, ...).
REDIS = record({
    "cloud_authentication": record({
        "auth_provider": ref_string(one_of=("aws", "azure", "gcp"), refused=_CLOUD),
        "aws_access_key_id": secret_string(refused=_CLOUD),
        "aws_assume_role_arn": secret_string(refused=_CLOUD),
        "aws_cache_name": ref_string(refused=_CLOUD),
        "aws_is_serverless": boolean(default=True, refused=_CLOUD),
        "aws_region": ref_string(refused=_CLOUD),
        "aws_role_session_name": secret_string(refused=_CLOUD),
        "aws_secret_access_key": secret_string(refused=_CLOUD),
        "azure_client_id": secret_string(refused=_CLOUD),
        "azure_client_secret": secret_string(refused=_CLOUD),
        "azure_tenant_id": secret_string(refused=_CLOUD),
        "gcp_service_account_json": secret_string(refused=_CLOUD),
    }, nullable=True),
    "cluster_max_redirections": integer(default=5, refused=_CLUSTER),
    "cluster_nodes": array(record({
        "ip": string(default="127.0.0.1"),
        "port": integer(default=6379, between=_PORT),
    }), len_min=1, refused=_CLUSTER),
    "connect_timeout": integer(default=2000, between=_REDIS_TIMEOUT),
    "connection_is_proxied": boolean(default=False, refused=_CLUSTER),
    "database": integer(default=0),
    "host": ref_string(default="127.0.0.1"),
    "keepalive_backlog": integer(between=_REDIS_TIMEOUT, refused=_POOL),
    "keepalive_pool_size": integer(default=256, between=(1, 2147483646), refused=_POOL),
    "password": secret_string(),
    "port": integer(default=6379, between=_PORT, referenceable=True),
    "read_timeout": integer(default=2000, between=_REDIS_TIMEOUT),
    "send_timeout": integer(default=2000, between=_REDIS_TIMEOUT),
    "sentinel_master": string(refused=_SENTINEL),
    "sentinel_nodes": array(record({
        "host": string(default="127.0.0.1"),
        "port": integer(default=6379, between=_PORT),
    }), len_min=1, refused=_SENTINEL),
    "sentinel_password": secret_string(refused=_SENTINEL),
    "sentinel_role": string(one_of=("any", "master", "slave"), refused=_SENTINEL),
    "sentinel_username": ref_string(refused=_SENTINEL),
    "server_name": ref_string(),
    "ssl": boolean(default=False),
    "ssl_verify": boolean(default=True),
    "username": ref_string(),
})


def tls_creator(redis: Mapping[str, Any]) -> IOpenSSLClientConnectionCreator | None:
    """The TLS a connection to ``redis`` uses, as Kong's ``sock:sslhandshake(nil,
    server_name, ssl_verify)`` does: none unless ``ssl``; ``server_name`` (else
    ``host``) is sent as SNI and, when ``ssl_verify``, the certificate must chain to
    the system's trust store (``SSL_CERT_FILE`` names another, as Kong's
    ``lua_ssl_trusted_certificate`` does) and name that host."""
    if not redis["ssl"]:
        return None
    name = redis.get("server_name") or redis["host"]
    if redis["ssl_verify"]:
        return optionsForClientTLS(name)
    return UnverifiedTLS(name)
