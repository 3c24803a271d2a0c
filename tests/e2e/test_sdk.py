"""The official anthropic SDK against the real daemon on the sample configuration."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import anthropic
import pytest

from tests.e2e.harness import read_records, settled_records, wait_for
from tests.grammar import check_sdk_stream

SEED_QUESTION = "Tell me about Anna Komnene's Alexiad."


@pytest.fixture
def client(seed_daemon):
    return anthropic.Anthropic(base_url=seed_daemon.url + "/anything", api_key="x", max_retries=0)


def last_record(daemon, count_before: int) -> dict:
    records = wait_for(
        lambda: (r := read_records(daemon.file_log)) and len(r) > count_before and r,
        what="the file-log record",
    )
    return records[-1]


def test_create_answers_the_seed_question(client, seed_daemon, fake):
    before = len(settled_records(seed_daemon.file_log))
    message = client.messages.create(
        model="claude-of-the-client",
        max_tokens=1024,
        messages=[{"role": "user", "content": SEED_QUESTION}],
    )
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert "Alexiad" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

    sent = fake.requests()[-1]
    # The target's model is called, whatever the client asked for.
    assert sent["path"].endswith(
        "/v1/projects/fake-project/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
    )

    record = last_record(seed_daemon, before)
    assert record["request"]["method"] == "POST"
    headers = record["request"]["headers"]
    assert "x" not in (headers.get("x-api-key"), headers.get("authorization"))
    assert headers.get("x-api-key", "REDACTED") == headers.get("authorization", "REDACTED") == "REDACTED"
    assert record["request"]["size"] > 0
    assert record["response"]["status"] == 200
    proxy = record["ai"]["proxy"]
    (target,) = proxy["tried_targets"]
    assert target == {
        "provider": "gemini",
        "model": "gemini-2.0-flash",
        "port": fake.port,
        "upstream_scheme": "http",
        "host": "127.0.0.1",
        "upstream_uri": "/v1/projects/fake-project/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
        "route_type": "llm/v1/chat",
        "ip": "127.0.0.1",
    }
    meta = proxy["meta"]
    assert (meta["request_model"], meta["response_model"]) == ("claude-of-the-client", "gemini-2.0-flash")
    assert meta["request_mode"] == "oneshot" and meta["provider_name"] == "gemini"
    assert isinstance(meta["llm_latency"], int) and meta["plugin_id"]
    usage = proxy["usage"]
    assert usage["prompt_tokens"] == message.usage.input_tokens
    assert usage["completion_tokens"] == message.usage.output_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert {"cost", "time_per_token", "time_to_first_token", "prompt_tokens_details", "completion_tokens_details"} <= set(usage)
    assert record["route"]["name"] == "example-route"
    assert record["service"]["name"] == "example-service"
    assert "payload" not in proxy  # log_payloads: false


def test_stream_yields_anthropic_events_in_order(client, seed_daemon):
    before = len(settled_records(seed_daemon.file_log))
    with client.messages.stream(
        model="claude-of-the-client",
        max_tokens=512,
        messages=[{"role": "user", "content": "Say something about streams [[chunks 6]]"}],
    ) as stream:
        kinds = [event.type for event in check_sdk_stream(stream)]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop" or "message_stop" in kinds
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") >= 1
    assert final.stop_reason == "end_turn"
    assert final.content[-1].text.startswith("Echo:")
    record = last_record(seed_daemon, before)
    assert record["ai"]["proxy"]["meta"]["request_mode"] == "stream"
    assert record["ai"]["proxy"]["tried_targets"][0]["upstream_uri"].endswith(
        ":streamGenerateContent?alt=sse"
    )
    assert record["ai"]["proxy"]["usage"]["completion_tokens"] == final.usage.output_tokens


WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def test_tool_use_round_trip(client, fake):
    question = {"role": "user", "content": 'Weather please [[call get_weather {"city": "Paris"}]]'}
    first = client.messages.create(
        model="claude-of-the-client", max_tokens=256, tools=[WEATHER], messages=[question]
    )
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    assert call.id.startswith("toolu_")
    second = client.messages.create(
        model="claude-of-the-client",
        max_tokens=256,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert "18 degrees" in second.content[-1].text
    sent = fake.requests()[-1]["body"]
    parts = sent["contents"][-1]["parts"]
    assert parts[0]["functionResponse"]["name"] == "get_weather"


def post_raw(daemon, path: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        daemon.url + path, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        json.dumps({"model": "x", "max_tokens": 10}).encode(),
        json.dumps(
            {"model": "x", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}
        ).encode(),
    ],
    ids=["malformed-json", "not-an-object", "missing-messages", "unknown-block-type"],
)
def test_bad_requests_get_an_anthropic_400_and_the_daemon_keeps_serving(seed_daemon, client, body):
    before = len(settled_records(seed_daemon.file_log))
    status, answer = post_raw(seed_daemon, "/anything/v1/messages", body)
    assert status == 400
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["message"]
    assert last_record(seed_daemon, before)["response"]["status"] == 400
    assert client.messages.create(
        model="m", max_tokens=16, messages=[{"role": "user", "content": "still there?"}]
    ).content


def test_no_route_is_kongs_404(seed_daemon):
    status, answer = post_raw(seed_daemon, "/elsewhere/v1/messages", b"{}")
    assert (status, answer["message"]) == (404, "no Route matched with those values")
    assert len(answer["request_id"]) == 32  # Kong 3's body: the id also in X-Kong-Request-Id


def test_count_tokens(client, fake):
    result = client.messages.count_tokens(
        model="claude-of-the-client",
        system="You are terse.",
        messages=[{"role": "user", "content": SEED_QUESTION}],
    )
    assert result.input_tokens > 0
    assert fake.requests()[-1]["path"].endswith(":countTokens")


def test_no_secret_reaches_the_logs(seed_daemon, fake):
    key = json.loads(fake.key_path.read_text())
    secret_bits = [key["private_key"].splitlines()[1], "Bearer "]
    logs = seed_daemon.file_log.read_text() + seed_daemon.log()
    for bit in secret_bits:
        assert bit not in logs
