"""The floor for gatewayd in the bench: the least a Twisted JSON forwarder can do.

A twisted.web resource that, for every POST, ``json.loads`` and ``json.dumps``
the body, POSTs it to the same path on the upstream through ``Agent`` on a
persistent ``HTTPConnectionPool``, and answers with the upstream's status and
``Content-Type``:

- a ``:streamGenerateContent`` answer is passed through chunk by chunk, each
  piece the HTTP client hands over written to the client as it comes;
- any other answer is read whole, ``json.loads``-ed and ``json.dumps``-ed, as
  a translating gateway must at least do with it.

It forwards the Gemini-shaped request (``GEMINI_REQUEST`` in bench/run.py) to
the same model path the direct calls use, with ``Content-Type`` and a fixed
``Authorization`` header: no translation, no OAuth, no plugins, no access log.
gatewayd does the same forwarding and more, on the same reactor and HTTP
stack, so what it costs beyond this column is its own.

Two twisted.web defaults that a JSON forwarder has no use for, and gatewayd
already turns off, are off here too, or the floor would pay about a quarter
more CPU per request for them and hide as much of gatewayd's own cost: the
form parsing of POST bodies (``Request.requestReceived`` parses every
``Content-Type`` with the email package's header registry, about 75 µs) and
the ``HostnameEndpoint`` Agent builds for every request (its IDNA check of the
host, about 20 µs); one endpoint per upstream is made once instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IConsumer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer


@implementer(IBodyProducer)
class BytesProducer:
    """A body already in memory, written at once (FileBodyProducer would schedule a task)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

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
class OneEndpoint:
    """The upstream's endpoint, made once (Agent's own factory makes one per request)."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return self.endpoint


class PassThrough(Protocol):
    """Writes each piece of the upstream body to the client as it arrives."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def dataReceived(self, data: bytes) -> None:
        self.request.write(data)

    def connectionLost(self, reason: Failure) -> None:
        if not self.request.finished and not self.request._disconnected:
            self.request.finish()


class Collect(Protocol):
    """The whole upstream body (``readBody`` warns on every call about Agent's transport)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


class Forward(Resource):
    isLeaf = True

    def __init__(self, agent: Agent, upstream: bytes, authorization: bytes) -> None:
        super().__init__()
        self.agent = agent
        self.upstream = upstream
        self.authorization = authorization

    def render_POST(self, request: Request) -> int:
        body = json.dumps(json.loads(request.content.read())).encode()
        headers = Headers({b"content-type": [b"application/json"], b"authorization": [self.authorization]})
        sent = self.agent.request(b"POST", self.upstream + request.uri, headers, BytesProducer(body))
        sent.addCallback(self.answer, request, b":streamGenerateContent" in request.uri)
        sent.addErrback(self.failed, request)
        return NOT_DONE_YET

    def answer(self, response: IResponse, request: Request, stream: bool) -> Deferred[None] | None:
        request.setResponseCode(response.code)
        request.setHeader(b"content-type", response.headers.getRawHeaders(b"content-type", [b"application/json"])[0])
        if stream:
            protocol = PassThrough(request)
            request.notifyFinish().addErrback(lambda _: protocol.transport.stopProducing())
            response.deliverBody(protocol)
            return None
        collect = Collect()
        response.deliverBody(collect)
        return collect.done.addCallback(self.answer_whole, request)

    def answer_whole(self, body: bytes, request: Request) -> None:
        data = json.dumps(json.loads(body)).encode()
        request.setHeader(b"content-length", b"%d" % len(data))
        request.write(data)
        request.finish()

    def failed(self, failure: Failure, request: Request) -> None:
        if request._disconnected or request.finished:
            return
        request.setResponseCode(502)
        request.write(failure.getErrorMessage().encode())
        request.finish()


class QuietSite(Site):
    def log(self, request: Request) -> None:
        """No access line: gatewayd writes none either (its file-log plugin is the log)."""


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="plain http, e.g. http://127.0.0.1:8001")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--authorization", default="Bearer ya29.bench")
    args = parser.parse_args(argv)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 512  # gatewayd's default, Kong's upstream_keepalive_pool_size
    pool.retryAutomatically = False
    upstream = URI.fromBytes(args.upstream.rstrip("/").encode())
    endpoint = HostnameEndpoint(reactor, upstream.host.decode("ascii"), upstream.port)
    agent = Agent.usingEndpointFactory(reactor, OneEndpoint(endpoint), pool=pool)
    site = QuietSite(Forward(agent, args.upstream.rstrip("/").encode(), args.authorization.encode()),
                     parsePOSTFormSubmission=False)
    port = reactor.listenTCP(args.port, site, backlog=1024, interface="127.0.0.1")
    if args.port_file:
        with open(args.port_file, "w") as handle:
            handle.write(f"{port.getHost().port}\n")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
