"""Services, routes, plugins and consumers: the frozen values a configuration is made of."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from attrs import field, frozen


DEFAULT_PORTS = {"https": 443, "grpcs": 443, "wss": 443, "tls": 443}


@frozen
class Service:
    """A Kong Gateway Service: where matching requests go (the AI plugins may override it)."""

    name: str
    host: str
    protocol: str = "http"
    port: int = 80
    path: str | None = None
    retries: int = 5
    connect_timeout: int = 60000
    write_timeout: int = 60000
    read_timeout: int = 60000
    enabled: bool = True
    tls_verify: bool | None = None
    tls_verify_depth: int | None = None
    tags: tuple[str, ...] = ()
    id: str | None = None
    source: str = ""

    @property
    def url(self) -> str:
        port = "" if DEFAULT_PORTS.get(self.protocol, 80) == self.port else f":{self.port}"
        return f"{self.protocol}://{self.host}{port}{self.path or ''}"


@frozen
class Route:
    """A Kong Route: which requests reach a service (see :mod:`gatewayd.router`);
    ``paths`` are prefixes, or regexes when they start with ``~``."""

    name: str
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None
    strip_path: bool = True
    service: str | None = None
    preserve_host: bool = False
    protocols: tuple[str, ...] = ("http", "https")
    hosts: tuple[str, ...] | None = None
    snis: tuple[str, ...] | None = None
    headers: Mapping[str, tuple[str, ...]] | None = field(default=None, hash=False)
    regex_priority: int = 0
    path_handling: str = "v0"
    https_redirect_status_code: int = 426
    request_buffering: bool = True
    response_buffering: bool = True
    tags: tuple[str, ...] = ()
    id: str | None = None
    source: str = ""


@frozen
class Plugin:
    """A configured plugin; ``config`` is Kong-validated with every default filled in."""

    name: str
    id: str
    enabled: bool
    config: Mapping[str, Any] = field(hash=False)
    service: str | None = None
    route: str | None = None
    #: The consumer's name (username, else custom_id), for a consumer-scoped instance.
    consumer: str | None = None
    protocols: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    instance_name: str | None = None
    source: str = ""


@frozen
class KeyCredential:
    """A key-auth credential; ``repr`` never shows the key."""

    key: str = field(repr=False)
    id: str
    tags: tuple[str, ...] = ()


@frozen
class Consumer:
    """A Kong Consumer: who a request comes from, once key-auth has found its key."""

    id: str
    username: str | None = None
    custom_id: str | None = None
    tags: tuple[str, ...] = ()
    keyauth_credentials: tuple[KeyCredential, ...] = ()
    source: str = ""

    @property
    def name(self) -> str:
        """What decK keys a consumer by: its username, else its custom_id."""
        return self.username or self.custom_id or self.id


@frozen
class Config:
    """One consistent snapshot of the gateway's entities; a reload builds a new one."""

    services: Mapping[str, Service] = field(hash=False)
    routes: tuple[Route, ...]
    plugins: tuple[Plugin, ...]
    sources: tuple[str, ...]
    files: Mapping[str, Mapping[str, Any]] = field(hash=False, factory=dict)
    """Per source file: its ``_format_version`` and, if given, ``_transform`` and ``_info``."""
    consumers: Mapping[str, Consumer] = field(hash=False, factory=dict)
    """By name (username, else custom_id), as decK matches them across files."""
    digest: str = ""
    """MD5 of the state files' text as read, like Kong's ``configuration_hash``."""

    def plugins_for(self, route: Route) -> Mapping[str, Plugin]:
        """The enabled plugins that run for ``route`` whoever the consumer, one per name,
        Kong's precedence: route and service > route > service > global."""
        best: dict[str, tuple[int, Plugin]] = {}
        for plugin in self.plugins:
            if not plugin.enabled or plugin.consumer is not None:
                continue
            if plugin.route is not None and plugin.route != route.name:
                continue
            if plugin.service is not None and plugin.service != route.service:
                continue
            rank = 2 * (plugin.route is not None) + (plugin.service is not None)
            held = best.get(plugin.name)
            if held is None or rank > held[0]:
                best[plugin.name] = (rank, plugin)
        return MappingProxyType({name: best[name][1] for name in sorted(best)})
