"""Kong's own error responses: its bodies, in the format the client's ``Accept`` asks for.

Kong answers in two ways, and clients (and tests written against Kong) see
the difference:

* :func:`kong_error` is ``kong.response.error``: what Kong itself refuses
  (no route matched, 426 "Please use HTTPS protocol", a plugin's rejection,
  "name resolution failed").  The format comes from ``Accept`` alone, JSON
  when there is none.
* :func:`nginx_error` is nginx's ``error_page`` handed to ``kong/error_handlers.lua``:
  the errors nginx raises itself, above all the upstream's 502 and 504.  The
  format comes from ``Accept``, else the request's ``Content-Type``, else
  ``error_default_type`` (``text/plain``), and the message is fixed per status.

Both put the request id (``exchange.request_id``) in the body, as Kong does.
"""

from __future__ import annotations

import html
import json
import re
from typing import Mapping

from twisted.web.server import Request

#: What Kong's ``_SERVER_TOKENS`` (``kong/<version>``) says in ``Server`` and ``Via``: here
#: gatewayd names itself rather than claim to be a Kong release (a documented difference).
SERVER_TOKENS = "gatewayd/0.1.0"

#: ``kong.conf``'s ``error_default_type`` default: nginx errors to a client that sent no Accept.
ERROR_DEFAULT_TYPE = "text/plain"

JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"
XML = "application/xml; charset=utf-8"
PLAIN = "text/plain; charset=utf-8"

# kong/tools/http.lua MIME_TYPES (gRPC left out: gatewayd does not serve it).
_MIME_TYPES = {
    "text/html": HTML,
    "application/json": JSON,
    "text/plain": PLAIN,
    "application/xml": XML,
    "application": JSON,
    "text": PLAIN,
}

# kong/tools/http.lua ERROR_TEMPLATES, byte for byte.
_TEMPLATES = {
    HTML: (
        '<!doctype html>\n<html>\n  <head>\n    <meta charset="utf-8">\n    <title>Error</title>\n'
        "  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    <p>request_id: {rid}</p>\n"
        "  </body>\n</html>\n"
    ),
    JSON: '{{\n  "message":"{message}",\n  "request_id":"{rid}"\n}}',
    PLAIN: "{message}\nrequest_id: {rid}\n",
    XML: (
        '<?xml version="1.0" encoding="UTF-8"?>\n<error>\n  <message>{message}</message>\n'
        "  <requestid>{rid}</requestid>\n</error>\n"
    ),
}

# kong/tools/http.lua ACCEPT_PATTERN (anchored at the start of each comma-separated value).
_ACCEPT = re.compile(
    r"""((?:[a-z0-9][a-z0-9\-!\#$&^_+.]+|\*) / (?:[a-z0-9][a-z0-9\-!\#$&^_+.]+|\*))
        (?: \s*;\s* q = ( 1(?:\.0{0,3}|) | 0(?:\.\d{0,3}|) )
          | \s*;\s* [a-z0-9][a-z0-9\-!\#$&^_+.]+ (?:=[^;]*|) )*""",
    re.IGNORECASE | re.VERBOSE,
)

# kong/pdk/response.lua HTTP_ERROR_MESSAGES: kong.response.error's message when none is given.
RESPONSE_MESSAGES = {
    400: "Bad request", 401: "Unauthorized", 402: "Payment required", 403: "Forbidden",
    404: "Not found", 405: "Method not allowed", 406: "Not acceptable",
    407: "Proxy authentication required", 408: "Request timeout", 409: "Conflict", 410: "Gone",
    411: "Length required", 412: "Precondition failed", 413: "Payload too large",
    414: "URI too long", 415: "Unsupported media type", 416: "Range not satisfiable",
    417: "Expectation failed", 418: "I'm a teapot", 421: "Misdirected request",
    422: "Unprocessable entity", 423: "Locked", 424: "Failed dependency", 425: "Too early",
    426: "Upgrade required", 428: "Precondition required", 429: "Too many requests",
    431: "Request header fields too large", 451: "Unavailable for legal reasons",
    494: "Request header or cookie too large", 500: "An unexpected error occurred",
    501: "Not implemented", 502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable", 504: "The upstream server is timing out",
    505: "HTTP version not supported", 506: "Variant also negotiates", 507: "Insufficient storage",
    508: "Loop detected", 510: "Not extended", 511: "Network authentication required",
}

# kong/error_handlers.lua BODIES: the messages of errors nginx raises.
ERROR_PAGE_MESSAGES = {
    400: "Bad request", 404: "Not found", 405: "Method not allowed", 408: "Request timeout",
    411: "Length required", 412: "Precondition failed", 413: "Payload too large",
    414: "URI too long", 417: "Expectation failed", 494: "Request header or cookie too large",
    500: "An unexpected error occurred",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable", 504: "The upstream server is timing out",
}


def response_type(accept: str | None) -> str:
    """The Content-Type Kong answers an error with, for this ``Accept`` (``get_response_type``):
    the first media type of the highest quality, JSON for what it does not know."""
    content_type = JSON
    if accept is None:
        return content_type
    best = 0.0
    for value in accept.split(","):
        match = _ACCEPT.match(value.strip())
        if match is None:
            continue
        quality = float(match.group(2)) if match.group(2) else 1.0
        if quality > best:
            best = quality
            content_type = _mime_type(match.group(1))
    return content_type


def _mime_type(media_type: str) -> str:
    kind, _, sub = media_type.partition("/")
    if sub == "*":
        return JSON if kind == "*" else _MIME_TYPES.get(kind, JSON)
    return _MIME_TYPES.get(media_type, JSON)


def error_body(content_type: str, message: str, request_id: str) -> bytes:
    """Kong's error template for ``content_type``, filled in.

    Kong fills its templates verbatim; the message is escaped here for the
    format, which changes nothing for Kong's own messages and keeps a message
    with a quote from breaking the JSON.
    """
    if content_type == JSON:
        message = json.dumps(message, ensure_ascii=False)[1:-1]
    elif content_type in (HTML, XML):
        message = html.escape(message, quote=False)
    return _TEMPLATES[content_type].format(message=message, rid=request_id).encode("utf-8")


def request_id(request: Request) -> str:
    """The request's id as the pipeline's exchange holds it ("" before there is one, as Kong)."""
    exchange = getattr(request, "gatewayd_exchange", None)
    return getattr(exchange, "request_id", "") or ""


def kong_error(
    request: Request, status: int, message: str | None = None, headers: Mapping[str, str] | None = None
) -> None:
    """Answer and finish ``request`` as ``kong.response.error(status, message, headers)`` does."""
    accept = request.requestHeaders.getRawHeaders(b"accept")
    content_type = response_type(",".join(v.decode("latin-1") for v in accept) if accept else None)
    text = message if message is not None else RESPONSE_MESSAGES.get(
        status, f"The upstream server responded with {status}"
    )
    _send(request, status, content_type, error_body(content_type, text, request_id(request)), headers)


def nginx_error(request: Request, status: int, headers: Mapping[str, str] | None = None) -> None:
    """Answer and finish ``request`` as Kong's error handler answers an error nginx raised
    (``kong/error_handlers.lua``): upstream failures, payloads too large..."""
    accept = _first(request, b"accept") or _first(request, b"content-type") or ERROR_DEFAULT_TYPE
    content_type = response_type(accept)
    text = ERROR_PAGE_MESSAGES.get(status, f"The upstream server responded with {status}")
    # nginx's 494 (headers too large) leaves as 400, its message kept.
    _send(request, 400 if status == 494 else status, content_type,
          error_body(content_type, text, request_id(request)), headers)


def _first(request: Request, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def _send(
    request: Request, status: int, content_type: str, body: bytes, headers: Mapping[str, str] | None
) -> None:
    if request.channel is None or request.finished:  # the client has gone, or was answered
        return
    request.setResponseCode(status)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    request.setHeader(b"content-type", content_type.encode("ascii"))
    request.setHeader(b"content-length", b"%d" % len(body))
    request.setHeader(b"server", SERVER_TOKENS.encode("ascii"))
    request.write(body)
    request.finish()
