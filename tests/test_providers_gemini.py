"""Targets of the gemini provider: Vertex AI or the Gemini API, API keys, upstream_url as Kong has it."""

import pytest

from gatewayd.providers.gemini import TargetError, target_from_config


def target(model_options: dict, auth: dict, name: str = "gemini-2.5-flash"):
    return target_from_config({"model": {"provider": "gemini", "name": name, "options": model_options}, "auth": auth}, 0)


KEY_HEADER = {"header_name": "x-goog-api-key", "header_value": "sekrit"}


def test_gemini_api_with_a_header_key():
    t = target({}, KEY_HEADER)
    assert (t.api, t.scheme, t.host, t.port) == ("gemini", "https", "generativelanguage.googleapis.com", 443)
    assert t.url("stream") == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert t.auth.header_name == "x-goog-api-key" and "sekrit" not in repr(t)


def test_gemini_api_with_a_query_key_never_logged():
    t = target({}, {"param_name": "key", "param_value": "sekrit", "param_location": "query"})
    assert t.url("generate").endswith("/v1beta/models/gemini-2.5-flash:generateContent?key=sekrit")
    assert t.url("stream").endswith(":streamGenerateContent?alt=sse&key=sekrit")
    assert "sekrit" not in t.upstream_uri("generate") + t.upstream_uri("stream")


def test_gemini_api_needs_a_key():
    with pytest.raises(TargetError, match="API key"):
        target({"gemini": {"api_endpoint": "generativelanguage.googleapis.com"}}, {"allow_override": False})


@pytest.mark.parametrize(
    "url, base",
    [
        # Kong's form: the full URL of one operation; gatewayd swaps the operation per call.
        ("http://127.0.0.1:9999/v1beta/models/gemini-2.5-flash:generateContent", "/v1beta/models/gemini-2.5-flash"),
        ("http://127.0.0.1:9999/v1beta/models/other-name", "/v1beta/models/other-name"),
        ("http://127.0.0.1:9999", "/v1beta/models/gemini-2.5-flash"),
        ("http://127.0.0.1:9999/", "/v1beta/models/gemini-2.5-flash"),
        ("http://127.0.0.1:9999/gemini-proxy", "/gemini-proxy/v1beta/models/gemini-2.5-flash"),
    ],
)
def test_upstream_url(url, base):
    t = target({"upstream_url": url}, KEY_HEADER)
    assert (t.scheme, t.host, t.port, t.base_path) == ("http", "127.0.0.1", 9999, base)
    assert t.url("count") == f"http://127.0.0.1:9999{base}:countTokens"


def test_upstream_url_on_vertex_keeps_the_vertex_path():
    options = {"upstream_url": "http://127.0.0.1:9999",
               "gemini": {"api_endpoint": "aiplatform.googleapis.com", "project_id": "p", "location_id": "global"}}
    t = target(options, {"gcp_use_service_account": True, "gcp_service_account_json": '{"type": "service_account"}'})
    assert t.api == "vertex"
    assert t.url("generate") == (
        "http://127.0.0.1:9999/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
    )
