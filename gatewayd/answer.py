"""How gatewayd answers a client itself: a JSON body, or an Anthropic-shaped error.

Once a stream has started, an error can no longer change the status: Anthropic
reports it as an SSE ``error`` event, and so does gatewayd.  Nothing is written
to a client that already left.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.web.server import Request

from gatewayd import errors, jsonwire
from gatewayd.translate import encode_event


def client_there(request: Request) -> bool:
    exchange = getattr(request, "gatewayd_exchange", None)
    return not (request.finished or (exchange is not None and exchange.client_gone))


def respond_json(request: Request, status: int, body: Mapping[str, Any]) -> None:
    if not client_there(request):
        return
    data = jsonwire.dumps(body)
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("content-length", str(len(data)))
    request.write(data)
    request.finish()


def respond_error(request: Request, error: errors.APIError) -> None:
    """Answer with an Anthropic error body, if the client is still there to hear it."""
    if not client_there(request):
        return
    for name, value in error.headers:
        request.setHeader(name, value)
    if request.startedWriting:
        # The stream has begun: Anthropic reports such faults as an SSE error event.
        request.write(encode_event("error", error.body()))
        request.finish()
        return
    request.setHeader("x-should-retry", "true" if error.status >= 500 or error.status == 429 else "false")
    exchange = getattr(request, "gatewayd_exchange", None)
    respond_json(request, error.status,
                 error.answer_body(exchange.request_id if exchange is not None else None))
