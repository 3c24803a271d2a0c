"""Google's errors become the Anthropic errors the SDKs expect."""

import json

import pytest

from gatewayd import errors


def google(code, status, message, details=None):
    error = {"code": code, "status": status, "message": message}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    "status,expected_status,expected_type",
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (503, 529, "overloaded_error"),
        (504, 504, "timeout_error"),
    ],
)
def test_status_mapping(status, expected_status, expected_type):
    error = errors.from_upstream(status, google(status, "X", "boom"))
    assert (error.status, error.type) == (expected_status, expected_type)
    body = error.body()
    assert body["type"] == "error" and body["error"]["type"] == expected_type


def test_client_errors_keep_googles_message():
    error = errors.from_upstream(400, google(400, "INVALID_ARGUMENT", "empty text parameter"))
    assert "empty text parameter" in error.message


def test_auth_errors_do_not_repeat_googles_message():
    error = errors.from_upstream(
        401, google(401, "UNAUTHENTICATED", "token ya29.SECRET is expired")
    )
    assert "ya29" not in error.message


def test_retry_delay_becomes_retry_after():
    body = google(
        429,
        "RESOURCE_EXHAUSTED",
        "quota",
        [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "11.2s"}],
    )
    assert dict(errors.from_upstream(429, body).headers) == {"retry-after": "12"}


def test_stream_errors_in_a_list_and_garbage_bodies():
    listed = json.dumps([{"error": {"code": 400, "message": "bad field"}}]).encode()
    assert "bad field" in errors.from_upstream(400, listed).message
    assert errors.from_upstream(502, b"<html>").type == "api_error"
