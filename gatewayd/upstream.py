"""What upstream calls share: Agent's pool for the plain proxy, request bodies sent with
nginx's timing, and TLS without verification.

Model calls go through :mod:`gatewayd.http11`, the plain proxy to services
(:mod:`gatewayd.proxy`) through Agent's ``HTTPConnectionPool``.
"""

from __future__ import annotations

from typing import Any, Callable

from OpenSSL import SSL
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

#: Kong's ``upstream_keepalive_pool_size`` default: idle connections kept per upstream.
DEFAULT_POOL_SIZE = 512


def connection_pool(reactor: object, size: int = DEFAULT_POOL_SIZE) -> HTTPConnectionPool:
    """A persistent pool keeping up to ``size`` idle connections per upstream host."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = size
    pool.retryAutomatically = False
    return pool


#: Bodies up to this size are handed to the connection in one write and count as sent
#: at once: Linux's initial socket send buffer (``tcp_wmem``) takes them whole.
ONE_WRITE = 16384


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
