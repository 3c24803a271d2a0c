"""ai-proxy-advanced to Kong 3.15: aliases, Claude on Vertex, model.options, usage and cost,
Kong's entity checks and the fields gatewayd refuses."""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock

from gatewayd.config import ConfigError
from gatewayd.config.schema import SchemaError

from gatewayd.plugins.ai_proxy_advanced.balancer import Balancer, BalancerConfig, Candidate, alias_matches
from gatewayd.plugins.ai_proxy_advanced.checks import Refusal, check
from gatewayd.plugins.ai_proxy_advanced.schema import AI_PROXY_ADVANCED
from gatewayd.providers.usage import Pricing, WindowFactor, cost, kong_usage, tokens_from_anthropic, tokens_from_gemini
from tests.grammar import check_stream
from tests.test_service import GatewayInMemory, ask, events

VERTEX = """
        auth:
          gcp_use_service_account: true
          gcp_service_account_json: "${{ env "DECK_GEMINI_API_KEY" }}"
        options_placeholder"""


def target(name: str, alias: str | None = None, options: str = "", logging: str = "{log_statistics: true}") -> str:
    alias_line = f"\n          model_alias: {alias}" if alias else ""
    return f"""
      - route_type: llm/v1/chat
        logging: {logging}
        auth:
          gcp_use_service_account: true
          gcp_service_account_json: '${{{{ env "DECK_GEMINI_API_KEY" }}}}'
        model:
          provider: gemini
          name: {name}{alias_line}
          options:
            gemini:
              api_endpoint: '${{{{ env "DECK_GEMINI_API_ENDPOINT" }}}}'
              project_id: '${{{{ env "DECK_GCP_PROJECT_ID" }}}}'
              location_id: '${{{{ env "DECK_GEMINI_LOCATION_ID" }}}}'
{options}"""


def plugin(targets: list[str], extra: str = "") -> dict[str, str]:
    return {"20-ai-proxy-advanced.yaml": f"""_format_version: "3.0"
plugins:
  - name: ai-proxy-advanced
    config:
      llm_format: anthropic{extra}
      targets:{''.join(targets)}
"""}


def models_called(fake) -> list[str]:
    return [r["path"].rsplit("/", 1)[-1] for r in fake.requests]


class AliasRouting(GatewayInMemory):
    extra_files = plugin([
        target("gemini-2.5-flash", "fast"),
        target("gemini-2.5-pro", "smart"),
        target("claude-sonnet-4-5@20250929", "claude-sonnet-*"),
    ])

    def test_the_requests_model_picks_the_target_by_alias(self):
        for model in ("smart", "fast", "smart", "fast"):
            status, headers, _ = self.post(ask("hi", model=model))
            self.assertEqual(status, 200)
        self.assertEqual(models_called(self.fake), [
            "gemini-2.5-pro:generateContent", "gemini-2.5-flash:generateContent"] * 2)
        self.assertEqual(headers["x-kong-llm-model"], ["gemini/gemini-2.5-flash"])
        self.assertEqual(headers["server"], ["gatewayd/0.1.0"])  # not twisted.web's own name

    def test_a_claude_code_dated_name_matches_a_wildcard_alias_and_goes_to_claude_on_vertex(self):
        status, headers, text = self.post(ask("hello there", model="claude-sonnet-4-5-20250929"))
        self.assertEqual(status, 200, text)
        message = json.loads(text)
        self.assertEqual(message["content"][0]["text"], "Claude: hello there")
        (call,) = self.fake.requests
        self.assertTrue(call["path"].endswith("/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"))
        self.assertNotIn("model", call["body"])
        self.assertEqual(call["body"]["anthropic_version"], "vertex-2023-10-16")
        (record,) = self.records()
        self.assertEqual(record["ai"]["proxy"]["meta"]["request_model"], "claude-sonnet-4-5-20250929")
        self.assertEqual(record["ai"]["proxy"]["usage"]["prompt_tokens"], message["usage"]["input_tokens"])

    def test_claude_codes_beta_features_go_with_the_body_to_claude_only(self):
        beta = "context-management-2025-06-27,interleaved-thinking-2025-05-14"
        self.assertEqual(self.post(ask("hi", model="claude-sonnet-4-5"), headers={"anthropic-beta": beta})[0], 200)
        self.assertEqual(self.post(ask("hi", model="fast"), headers={"anthropic-beta": beta})[0], 200)
        claude, gemini = self.fake.requests
        self.assertEqual(claude["headers"].get("anthropic-beta"), beta)
        self.assertNotIn("anthropic-beta", gemini["headers"])  # a translated request: nothing to say

    def test_claude_on_vertex_streams_a_tool_call_through(self):
        tools = [{"name": "Read", "description": "read", "input_schema": {"type": "object"}}]
        status, _, text = self.post(ask("look [[tool Read]]", model="claude-sonnet-4-5", stream=True, tools=tools))
        self.assertEqual(status, 200, text)
        parsed = events(text)
        check_stream(parsed)
        starts = [d["content_block"] for n, d in parsed if n == "content_block_start"]
        self.assertEqual(starts[0]["type"], "tool_use")
        self.assertTrue(self.fake.requests[0]["path"].endswith(":streamRawPredict"))
        usage = self.records()[0]["ai"]["proxy"]["usage"]
        final = [d["usage"]["output_tokens"] for n, d in parsed if n == "message_delta"][-1]
        self.assertEqual(usage["completion_tokens"], final)  # not message_start's provisional 1

    def test_no_alias_matches_falls_back_to_the_balancer(self):
        self.post(ask("hi", model="something-else"))
        self.post(ask("hi", model="something-else"))
        self.assertEqual(len(set(models_called(self.fake))), 2)


class TargetOptions(GatewayInMemory):
    extra_files = plugin(
        [target("gemini-2.5-flash", options="            temperature: 0.25\n            top_p: 0.5\n            top_k: 7\n",
                logging="{log_statistics: true, log_payloads: true}")],
        extra="\n      response_streaming: deny\n      model_name_header: false",
    )

    def test_the_targets_sampling_options_replace_the_clients(self):
        status, headers, _ = self.post(ask("hi", temperature=0.9, top_p=0.9, top_k=40))
        self.assertEqual(status, 200)
        config = self.fake.requests[0]["body"]["generationConfig"]
        self.assertEqual((config["temperature"], config["topP"], config["topK"]), (0.25, 0.5, 7))
        self.assertNotIn("x-kong-llm-model", headers)

    def test_streaming_denied_is_kongs_400(self):
        status, _, text = self.post(ask("hi", stream=True))
        self.assertEqual(status, 400)
        self.assertIn("response streaming is not enabled for this LLM", text)
        self.assertEqual(self.fake.requests, [])

    def test_payloads_and_the_clients_model_in_the_record(self):
        self.post(ask("hi there"))
        proxy = self.records()[0]["ai"]["proxy"]
        self.assertEqual(proxy["meta"]["request_model"], "claude-x")
        self.assertEqual(json.loads(proxy["payload"]["request"])["messages"][0]["content"], "hi there")
        self.assertIn("Echo", proxy["payload"]["response"])


class AlwaysStream(GatewayInMemory):
    extra_files = plugin([target("gemini-2.5-flash", logging="{log_statistics: true, log_payloads: true}")],
                         extra="\n      response_streaming: always")

    def test_always_streams_and_logs_the_streamed_payload_and_gemini_model_version(self):
        status, headers, text = self.post(ask("hi"))
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"][0].startswith("text/event-stream"))
        check_stream(events(text))
        proxy = self.records()[0]["ai"]["proxy"]
        self.assertEqual(proxy["payload"]["response"], text)
        self.assertEqual(proxy["meta"]["response_model"], "gemini-2.5-flash")
        self.assertEqual(proxy["meta"]["request_mode"], "stream")


class PayloadsNeedStatistics(GatewayInMemory):
    extra_files = plugin([target("gemini-2.5-flash", logging="{log_statistics: false, log_payloads: true}")])

    def test_no_payload_without_log_statistics_as_in_kong(self):
        self.post(ask("hi"))
        self.assertNotIn("ai", self.records()[0])


class BlockedPrompt(GatewayInMemory):
    def test_a_blocked_prompt_is_a_400_as_kong_answers_it(self):
        status, _, text = self.post(ask("bad [[block PROHIBITED_CONTENT]]"))
        self.assertEqual(status, 400)
        self.assertIn("PROHIBITED_CONTENT", json.loads(text)["error"]["message"])


def test_alias_matching_beyond_kong():
    assert alias_matches("claude-haiku-4-5", "claude-haiku-4-5-20251001")
    assert alias_matches("claude-haiku-4-5", "claude-haiku-4-5@20251001")
    assert alias_matches("claude-haiku-*", "claude-haiku-4-5-20251001")
    assert not alias_matches("claude-haiku-4-5", "claude-haiku-4-5-latest")
    assert not alias_matches("claude-haiku-*", "claude-sonnet-4-5")


def test_exact_alias_wins_over_a_wildcard():
    balancer = Balancer([Candidate("a", alias="claude-*"), Candidate("b", alias="claude-x")], BalancerConfig(), Clock())
    assert next(balancer.attempts("claude-x")) == 1
    assert next(balancer.attempts("claude-y")) == 0


# Usage and cost (Kong 3.15.0.4's fields).

def test_gemini_usage_counts_thoughts_as_completion_and_tool_use_as_prompt():
    tokens = tokens_from_gemini({"promptTokenCount": 1000, "cachedContentTokenCount": 400,
                                 "candidatesTokenCount": 50, "thoughtsTokenCount": 200,
                                 "toolUsePromptTokenCount": 30, "totalTokenCount": 1280})
    usage = kong_usage(tokens, Pricing(), latency_ms=500, first_token_ms=100)
    assert usage["prompt_tokens"] == 1030
    assert usage["completion_tokens"] == 250
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 200}
    assert usage["prompt_tokens_details"] == {"cached_tokens": 400}
    assert usage["total_tokens"] == 1280
    assert usage["cost"] == 0


def test_cost_with_cache_reads_and_the_context_window_factor():
    pricing = Pricing(input_cost=1.25, output_cost=10, cache_read_cost=0.125,
                      context_window=(WindowFactor(200_000, 2, 1.5),))
    small = tokens_from_gemini({"promptTokenCount": 1000, "cachedContentTokenCount": 400,
                                "candidatesTokenCount": 100, "thoughtsTokenCount": 100})
    assert cost(small, pricing) == pytest.approx((600 * 1.25 + 400 * 0.125 + 200 * 10) / 1e6)
    large = tokens_from_gemini({"promptTokenCount": 250_000, "candidatesTokenCount": 1000})
    assert cost(large, pricing) == pytest.approx((250_000 * 2.5 + 1000 * 15) / 1e6)


def test_cost_needs_both_base_prices_and_applies_the_service_tier():
    tokens = tokens_from_gemini({"promptTokenCount": 1_000_000, "candidatesTokenCount": 0,
                                 "trafficType": "PROVISIONED_THROUGHPUT"})
    assert cost(tokens, Pricing(input_cost=1)) == 0
    assert cost(tokens, Pricing(input_cost=1, output_cost=2, service_tiers=(("throughput", 0.5),))) == 0.5


def test_claude_cache_writes_by_ttl():
    tokens = tokens_from_anthropic({"input_tokens": 100, "cache_creation_input_tokens": 300,
                                    "cache_read_input_tokens": 0, "output_tokens": 10,
                                    "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}})
    assert tokens.prompt == 400
    pricing = Pricing(input_cost=3, output_cost=15, cache_write_costs=(("5m", 3.75), ("1h", 6.0)))
    assert cost(tokens, pricing) == pytest.approx((100 * 3 + 100 * 3.75 + 200 * 6 + 10 * 15) / 1e6)


# Kong's entity checks and gatewayd's refusals, each with its message.

def config_with(target_changes=None, **top) -> dict:
    base = {
        "llm_format": "anthropic",
        "targets": [{
            "route_type": "llm/v1/chat",
            "auth": {"gcp_use_service_account": True},
            "model": {"provider": "gemini", "name": "gemini-2.5-flash",
                      "options": {"gemini": {"api_endpoint": "e", "project_id": "p", "location_id": "l"}}},
        }],
        **top,
    }
    if target_changes:
        target_changes(base["targets"][0])
    return AI_PROXY_ADVANCED.validate_config(base)


REFUSALS = [
    (lambda t: t["auth"].update(allow_override=True), "targets[0].auth.allow_override",
     "bedrock and gemini only support auth.allow_override = false"),
    (lambda t: t["auth"].update(param_name="key", param_value="v"), "targets[0].auth",
     "all or none of these fields must be set: 'auth.param_name', 'auth.param_value', 'auth.param_location'"),
    (lambda t: t["auth"].update(header_name="x"), "targets[0].auth",
     "all or none of these fields must be set: 'auth.header_name', 'auth.header_value'"),
    (lambda t: t["model"]["options"]["gemini"].pop("project_id"), "targets[0].model.options.gemini",
     "all or none of these fields must be set"),
    (lambda t: t["model"]["options"].update(input_cost=0), "targets[0].model.options.input_cost",
     "value must be greater than 0"),
    (lambda t: t["model"]["options"].update(upstream_url="not a url"), "targets[0].model.options.upstream_url",
     "missing or unsupported scheme"),
    (lambda t: t.update(route_type="llm/v1/embeddings"), "targets[0].route_type", "is not served by gatewayd"),
    (lambda t: t["model"].update(provider="openai"), "targets[0].model.provider", "is not served by gatewayd"),
    (lambda t: t["model"]["options"]["gemini"].update(endpoint_id="1"), "targets[0].model.options.gemini.endpoint_id",
     "is not served by gatewayd"),
    (lambda t: t["auth"].update(gcp_metadata_url="http://m"), "targets[0].auth.gcp_metadata_url",
     "is not served by gatewayd"),
    (lambda t: t["auth"].update(gcp_oauth_token_url="http://t"), "targets[0].auth.gcp_oauth_token_url",
     "is not served by gatewayd"),
    (lambda t: t["model"]["options"].update(temperature=3), "targets[0].model.options.temperature",
     "Gemini takes a temperature from 0 to 2"),
    (lambda t: t["model"]["options"].update(context_window_factor=[{"above": "lots", "input_factor": 2, "output_factor": 1}]),
     "targets[0].model.options.context_window_factor[0].above", "expected a token count"),
]


@pytest.mark.parametrize("change, field, message", REFUSALS)
def test_refusals_name_the_field(change, field, message):
    with pytest.raises(Refusal) as caught:
        check(config_with(change))
    assert caught.value.field == field
    assert message in caught.value.message


@pytest.mark.parametrize("change, top, field, why", [
    (lambda t: t["model"]["options"].update(azure_instance="x"), {}, "config.targets[0].model.options.azure_instance",
     "it applies to other providers"),
    (lambda t: t["model"]["options"].update(upstream_path="/x"), {}, "config.targets[0].model.options.upstream_path",
     "it applies to other providers"),
    (lambda t: t["auth"].update(aws_access_key_id="AKIA"), {}, "config.targets[0].auth.aws_access_key_id",
     "it applies to other providers"),
    (None, {"acls": {"allow": [{"match": [{"type": "model", "values": ["x"]}]}]}}, "config.acls.allow",
     "per-model access lists"),
    (None, {"embeddings": {"model": {"name": "e", "provider": "gemini"}}}, "config.embeddings",
     "it serves no semantic balancing"),
])
def test_fields_not_served_are_refused_by_the_schema(change, top, field, why):
    with pytest.raises(SchemaError) as caught:
        config_with(change, **top)
    assert caught.value.path == field
    assert caught.value.message.startswith(f"not served by gatewayd ({why}")


@pytest.mark.parametrize("top, field", [
    ({"genai_category": "text/embeddings"}, "genai_category"),
    ({"balancer": {"slots": 100}}, "balancer.slots"),
    ({"llm_format": "openai"}, "llm_format"),
])
def test_plugin_level_refusals(top, field):
    with pytest.raises(Refusal) as caught:
        check(config_with(**top))
    assert caught.value.field == field


def test_a_plain_315_target_is_served():
    check(config_with(lambda t: t["model"].update(model_alias="fast")))


class RefusalAtLoad(GatewayInMemory):
    extra_files = plugin([target("gemini-2.5-flash", options="            upstream_path: /x\n")])

    def setUp(self):
        with self.assertRaises(ConfigError) as caught:
            super().setUp()
        self.error = str(caught.exception)

    def test_the_message_names_file_entity_and_field(self):
        self.assertIn("20-ai-proxy-advanced.yaml: plugins[0] (ai-proxy-advanced): "
                      "config.targets[0].model.options.upstream_path: not served by gatewayd", self.error)


GEMINI_KEY_IN_BODY = """_format_version: "3.0"
plugins:
  - name: ai-proxy-advanced
    config:
      llm_format: anthropic
      targets:
      - route_type: llm/v1/chat
        logging: {log_statistics: true, log_payloads: true}
        auth:
          param_name: key
          param_value: fake-gemini-key
          param_location: body
        model:
          provider: gemini
          name: gemini-2.5-flash
          options:
            upstream_url: "https://fake.test/v1beta/models/gemini-2.5-flash:generateContent"
"""


class KeyInTheBody(GatewayInMemory):
    """``auth.param_location: body``: Kong's pre_request puts the parameter into the JSON body
    sent upstream, never into the query.  Google reads an API key from the query or a header
    only, so the Gemini API refuses the call as unauthenticated, as it would refuse Kong's."""

    extra_files = {"20-ai-proxy-advanced.yaml": GEMINI_KEY_IN_BODY}

    def test_the_key_goes_into_the_upstream_json_body(self):
        status, _, text = self.post(ask("hi"))
        (call,) = self.fake.requests
        self.assertEqual(call["path"], "/v1beta/models/gemini-2.5-flash:generateContent")
        self.assertEqual(call["body"]["key"], "fake-gemini-key")
        self.assertEqual(call["body"]["contents"][-1]["parts"], [{"text": "hi"}])
        self.assertEqual(call["query"], {})
        self.assertNotIn("x-goog-api-key", call["headers"])
        self.assertEqual((status, call["status"]), (403, 403))
        self.assertIn("credentials were rejected by the upstream", json.loads(text)["error"]["message"])
        (record,) = self.records()
        logged = json.dumps(record)
        self.assertNotIn("fake-gemini-key", logged)  # not in the logged payload, nor the upstream URI
        self.assertNotIn("fake-gemini-key", text)


GEMINI_LOCATION = "'${{ env \"DECK_GEMINI_LOCATION_ID\" }}'"


class FinalTextSignatures(GatewayInMemory):
    """A Gemini 3 answer's final-text signature is kept and goes back with that text in the
    next turn, whether the answer was streamed or not."""

    extra_files = plugin([  # Gemini 3 is served from Vertex's global location only
        target("gemini-3-pro-preview", alias="three").replace(GEMINI_LOCATION, "global")])
    thinking = {"type": "enabled", "budget_tokens": 1024}

    def turn(self, model: str, stream: bool) -> list[dict]:
        """Ask, answer, ask again with that answer: the parts the second call sent upstream."""
        first = ask("hi", model=model, thinking=self.thinking, stream=stream)
        status, _, text = self.post(first)
        self.assertEqual(status, 200, text)
        if stream:
            blocks: dict[int, dict] = {}
            for name, data in events(text):
                if name == "content_block_start":
                    blocks[data["index"]] = dict(data["content_block"])
                elif name == "content_block_delta" and data["delta"]["type"] == "text_delta":
                    blocks[data["index"]]["text"] += data["delta"]["text"]
                elif name == "content_block_delta" and data["delta"]["type"] == "thinking_delta":
                    blocks[data["index"]]["thinking"] += data["delta"]["thinking"]
                elif name == "content_block_delta" and data["delta"]["type"] == "signature_delta":
                    blocks[data["index"]]["signature"] += data["delta"]["signature"]
            content = [blocks[i] for i in sorted(blocks)]
        else:
            content = json.loads(text)["content"]
        self.assertEqual(content[-1]["type"], "text")  # the answer's text stays last
        again = dict(first, stream=False, messages=[
            *first["messages"], {"role": "assistant", "content": content}, {"role": "user", "content": "and?"}])
        status, _, text = self.post(again)
        self.assertEqual(status, 200, text)
        return self.fake.requests[-1]["body"]["contents"][1]["parts"]

    def test_gemini_3_gets_the_signature_of_its_final_text_back(self):
        for stream in (False, True):
            parts = self.turn("three", stream)
            signed = [p.get("thoughtSignature") for p in parts if "text" in p and not p.get("thought")]
            # The one the fake issued: it takes no other (the second call answered 200).
            self.assertEqual(len(signed), 1, stream)
            self.assertTrue(signed[0], stream)
