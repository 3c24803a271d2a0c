"""The client for model calls: HTTP/1.1 connections kept per upstream, responses read by llhttp.

twisted.web's ``Agent`` is general (any method, redirects through treq, a
state machine per request and per response, several Deferreds, a producer
proxy and ``LineReceiver`` parsing), and in the bench it was the largest
single cost of the minimal forwarder, and of gatewayd.  A model call is
narrower: one POST at a time per connection, a body of known length, and a
response head followed by its body, fast or paced.  :class:`UpstreamClient`
does just that on :class:`HTTP11Connection` protocols kept idle in an
:class:`UpstreamPool`, and lets ``httptools`` (llhttp, the parser behind
uvicorn) read the responses: a C parser for the byte work, a few Python
callbacks for the rest.

What it hands back is an ``IResponse`` as ``Agent`` gives: a body delivered
to a protocol through ``deliverBody``, whose transport pauses, resumes and
stops the upstream socket; ``ResponseDone`` at its end, ``PotentialDataLoss``
for a body that ends with the connection, ``ResponseFailed`` for one cut off.
So tests still stand a ``treq.testing.StubTreq`` in for it, and the plain
service proxy keeps Agent's pool.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import httptools
from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from gatewayd import sending
from gatewayd.upstream import DEFAULT_POOL_SIZE

#: (scheme, host, port): what a connection can be reused for.
Key = tuple[str, str, int]


@frozen
class Destination:
    """Where a URL's request goes: its pool key and the start of its request head."""

    key: Key
    head: bytes  # b"POST <path> HTTP/1.1\r\nHost: <host>\r\n"


@functools.lru_cache(maxsize=1024)
def destination(url: str) -> Destination:
    """``url`` taken apart once: a handful of targets make all the URLs a daemon calls."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SchemeNotSupported(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    head = f"POST {target} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii")
    return Destination((parts.scheme, parts.hostname, port), head)


def header_lines(headers: Mapping[str, str]) -> bytes:
    """``headers`` as request head lines; a line break in a value becomes a space, as
    twisted.web's ``Headers`` does, so no value can add a header of its own."""
    return _lines(tuple(headers.items()))


@functools.lru_cache(maxsize=256)
def _lines(headers: tuple[tuple[str, str], ...]) -> bytes:
    # A target sends the same few headers with every call (its token changes hourly).
    return b"".join(
        b"%s: %s\r\n" % (name.encode("latin-1"), _one_line(value).encode("latin-1"))
        for name, value in headers
    )


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ") if "\r" in value or "\n" in value else value


#: How every complete body ends; one Failure for all, since making one costs a few µs a response.
_DONE = Failure(ResponseDone())


class UpstreamPool:
    """Idle connections per upstream, the newest first, at most ``size`` each.

    An idle connection stays read: one the upstream closes leaves the pool at once.
    """

    def __init__(self, reactor: Any, size: int = DEFAULT_POOL_SIZE, tls: IPolicyForHTTPS | None = None) -> None:
        self.reactor = reactor
        self.size = size
        self._tls = tls or BrowserLikePolicyForHTTPS()
        self._idle: dict[Key, list[HTTP11Connection]] = {}
        self._endpoints: dict[tuple[Key, float | None], IStreamClientEndpoint] = {}

    def idle(self, key: Key) -> HTTP11Connection | None:
        """The newest idle connection to ``key``, taken out of the pool."""
        idle = self._idle.get(key)
        return idle.pop() if idle else None

    def connect(self, key: Key, connect_timeout: float | None) -> Deferred[HTTP11Connection]:
        """A new connection to ``key``."""
        return self._endpoint(key, connect_timeout).connect(_ConnectionFactory(self, key))

    def _endpoint(self, key: Key, connect_timeout: float | None) -> IStreamClientEndpoint:
        # HostnameEndpoint runs the host through IDNA when it is made: once per upstream.
        endpoint = self._endpoints.get((key, connect_timeout))
        if endpoint is None:
            scheme, host, port = key
            kwargs = {} if connect_timeout is None else {"timeout": connect_timeout}
            endpoint = HostnameEndpoint(self.reactor, host, port, **kwargs)
            if scheme == "https":
                endpoint = wrapClientTLS(self._tls.creatorForNetloc(host.encode("idna"), port), endpoint)
            self._endpoints[(key, connect_timeout)] = endpoint
        return endpoint

    def release(self, connection: HTTP11Connection) -> None:
        """``connection`` finished its exchange and may carry another."""
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) < self.size:
            idle.append(connection)
        else:
            connection.transport.loseConnection()

    def forget(self, connection: HTTP11Connection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> Deferred[Any]:
        """Close every idle connection; fires once they are all closed."""
        closing = []
        for idle in self._idle.values():
            for connection in idle:
                closing.append(connection.closed())
                connection.transport.loseConnection()
        self._idle.clear()
        return DeferredList(closing)


class _ConnectionFactory(Factory):
    """Makes one upstream connection.  Quiet, as Agent's are: a busy upstream opens
    connections by the dozen, and each would log its factory starting and stopping."""

    noisy = False

    def __init__(self, pool: UpstreamPool, key: Key) -> None:
        self.pool = pool
        self.key = key

    def buildProtocol(self, addr: object) -> HTTP11Connection:
        return HTTP11Connection(self.pool, self.key)


class HTTP11Connection(Protocol):
    """One connection to an upstream, carrying one request and its response at a time.

    ``httptools`` calls the ``on_*`` methods while it parses what arrives.
    """

    def __init__(self, pool: UpstreamPool, key: Key) -> None:
        self.pool = pool
        self.key = key
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._waiting: Deferred[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._head: UpstreamResponse | None = None  # parsed in this read, not announced yet
        self._body: IBodyProducer | None = None
        self._phrase = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body_parts: list[bytes] = []  # of the response, parsed from this read
        self._keep_alive = False
        #: From a request until its final response is whole: what arrives belongs to it.
        self._expecting = False
        self._lost = False
        self._on_lost: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        sending.adopt(self.transport)

    def request(
        self, head: bytes, body: bytes | IBodyProducer, sent: Callable[[], None] | None = None
    ) -> Deferred[UpstreamResponse]:
        """Send ``head`` (request line and header lines) and ``body``; fires with the response head.

        ``sent`` is called once a bytes body has been handed over (a producer body says
        so itself).  Cancelling before the head has come drops the connection.
        """
        self._waiting = waiting = Deferred(self._cancel)
        self._expecting = True
        if isinstance(body, bytes):
            self.transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
            if sent is not None:
                sent()
        else:
            self.transport.write(b"%sContent-Length: %d\r\n\r\n" % (head, body.length))
            self._body = body
            self.transport.registerProducer(body, True)
            body.startProducing(self.transport).addCallbacks(self._body_sent, self._body_failed)
        return waiting

    def _body_sent(self, _: object) -> None:
        if self._body is not None:
            self._body = None
            self.transport.unregisterProducer()

    def _body_failed(self, failure: Failure) -> None:
        # The producer gave up (its write timeout): no response can follow a cut body.
        self._body = None
        self.transport.unregisterProducer()
        self.transport.abortConnection()

    def _cancel(self, waiting: Deferred[UpstreamResponse]) -> None:
        self._waiting = None
        self._expecting = False
        self._stop_body()
        self.transport.abortConnection()

    def _stop_body(self) -> None:
        if self._body is not None:
            self._body.stopProducing()
            self._body = None
            self.transport.unregisterProducer()

    def dataReceived(self, data: bytes) -> None:
        if not self._expecting:
            self._drop()  # nothing asked: an idle connection's upstream talks out of turn
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            cause = error.__context__ if isinstance(error, httptools.HttpParserCallbackError) else error
            if not isinstance(cause, _Unsolicited):
                self._fail(Failure(cause or error))
                return
            self._drop()  # more after a whole response: its head is still announced below
        try:
            self._deliver()
        except Exception:  # the reader's fault, as if it had raised while httptools parsed
            self._fail(Failure())
            return
        head, self._head = self._head, None
        if head is not None and self._waiting is not None:
            # Announced once this read is parsed: a body that came with its head is then
            # whole, and its reader needs no read timer.
            waiting, self._waiting = self._waiting, None
            waiting.callback(head)

    def _drop(self) -> None:
        """Out of the pool at once (the close completes a turn later), and closed."""
        self._expecting = False
        self.pool.forget(self)
        self.transport.loseConnection()

    def _fail(self, failure: Failure) -> None:
        """A response that cannot be read further: its reader learns why, the connection goes."""
        self._expecting = False
        self.pool.forget(self)
        self._stop_body()
        self.transport.abortConnection()
        self._head = None
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(Failure(ResponseNeverReceived([failure])))
        elif self._response is not None:
            self._deliver()  # what came before the fault
            response, self._response = self._response, None
            response._end(Failure(ResponseFailed([failure])))

    # httptools' callbacks
    def on_message_begin(self) -> None:
        if not self._expecting:
            raise _Unsolicited()
        self._phrase = b""
        self._headers = []

    def on_status(self, status: bytes) -> None:
        self._phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        if code < 200 or self._waiting is None:
            return  # an interim answer (100 Continue); the final one follows
        self._keep_alive = self._parser.should_keep_alive()
        self._response = self._head = UpstreamResponse(code, self._phrase, self._headers, self)

    def on_body(self, body: bytes) -> None:
        # What one read carries goes to the reader at once (_deliver): a read of a
        # fast stream holds hundreds of chunks, and a reader that shares its work
        # out over reactor turns can tell a read's bytes from the next read's.
        if self._response is not None:
            self._body_parts.append(body)

    def _deliver(self) -> None:
        if self._body_parts:
            parts, self._body_parts = self._body_parts, []
            if self._response is not None:
                self._response._data(parts[0] if len(parts) == 1 else b"".join(parts))

    def on_message_complete(self) -> None:
        self._deliver()
        response, self._response = self._response, None
        if response is None:
            return  # the end of an interim answer
        self._expecting = False
        if self._keep_alive and self._body is None and not response.stopped:
            self.transport.resumeProducing()  # a slow reader may have paused it
            self.pool.release(self)
        else:
            self._stop_body()
            self.transport.loseConnection()
        response._end(_DONE)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = True
        self.pool.forget(self)
        self._stop_body()
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(Failure(ResponseNeverReceived([reason])))
        elif self._response is not None:
            response, self._response = self._response, None
            if response.length is UNKNOWN_LENGTH and not response.chunked:
                response._end(Failure(PotentialDataLoss()))  # a body that ends with its connection
            else:
                response._end(Failure(ResponseFailed([reason])))
        for each in self._on_lost:
            each.callback(None)
        self._on_lost.clear()
        # The parser calls this connection's methods: let go of it, or the two would wait
        # for the collector, for every connection closed.
        self._parser = None

    def closed(self) -> Deferred[None]:
        if self._lost:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._on_lost.append(waiter)
        return waiter

    @property
    def peer_ip(self) -> str | None:
        return getattr(self.transport.getPeer(), "host", None)


class _Unsolicited(Exception):
    """A response nobody asked for, after the one that was."""


@implementer(IResponse)
class UpstreamResponse:
    """An upstream's response head, and its body for the protocol given to ``deliverBody``."""

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(self, code: int, phrase: bytes, raw_headers: list[tuple[bytes, bytes]],
                 connection: HTTP11Connection) -> None:
        self.code = code
        self.phrase = phrase
        self._raw_headers = raw_headers
        self._connection = connection
        self._protocol: Protocol | None = None
        self._early: list[bytes] = []  # body bytes that came before deliverBody
        self._ended: Failure | None = None  # how it ended, while nobody was delivered it
        #: The body has ended: its reader no longer holds the connection.
        self.finished = False
        self.stopped = False
        self.length: int | object = UNKNOWN_LENGTH
        self.chunked = False
        for name, value in raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.strip().isdigit():
                self.length = int(value)
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True

    @functools.cached_property
    def headers(self) -> Headers:
        headers = Headers()
        for name, value in self._raw_headers:
            headers.addRawHeader(name, value)
        return headers

    @property
    def peer_ip(self) -> str | None:
        """The upstream's address, which Kong logs per try."""
        return self._connection.peer_ip

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol: Protocol) -> None:
        self._protocol = protocol
        protocol.makeConnection(_BodyTransport(self))
        early, self._early = self._early, []
        for data in early:
            protocol.dataReceived(data)
        if self._ended is not None:
            self._protocol = None  # see _end
            protocol.connectionLost(self._ended)

    def _data(self, data: bytes) -> None:
        if self._protocol is None:
            self._early.append(data)
        elif not self.stopped:
            self._protocol.dataReceived(data)

    def _end(self, reason: Failure) -> None:
        self.finished = True
        if self._protocol is None:
            self._ended = reason
        else:
            # Let go of the protocol: it holds this response through its transport, and
            # the loop would leave the three of them to the collector, for every request.
            protocol, self._protocol = self._protocol, None
            protocol.connectionLost(reason)


@implementer(IPushProducer)
class _BodyTransport:
    """What a body's protocol holds: the upstream socket, paused, resumed or stopped."""

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response

    def pauseProducing(self) -> None:
        if not self._response.finished:  # else the connection is idle, or another call's
            self._response._connection.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if not self._response.finished:
            self._response._connection.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The reader wants no more: the connection goes, since its rest would go unread."""
        response = self._response
        if not response.stopped and not response.finished:
            response.stopped = True
            response._connection._stop_body()  # a body still going out would hold the close
            response._connection.transport.stopProducing()


class UpstreamClient:
    """POSTs a body to an upstream URL over ``pool``; treq's ``post`` signature, so that a
    ``StubTreq`` can stand in for it."""

    def __init__(self, pool: UpstreamPool, connect_timeout: float | None = None) -> None:
        self.pool = pool
        self.connect_timeout = connect_timeout

    def post(
        self,
        url: str,
        data: bytes | IBodyProducer = b"",
        headers: Mapping[str, str] | None = None,
        unbuffered: bool = True,
        sent: Callable[[], None] | None = None,
    ) -> Deferred[UpstreamResponse]:
        """POST ``data`` (bytes, or a producer such as :class:`gatewayd.upstream.TimedBody`);
        ``sent`` is called when bytes have been handed to the connection.

        The response's body is never buffered here (``unbuffered`` is treq's name for that).
        """
        try:
            where = destination(url)
            head = where.head + header_lines(headers or {})
            idle = self.pool.idle(where.key)
            if idle is not None:
                return idle.request(head, data, sent)
            connecting = self.pool.connect(where.key, self.connect_timeout)
        except Exception:  # a URL or host that cannot be called fails the call, as Agent's do
            return fail()
        return connecting.addCallback(lambda connection: connection.request(head, data, sent))


__all__ = ["HTTP11Connection", "UpstreamClient", "UpstreamPool", "UpstreamResponse"]
