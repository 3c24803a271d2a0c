"""The daemon: the live configuration snapshot, the requests in flight, the listeners.

:func:`build` composes everything from values it is given (configuration,
reactor, HTTP client, token sources), so tests build a gateway with fakes
while ``twistd`` gets the real ones from :mod:`gatewayd.daemon.tap`.  What one
request does is :mod:`gatewayd.pipeline`'s business; this module only holds
what outlives requests and snapshots.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from attrs import define, field
from prometheus_client import CollectorRegistry
from twisted.application import service as application
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request
from treq.client import HTTPClient

from gatewayd.config import Config, Service
from gatewayd.daemon.health import Health
from gatewayd.daemon.status import Readiness, Stats, status_root
from gatewayd.daemon.tls import Certificates, listener
from gatewayd.pipeline import GatewayRoot, Snapshot, compile_snapshot
from gatewayd.plugins import CompileContext, ConfigurationError, Kept, Registry, installed
from gatewayd.plugins.file_log import DEFAULT_BACKLOG_BYTES, Rotation
from gatewayd.proxy import ServiceProxy, ServiceResource
from gatewayd.providers.auth import (
    GoogleTokenSource,
    TokenSource,
    default_credentials,
    service_account_credentials,
)
from gatewayd.providers.gemini import Target
from gatewayd.site import CLIENT_IDLE_TIMEOUT, REQUEST_READ_TIMEOUT, CountingSite, GatewaySite
from gatewayd.http11 import UpstreamClient, UpstreamPool
from gatewayd.upstream import DEFAULT_POOL_SIZE, connection_pool

#: Seconds the requests cut at the end of the grace period get to write their log records.
CUT_REQUESTS_SETTLE = 5.0


__all__ = ["ConfigurationError", "Gateway", "GatewayRoot", "build"]


@define(slots=False)
class Gateway(application.Service):
    """Holds the live snapshot and what outlives one: pool, tokens, log files, counters.

    It also knows the requests in flight (from routing until their log record
    is written), so that stopping can wait for them.
    """

    reactor: Any
    client: HTTPClient | UpstreamClient | None
    #: Agent's pool, for the plain proxy to services.
    pool: HTTPConnectionPool | None = None
    #: The model calls' pool (None when a test gave its own client).
    llm_pool: UpstreamPool | None = None
    make_token_source: Callable[[Target], TokenSource] | None = None
    registry: Registry = field(factory=installed)
    #: What plugins keep across snapshots (connections, files, balancers), by key.
    kept: Kept = field(factory=Kept)
    metrics_registry: CollectorRegistry = field(factory=CollectorRegistry)
    runtime: Snapshot | None = None
    stats: Stats = field(factory=Stats)
    shutdown_grace: float = 30.0
    rotation: Rotation | None = None
    #: Bytes of records each file-log keeps in memory while its file takes no writes.
    file_log_backlog: int = DEFAULT_BACKLOG_BYTES
    health: Health = field(init=False)
    in_flight: set[Request] = field(factory=set)
    #: The TLS listeners' certificates, read again on SIGHUP.
    certificates: list[Certificates] = field(factory=list)
    _idle: list[Deferred[None]] = field(factory=list)
    _retired: list[Any] = field(factory=list)

    log = Logger()

    def __attrs_post_init__(self) -> None:
        self.health = Health(self.metrics_registry, self.stats)

    def load(self, config: Config) -> Snapshot:
        """Compile ``config`` and make it the one new requests see.

        Nothing changes unless the whole configuration compiles.  What plugins
        kept and ask for again (token sources, balancers with their targets'
        health, file logs whose settings did not change) carries over; what no
        plugin asks for any more is retired (a file log closes; a request of the
        old snapshot still in flight reopens it for its record, then closes it).
        """
        context = CompileContext(config, self.reactor, self.kept, self._facilities())
        snapshot = compile_snapshot(config, self.registry, context, self._upstream)
        retired = [value for key, value in self.kept.live.items() if key not in context.made]
        new = [value for key, value in context.made.items() if key not in self.kept.live]
        self.kept.live = dict(context.made)
        self.runtime = snapshot
        for value in retired:
            _call(value, "retire")
        self._retired.extend(retired)
        if self.running:
            for value in new:
                _call(value, "start")
        self.stats.loaded(config.digest)
        return snapshot

    def _facilities(self) -> dict[str, Any]:
        return {
            "client_for": self._client,
            "token_source_for": self.make_token_source,
            "metrics_registry": self.metrics_registry,
            "file_log_rotation": self.rotation,
            "file_log_backlog": self.file_log_backlog,
            "health": self.health,
        }

    def _client(self, connect_timeout: float) -> HTTPClient | UpstreamClient | None:
        """An upstream client on the shared pool with a plugin's connect timeout."""
        if self.llm_pool is None:
            return self.client  # a client given by a test
        return UpstreamClient(self.llm_pool, connect_timeout)

    def _upstream(self, service: Service) -> Resource:
        """The plain proxy to ``service``, for routes whose plugins do not answer."""
        if self.pool is None:
            self.pool = connection_pool(self.reactor)  # a gateway a test built with its own client
        return ServiceResource(ServiceProxy(service, self.reactor, self.pool))

    def startService(self) -> None:
        super().startService()
        # Fetch tokens now, so the first request does not wait for a refresh.
        for value in self.kept.live.values():
            _call(value, "start")

    def reopen_logs(self) -> None:
        """Reopen every log file plugins keep, after logrotate moved the files away."""
        for value in self.kept.live.values():
            _call(value, "reopen")

    def reload_certificates(self) -> list[str]:
        """Read every TLS listener's certificate and key again, for the handshakes to come;
        the problems of those that keep serving the previous ones."""
        return [problem for each in self.certificates if (problem := each.reload()) is not None]

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
                    # No channel: the client already left, or the answer is done and only its
                    # log phase is still to come (twisted.web lets go of the channel then).
                    channel = getattr(request, "channel", None)
                    if channel is not None:
                        channel.transport.abortConnection()
                # Cut requests still write their records; that takes a reactor turn or two.
                await self.until_idle(CUT_REQUESTS_SETTLE)
        # Retired ones too: a request of an older snapshot may have just buffered a record.
        for value in [*self.kept.live.values(), *self._retired]:
            _call(value, "close")
        if self.pool is not None:
            await self.pool.closeCachedConnections()
        if self.llm_pool is not None:
            await self.llm_pool.close()

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


def _call(value: Any, method: str) -> None:
    """Call one of the optional lifecycle methods a kept object may have."""
    found = getattr(value, method, None)
    if found is not None:
        found()


def google_token_sources(reactor: Any) -> Callable[[Target], TokenSource]:
    """Make a google-auth token source for each distinct set of credentials."""

    def make(target: Target) -> TokenSource:
        if target.auth.kind == "service_account":
            secret = target.auth.secret or ""
            # Parse now, so a broken key stops the daemon at start, not at first request.
            credentials = service_account_credentials(secret, target.auth.token_url)
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
    registry: Registry | None = None,
    file_log_backlog: int = DEFAULT_BACKLOG_BYTES,
) -> tuple[application.MultiService, Gateway]:
    """Compose the daemon's services for ``config``.

    ``pool_size`` bounds the idle upstream connections kept open per host;
    ``request_read_timeout`` the seconds a client may take to send a request;
    ``file_log_backlog`` the bytes of records a file-log keeps while its disk is full.
    A ``listen`` description with TLS files (see :mod:`gatewayd.daemon.tls`) serves HTTPS;
    its certificate is read now (:class:`gatewayd.daemon.tls.CertificateError` if it
    cannot serve) and again by :meth:`Gateway.reload_certificates`.
    """
    pool = llm_pool = None
    if client is None:
        pool = connection_pool(reactor, pool_size)
        llm_pool = UpstreamPool(reactor, pool_size)
        client = UpstreamClient(llm_pool)
    gateway = Gateway(
        reactor,
        client,
        pool,
        llm_pool,
        make_token_source or google_token_sources(reactor),
        registry or installed(),
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
        endpoint, certificates = listener(reactor, description)
        if certificates is not None:
            gateway.certificates.append(certificates)
        service = StreamServerEndpointService(endpoint, site)
        service.setServiceParent(top)
        listeners.append(service)
    if status_listen is not None:
        status_site = CountingSite(status_root(gateway.stats, gateway.metrics_registry), Stats(), "StatusSite")
        Readiness(
            serverFromString(reactor, status_listen),
            status_site,
            gateway.stats,
            listeners,
            reactor,
            lambda: Deferred.fromCoroutine(gateway.until_idle(shutdown_grace + CUT_REQUESTS_SETTLE)),
        ).setServiceParent(top)
    return top, gateway
