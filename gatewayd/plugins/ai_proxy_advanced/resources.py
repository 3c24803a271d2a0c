"""The endpoints ai-proxy-advanced serves below its route: ``v1/messages`` and its
``count_tokens``, ``v1/models``; every other path is Anthropic's 404."""

from __future__ import annotations

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd import errors
from gatewayd.answer import respond_error, respond_json
from gatewayd.exchange import Exchange
from gatewayd.providers.gemini import Target

from .handler import AIProxy, ClientGone


class AIResource(Resource):
    """Base of the Messages endpoints: runs a coroutine handler per POST."""

    isLeaf = False
    log = Logger()

    def __init__(self, proxy: AIProxy, handler: str) -> None:
        super().__init__()
        self.proxy = proxy
        self.handler = handler

    def render_POST(self, request: Request) -> object:
        exchange: Exchange = request.gatewayd_exchange  # type: ignore[attr-defined]
        Deferred.fromCoroutine(self._run(request, exchange))
        return NOT_DONE_YET

    def render(self, request: Request) -> object:
        if request.method == b"POST":
            return self.render_POST(request)
        request.setHeader("allow", "POST")
        respond_error(request, errors.APIError(405, "invalid_request_error", "Method Not Allowed: use POST"))
        return NOT_DONE_YET

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFound()

    async def _run(self, request: Request, exchange: Exchange) -> None:
        """The handler, its errors answered; ``exchange.handled`` fires when it is done."""
        exchange.handled = Deferred()
        try:
            await getattr(self.proxy, self.handler)(request, exchange)
        except errors.APIError as error:
            if exchange.tried_targets:
                exchange.tried_targets[-1].setdefault("error", error.message)
            respond_error(request, error)
        except ClientGone:
            pass
        except Exception:
            # The path only: a query string may carry a client's key (key-auth's key_in_query).
            self.log.failure("unexpected error serving {path}", path=request.path.decode("latin-1"))
            respond_error(request, errors.APIError(500, "api_error", "internal gateway error"))
        finally:
            exchange.handled.callback(None)


class NotFound(Resource):
    """A path under an AI route that the Messages API does not have."""

    isLeaf = True

    def render(self, request: Request) -> object:
        respond_error(
            request,
            errors.not_found(f"{request.method.decode()} {request.path.decode('latin-1')} is not an endpoint of this gateway"),
        )
        return NOT_DONE_YET


class Directory(Resource):
    """An inner node of the tree whose unknown children answer Anthropic's 404."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFound()

    def render(self, request: Request) -> object:
        return NotFound().render(request)


def model_info(target: Target) -> dict[str, str]:
    """One target's model in the shape of Anthropic's ``GET /v1/models`` entries."""
    return {"type": "model", "id": target.model, "display_name": target.model, "created_at": "1970-01-01T00:00:00Z"}


class ModelsResource(Resource):
    """``GET /v1/models`` and ``/v1/models/{id}``: the route's target models, for clients that ask."""

    isLeaf = True

    def __init__(self, proxy: AIProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render_GET(self, request: Request) -> object:
        models: dict[str, dict[str, str]] = {}
        for target in self.proxy.targets:
            models.setdefault(target.model, model_info(target))
        if request.postpath and request.postpath != [b""]:
            wanted = b"/".join(request.postpath).decode("utf-8", "replace")
            if wanted not in models:
                respond_error(request, errors.not_found(f"model: {wanted}"))
                return NOT_DONE_YET
            respond_json(request, 200, models[wanted])
            return NOT_DONE_YET
        data = list(models.values())
        respond_json(
            request,
            200,
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]},
        )
        return NOT_DONE_YET

    def render(self, request: Request) -> object:
        if request.method in (b"GET", b"HEAD"):
            return self.render_GET(request)
        request.setHeader("allow", "GET")
        respond_error(request, errors.APIError(405, "invalid_request_error", "Method Not Allowed: use GET"))
        return NOT_DONE_YET


def messages_tree(proxy: AIProxy) -> dict[bytes, Resource]:
    """The children an AI route's resource gets: ``v1/messages`` and below, ``v1/models``."""
    v1 = Directory()
    messages = AIResource(proxy, "messages")
    messages.putChild(b"count_tokens", AIResource(proxy, "count_tokens"))
    v1.putChild(b"messages", messages)
    v1.putChild(b"models", ModelsResource(proxy))
    return {b"v1": v1}


@frozen
class AIRoute:
    """The compiled plugin instance: it answers in the place of the route's service."""

    proxy: AIProxy
    resource: Resource

    @classmethod
    def serving(cls, proxy: AIProxy) -> "AIRoute":
        root = Directory()
        for name, child in messages_tree(proxy).items():
            root.putChild(name, child)
        return cls(proxy, root)
