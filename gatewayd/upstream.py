"""The HTTP client for upstream calls: twisted.web's Agent on a persistent pool, nothing more.

treq's ``HTTPClient.request`` wraps every call in a cookie jar, a redirect
follower and a gzip decoder and parses the URL with hyperlink (IDNA checks
included): about a quarter of the gateway's CPU per request in the bench.
An upstream model API needs none of that, so :class:`UpstreamClient` offers
the one call :class:`~gatewayd.plugins.ai_proxy_advanced.handler.AIProxy` makes, with treq's ``post``
signature, so a ``treq.testing.StubTreq`` still stands in for it in tests.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from attrs import define, field, frozen
from OpenSSL import SSL
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IConsumer, IDelayedCall, IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure
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


@implementer(IBodyProducer)
class TimedBody:
    """A request body sent with nginx's timing: a piece per reactor turn while the upstream
    socket takes it, and a note of the moment it has all been handed over.

    ``file`` is the client's spooled body (the plain proxy) or a ``BytesIO`` (an LLM call).
    The transport pauses the producer while its buffer is full; staying paused past
    ``write_timeout`` (nginx's ``proxy_send_timeout``, between two writes) calls ``expired``
    and fails the request.  ``sent`` is called once the last piece is written: nginx's read
    timeout starts there.
    """

    piece = 65536

    def __init__(
        self,
        file: Any,
        length: int,
        reactor: Any,
        write_timeout: float,
        sent: Callable[[], None],
        expired: Callable[[], None],
    ) -> None:
        self.length = length
        self._file, self._reactor, self._write_timeout = file, reactor, write_timeout
        self._sent, self._expired = sent, expired
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] = Deferred()
        self._paused = self._stopped = False
        self._turn: IDelayedCall | None = None
        self._stall: IDelayedCall | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._file.seek(0)  # from the start, on every try
        self._write()
        return self._done

    def _write(self) -> None:
        self._turn = None
        if self._paused or self._stopped:
            return
        try:
            data = self._file.read(self.piece)
        except ValueError:  # the file is closed: the client left with the request
            self.stopProducing()
            return
        assert self._consumer is not None
        if data:
            self._consumer.write(data)
        if not data or self._file.tell() >= self.length:
            self._stopped = True
            self._sent()
            self._done.callback(None)
        elif not self._paused and not self._stopped:
            self._turn = self._reactor.callLater(0, self._write)

    def pauseProducing(self) -> None:
        self._paused = True
        _cancel(self._turn)
        self._turn = None  # resumeProducing schedules the next turn
        if self._stall is None or not self._stall.active():
            self._stall = self._reactor.callLater(self._write_timeout, self._stalled)

    def resumeProducing(self) -> None:
        self._paused = False
        _cancel(self._stall)
        if not self._stopped and self._turn is None:
            self._turn = self._reactor.callLater(0, self._write)

    def stopProducing(self) -> None:
        self._stopped = True
        _cancel(self._turn)
        _cancel(self._stall)

    def _stalled(self) -> None:
        self.stopProducing()
        self._expired()
        self._done.errback(Failure(TimeoutError("upstream write timed out")))


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()


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
        data: bytes | IBodyProducer = b"",
        headers: Mapping[str, str] | None = None,
        unbuffered: bool = True,
    ) -> Deferred[IResponse]:
        """POST ``data``: bytes, or a producer such as :class:`TimedBody` (as treq takes one)."""
        raw = Headers()
        for name, value in (headers or {}).items():
            raw.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
        body = BytesProducer(data) if isinstance(data, bytes) else data
        return self.agent.request(b"POST", url.encode("ascii"), raw, body)


@implementer(IOpenSSLClientConnectionCreator)
class UnverifiedTLS:
    """TLS with SNI and no certificate check: Kong's ``ssl_verify: false`` (Redis) and
    nginx's ``proxy_ssl_verify off`` (services, Kong's default)."""

    def __init__(self, name: str) -> None:
        self._name = None if isIPAddress(name) or isIPv6Address(name) else name.encode("idna")
        self._context = CertificateOptions().getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._name is not None:
            connection.set_tlsext_host_name(self._name)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection
