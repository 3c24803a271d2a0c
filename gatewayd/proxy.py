"""Plain proxying: a route no plugin answers is passed to its service, as Kong 3.x does.

:class:`ServiceProxy` is Kong's ``location /`` for one service: the request
goes out with Kong's headers (``kong/runloop/handler.lua``, the
``proxy_set_header`` lines of ``nginx_kong.lua``), nginx's timeouts and
``proxy_next_upstream error timeout`` retries, and the answer comes back
streamed with Kong's ``Via`` and latency headers.  The request body is read
from twisted.web's spooled ``request.content`` a piece at a time; the response
body is written as it arrives, and a slow client pauses the upstream socket.

The connection comes straight from the shared pool (not through ``Agent``), so
the proxy knows when it has connected and when the request has been sent: the
read timeout starts there, as nginx's does.  Pool keys carry the TLS name and
verification, like Kong's keepalive pools.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError, TimeoutError as ConnectTimeout
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    HTTPConnectionPool,
    PotentialDataLoss,
    Request as UpstreamRequest,
    RequestNotSent,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from gatewayd.config import Service
from gatewayd.exchange import Exchange
from gatewayd.kong_response import SERVER_TOKENS, kong_error, nginx_error
from gatewayd.site import body_size
from gatewayd.upstream import UnverifiedTLS
from gatewayd.upstream import TimedBody

#: Kong's ``Via`` for HTTP/1.1 to the upstream (``DEFAULT_PROXY_HTTP_VERSION`` and the server tokens).
VIA = f"1.1 {SERVER_TOKENS}"

#: Methods nginx never sends twice once the request has gone out (``proxy_next_upstream`` without
#: ``non_idempotent``).
NON_IDEMPOTENT = frozenset({b"POST", b"LOCK", b"PATCH"})

#: Client headers not passed on: hop-by-hop ones, those Kong sets itself (an untrusted client's
#: X-Forwarded-* are replaced, trusted_ips being empty) and the body framing, which is made anew.
_REQUEST_DROPPED = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"expect",
    b"proxy", b"proxy-connection", b"content-length", b"host", b"via", b"x-real-ip",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"x-forwarded-path", b"x-forwarded-prefix", b"x-kong-request-id",
})

#: Upstream headers not passed back: hop-by-hop ones, nginx's ``proxy_hide_header`` defaults, and
#: ``Via``, which Kong extends.
_RESPONSE_DROPPED = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"trailer", b"via",
    b"x-pad", b"x-accel-expires", b"x-accel-redirect", b"x-accel-limit-rate", b"x-accel-buffering",
    b"x-accel-charset",
})

# kong.tools.uri.escape: what Kong leaves unescaped in an upstream path.
_PATH_SAFE = frozenset(b"!#$&'()*+,/:;=?@[]-_.~%" b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def upstream_uri(path: str, uri: bytes) -> str:
    """The path and query Kong sends upstream: the router's path, escaped, then the client's
    query as it came (a bare trailing ``?`` kept)."""
    escaped = "".join(chr(b) if b in _PATH_SAFE else f"%{b:02X}" for b in path.encode("utf-8"))
    _, mark, query = uri.partition(b"?")
    return escaped + (mark + query).decode("latin-1")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()


@frozen
class _Failed:
    """Why a try got no response: nginx's status for it and whether another try may follow."""

    status: int  # 502 error, 504 timeout, 503 name resolution
    reason: str
    sent: bool  # the request (or part of it) reached the upstream
    retryable: bool = True


@define
class ServiceProxy:
    """Proxies requests to one service of one configuration snapshot."""

    service: Service
    reactor: Any
    pool: HTTPConnectionPool
    _made_tcp: IStreamClientEndpoint | None = field(init=False, default=None)
    _tls: dict[str, IStreamClientEndpoint] = field(init=False, factory=dict)

    log = Logger()

    @property
    def _tcp(self) -> IStreamClientEndpoint:
        """The service's endpoint, made at its first request (a snapshot may never send one)."""
        if self._made_tcp is None:
            self._made_tcp = HostnameEndpoint(
                self.reactor, self.service.host, self.service.port, timeout=self.service.connect_timeout / 1000
            )
        return self._made_tcp

    @property
    def host_header(self) -> str:
        """The Host Kong sends when the route does not preserve the client's (``set_host_header``)."""
        port, scheme = self.service.port, self.service.protocol
        if (port, scheme) in ((80, "http"), (443, "https")):
            return self.service.host
        return f"{self.service.host}:{port}"

    async def forward(
        self, request: Request, exchange: Exchange, path: str, preserve_host: bool, prefix: str | None = None
    ) -> None:
        """Stream ``request`` to the service at ``path`` and its answer back; return when done.

        ``prefix`` is the path a ``strip_path`` route took off (Kong's
        X-Forwarded-Prefix).  Upstream failures are answered with Kong's error
        pages, or end the client's connection once the answer has started; a
        client that leaves stops the upstream.  Nothing is raised.
        """
        client = _Client(request)
        if client.gone:
            return
        uri = upstream_uri(path, request.uri)
        exchange.upstream_uri = uri
        content, length = request.content, body_size(request)
        if getattr(content, "over", False):  # the Site kept no more than its limit
            nginx_error(request, 413)
            return
        client_host = request.getHeader(b"host") if preserve_host else None
        host = client_host.decode("latin-1") if client_host else self.host_header
        headers = self._request_headers(request, exchange, host, prefix)
        endpoint, key = self._endpoint(host)
        exchange.proxy_started = self.reactor.seconds()
        tries = self.service.retries + 1
        for attempt in range(1, tries + 1):
            entry = self._try_entry(exchange)
            started = self.reactor.seconds()
            attempt_ = _Try(self, client, request.method, uri.encode("latin-1"), headers, content, length, entry)
            outcome = await attempt_.run(endpoint, key)
            if client.gone:
                exchange.proxy_finished = self.reactor.seconds()
                return
            if isinstance(outcome, _Failed):
                self.log.warn(
                    "{service}: try {attempt} of {tries} failed: {reason}",
                    service=self.service.name, attempt=attempt, tries=tries, reason=outcome.reason,
                )
                if outcome.status == 503 and attempt == 1:
                    # Kong resolves the name before proxying: a miss is its own answer, not a try.
                    exchange.tries.clear()
                    exchange.proxy_started = None
                    kong_error(request, 503, "name resolution failed")
                    return
                exchange.upstream_status = outcome.status
                retry = attempt < tries and outcome.retryable and (
                    not outcome.sent or request.method not in NON_IDEMPOTENT
                )
                if retry or attempt > self.service.retries:
                    entry.update(state="failed", code=outcome.status)
                if retry:
                    continue
                exchange.proxy_finished = self.reactor.seconds()
                nginx_error(request, outcome.status, self._kong_headers(exchange, started, None))
                return
            await self._relay(request, exchange, outcome, attempt_.connection_headers, started, client)
            return

    def _try_entry(self, exchange: Exchange) -> dict[str, Any]:
        """A new entry of ``exchange.tries``, as Kong's balancer phase starts one."""
        wall = exchange.started_at + (self.reactor.seconds() - exchange.started)
        entry: dict[str, Any] = {
            "balancer_start": _ms(wall),
            "balancer_start_ns": round(wall * 1e9),
            "ip": self.service.host,  # the peer's address once connected
            "port": self.service.port,
            "balancer_latency": 0,
            "balancer_latency_ns": 0,
        }
        exchange.tries.append(entry)
        return entry

    def _request_headers(self, request: Request, exchange: Exchange, host: str, prefix: str | None) -> Headers:
        """The client's headers as Kong passes them: hop-by-hop ones out, Kong's own in."""
        raw = request.requestHeaders
        listed = _tokens(raw.getRawHeaders(b"connection"))
        headers = Headers()
        for name, values in raw.getAllRawHeaders():
            lower = name.lower()
            if lower not in _REQUEST_DROPPED and lower.decode("latin-1") not in listed:
                headers.setRawHeaders(name, values)
        peer = getattr(request.getClientAddress(), "host", "") or ""
        forwarded_for = raw.getRawHeaders(b"x-forwarded-for")
        proto = request.clientproto.decode("latin-1").removeprefix("HTTP/")
        via = raw.getRawHeaders(b"via")
        path = request.uri.split(b"?", 1)[0].decode("latin-1")
        ours = [
            ("Host", host),
            ("Connection", "keep-alive"),
            ("X-Forwarded-For", f"{b', '.join(forwarded_for).decode('latin-1')}, {peer}" if forwarded_for else peer),
            ("X-Forwarded-Proto", "https" if request.isSecure() else "http"),
            ("X-Forwarded-Host", request.getRequestHostname().decode("latin-1").lower()),
            ("X-Forwarded-Port", str(request.getHost().port)),
            ("X-Forwarded-Path", path),
            ("X-Real-IP", peer),
            ("Via", f"{b', '.join(via).decode('latin-1')}, {proto} {SERVER_TOKENS}" if via else f"{proto} {SERVER_TOKENS}"),
            ("X-Kong-Request-Id", exchange.request_id),
        ]
        if "trailers" in _tokens(raw.getRawHeaders(b"te")):
            ours.append(("TE", "trailers"))
        if prefix is not None and prefix != "/":
            ours.append(("X-Forwarded-Prefix", prefix))
        for name, value in ours:
            headers.setRawHeaders(name, [value])
        return headers

    def _endpoint(self, host: str) -> tuple[IStreamClientEndpoint, tuple[Any, ...]]:
        """The endpoint for a request whose Host is ``host`` and its pool key.

        Over https, nginx names the upstream by that Host (``proxy_ssl_name
        $upstream_host``, port left off) for SNI and verification; Kong checks
        the certificate only when the service says ``tls_verify: true``.
        """
        service = self.service
        if service.protocol != "https":
            return self._tcp, ("http", service.host, service.port)
        name = _host_name(host)
        verify = bool(service.tls_verify)
        key = ("https", service.host, service.port, name, verify)
        endpoint = self._tls.get(name) if name == service.host else None
        if endpoint is None:
            creator = optionsForClientTLS(name) if verify else UnverifiedTLS(name)
            endpoint = wrapClientTLS(creator, self._tcp)
            if name == service.host:  # a client's Host (preserve_host) is not kept: it varies
                self._tls[name] = endpoint
        return endpoint, key

    async def _relay(
        self,
        request: Request,
        exchange: Exchange,
        response: IResponse,
        connection_headers: Headers,
        started: float,
        client: "_Client",
    ) -> None:
        """Pass the upstream's response head, then stream its body to the client."""
        exchange.upstream_status = response.code
        if response.code > 499 and len(exchange.tries) > self.service.retries:
            exchange.tries[-1].update(state="failed", code=response.code)  # as Kong's header_filter
        request.setResponseCode(response.code)
        upstream = response.headers
        listed = _tokens(connection_headers.getRawHeaders(b"connection"))
        for name, values in upstream.getAllRawHeaders():
            lower = name.lower()
            if lower not in _RESPONSE_DROPPED and lower.decode("latin-1") not in listed:
                request.responseHeaders.setRawHeaders(name, values)
        length = connection_headers.getRawHeaders(b"content-length")
        if length:  # passed on as nginx does (a HEAD's too); without it the client gets chunks
            request.responseHeaders.setRawHeaders(b"Content-Length", length[-1:])
        if not upstream.hasHeader(b"content-type"):
            request.defaultContentType = None  # nginx adds none (Kong's default_type '')
        for name, value in self._kong_headers(exchange, started, upstream.getRawHeaders(b"via")).items():
            if name != "Server" or not upstream.hasHeader(b"server"):
                request.setHeader(name, value)
        relay = _Relay(request, self.reactor, self.service.read_timeout / 1000)
        client.relay = relay
        response.deliverBody(relay)
        outcome = await relay.done
        client.relay = None
        exchange.proxy_finished = self.reactor.seconds()
        if outcome is not None:
            exchange.notes.append(f"upstream response cut: {outcome}")
            self.log.warn("{service}: response cut: {reason}", service=self.service.name, reason=outcome)

    def _kong_headers(self, exchange: Exchange, started: float, via: list[bytes] | None) -> dict[str, str]:
        """Kong's headers on a proxied answer (``headers = server_tokens, latency_tokens``)."""
        now = self.reactor.seconds()
        if exchange.proxy_first_byte is None:
            exchange.proxy_first_byte = now
        upstream_via = b", ".join(via).decode("latin-1") + ", " if via else ""
        return {
            "X-Kong-Upstream-Latency": str(_ms(now - started)),
            "X-Kong-Proxy-Latency": str(_ms(started - exchange.started)),
            "Via": f"{upstream_via}{VIA}",
            "Server": SERVER_TOKENS,
        }


class _Client:
    """Whether the client is still there; when it leaves, whatever is under way stops."""

    def __init__(self, request: Request) -> None:
        self.gone = request.channel is None
        self.attempt: _Try | None = None
        self.relay: _Relay | None = None
        if not self.gone:
            request.notifyFinish().addErrback(self._left)

    def _left(self, reason: Failure) -> None:
        self.gone = True
        if self.attempt is not None:
            self.attempt.stop()
        if self.relay is not None:
            self.relay.client_gone()


class _Try:
    """One try: connect, send, wait for the response head, each within the service's timeout."""

    def __init__(
        self,
        proxy: ServiceProxy,
        client: _Client,
        method: bytes,
        uri: bytes,
        headers: Headers,
        content: Any,
        length: int,
        entry: dict[str, Any],
    ) -> None:
        self.proxy, self.client, self.entry = proxy, client, entry
        self.method, self.uri, self.headers = method, uri, headers
        self.content, self.length = content, length
        self.expired: str | None = None  # which timeout ended the try
        self.pending: Deferred[Any] | None = None
        self.deadline: IDelayedCall | None = None
        self.body: TimedBody | None = None
        #: The upstream's connection-control headers, once its response head has come.
        self.connection_headers = Headers()

    async def run(self, endpoint: IStreamClientEndpoint, key: tuple[Any, ...]) -> IResponse | _Failed | None:
        service = self.proxy.service
        self.client.attempt = self
        try:
            connecting = self.pending = self.proxy.pool.getConnection(key, endpoint)
            self._expire_in(service.connect_timeout, "connect")
            try:
                connection = await connecting
            except Exception as error:
                return self._connect_failed(error)
            finally:
                _cancel(self.deadline)
            peer = connection.transport.getPeer()
            self.entry["ip"] = getattr(peer, "host", self.entry["ip"])
            if self.length:
                self.body = TimedBody(
                    self.content, self.length, self.proxy.reactor, service.write_timeout / 1000, self._sent, self._write_expired
                )
            responding = self.pending = connection.request(
                UpstreamRequest(self.method, self.uri, self.headers, self.body, persistent=True)
            )
            if self.body is None:
                self._sent()
            try:
                response = await responding
            except Exception as error:
                return self._request_failed(error)
            finally:
                _cancel(self.deadline)
            # The connection-control headers (Connection, Content-Length...) are left out of
            # response.headers; the parser still holds them while the head is being delivered.
            parser = getattr(connection, "_parser", None)
            self.connection_headers = getattr(parser, "connHeaders", None) or Headers()
            return response
        finally:
            self.pending = None
            self.client.attempt = None

    def stop(self) -> None:
        """The client left: give up connecting or waiting (the connection is dropped)."""
        _cancel(self.deadline)
        if self.pending is not None:
            self.pending.cancel()

    def _expire_in(self, milliseconds: int, what: str) -> None:
        self.deadline = self.proxy.reactor.callLater(milliseconds / 1000, self._expired, what)

    def _expired(self, what: str) -> None:
        self.expired = what
        if self.pending is not None:
            self.pending.cancel()

    def _sent(self) -> None:
        """The request is out: nginx's read timeout runs from here until the head arrives."""
        self._expire_in(self.proxy.service.read_timeout, "read")

    def _write_expired(self) -> None:
        self.expired = "write"

    def _connect_failed(self, error: Exception) -> _Failed | None:
        if self.client.gone:
            return None
        if self.expired == "connect" or isinstance(error, ConnectTimeout):
            return _Failed(504, "connect timed out", sent=False)
        if isinstance(error, DNSLookupError):
            return _Failed(503, f"name resolution failed: {error}", sent=False, retryable=False)
        return _Failed(502, f"connect failed: {error}", sent=False)

    def _request_failed(self, error: Exception) -> _Failed | None:
        if self.client.gone:
            return None
        if self.expired is not None:
            return _Failed(504, f"{self.expired} timed out", sent=True)
        if isinstance(error, RequestNotSent):
            return _Failed(502, "connection unusable", sent=False)
        if type(error) is ResponseFailed:  # bytes came but no valid head: not retried (invalid_header)
            return _Failed(502, f"invalid response: {error}", sent=True, retryable=False)
        return _Failed(502, f"connection failed: {error}", sent=True)


@implementer(IPushProducer)
class _Relay(Protocol):
    """Writes the upstream's body to the client as it comes, as the client's push producer.

    A client that stops reading pauses the upstream socket; one that leaves
    stops it.  nginx's read timeout runs between two reads while the client
    keeps up.  An upstream that fails mid-body ends the client's connection, so
    the client sees a cut answer rather than a short one that looks whole.
    """

    def __init__(self, request: Request, reactor: Any, read_timeout: float) -> None:
        self.request, self.reactor, self.read_timeout = request, reactor, read_timeout
        #: Fires with None when the body went through (or the client left), else why it was cut.
        self.done: Deferred[str | None] = Deferred()
        self._idle: IDelayedCall | None = None
        self._paused = self._gone = self._timed_out = False

    def connectionMade(self) -> None:
        self.request.registerProducer(self, True)
        self._watch()

    def dataReceived(self, data: bytes) -> None:
        if self._gone:
            return
        self._watch()
        self.request.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        _cancel(self._idle)
        if self._gone:
            self.done.callback(None)
            return
        self.request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss) and not self._timed_out:
            self.request.finish()
            self.done.callback(None)
            return
        self.request.loseConnection()
        self.done.callback("read timed out" if self._timed_out else reason.getErrorMessage())

    def pauseProducing(self) -> None:
        self._paused = True
        _cancel(self._idle)  # the upstream is not silent: we are not reading
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._watch()
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.client_gone()

    def client_gone(self) -> None:
        if not self._gone:
            self._gone = True
            _cancel(self._idle)
            self.transport.stopProducing()

    def _watch(self) -> None:
        if self._paused:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.read_timeout)
        else:
            self._idle = self.reactor.callLater(self.read_timeout, self._stalled)

    def _stalled(self) -> None:
        self._timed_out = True
        self.transport.stopProducing()


def _host_name(host: str) -> str:
    """``host`` without its port (and an IPv6 literal without brackets)."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _tokens(values: list[bytes] | None) -> set[str]:
    """The lowercased comma-separated tokens of a header's values."""
    return {t.strip().lower() for v in values or () for t in v.decode("latin-1").split(",") if t.strip()}


class ServiceResource(Resource):
    """What a route renders when none of its plugins answered: the proxy to its service."""

    isLeaf = True

    def __init__(self, proxy: ServiceProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render(self, request: Request) -> object:
        exchange: Exchange = request.gatewayd_exchange  # type: ignore[attr-defined]
        match = exchange.match
        prefix = match.matched_path if match.route.strip_path else None
        forwarding = self.proxy.forward(
            request, exchange, match.upstream_path(self.proxy.service.path), match.route.preserve_host, prefix
        )
        exchange.handled = Deferred.fromCoroutine(forwarding)
        return NOT_DONE_YET
