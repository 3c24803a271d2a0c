"""The daemon: a configuration snapshot, the resource tree that serves it, the listeners.

:func:`build` composes everything from values it is given (configuration,
reactor, HTTP client, token sources), so tests build a gateway with fakes
while ``twistd`` gets the real ones from :mod:`gatewayd.daemon.tap`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import attrs
from attrs import define, field, frozen
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.application import service as application
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.internet.interfaces import IDelayedCall
from twisted.web.client import HTTPConnectionPool
from twisted.web.http import HTTPChannel
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from treq.client import HTTPClient
from zope.interface import provider

from gatewayd.config import Config, Plugin, Route
from gatewayd.exchange import Exchange, entity_id
from gatewayd.plugins.key_auth import KeyAuth
from gatewayd.plugins.file_log import DEFAULT_BACKLOG_BYTES, FileLog, Rotation
from gatewayd.plugins.prometheus import Metrics, PrometheusLog
from gatewayd.phases import AccessGate, ConfigurationError, Phases, compile_phases
from gatewayd.plugins.ai_rate_limiting_advanced.handler import AIRateLimiter, LocalStore, Store, redis_identity, redis_store
from gatewayd.daemon.status import CountingSite, Readiness, Stats, status_root
from gatewayd.providers.auth import (
    CredentialsError,
    GoogleTokenSource,
    TokenSource,
    default_credentials,
    service_account_credentials,
)
from gatewayd.providers.gemini import Target, target_from_config
from gatewayd.plugins.ai_proxy_advanced.balancer import Balancer, BalancerConfig, Candidate, UnsupportedBalancer
from gatewayd import errors
from gatewayd.plugins.ai_proxy_advanced.handler import (
    MAX_BODY,
    AIProxy,
    BoundedContent,
    Directory,
    body_size,
    messages_tree,
    respond_error,
)
from gatewayd.routing import RouteTable
from gatewayd.translate import SignatureMemory
from gatewayd.upstream import DEFAULT_POOL_SIZE, UpstreamClient, connection_pool

NO_ROUTE = b'{"message":"no Route matched with those values"}'
#: Seconds a client may stay silent while sending its request's headers or body.
CLIENT_IDLE_TIMEOUT = 60
#: Seconds a client may take to send one whole request (headers and body), however steadily.
REQUEST_READ_TIMEOUT = 300.0

#: Seconds the requests cut at the end of the grace period get to write their log records.
CUT_REQUESTS_SETTLE = 5.0


__all__ = ["ConfigurationError", "Gateway", "GatewayRoot", "build"]


@frozen
class RouteHandler:
    """What serves the requests of one route (or of no route at all)."""

    resource: Resource
    file_logs: tuple[FileLog, ...]
    route: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    phases: Phases = Phases()


@frozen
class Runtime:
    """One configuration, compiled: requests keep the snapshot they started with."""

    config: Config
    table: RouteTable[RouteHandler]
    unmatched: RouteHandler


@define
class _Compiling:
    """What one compilation reuses or creates: committed only if the whole config compiles."""

    token_sources: dict[str, TokenSource] = field(factory=dict)
    file_logs: dict[tuple[str, bool], FileLog] = field(factory=dict)
    balancers: dict[Any, Balancer] = field(factory=dict)


@define(slots=False)
class Gateway(application.Service):
    """Holds the live snapshot and the things that outlive one: pool, tokens, log files.

    It also knows the requests in flight (from routing until their log record
    is written), so that stopping can wait for them.
    """

    reactor: Any
    client: HTTPClient | UpstreamClient
    pool: HTTPConnectionPool | None = None
    make_token_source: Callable[[Target], TokenSource] | None = None
    token_sources: dict[str, TokenSource] = field(factory=dict)
    file_logs: dict[tuple[str, bool], FileLog] = field(factory=dict)
    signatures: SignatureMemory = field(factory=SignatureMemory)
    #: Balancers by plugin, targets and settings: a reload keeps what they learnt.
    balancers: dict[Any, Balancer] = field(factory=dict)
    runtime: Runtime | None = None
    metrics: Metrics = field(factory=Metrics)
    stats: Stats = field(factory=Stats)
    #: Rate-limit counter stores that outlive a snapshot: memory per plugin id, Redis per server.
    stores: dict[Any, Store] = field(factory=dict)
    shutdown_grace: float = 30.0
    rotation: Rotation | None = None
    #: Bytes of records each file-log keeps in memory while its file takes no writes.
    file_log_backlog: int = DEFAULT_BACKLOG_BYTES
    in_flight: set[Request] = field(factory=set)
    _idle: list[Deferred[None]] = field(factory=list)
    _retired_logs: list[FileLog] = field(factory=list)

    log = Logger()

    def load(self, config: Config) -> Runtime:
        """Compile ``config`` and make it the one new requests see.

        Nothing changes unless the whole configuration compiles.  Token sources,
        balancers (with their targets' health and latency) and file logs whose
        settings did not change carry over; file logs no
        longer configured are closed (a request of the old snapshot still in
        flight reopens its file for its record, then closes it again).
        """
        compiling = _Compiling()
        runtime = self._compile(config, compiling)
        retired = [log for key, log in self.file_logs.items() if key not in compiling.file_logs]
        self.token_sources, self.file_logs = compiling.token_sources, compiling.file_logs
        self.balancers = compiling.balancers
        self.runtime = runtime
        for file_log in retired:
            file_log.file.retire()
        self._retired_logs.extend(retired)
        self.stats.loaded(config.digest)
        return runtime

    def startService(self) -> None:
        super().startService()
        # Fetch tokens now, so the first request does not wait for a refresh.
        for source in self.token_sources.values():
            source.token().addErrback(lambda failure: None)  # the source logs its failures

    def reopen_logs(self) -> None:
        """Reopen every file-log path, after logrotate moved the files away."""
        for file_log in self.file_logs.values():
            file_log.file.reopen()

    def request_started(self, request: Request) -> None:
        self.in_flight.add(request)
        self.stats.request_started()

    def request_done(self, request: Request) -> None:
        self.in_flight.discard(request)
        self.stats.request_finished()
        if not self.in_flight:
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)

    def stopService(self) -> Any:
        super().stopService()
        self.stats.ready = False
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        """Let requests in flight finish within the grace period, cut the rest, then close."""
        if self.in_flight:
            self.log.info(
                "Stopping: waiting up to {grace}s for {count} requests in flight",
                grace=self.shutdown_grace,
                count=len(self.in_flight),
            )
            if not await self.until_idle(self.shutdown_grace):
                self.log.warn(
                    "Stopping: grace period over, cutting {count} requests in flight",
                    count=len(self.in_flight),
                )
                for request in list(self.in_flight):
                    if request.channel is not None:  # None: the client already left
                        request.channel.transport.abortConnection()
                # Cut requests still write their records; that takes a reactor turn or two.
                await self.until_idle(CUT_REQUESTS_SETTLE)
        for store in self.stores.values():
            close = getattr(store, "close", None)
            if close is not None:
                close()
        # Retired logs too: a request of an older snapshot may have just buffered its record.
        for file_log in [*self.file_logs.values(), *self._retired_logs]:
            file_log.file.close()
        if self.pool is not None:
            await self.pool.closeCachedConnections()

    async def until_idle(self, timeout: float) -> bool:
        """Whether every request in flight finished within ``timeout`` seconds."""
        if not self.in_flight:
            return True
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        waiter.addTimeout(timeout, self.reactor)
        try:
            await waiter
        except TimeoutError:
            return False
        return True

    def _compile(self, config: Config, compiling: _Compiling) -> Runtime:
        entries = []
        for route in config.routes:
            plugins = config.plugins_for(route)
            service = config.services.get(route.service) if route.service else None
            service_entity = _entity("service", service) if service is not None else None
            handler = RouteHandler(
                resource=self._route_resource(plugins, compiling),
                file_logs=self._file_logs(plugins, compiling),
                route=_route_entity(route, service_entity),
                service=service_entity,
                phases=compile_phases(plugins, config, self._phase_builders()),
            )
            entries.append((route.paths, route.methods, getattr(route, "hosts", None), handler))
        global_plugins = {
            p.name: p for p in config.plugins if p.enabled and p.route is None and p.service is None
        }
        unmatched = RouteHandler(
            resource=NoRoute(),
            file_logs=self._file_logs(global_plugins, compiling),
            # Kong answers an unmatched request before any access phase; only logging runs.
            phases=compile_phases(global_plugins, config, self._phase_builders()[-1:]),
        )
        return Runtime(config, RouteTable.build(entries), unmatched)

    def _phase_builders(self) -> list[tuple[str, Any]]:
        """Kong's plugin order (priority): key-auth, ai-rate-limiting-advanced, prometheus."""
        return [
            ("key-auth", lambda plugin, config, _: (KeyAuth.from_plugin(plugin, config), None)),
            ("ai-rate-limiting-advanced", self._rate_limiter),
            ("prometheus", lambda plugin, config, _: (None, PrometheusLog.from_plugin(plugin, self.metrics))),
        ]

    def _rate_limiter(self, plugin: Plugin, config: Config, plugins: Mapping[str, Plugin]) -> tuple[Any, Any]:
        ai = plugins.get("ai-proxy-advanced")
        if ai is None:
            return None, None  # no LLM traffic on this route: nothing to count
        target = ai.config["targets"][0]["model"]
        if plugin.config["strategy"] == "redis":
            key: Any = ("redis", *redis_identity(plugin))
            if key not in self.stores:
                store = self.stores[key] = redis_store(plugin, self.reactor, self._redis_state)
                self._redis_state(store.address, store.reachable)
        else:
            key = ("local", plugin.id)
            self.stores.setdefault(key, LocalStore(self.reactor))
        limiter = AIRateLimiter.from_plugin(
            plugin, target["provider"], (target.get("options") or {}).get("input_cost") or 0.0,
            self.stores[key], self.reactor,
        )
        return limiter, limiter

    def _redis_state(self, address: str, reachable: bool) -> None:
        """A rate-limit Redis came or went: ``/status`` and ``gatewayd_redis_reachable`` show it."""
        self.stats.redis[address] = reachable
        self.metrics.redis_reachable.labels(address).set(1 if reachable else 0)

    def _route_resource(self, plugins: Mapping[str, Plugin], compiling: _Compiling) -> Resource:
        ai = plugins.get("ai-proxy-advanced")
        if ai is None:
            return UpstreamNotImplemented()
        resource = Directory()  # an AI route: v1/... below its path, Anthropic's 404 for the rest
        for name, child in messages_tree(self._ai_proxy(ai, compiling)).items():
            resource.putChild(name, child)
        return resource

    def _ai_proxy(self, plugin: Plugin, compiling: _Compiling) -> AIProxy:
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
            if target.auth.kind == "api_key" and (target_config.get("auth") or {}).get("gcp_service_account_json"):
                self.log.warn(
                    "{source}: targets[{index}].auth.gcp_service_account_json is not JSON; "
                    "using it as a Google API key (x-goog-api-key)",
                    source=plugin.source,
                    index=index,
                )
            if target.auth.kind in ("service_account", "adc"):
                identity = target.auth.identity()
                if identity not in compiling.token_sources:
                    compiling.token_sources[identity] = self.token_sources.get(identity) or self._token_source(
                        plugin, index, target
                    )
            targets.append(target)
        try:
            settings = BalancerConfig.from_config(plugin.config.get("balancer"))
        except UnsupportedBalancer as error:
            raise ConfigurationError(f"{plugin.source}: plugins ({plugin.name}): config.{error}") from None
        candidates = tuple(
            Candidate(target.model, target_config.get("weight") or 100)
            for target, target_config in zip(targets, plugin.config["targets"])
        )
        key = (plugin.id, tuple(targets), candidates, settings)
        balancer = compiling.balancers[key] = self.balancers.get(key) or Balancer(
            list(candidates), settings, self.reactor
        )
        return AIProxy(
            plugin_id=plugin.id,
            targets=tuple(targets),
            client=self._client(settings.connect_timeout),
            tokens=compiling.token_sources,
            reactor=self.reactor,
            signatures=self.signatures,
            balancer=balancer,
            max_body=plugin.config.get("max_request_body_size") or MAX_BODY,
        )

    def _client(self, connect_timeout: float) -> HTTPClient | UpstreamClient:
        """An upstream client on the shared pool with the plugin's connect timeout."""
        if self.pool is None:
            return self.client  # a client given by a test
        return UpstreamClient.pooled(self.reactor, self.pool, connect_timeout)

    def _token_source(self, plugin: Plugin, index: int, target: Target) -> TokenSource:
        assert self.make_token_source is not None
        try:
            return self.make_token_source(target)
        except CredentialsError as error:
            raise ConfigurationError(
                f"{plugin.source}: plugins ({plugin.name}): config.targets[{index}].auth: {error}"
            ) from None

    def _file_logs(self, plugins: Mapping[str, Plugin], compiling: _Compiling) -> tuple[FileLog, ...]:
        plugin = plugins.get("file-log")
        if plugin is None:
            return ()
        key = (plugin.config["path"], bool(plugin.config.get("reopen")))
        if key not in compiling.file_logs:
            compiling.file_logs[key] = self.file_logs.get(key) or FileLog.open(
                key[0], self.reactor, reopen=key[1], rotation=self.rotation,
                backlog_limit=self.file_log_backlog, report=self.metrics.file_log_report,
            )
        return (compiling.file_logs[key],)



class NoRoute(Resource):
    """Kong's answer when no route matches."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader("content-type", "application/json; charset=utf-8")
        return NO_ROUTE


class RequestTimeout(Resource):
    """The answer to a request the client did not finish sending in time (see GatewayChannel)."""

    isLeaf = True

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def render(self, request: Request) -> object:
        respond_error(request, read_timeout_error(self.seconds))
        return NOT_DONE_YET


class UpstreamNotImplemented(Resource):
    """A route with no AI plugin: plain proxying to its service is not built yet."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(502)
        request.setHeader("content-type", "application/json; charset=utf-8")
        return b'{"message":"this route has no ai-proxy-advanced plugin; gatewayd proxies only LLM traffic"}'


def read_timeout_error(seconds: float) -> errors.APIError:
    return errors.APIError(
        408, "timeout_error", f"the request was not received within {seconds:g} seconds"
    )


class GatewayChannel(HTTPChannel):
    """An ``HTTPChannel`` with an overall deadline for reading each request.

    Twisted's idle timeout resets on every byte, so a client trickling its
    body a byte at a time would hold its connection forever.  From the first
    byte of a request, ``factory.request_read_timeout`` seconds later what was
    not read is given up: a request whose headers are in is answered 408 by
    :class:`GatewayRoot` (routed, so its route's file-log records it) and the
    connection closes; one still sending its headers gets a bare 408 and is
    dropped.  (Pipelined requests, read from the buffer, run without a deadline.)
    """

    _deadline: IDelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest and data:
            self._deadline = self.callLater(self.factory.request_read_timeout, self._too_slow)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: object) -> None:
        self._stop_deadline()
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        seconds = self.factory.request_read_timeout
        request = self.requests[-1] if self.requests else None
        if request is None or request.content is None or self._handlingRequest:
            body = read_timeout_error(seconds).to_json()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.dataReceived = lambda data: None  # type: ignore[method-assign]
            self.setTimeout(None)
            self.loseConnection()
            return
        request.gatewayd_read_timeout = seconds  # type: ignore[attr-defined]
        # The rest of the body would be read as the next request: answer, then close.
        self.persistent = False
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        self.allContentReceived()


class GatewaySite(CountingSite):
    """The daemon's ``Site``: connections counted, request bodies bounded by ``max_body`` bytes,
    each request read within ``request_read_timeout`` seconds, no access line of its own.

    ``timeout`` (Twisted's idle timeout) is what stops a stalled client: it
    runs while the headers and the body are read, resets on every byte
    received, and drops the connection when the client stays silent that long.
    """

    protocol = GatewayChannel
    max_body = MAX_BODY
    request_read_timeout = REQUEST_READ_TIMEOUT

    def __init__(self, resource: Resource, stats: Stats, **kwargs: Any) -> None:
        super().__init__(resource, stats, requestFactory=_json_request, **kwargs)

    def getContentFile(self, length: int | None) -> BoundedContent:
        return BoundedContent(self.max_body, length)

    def log(self, request: Request) -> None:
        """No access line: the file-log plugin is the access log.

        twisted.web's own line per request (to the twistd log, formatted with
        a timestamp each time) would cost more than a tenth of a request's CPU
        and say less than the file-log record.
        """


@provider(INonQueuedRequestFactory)
def _json_request(channel: HTTPChannel) -> Request:
    """A Request that leaves its body alone: bodies here are JSON, never forms.

    twisted.web parses every POST's Content-Type with the email package to look
    for form data, about 8% of a request's CPU in the bench.
    """
    return Request(channel, parsePOSTFormSubmission=False)


class GatewayRoot(Resource):
    """The root of the tree: picks the route by Kong's rules, then hands over."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        runtime = self.gateway.runtime
        assert runtime is not None
        exchange = Exchange(started=self.gateway.reactor.seconds(), request_size=body_size(request))
        request.gatewayd_exchange = exchange  # type: ignore[attr-defined]
        self.gateway.request_started(request)
        full_path = request.path.decode("latin-1")
        host = (request.getHeader("host") or "")
        match = runtime.table.match(request.method.decode("latin-1"), full_path, host)
        handler = runtime.unmatched if match is None else match.value
        exchange.route, exchange.service = handler.route, handler.service
        request.notifyFinish().addBoth(self._finished, request, exchange, handler)
        if match is not None:
            remainder = match.remainder.strip("/")
            request.prepath = [s.encode("latin-1") for s in match.matched.strip("/").split("/") if s]
            request.postpath = [s.encode("latin-1") for s in remainder.split("/")] if remainder else []
        read_timeout = getattr(request, "gatewayd_read_timeout", None)
        if read_timeout is not None:
            return RequestTimeout(read_timeout)
        if handler.phases.access:
            return AccessGate(handler.phases.access, handler.resource, exchange)
        return handler.resource

    def _finished(self, result: object, request: Request, exchange: Exchange, handler: RouteHandler) -> None:
        if result is not None:  # an errback: the client went away
            exchange.client_gone = True
        finished = self.gateway.reactor.seconds()

        def write(_: object) -> None:
            if handler.file_logs or handler.phases.log:
                record = exchange.record(request, finished)
                for plugin in handler.phases.log:
                    plugin.log(request, exchange, record)
                for file_log in handler.file_logs:
                    file_log.write(record)
            self.gateway.request_done(request)

        (exchange.handled or succeed(None)).addCallback(write)


def _entity(kind: str, value: Any) -> dict[str, Any]:
    """A route or service as Kong logs it: its fields, and an id stable across restarts."""
    entity = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in attrs.asdict(value, recurse=False).items()
        if v is not None and k != "source"
    }
    entity["id"] = value.id or entity_id(kind, value.name)
    return entity


def _route_entity(route: Route, service: dict[str, Any] | None) -> dict[str, Any]:
    """The route as Kong logs it, pointing at its service by the service's own id."""
    entity = _entity("route", route)
    if service is not None:
        entity["service"] = {"id": service["id"]}
    return entity



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
    status_listen: str | None = None,
    client: HTTPClient | UpstreamClient | None = None,
    make_token_source: Callable[[Target], TokenSource] | None = None,
    shutdown_grace: float = 30.0,
    rotation: Rotation | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    request_read_timeout: float = REQUEST_READ_TIMEOUT,
    file_log_backlog: int = DEFAULT_BACKLOG_BYTES,
) -> tuple[application.MultiService, Gateway]:
    """Compose the daemon's services for ``config``.

    ``pool_size`` bounds the idle upstream connections kept open per host;
    ``request_read_timeout`` the seconds a client may take to send a request;
    ``file_log_backlog`` the bytes of records a file-log keeps while its disk is full.
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
        shutdown_grace=shutdown_grace,
        rotation=rotation,
        file_log_backlog=file_log_backlog,
    )
    gateway.load(config)
    top = application.MultiService()
    gateway.setServiceParent(top)
    site = GatewaySite(GatewayRoot(gateway), gateway.stats, timeout=CLIENT_IDLE_TIMEOUT)
    site.request_read_timeout = request_read_timeout
    site.displayTracebacks = False
    listeners = []
    for description in listen:
        listener = StreamServerEndpointService(serverFromString(reactor, description), site)
        listener.setServiceParent(top)
        listeners.append(listener)
    if status_listen is not None:
        status_site = CountingSite(status_root(gateway.stats, gateway.metrics), Stats(), "StatusSite")
        Readiness(
            serverFromString(reactor, status_listen),
            status_site,
            gateway.stats,
            listeners,
            reactor,
            lambda: Deferred.fromCoroutine(gateway.until_idle(shutdown_grace + CUT_REQUESTS_SETTLE)),
        ).setServiceParent(top)
    return top, gateway
