"""The daemon: a configuration snapshot, the resource tree that serves it, the listeners.

:func:`build` composes everything from values it is given (configuration,
reactor, HTTP client, token sources), so tests build a gateway with fakes
while ``twistd`` gets the real ones from :mod:`gatewayd.tap`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import attrs
from attrs import define, field, frozen
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import succeed
from twisted.application import service as application
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from treq.client import HTTPClient

from gatewayd.config import Config, Plugin, Route, Service
from gatewayd.exchange import Exchange, entity_id
from gatewayd.logs import FileLog
from gatewayd.providers.auth import (
    GoogleTokenSource,
    TokenSource,
    default_credentials,
    service_account_credentials,
)
from gatewayd.providers.gemini import Target, target_from_config
from gatewayd.proxy import AIProxy, NotFound, messages_tree
from gatewayd.routing import RouteTable
from gatewayd.translate import SignatureMemory
from gatewayd.upstream import DEFAULT_POOL_SIZE, UpstreamClient, connection_pool

NO_ROUTE = b'{"message":"no Route matched with those values"}'


class ConfigurationError(ValueError):
    """The configuration loaded but cannot be served; names the plugin and field."""


@frozen
class RouteHandler:
    """What serves the requests of one route (or of no route at all)."""

    resource: Resource
    file_logs: tuple[FileLog, ...]
    route: dict[str, Any] | None = None
    service: dict[str, Any] | None = None


@frozen
class Runtime:
    """One configuration, compiled: requests keep the snapshot they started with."""

    config: Config
    table: RouteTable[RouteHandler]
    unmatched: RouteHandler


@define(slots=False)
class Gateway(application.Service):
    """Holds the live snapshot and the things that outlive one: pool, tokens, log files."""

    reactor: Any
    client: HTTPClient | UpstreamClient
    pool: HTTPConnectionPool | None = None
    make_token_source: Callable[[Target], TokenSource] | None = None
    token_sources: dict[str, TokenSource] = field(factory=dict)
    file_logs: dict[tuple[str, bool], FileLog] = field(factory=dict)
    signatures: SignatureMemory = field(factory=SignatureMemory)
    runtime: Runtime | None = None

    log = Logger()

    def load(self, config: Config) -> Runtime:
        """Compile ``config`` and make it the one new requests see."""
        runtime = self._compile(config)
        self.runtime = runtime
        return runtime

    def stopService(self) -> Any:
        super().stopService()
        for file_log in self.file_logs.values():
            file_log.file.close()
        if self.pool is not None:
            return self.pool.closeCachedConnections()
        return None

    def _compile(self, config: Config) -> Runtime:
        entries = []
        for route in config.routes:
            plugins = config.plugins_for(route)
            service = config.services.get(route.service) if route.service else None
            handler = RouteHandler(
                resource=self._route_resource(plugins),
                file_logs=self._file_logs(plugins),
                route=_route_entity(route),
                service=_service_entity(service) if service is not None else None,
            )
            entries.append((route.paths, route.methods, getattr(route, "hosts", None), handler))
        global_plugins = {
            p.name: p for p in config.plugins if p.enabled and p.route is None and p.service is None
        }
        unmatched = RouteHandler(resource=NoRoute(), file_logs=self._file_logs(global_plugins))
        return Runtime(config, RouteTable.build(entries), unmatched)

    def _route_resource(self, plugins: Mapping[str, Plugin]) -> Resource:
        ai = plugins.get("ai-proxy-advanced")
        if ai is None:
            return UpstreamNotImplemented()
        resource = RouteResource()
        for name, child in messages_tree(self._ai_proxy(ai)).items():
            resource.putChild(name, child)
        return resource

    def _ai_proxy(self, plugin: Plugin) -> AIProxy:
        if plugin.config.get("llm_format") != "anthropic":
            raise ConfigurationError(
                f"{plugin.source}: plugins ({plugin.name}): config.llm_format: "
                f"{plugin.config.get('llm_format')!r} is not served yet; gatewayd speaks "
                "the Anthropic Messages API (llm_format: anthropic)"
            )
        targets = []
        for index, target_config in enumerate(plugin.config["targets"]):
            try:
                target = target_from_config(target_config, index)
            except ValueError as error:
                raise ConfigurationError(f"{plugin.source}: plugins ({plugin.name}): config.{error}") from None
            if target.auth.kind in ("service_account", "adc"):
                identity = target.auth.identity()
                if identity not in self.token_sources:
                    assert self.make_token_source is not None
                    self.token_sources[identity] = self.make_token_source(target)
            targets.append(target)
        balancer = plugin.config.get("balancer") or {}
        read_timeout = (balancer.get("read_timeout") or 60000) / 1000
        return AIProxy(
            plugin_id=plugin.id,
            targets=tuple(targets),
            client=self.client,
            tokens=self.token_sources,
            reactor=self.reactor,
            signatures=self.signatures,
            read_timeout=read_timeout,
        )

    def _file_logs(self, plugins: Mapping[str, Plugin]) -> tuple[FileLog, ...]:
        plugin = plugins.get("file-log")
        if plugin is None:
            return ()
        key = (plugin.config["path"], bool(plugin.config.get("reopen")))
        if key not in self.file_logs:
            self.file_logs[key] = FileLog.open(key[0], self.reactor, reopen=key[1])
        return (self.file_logs[key],)


class RouteResource(Resource):
    """An AI route: ``v1/...`` below its path; anything else is Anthropic's 404."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFound()

    def render(self, request: Request) -> object:
        return NotFound().render(request)


class NoRoute(Resource):
    """Kong's answer when no route matches."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader("content-type", "application/json; charset=utf-8")
        return NO_ROUTE


class UpstreamNotImplemented(Resource):
    """A route with no AI plugin: plain proxying to its service is not built yet."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(502)
        request.setHeader("content-type", "application/json; charset=utf-8")
        return b'{"message":"this route has no ai-proxy-advanced plugin; gatewayd proxies only LLM traffic"}'


class GatewayRoot(Resource):
    """The root of the tree: picks the route by Kong's rules, then hands over."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        runtime = self.gateway.runtime
        assert runtime is not None
        exchange = Exchange(started=self.gateway.reactor.seconds(), request_size=_size(request))
        request.gatewayd_exchange = exchange  # type: ignore[attr-defined]
        full_path = request.path.decode("latin-1")
        host = (request.getHeader("host") or "")
        match = runtime.table.match(request.method.decode("latin-1"), full_path, host)
        handler = runtime.unmatched if match is None else match.value
        exchange.route, exchange.service = handler.route, handler.service
        request.notifyFinish().addBoth(self._finished, request, exchange, handler)
        if match is None:
            return handler.resource
        remainder = match.remainder.strip("/")
        request.prepath = [s.encode("latin-1") for s in match.matched.strip("/").split("/") if s]
        request.postpath = [s.encode("latin-1") for s in remainder.split("/")] if remainder else []
        return handler.resource

    def _finished(self, result: object, request: Request, exchange: Exchange, handler: RouteHandler) -> None:
        if result is not None:  # an errback: the client went away
            exchange.client_gone = True
        if not handler.file_logs:
            return
        finished = self.gateway.reactor.seconds()

        def write(_: object) -> None:
            record = exchange.record(request, finished)
            for file_log in handler.file_logs:
                file_log.write(record)

        (exchange.handled or succeed(None)).addCallback(write)


class GatewaySite(Site):
    """The HTTP site; the file-log plugin is its access log.

    twisted.web's own access line per request (to the twistd log, formatted
    with a timestamp each time) would cost more than a tenth of a request's
    CPU and say less than the file-log record.
    """

    def log(self, request: Request) -> None:
        pass


def _size(request: Request) -> int:
    content = request.content
    if content is None:
        return 0
    content.seek(0, 2)
    size = content.tell()
    content.seek(0)
    return size


def _entity(kind: str, value: Any) -> dict[str, Any]:
    """A route or service as Kong logs it: its fields, and an id stable across restarts."""
    entity = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in attrs.asdict(value, recurse=False).items()
        if v is not None and k != "source"
    }
    entity["id"] = value.id or entity_id(kind, value.name)
    return entity


def _route_entity(route: Route) -> dict[str, Any]:
    entity = _entity("route", route)
    if route.service:
        entity["service"] = {"id": entity_id("service", route.service)}
    return entity


def _service_entity(service: Service) -> dict[str, Any]:
    return _entity("service", service)


def google_token_sources(reactor: Any) -> Callable[[Target], TokenSource]:
    """Make a google-auth token source for each distinct set of credentials."""

    def make(target: Target) -> TokenSource:
        if target.auth.kind == "service_account":
            secret = target.auth.secret or ""
            # Parse now, so a broken key stops the daemon at start, not at first request.
            credentials = service_account_credentials(secret)
            return GoogleTokenSource(lambda: credentials, reactor, reactor)
        return GoogleTokenSource(default_credentials, reactor, reactor)

    return make


def build(
    config: Config,
    reactor: Any,
    *,
    listen: Sequence[str],
    client: HTTPClient | UpstreamClient | None = None,
    make_token_source: Callable[[Target], TokenSource] | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> tuple[application.MultiService, Gateway]:
    """Compose the daemon's services for ``config``.

    ``pool_size`` bounds the idle upstream connections kept open per host.
    """
    pool = None
    if client is None:
        pool = connection_pool(reactor, pool_size)
        client = UpstreamClient.pooled(reactor, pool)
    gateway = Gateway(
        reactor,
        client,
        pool,
        make_token_source or google_token_sources(reactor),
    )
    gateway.load(config)
    top = application.MultiService()
    gateway.setServiceParent(top)
    site = GatewaySite(GatewayRoot(gateway))
    site.displayTracebacks = False
    for description in listen:
        StreamServerEndpointService(serverFromString(reactor, description), site).setServiceParent(top)
    return top, gateway
