"""``auth.gcp_oauth_token_url`` through the real daemon: it replaces the service-account key's
``token_uri``, as Kong's override does.  The key here names a token endpoint nobody listens on;
only the override reaches the fake's."""

from __future__ import annotations

import json

import anthropic

from tests.e2e.harness import Daemon, config_dir, wait_for

OVERRIDE = """_format_version: "3.0"
plugins:
  - name: ai-proxy-advanced
    config:
      llm_format: anthropic
      targets:
      - route_type: llm/v1/chat
        auth:
          gcp_use_service_account: true
          gcp_service_account_json: "${{ env "DECK_GEMINI_API_KEY" }}"
          gcp_oauth_token_url: "${{ env "DECK_GCP_TOKEN_URL" }}"
        model:
          provider: gemini
          name: gemini-2.5-flash
          options:
            gemini:
              api_endpoint: "${{ env "DECK_GEMINI_API_ENDPOINT" }}"
              project_id: "${{ env "DECK_GCP_PROJECT_ID" }}"
              location_id: "${{ env "DECK_GEMINI_LOCATION_ID" }}"
"""
#: The discard port on loopback: a connection there is refused.
DEAD_TOKEN_URI = "http://127.0.0.1:9/token"


def test_the_override_replaces_the_keys_token_uri(fake, tmp_path):
    env = fake.seed_environment()
    key = json.loads(env["DECK_GEMINI_API_KEY"])
    env["DECK_GEMINI_API_KEY"] = json.dumps({**key, "token_uri": DEAD_TOKEN_URI})
    env["DECK_GCP_TOKEN_URL"] = fake.url + "/token"
    fake.clear()
    daemon = Daemon(config_dir(tmp_path, ("20-ai-proxy-advanced.yaml", OVERRIDE)), env, tmp_path)
    try:
        client = anthropic.Anthropic(base_url=daemon.url + "/anything", api_key="x", max_retries=0)
        message = client.messages.create(
            model="gemini-2.5-flash", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].text == "Echo: hi"
        tokens = wait_for(lambda: [r for r in fake.requests() if r["path"] == "/token"], what="a token request")
        assert tokens[0]["status"] == 200
        (call,) = [r for r in fake.requests() if r["path"].endswith(":generateContent")]
        assert call["status"] == 200 and call["headers"]["authorization"].startswith("Bearer ")
    finally:
        daemon.stop()
