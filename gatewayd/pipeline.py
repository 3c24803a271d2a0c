"""One request's life, as Kong's runloop lives it.

listener → :class:`GatewayRoot` (route, exchange) → :class:`RequestLife`:
the access phases in priority order → the answerer (a plugin's resource, such
as ai-proxy-advanced's, or the plain proxy to the route's service) → the
response filters on every header and body write (:class:`~gatewayd.site.GatewayRequest`) →
the log phases, with Kong's record, once the response has been sent (:class:`AfterAnswers`).

A configuration is compiled once into a :class:`Snapshot`: the router and, per
route, the plugins that may run, in Kong's order and with Kong's scoping
(``kong/runloop/plugins_iterator.lua``).  The pipeline names no plugin; it asks
the registry for each one configured.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Iterator, Mapping

import attrs
from attrs import frozen
from twisted.internet.defer import ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd import errors
from gatewayd.answer import respond_error, respond_json
from gatewayd.config import Config, Plugin, Route, Service
from gatewayd.exchange import Exchange, entity_id
from gatewayd.kong_response import SERVER_TOKENS, kong_error
from gatewayd.plugins import CompileContext, IGatewaydPlugin, Registry
from gatewayd.router import RequestFacts, Router, protocol_redirect
from gatewayd.site import body_size, read_timeout_error, server_name

#: Kong's PROTOCOLS_WITH_SUBSYSTEM entries of the http subsystem.
HTTP_SUBSYSTEM = frozenset({"http", "https", "grpc", "grpcs", "ws", "wss"})

#: ``Server`` on every answer, as on Kong's own ones.
SERVER = SERVER_TOKENS.encode("ascii")


def _scope_rank(plugin: Plugin) -> int:
    """Kong's precedence (``lookup_cfg``): route+service+consumer first, global last."""
    return {
        (True, True, True): 1,
        (True, False, True): 2,
        (False, True, True): 3,
        (True, True, False): 4,
        (False, False, True): 5,
        (True, False, False): 6,
        (False, True, False): 7,
        (False, False, False): 8,
    }[(plugin.route is not None, plugin.service is not None, plugin.consumer is not None)]


@frozen
class Candidates:
    """The instances of one plugin that may run on one route, most specific first."""

    plugin: IGatewaydPlugin
    #: (consumer id or None, compiled instance or None when it has nothing to do here)
    scoped: tuple[tuple[str | None, Any], ...]

    def pick(self, consumer_id: str | None) -> Any:
        for consumer, instance in self.scoped:
            if consumer is None or consumer == consumer_id:
                return instance
        return None


@frozen
class Plan:
    """What serves the requests of one route (or of no route at all)."""

    chain: tuple[Candidates, ...]
    route: Route | None = None
    service: Service | None = None
    route_entity: dict[str, Any] | None = None
    service_entity: dict[str, Any] | None = None
    #: Answers when no plugin does: the plain proxy to the service.
    upstream: Resource | None = None


@frozen
class Snapshot:
    """One configuration, compiled: requests keep the snapshot they started with."""

    config: Config
    router: Router[Plan]
    unmatched: Plan


def compile_snapshot(
    config: Config, registry: Registry, context: CompileContext, make_upstream: Callable[[Service], Resource]
) -> Snapshot:
    """Compile ``config``: each route's plugin chain, the router and the unmatched plan."""
    entries = []
    for route in config.routes:
        service = config.services.get(route.service) if route.service else None
        if service is not None and not service.enabled:
            continue  # Kong leaves a disabled service's routes out of the router
        service_entity = _entity("service", service) if service is not None else None
        plan = Plan(
            chain=_chain(config, registry, context, route),
            route=route,
            service=service,
            route_entity=_route_entity(route, service_entity),
            service_entity=service_entity,
            upstream=make_upstream(service) if service is not None else None,
        )
        entries.append((route, plan))
    unmatched = Plan(chain=_chain(config, registry, context, None))
    return Snapshot(config, Router.build(entries), unmatched)


def _chain(config: Config, registry: Registry, context: CompileContext, route: Route | None) -> tuple[Candidates, ...]:
    """The plugins that may run for ``route`` (None: a request no route matched, where
    only global plugins run), each with its instances in Kong's precedence order."""
    applicable: dict[str, list[Plugin]] = {}
    for plugin in config.plugins:
        # Kong's should_process_plugin: a plugin's protocols choose its subsystem (http or
        # stream), not the requests it runs on; one with no http-subsystem protocol never runs.
        if not plugin.enabled or not HTTP_SUBSYSTEM.intersection(plugin.protocols):
            continue
        if route is None:
            if plugin.route is None and plugin.service is None and plugin.consumer is None:
                applicable.setdefault(plugin.name, []).append(plugin)
            continue
        if plugin.route not in (None, route.name) or plugin.service not in (None, route.service):
            continue
        applicable.setdefault(plugin.name, []).append(plugin)
    siblings = config.plugins_for(route) if route is not None else {}
    route_context = attrs.evolve(context, siblings=siblings)
    chain = []
    for kind in registry.ordered(applicable):
        found = sorted(applicable[kind.name], key=_scope_rank)
        scoped = tuple(
            (_consumer_id(config, plugin), kind.compile(plugin, route_context)) for plugin in found
        )
        chain.append(Candidates(kind, scoped))
    return tuple(chain)


def _consumer_id(config: Config, plugin: Plugin) -> str | None:
    if plugin.consumer is None:
        return None
    return config.consumers[plugin.consumer].id


class Filters:
    """The response phases of the plugins a request collected: header and body filters."""

    def __init__(self, exchange: Exchange, plugins: Iterable[Any]) -> None:
        self.exchange = exchange
        self.headers = [p.header_filter for p in plugins if hasattr(p, "header_filter")]
        self.bodies = [p.body_filter for p in plugins if hasattr(p, "body_filter")]

    def before_headers(self, request: Request) -> None:
        for header_filter in self.headers:
            header_filter(request, self.exchange)

    def body(self, request: Request, chunk: bytes, eof: bool) -> bytes:
        for body_filter in self.bodies:
            chunk = body_filter(request, self.exchange, chunk, eof)
        return chunk


class GatewayRoot(Resource):
    """The root of the tree: picks the route by Kong's rules, then hands the request on."""

    log = Logger()

    def __init__(self, gateway: Any) -> None:
        super().__init__()
        self.gateway = gateway
        self._after_answers = AfterAnswers(gateway.reactor)

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        snapshot: Snapshot = self.gateway.runtime
        exchange = Exchange(started=self.gateway.reactor.seconds(), request_size=body_size(request))
        request.gatewayd_exchange = exchange  # type: ignore[attr-defined]
        request.setHeader("X-Kong-Request-Id", exchange.request_id)
        request.setHeader(b"server", SERVER)  # in place of the name twisted.web gives itself
        self.gateway.request_started(request)
        facts = request_facts(request)
        match = snapshot.router.match(facts)
        plan = snapshot.unmatched if match is None else match.value
        exchange.match = match
        exchange.route, exchange.service = plan.route_entity, plan.service_entity
        request.notifyFinish().addBoth(self._finished, request, exchange)
        read_timeout = getattr(request, "gatewayd_read_timeout", None)
        if match is None:
            # Kong answers an unmatched request before any access phase; only logging runs.
            exchange.plugins = [c.pick(None) for c in plan.chain]
            return NoRoute() if read_timeout is None else RequestTimeout(read_timeout)
        if match.matched_path is not None:
            remainder = match.path[len(match.matched_path):].strip("/")
            request.prepath = [s.encode("latin-1") for s in match.matched_path.strip("/").split("/") if s]
            request.postpath = [s.encode("latin-1") for s in remainder.split("/")] if remainder else []
        if read_timeout is not None:
            exchange.plugins = [c.pick(None) for c in plan.chain]
            return RequestTimeout(read_timeout)
        redirect = protocol_redirect(match.route, facts)
        if redirect is not None:
            exchange.plugins = [c.pick(None) for c in plan.chain]
            return ProtocolRedirect(*redirect)
        return RequestLife(plan, exchange)

    def _finished(self, result: object, request: Request, exchange: Exchange) -> None:
        if result is not None:  # an errback: the client went away
            exchange.client_gone = True
            if exchange.on_leave is not None:
                exchange.on_leave()
        finished = self.gateway.reactor.seconds()

        def log() -> None:
            try:
                loggers = [p.log for p in exchange.plugins if p is not None and hasattr(p, "log")]
                if loggers:
                    record = exchange.record(request, finished)
                    for plugin_log in loggers:
                        plugin_log(request, exchange, record)
            except Exception:
                # The path only: a query string may carry a client's key.
                self.log.failure("log phase failed for {path}", path=request.path.decode("latin-1"))
            finally:
                self.gateway.request_done(request)

        # Kong's log phase runs once the response has been sent; so does this one.
        (exchange.handled or succeed(None)).addCallback(lambda _: self._after_answers.add(log))


class AfterAnswers:
    """Runs work once the answers written in this reactor turn have been sent.

    Kong (nginx) runs the log phase after the response has gone out; here the
    record, the counting and every plugin's log phase would otherwise run before
    the answer leaves, adding their time to it.  What is written in a turn goes out
    when the turn ends (:mod:`gatewayd.sending`), or under TLS at the reactor's next
    poll, which comes after the next turn's timed calls: so the work waits two
    ``callLater(0)``.  What is added meanwhile waits for its own answers' sending,
    in a batch of its own; batches and their work keep their order.
    """

    log = Logger()

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self._waiting: list[Callable[[], None]] = []
        self._turn: IDelayedCall | None = None

    def add(self, work: Callable[[], None]) -> None:
        self._waiting.append(work)
        if self._turn is None:
            self._turn = self.reactor.callLater(0, self._next_poll)

    def _next_poll(self) -> None:
        """Runs before the poll that sends this batch's answers under TLS; the batch runs after it."""
        self._turn = None
        batch, self._waiting = self._waiting, []
        self.reactor.callLater(0, self._run, batch)

    def _run(self, batch: list[Callable[[], None]]) -> None:
        for work in batch:
            try:
                work()
            except Exception:  # one request's failure is not the batch's
                self.log.failure("work after the answers failed")


class RequestLife(Resource):
    """A matched request from its access phases to its answer.

    The phases run in line: only an access phase that has to wait (one that
    returns an awaitable, such as a Redis round trip) costs a Deferred, and the
    run resumes after it where it left off.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, plan: Plan, exchange: Exchange) -> None:
        super().__init__()
        self.plan = plan
        self.exchange = exchange
        #: The first access phase's refusal: later plugins are still collected, not run.
        self.refused: errors.APIError | None = None

    def render(self, request: Request) -> object:
        self._access(request, 0)
        return NOT_DONE_YET

    def _access(self, request: Request, position: int) -> None:
        """The access phases from ``position`` of the chain on, then the answer."""
        exchange = self.exchange
        chain = self.plan.chain
        collected = exchange.plugins
        while position < len(chain):
            plugin = chain[position].pick(exchange.consumer.id if exchange.consumer else None)
            position += 1
            if plugin is None:
                continue
            collected.append(plugin)
            access = getattr(plugin, "access", None)
            if self.refused is not None or access is None:
                continue
            try:
                result = access(request, exchange)
            except errors.APIError as error:
                # Kong delays the response: later plugins are still collected for
                # their log phase, but their access does not run.
                self.refused = error
                continue
            except Exception:
                self._failed(request)  # a 500, and the rest still collected for the log
                continue
            if inspect.isawaitable(result):
                # A coroutine that never waits completes here and resumes at once.
                ensureDeferred(result).addBoth(self._waited, request, position)
                return
        self._answer(request)

    def _waited(self, outcome: object, request: Request, position: int) -> None:
        if isinstance(outcome, Failure):
            if outcome.check(errors.APIError):
                self.refused = outcome.value  # type: ignore[assignment]
            else:
                self._failed(request, outcome)
        self._access(request, position)

    def _failed(self, request: Request, failure: Failure | None = None) -> None:
        # The path only: a query string may carry a client's key (key-auth's key_in_query).
        self.log.failure("access phase failed for {path}", failure, path=request.path.decode("latin-1"))
        self.refused = errors.APIError(500, "api_error", "internal gateway error")

    def _answer(self, request: Request) -> None:
        exchange = self.exchange
        collected = exchange.plugins
        refused = self.refused
        if any(hasattr(p, "header_filter") or hasattr(p, "body_filter") for p in collected):
            request.filters = Filters(exchange, collected)  # type: ignore[attr-defined]
        answerer = next((p.resource for p in collected if getattr(p, "resource", None) is not None), None)
        if refused is not None:
            if answerer is not None:
                respond_error(request, refused)  # an LLM API's route: its clients parse its errors
            else:
                kong_error(request, refused.status, refused.message, dict(refused.headers))
            return
        if request.finished or exchange.client_gone:
            return
        request.render(getChildForRequest(answerer or self.plan.upstream or NoService(), request))


class HeaderView(Mapping[str, tuple[str, ...]]):
    """A request's headers as the router reads them (lower-case name → values), decoded
    only for the names a route asks about."""

    def __init__(self, request: Request) -> None:
        self._headers = request.requestHeaders

    def __getitem__(self, name: str) -> tuple[str, ...]:
        values = self._headers.getRawHeaders(name)
        if values is None:
            raise KeyError(name)
        return tuple(v.decode("latin-1") if isinstance(v, bytes) else v for v in values)

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1").lower() for name, _ in self._headers.getAllRawHeaders())

    def __len__(self) -> int:
        return sum(1 for _ in self._headers.getAllRawHeaders())


def request_facts(request: Request) -> RequestFacts:
    """What Kong's router looks at, read off a twisted.web request."""
    raw_path, _, query = request.uri.partition(b"?")
    secure = request.isSecure()
    return RequestFacts(
        method=request.method.decode("latin-1"),
        path=raw_path.decode("utf-8", "surrogateescape"),
        host=(request.getHeader("host") or ""),
        port=getattr(request.getHost(), "port", 0),
        scheme="https" if secure else "http",
        headers=HeaderView(request),
        sni=server_name(request) if secure else None,
        query=query.decode("latin-1") if b"?" in request.uri else None,
    )


class ProtocolRedirect(Resource):
    """Kong's answer to a route reached over a protocol it does not take (426, or a redirect)."""

    isLeaf = True

    def __init__(self, status: int, headers: Mapping[str, str], body: str | None) -> None:
        super().__init__()
        self.status, self.headers, self.body = status, headers, body

    def render(self, request: Request) -> object:
        if self.body is not None:
            kong_error(request, self.status, self.body, self.headers)
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return b""


class NoRoute(Resource):
    """Kong's answer when no route matches."""

    isLeaf = True

    def render(self, request: Request) -> object:
        kong_error(request, 404, "no Route matched with those values")
        return NOT_DONE_YET


class NoService(Resource):
    """A route with no service whose plugins did not answer: Kong has nowhere to send it."""

    isLeaf = True

    def render(self, request: Request) -> object:
        # kong.response.exit with a table: JSON, no request id (kong/init.lua, access phase).
        respond_json(request, 503, {"message": "no Service found with those values"})
        return NOT_DONE_YET


class RequestTimeout(Resource):
    """The answer to a request the client did not finish sending in time (see GatewayChannel)."""

    isLeaf = True

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def render(self, request: Request) -> object:
        respond_error(request, read_timeout_error(self.seconds))
        return NOT_DONE_YET


def _entity(kind: str, value: Any) -> dict[str, Any]:
    """A route or service as Kong logs it: its fields, and an id stable across restarts."""
    entity = {
        k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
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
