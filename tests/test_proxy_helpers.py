"""Small guards of the request path."""

from gatewayd.plugins.ai_proxy_advanced.handler import _without


def test_an_error_text_quoting_an_api_key_is_masked():
    text = "InvalidURL('https://h/v1beta/models/m:generateContent?key=AIzaSECRET')"
    assert "AIzaSECRET" not in _without(text, "AIzaSECRET")
    assert _without(text, None) == text
