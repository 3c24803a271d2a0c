"""The HTTP client for upstream calls: twisted.web's Agent on a persistent pool, nothing more.

treq's ``HTTPClient.request`` wraps every call in a cookie jar, a redirect
follower and a gzip decoder and parses the URL with hyperlink (IDNA checks
included): about a quarter of the gateway's CPU per request in the bench.
An upstream model API needs none of that, so :class:`UpstreamClient` offers
the one call :class:`~gatewayd.plugins.ai_proxy_advanced.handler.AIProxy` makes, with treq's ``post``
signature, so a ``treq.testing.StubTreq`` still stands in for it in tests.
"""

from __future__ import annotations

from typing import Mapping

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IConsumer, IStreamClientEndpoint
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, URI
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

#: Kong's ``upstream_keepalive_pool_size`` default: idle connections kept per upstream.
DEFAULT_POOL_SIZE = 512


def connection_pool(reactor: object, size: int = DEFAULT_POOL_SIZE) -> HTTPConnectionPool:
    """A persistent pool keeping up to ``size`` idle connections per upstream host."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = size
    pool.retryAutomatically = False
    return pool


@implementer(IBodyProducer)
@define
class BytesProducer:
    """A request body already in memory, written in one go (FileBodyProducer would
    schedule a cooperator task for it)."""

    body: bytes

    @property
    def length(self) -> int:
        return len(self.body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IAgentEndpointFactory)
@define
class CachedEndpoints:
    """One endpoint per upstream (scheme, host, port), made once.

    Agent's own factory builds a ``HostnameEndpoint`` for every request, even
    when the pool then hands back an idle connection, and that constructor runs
    the host through IDNA: about 5% of a request's CPU in the bench.  Upstream
    hosts come from the configuration, so the cache stays small.
    """

    reactor: object
    connect_timeout: float | None = None
    tls: IPolicyForHTTPS = field(factory=BrowserLikePolicyForHTTPS)
    _made: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = field(factory=dict, init=False)

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._made.get(key)
        if endpoint is None:
            endpoint = self._made[key] = self._make(uri)
        return endpoint

    def _make(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        kwargs = {} if self.connect_timeout is None else {"timeout": self.connect_timeout}
        tcp = HostnameEndpoint(self.reactor, uri.host.decode("ascii"), uri.port, **kwargs)
        if uri.scheme == b"http":
            return tcp
        return wrapClientTLS(self.tls.creatorForNetloc(uri.host, uri.port), tcp)


@frozen
class UpstreamClient:
    """POSTs a prepared body to an upstream URL and hands back the unbuffered response."""

    agent: IAgent

    @classmethod
    def pooled(
        cls, reactor: object, pool: HTTPConnectionPool, connect_timeout: float | None = None
    ) -> "UpstreamClient":
        return cls(Agent.usingEndpointFactory(reactor, CachedEndpoints(reactor, connect_timeout), pool=pool))

    def post(
        self,
        url: str,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        unbuffered: bool = True,
    ) -> Deferred[IResponse]:
        raw = Headers()
        for name, value in (headers or {}).items():
            raw.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
        return self.agent.request(b"POST", url.encode("ascii"), raw, BytesProducer(data))
