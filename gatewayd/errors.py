"""Anthropic-shaped error bodies, and how Google's upstream errors map onto them.

The Anthropic SDKs pick their exception class from the HTTP status and the
``error.type`` field, so both must agree with what Anthropic's API would send.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen


@frozen
class APIError(Exception):
    """An error to answer with: status, Anthropic error type and a message safe to show."""

    status: int
    type: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.type, "message": self.message}}

    def answer_body(self, request_id: str | None) -> dict[str, Any]:
        """The body of an HTTP answer: Anthropic's, which the SDKs parse, with Kong's
        top-level ``message`` and ``request_id`` beside it (Anthropic's API also sends a
        top-level ``request_id``), so scripts written against Kong's errors read it too."""
        body: dict[str, Any] = {**self.body(), "message": self.message}
        if request_id is not None:
            body["request_id"] = request_id
        return body

    def to_json(self) -> bytes:
        return json.dumps(self.body()).encode("utf-8")


def invalid_request(message: str) -> APIError:
    return APIError(400, "invalid_request_error", message)


def not_found(message: str) -> APIError:
    return APIError(404, "not_found_error", message)


def upstream_timeout(host: str, phase: str) -> APIError:
    """The upstream did not connect, answer or go on streaming in time (the SDK's GatewayTimeoutError)."""
    return APIError(504, "timeout_error", f"upstream {host} timed out waiting for the {phase}")


# Google's canonical codes, keyed by HTTP status, mapped to (status, Anthropic type).
_BY_STATUS = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    413: (413, "request_too_large"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    502: (502, "api_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
}


def from_upstream(status: int, body: bytes) -> APIError:
    """Translate a Google error answer into the error an Anthropic client expects.

    Google's message is passed on for client errors (it says what was wrong
    with the request); for 401/403 it is replaced, since it speaks of the
    gateway's own credentials, which are none of the client's business.
    """
    mapped_status, kind = _BY_STATUS.get(
        status, (500, "api_error") if status >= 500 else (400, "invalid_request_error")
    )
    error = _google_error(body)
    message = error.get("message") or f"upstream answered HTTP {status}"
    if status in (401, 403):
        message = (
            "the gateway's Google credentials were rejected by the upstream "
            f"(HTTP {status} {error.get('status', '')})".rstrip()
        )
    headers: tuple[tuple[str, str], ...] = ()
    delay = _retry_delay(error)
    if delay is not None:
        headers = (("retry-after", delay),)
    return APIError(mapped_status, kind, f"upstream: {message}", headers)


def stream_error_event(error: APIError) -> dict[str, Any]:
    """The ``data`` of an SSE ``error`` event, as Anthropic sends mid-stream."""
    return error.body()


def _google_error(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # streaming endpoints answer errors as a one-element array
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return parsed["error"]
    return {}


def _retry_delay(error: dict[str, Any]) -> str | None:
    """Seconds to wait, from a ``google.rpc.RetryInfo`` detail (``"12s"``, ``"1.5s"``)."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = str(detail.get("retryDelay", ""))
            if delay.endswith("s"):
                try:
                    seconds = float(delay[:-1])
                except ValueError:
                    return None
                return str(max(1, round(seconds + 0.499)))
    return None
