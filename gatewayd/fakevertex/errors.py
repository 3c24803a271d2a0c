"""Google's error envelope: ``{"error": {"code", "message", "status"[, "details"]}}``."""

from typing import Any

STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_CANNED = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    409: "The operation was aborted.",
    429: "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    499: "The operation was cancelled.",
    500: "Internal error encountered.",
    501: "Operation is not implemented, or supported, or enabled.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}

RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}


class Rejected(Exception):
    """A request the real service would refuse; carries the HTTP code and Google's message."""

    def __init__(self, code: int, message: str, details: tuple[dict[str, Any], ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(code: int, message: str, details: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": STATUSES.get(code, "UNKNOWN")}
    if details:
        error["details"] = list(details)
    return {"error": error}


def canned(code: int, api: str) -> Rejected:
    """The error the ``[[fail CODE]]`` directive asks for.

    Only the Gemini API's 429 carries ``RetryInfo`` (/work/shared/gemini-api-rules.md, Errors);
    Vertex's quota error points at its 429 page and says nothing about when to retry.
    """
    details = (RETRY_INFO,) if code == 429 and api == "gemini" else ()
    return Rejected(code, _CANNED.get(code, "Unknown error."), details)
