"""The listener's HTTP side: a ``Site`` whose channel bounds how long and how much a client sends.

Bodies are kept up to a limit (Anthropic's 32 MiB by default) and counted past
it, so an oversized request costs no memory and still gets its 413 and its log
record; each request must arrive whole within a deadline, however steadily a
client trickles it.  Requests are :class:`GatewayRequest`, which run the plugins'
response filters as the answer is written.
"""

from __future__ import annotations

import io
import tempfile
from typing import IO, Any, Protocol

from twisted.internet.interfaces import IAddress, IDelayedCall, ISSLTransport
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import provider

from gatewayd import errors, sending

#: Anthropic's own limit on a Messages request body.
MAX_BODY = 32 * 1024 * 1024
#: Bodies up to this size stay in memory; larger ones go to a temporary file.
_IN_MEMORY = 100_000
#: Seconds a client may stay silent while sending its request's headers or body.
CLIENT_IDLE_TIMEOUT = 60
#: Seconds a client may take to send one whole request (headers and body), however steadily.
REQUEST_READ_TIMEOUT = 300.0


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
    #: Whether a request is being read: from its first byte to its last.
    _reading: bool = False
    _peer: IAddress | None = None
    _host: IAddress | None = None
    _secure: bool | None = None

    def getPeer(self) -> IAddress:
        """The client's address, asked of the transport once per connection, not per request."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def isSecure(self) -> bool:
        """Whether the connection is TLS: asked of the transport once per connection."""
        if self._secure is None:
            self._secure = super().isSecure()
        return self._secure

    def getHost(self) -> IAddress:
        """The listener's address: a ``getsockname`` call once per connection, not per request."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def connectionMade(self) -> None:
        sending.adopt(self.transport)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if not self._reading and not self._handlingRequest and data:
            self._reading = True
        super().dataReceived(data)
        if self._reading and self._deadline is None:
            # Still reading it after its first read.  Nearly every request arrives whole
            # in one read and needs no timer at all.
            self._deadline = self.callLater(self.factory.request_read_timeout, self._too_slow)

    def allContentReceived(self) -> None:
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: object) -> None:
        self._stop_deadline()
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        self._reading = False
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


class ConnectionCounts(Protocol):
    """What a counting Site keeps up to date (the daemon's ``Stats``)."""

    connections_accepted: int
    connections_active: int


class CountingSite(Site):
    """A Site that counts its connections for ``/status``."""

    def __init__(self, resource: Resource, stats: ConnectionCounts, prefix: str = "Site", **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.stats = stats
        self.prefix = prefix

    def logPrefix(self) -> str:
        return self.prefix

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.stats.connections_accepted += 1
        self.stats.connections_active += 1
        lost = protocol.connectionLost

        def connection_lost(reason: Any) -> None:
            self.stats.connections_active -= 1
            # The protocol holds this function, which holds the protocol: once called, it
            # goes, and the connection's objects go by refcounting, not by the collector.
            del protocol.connectionLost
            lost(reason)

        protocol.connectionLost = connection_lost
        return protocol


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

    def __init__(self, resource: Resource, stats: ConnectionCounts, **kwargs: Any) -> None:
        super().__init__(resource, stats, requestFactory=request_factory, **kwargs)

    def getContentFile(self, length: int | None) -> BoundedContent:
        return BoundedContent(self.max_body, length)

    def log(self, request: Request) -> None:
        """No access line: the file-log plugin is the access log.

        twisted.web's own line per request (to the twistd log, formatted with
        a timestamp each time) would cost more than a tenth of a request's CPU
        and say less than the file-log record.
        """


class GatewayRequest(Request):
    """A ``Request`` that runs the plugins' response filters as the answer is written,
    whoever writes it (a plugin's resource, the plain proxy, an error), streams included.

    It also leaves its body alone: bodies here are JSON or proxied as they are, never
    forms (twisted.web parses every POST's Content-Type for form data otherwise, about
    8% of a request's CPU in the bench).
    """

    #: Set by the pipeline when a collected plugin has a response filter (a
    #: :class:`gatewayd.pipeline.Filters`).
    filters: Any = None
    #: Bytes of the response given to the connection: status line, headers, body and
    #: chunk framing (nginx's ``$bytes_sent``, Kong's ``response.size``).
    bytes_sent: int = 0

    def __init__(self, channel: HTTPChannel, queued: object = None) -> None:
        super().__init__(channel, parsePOSTFormSubmission=False)
        # Kept: the log phase runs after the request has let go of its channel, and Kong's
        # record says https for a request that came over TLS.
        self.secure = channel.isSecure()
        #: Kong's ``request.tls`` for the log record, read while the connection is there.
        self.tls = tls_facts(channel) if self.secure else None

    def isSecure(self) -> bool:
        """Whether the request came over TLS, even once its connection is gone."""
        return self.secure

    def write(self, data: bytes) -> None:
        filters = self.filters
        if filters is not None:
            if not self.startedWriting:
                filters.before_headers(self)
            data = filters.body(self, data, False)
        self._counted_write(data)

    def _counted_write(self, data: bytes) -> None:
        """``Request.write``, counting what it hands the connection as it frames it."""
        heading = not self.startedWriting
        before = self.sentLength
        super().write(data)
        if heading and self.startedWriting:
            self.bytes_sent += head_size(self.clientproto, self.code, self.code_message, self.responseHeaders)
        body = self.sentLength - before
        if body:
            # toChunk: hex length, CRLF, the data, CRLF.
            self.bytes_sent += body + (len(b"%x" % body) + 4 if self.chunked else 0)

    def finish(self) -> None:
        filters, self.filters = self.filters, None
        if filters is not None and not self.finished and self.channel is not None:
            if not self.startedWriting:
                filters.before_headers(self)
            tail = filters.body(self, b"", True)
            if tail:
                self._counted_write(tail)
        if not self.finished and not self._disconnected:
            if not self.startedWriting:
                self._counted_write(b"")
            if self.chunked:
                self.bytes_sent += len(b"0\r\n\r\n")
        super().finish()


def head_size(version: bytes, code: int, reason: bytes, headers: Headers) -> int:
    """The length of a response's status line and header block, as ``HTTPChannel.writeHeaders`` writes them."""
    size = len(version) + 1 + len(b"%d" % code) + 1 + len(reason) + 2
    for name, values in headers.getAllRawHeaders():
        for value in values:
            size += len(name) + len(value) + 4  # "Name: value\r\n"
    return size + 2


def tls_facts(channel: HTTPChannel) -> dict[str, Any] | None:
    """The connection's protocol, cipher and client verification, as nginx names them."""
    handle = channel.transport.getHandle() if hasattr(channel.transport, "getHandle") else None
    version = getattr(handle, "get_protocol_version_name", lambda: None)()
    if version is None:
        return None
    cipher = getattr(handle, "get_cipher_name", lambda: None)()
    peer = getattr(handle, "get_peer_certificate", lambda: None)()
    return {"version": version, "cipher": cipher, "client_verify": "SUCCESS" if peer is not None else "NONE"}


@provider(INonQueuedRequestFactory)
def request_factory(channel: HTTPChannel) -> GatewayRequest:
    return GatewayRequest(channel)


def server_name(request: Request) -> str | None:
    """The TLS server name (SNI) the client sent, as sent (Kong's ``ngx.ssl.server_name()``);
    None over plain TCP or when the client sent none."""
    transport = getattr(request.channel, "transport", None)
    if not ISSLTransport.providedBy(transport):
        return None
    name = transport.getHandle().get_servername()
    return None if name is None else name.decode("ascii", "replace")


def request_body(request: Request) -> bytes:
    """The whole request body (Twisted keeps large ones in a temporary file)."""
    if request.content is None:
        return b""
    request.content.seek(0)
    return request.content.read()


def body_size(request: Request) -> int:
    """How many bytes of body the client sent (counted even past the limit)."""
    content = request.content
    if content is None:
        return 0
    content.seek(0, 2)
    size = content.tell()
    content.seek(0)
    return size


class BoundedContent:
    """A request body, kept up to ``limit`` bytes; past that only counted.

    Twisted's ``Request`` writes every byte the client sends into its
    ``content`` file; this one stops keeping them once a body is over the
    limit (announced by Content-Length or found while reading a chunked
    body), so an oversized request costs no memory or disk and still gets
    its 413 answer and its log record.
    """

    def __init__(self, limit: int, length: int | None) -> None:
        self.limit = limit
        self.size = 0
        self._file: IO[bytes] | None = None
        if length is None or length <= limit:
            # A BytesIO, not a SpooledTemporaryFile: the body of nearly every request is
            # small, and that class costs several times more to make.
            self._file = io.BytesIO()

    @property
    def over(self) -> bool:
        return self._file is None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is None:
            return
        if self.size > self.limit:
            self._file.close()
            self._file = None
            return
        if self.size > _IN_MEMORY and isinstance(self._file, io.BytesIO):
            spill = tempfile.TemporaryFile()
            spill.write(self._file.getbuffer())
            self._file = spill
        self._file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0 if self._file is None else self._file.seek(offset, whence)

    def tell(self) -> int:
        return self.size if self._file is None else self._file.tell()

    def read(self, size: int = -1) -> bytes:
        return b"" if self._file is None else self._file.read(size)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
