"""The Gemini API as the provider: an API key from the target's auth, upstream_url pointing at the
fake's /v1beta endpoints, the anthropic SDK through the real daemon; and GET /v1/models."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import anthropic
import pytest
from anthropic.types import Message

from tests.e2e.harness import Daemon, config_dir, file_log_override, read_records, settled_records, wait_for
from tests.grammar import check_sdk_stream

MODEL = "gemini-3-flash-preview"
PLUGIN = """_format_version: "3.0"
plugins:
  - name: ai-proxy-advanced
    config:
      llm_format: anthropic
      targets:
      - route_type: llm/v1/chat
        logging:
          log_statistics: true
          log_payloads: false
        auth:
          param_name: key
          param_value: "${{ env "DECK_GEMINI_KEY" }}"
          param_location: query
        model:
          provider: gemini
          name: %s
          options:
            upstream_url: "${{ env "DECK_GEMINI_UPSTREAM" }}"
""" % MODEL


@pytest.fixture(scope="module")
def gemini_daemon(fake, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gemini-api")
    log_path = workdir / "claude.json"
    env = fake.seed_environment()
    env["DECK_GEMINI_KEY"] = "fake-gemini-key"
    env["DECK_GEMINI_UPSTREAM"] = f"{fake.url}/v1beta/models/{MODEL}:generateContent"
    daemon = Daemon(config_dir(workdir, ("80-gemini-api.yaml", PLUGIN), file_log_override(log_path)), env, workdir)
    daemon.file_log = log_path
    yield daemon
    daemon.stop()


@pytest.fixture
def client(gemini_daemon):
    return anthropic.Anthropic(base_url=gemini_daemon.url + "/anything", api_key="x", max_retries=0)


def model_calls(fake) -> list[dict]:
    return [r for r in fake.requests() if r["path"].startswith("/v1beta/models/")]


def test_create_stream_and_count_on_the_gemini_api(client, fake):
    fake.clear()
    message = client.messages.create(
        model="claude-of-the-client", max_tokens=256, system="Be brief.",
        messages=[{"role": "user", "content": "Tell me about the Alexiad."}],
    )
    assert "Alexiad" in message.content[-1].text and message.stop_reason == "end_turn"
    with client.messages.stream(model="claude-of-the-client", max_tokens=256,
                                messages=[{"role": "user", "content": "hello there"}]) as stream:
        check_sdk_stream(stream)
        final = stream.get_final_message()
    assert final.content[-1].text == "Echo: hello there"
    counted = client.messages.count_tokens(model="claude-of-the-client", system="Be brief.",
                                           messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens > 0
    calls = model_calls(fake)
    assert [c["path"].rsplit(":", 1)[1] for c in calls] == ["generateContent", "streamGenerateContent", "countTokens"]
    assert all(c["status"] == 200 and c["query"]["key"] == ["fake-gemin"] for c in calls)
    assert "authorization" not in calls[0]["headers"]
    assert calls[1]["query"]["alt"] == ["sse"]


def test_tool_round_trip_with_signatures_on_gemini_3(client, fake):
    tools = [{"name": "lookup", "description": "Look a word up.",
              "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}]
    messages = [{"role": "user", "content": 'Use the tools. [[call lookup {"word": "Alexiad"}]] [[call lookup {"word": "Komnene"}]]'}]
    first = client.messages.create(model="m", max_tokens=256, tools=tools, messages=messages)
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [c.input["word"] for c in calls] == ["Alexiad", "Komnene"] and first.stop_reason == "tool_use"
    assert len({c.id for c in calls}) == 2
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": c.id, "content": f"about {c.input['word']}"} for c in calls]},
    ]
    second = client.messages.create(model="m", max_tokens=256, tools=tools, messages=messages)
    assert second.content[-1].text.startswith("Tool results: lookup")
    sent = model_calls(fake)[-1]
    assert sent["status"] == 200  # the strict fake checked the returned thought signature


def test_web_search_becomes_google_search_and_the_log_says_what_was_left_out(client, gemini_daemon, fake):
    fake.clear()
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
    answer = client.messages.create(model="m", max_tokens=256, tools=[search],
                                    messages=[{"role": "user", "content": "Search the web for the Alexiad."}])
    assert "Alexiad" in answer.content[-1].text
    assert model_calls(fake)[-1]["body"]["tools"] == [{"googleSearch": {}}]
    assert [b.type for b in answer.content[:2]] == ["server_tool_use", "web_search_tool_result"]
    assert answer.content[0].input == {"query": "Search the web for the Alexiad."}
    assert answer.content[1].content[0].title == "wikipedia.org"
    cited = [b for b in answer.content if b.type == "text" and b.citations]
    assert cited and cited[0].citations[0].url == answer.content[1].content[0].url
    assert answer.usage.server_tool_use.web_search_requests == 1
    with client.messages.stream(model="m", max_tokens=256, tools=[search],
                                messages=[{"role": "user", "content": "Search the web for the Alexiad."}]) as stream:
        check_sdk_stream(stream)
        streamed = stream.get_final_message()
    assert [b.type for b in streamed.content] == [b.type for b in answer.content]
    assert streamed.content[2].citations == answer.content[2].citations
    before = len(settled_records(gemini_daemon.file_log))
    code = {"type": "code_execution_20250522", "name": "code_execution"}
    client.messages.create(model="m", max_tokens=256, tools=[code],
                           messages=[{"role": "user", "content": "hi"}])
    record = wait_for(lambda: (r := read_records(gemini_daemon.file_log)) and len(r) > before and r[-1])
    assert record["gatewayd"]["notes"] == ["tools left out: code_execution"]
    assert "tools" not in model_calls(fake)[-1]["body"]


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_models_lists_the_routes_targets(client, gemini_daemon):
    listed = client.models.list()
    assert [m.id for m in listed.data] == [MODEL] and listed.data[0].type == "model"
    assert client.models.retrieve(MODEL).id == MODEL
    status, body = get_json(gemini_daemon.url + "/anything/v1/models/claude-opus-4")
    assert status == 404 and body["error"]["type"] == "not_found_error"


def test_answers_parse_as_sdk_messages(client):
    raw = client.messages.with_raw_response.create(
        model="m", max_tokens=256, messages=[{"role": "user", "content": "[[cached 10]] hello"}])
    message = Message.model_validate(json.loads(raw.http_response.text))
    assert message.usage.cache_read_input_tokens == 10


STOPS = ["<one>", "<two>", "<three>", "<four>", "<five>", "<six>"]


@pytest.mark.parametrize("stream", [False, True])
def test_answers_end_to_end(client, stream):
    def ask(text: str, **extra) -> Message:
        kwargs = {"model": "m", "max_tokens": 256, "messages": [{"role": "user", "content": text}], **extra}
        if stream:
            with client.messages.stream(**kwargs) as events:
                check_sdk_stream(events)
                return events.get_final_message()
        return client.messages.create(**kwargs)

    # A sixth stop sequence never reaches Gemini (it takes five): gatewayd finds it in the text.
    sixth = ask("[[say The answer is 42<six> and more]]", stop_sequences=STOPS)
    assert (sixth.stop_reason, sixth.stop_sequence, sixth.content[-1].text) == ("stop_sequence", "<six>", "The answer is 42")
    # One of the first five: found in the text too (none is sent upstream, see translate/stream.py).
    first = ask("[[say The answer is 42<one> and more]]", stop_sequences=STOPS)
    assert (first.stop_reason, first.stop_sequence) == ("stop_sequence", "<one>")
    tools = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"w": {"type": "string"}}}}]
    cut = ask('[[call lookup {"w": "x"}]] [[finish MAX_TOKENS]]', tools=tools)
    assert cut.stop_reason == "max_tokens" and not [b for b in cut.content if b.type == "tool_use"]
    for reason in ("SAFETY", "RECITATION"):
        assert ask(f"[[finish {reason}]] hi").stop_reason == "refusal"
    if stream:  # the stream has begun when the block is seen: a refusal ends it
        blocked = ask("[[block PROHIBITED_CONTENT]]")
        assert blocked.stop_reason == "refusal" and blocked.content == []
    else:  # as Kong answers a blocked prompt: a 400 naming the reason
        with pytest.raises(anthropic.BadRequestError, match="PROHIBITED_CONTENT"):
            ask("[[block PROHIBITED_CONTENT]]")
