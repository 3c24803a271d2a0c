"""Property tests: generated Anthropic requests become Gemini bodies the strict fake accepts
(every rule on), the fake's answers become Messages and stream events the official SDK's types
accept and the stream grammar allows, and a generated upstream stream split at any byte gives
the same events."""

from __future__ import annotations

import base64
import io
import itertools
import json

import pydantic
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import example, given, settings, strategies as st
from PIL import Image

from gatewayd.fakevertex import model as fake_model, rules
from gatewayd.translate import GeminiSSEDecoder, ModelProfile, StreamTranslator, message_from_gemini, prepare
from tests.grammar import check_stream

SETTINGS = settings(max_examples=40, deadline=None)
PROFILES = [
    ModelProfile("gemini-2.5-flash"), ModelProfile("gemini-2.0-flash"), ModelProfile("gemini-2.5-pro", api="gemini"),
    ModelProfile("gemini-3-flash-preview", api="gemini"), ModelProfile("gemini-3-pro-preview", api="vertex"),
]
STREAM_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip)
text_block = st.builds(lambda t: {"type": "text", "text": t}, text)


def encoded_image(size: tuple[int, int], colour: tuple[int, int, int], fmt: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return base64.b64encode(out.getvalue()).decode()


image_block = st.builds(
    lambda size, colour, fmt: {"type": "image", "source": {
        "type": "base64", "media_type": f"image/{fmt.lower()}", "data": encoded_image(size, colour, fmt)}},
    st.tuples(st.integers(1, 8), st.integers(1, 8)),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.sampled_from(["PNG", "JPEG", "WEBP", "GIF"]),
)
tool_names = st.sampled_from(["Read", "Bash", "Grep", "mcp__server__look-up"])
schemas = st.sampled_from([
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"path": {"type": "string", "description": "where"}}, "required": ["path"]},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}, "tags": {"type": "array", "items": {"type": "string"}}},
     "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"},
    {"type": "object", "properties": {"mode": {"enum": ["a", "b"]}, "x": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
    {"type": "object", "properties": {"path": {"type": "string"}, "url": {"type": "string"}},
     "anyOf": [{"required": ["path"]}, {"required": ["url"]}]},
    {"type": "object", "properties": {"cmd": {"type": "string"}, "env": {"type": "object", "additionalProperties": {"type": "string"}}}},
    {"type": "object", "properties": {"opts": {"type": "object"}}, "oneOf": [{"required": ["opts"]}, {"properties": {"x": {"type": "integer"}}, "required": ["x"]}]},
])


@st.composite
def conversations(draw):
    """Alternating turns; an assistant tool call is answered by the next user turn."""
    tools = draw(st.lists(st.tuples(tool_names, schemas), max_size=3, unique_by=lambda t: t[0]))
    ids = (f"toolu_{n:04d}" for n in itertools.count())
    messages = []
    for turn in range(draw(st.integers(0, 2))):
        user = draw(st.one_of(text, st.lists(st.one_of(text_block, image_block), min_size=1, max_size=3)))
        if messages and messages[-1]["content"] and isinstance(messages[-1]["content"], list):
            calls = [b for b in messages[-1]["content"] if b["type"] == "tool_use"]
            if calls:
                results = [{"type": "tool_result", "tool_use_id": c["id"],
                            "content": draw(st.one_of(text, st.lists(text_block, min_size=1, max_size=2))),
                            **({"is_error": True} if draw(st.booleans()) else {})} for c in calls]
                user = results + ([] if isinstance(user, str) else user)
        messages.append({"role": "user", "content": user})
        assistant = draw(st.lists(text_block, min_size=1, max_size=2))
        if tools and draw(st.booleans()):
            name = draw(st.sampled_from([name for name, _ in tools]))
            assistant.append({"type": "tool_use", "id": next(ids), "name": name, "input": {"path": "/tmp/x"}})
        messages.append({"role": "assistant", "content": assistant})
    last = draw(st.one_of(text, st.lists(st.one_of(text_block, image_block), min_size=1, max_size=3)))
    if messages and any(b["type"] == "tool_use" for b in messages[-1]["content"]):
        calls = [b for b in messages[-1]["content"] if b["type"] == "tool_use"]
        last = [{"type": "tool_result", "tool_use_id": c["id"], "content": draw(text)} for c in calls]
    messages.append({"role": "user", "content": last})
    body = {"model": "claude-of-the-client", "max_tokens": draw(st.integers(1, 64000)), "messages": messages}
    if tools:
        body["tools"] = [{"name": name, "description": "a tool", "input_schema": schema} for name, schema in tools]
        if draw(st.booleans()):
            body["tool_choice"] = draw(st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"},
                                                        {"type": "tool", "name": tools[0][0]}]))
    if draw(st.booleans()):
        body["system"] = draw(st.one_of(text, st.lists(text_block, min_size=1, max_size=2)))
    for key, values in (("temperature", st.floats(0, 1)), ("top_p", st.floats(0.01, 1)),
                        ("top_k", st.integers(1, 40)), ("stop_sequences", st.lists(text, max_size=3))):
        if draw(st.booleans()):
            body[key] = draw(values)
    if draw(st.booleans()):
        body["thinking"] = {"type": "enabled", "budget_tokens": draw(st.integers(1024, 8000))}
        body["max_tokens"] = max(body["max_tokens"], body["thinking"]["budget_tokens"] + 1)
    body["stream"] = draw(st.booleans())
    return body


@SETTINGS
@given(conversations(), st.sampled_from(PROFILES))
def test_generated_requests_pass_the_strict_fake(body, profile):
    prepared = prepare(body, profile)
    canonical = rules.check_generate(prepared.body, api=profile.api, model=profile.name)
    assert canonical["contents"][-1].get("role", "user") == "user"


@SETTINGS
@given(conversations(), st.sampled_from(PROFILES), st.integers(1, 5))
@example(  # found by Hypothesis: a held stop-sequence tail leaked into the thinking block
    {"model": "c", "max_tokens": 1025, "messages": [{"role": "user", "content": "0"}],
     "stop_sequences": ["00"], "thinking": {"type": "enabled", "budget_tokens": 1024}},
    PROFILES[0],
    1,
)
def test_the_fakes_answers_parse_with_the_sdk_types(body, profile, chunks):
    prepared = prepare(body, profile)
    canonical = rules.check_generate(prepared.body, api=profile.api, model=profile.name)
    reply = fake_model.script(canonical, model=profile.name, api=profile.api, sign=lambda part: "c2ln")
    envelope = {"modelVersion": profile.name, "responseId": "r"}
    whole = fake_model.response(reply, envelope=envelope, prompt_tokens=10)
    message = message_from_gemini(whole, prepared, message_id="msg_1", model=profile.name)
    Message.model_validate(message)
    translator = StreamTranslator(prepared, message_id="msg_1", model=profile.name)
    events = [*translator.start()]
    for chunk in fake_model.stream_chunks(reply, envelope=envelope, prompt_tokens=10, chunks=chunks):
        events += translator.feed(chunk)
    events += translator.finish()
    check_stream(events)
    for name, data in events:
        if name == "ping":  # the SDK skips pings before parsing
            continue
        assert STREAM_EVENT.validate_python(data).type == name


# --- upstream streams split at every byte -------------------------------------------------------

signature = st.sampled_from(["U0lHMQ==", "U0lHMg==", "c2lnLTM="])
upstream_part = st.one_of(
    st.builds(lambda t: {"text": t, "thought": True}, text),
    st.builds(lambda t: {"text": t}, text),
    st.builds(lambda t, sig: {"text": t, "thoughtSignature": sig}, st.one_of(st.just(""), text), signature),
    st.builds(
        lambda name, args, sig: {"functionCall": {"name": name, "args": args}, **({"thoughtSignature": sig} if sig else {})},
        st.sampled_from(["Read", "Bash"]),
        st.dictionaries(st.sampled_from(["path", "n", "ü"]), st.one_of(text, st.integers()), max_size=2),
        st.one_of(st.none(), signature),
    ),
)


@st.composite
def upstream_streams(draw):
    """A Gemini SSE stream: chunks of parts, then a finish chunk with usage; CRLF or LF framing."""
    chunks = [
        {"candidates": [{"content": {"role": "model", "parts": parts}}],
         "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": n}}
        for n, parts in enumerate(draw(st.lists(st.lists(upstream_part, min_size=1, max_size=2), max_size=5)), 1)
    ]
    finish = draw(st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "MALFORMED_FUNCTION_CALL"]))
    chunks.append({"candidates": [{"finishReason": finish}], "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 7}})
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    return b"".join(f"data: {json.dumps(c, ensure_ascii=draw(st.booleans()))}{newline}{newline}".encode() for c in chunks)


def stream_events(pieces: list[bytes], prepared) -> list:
    counter = itertools.count()
    translator = StreamTranslator(prepared, message_id="msg_1", model="m", new_tool_id=lambda: f"toolu_{next(counter)}")
    decoder = GeminiSSEDecoder()
    events = [*translator.start()]
    for piece in pieces:
        for chunk in decoder.feed(piece):
            events += translator.feed(chunk)
    for chunk in decoder.close():
        events += translator.feed(chunk)
    return events + translator.finish()


@settings(max_examples=60, deadline=None)
@given(upstream_streams(), st.lists(text, max_size=2))
def test_any_byte_split_gives_the_same_grammatical_events(raw, stops):
    body = {"model": "c", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "tools": [{"name": n, "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
                      for n in ("Read", "Bash")]}
    if stops:
        body["stop_sequences"] = stops
    prepared = prepare(body, ModelProfile("gemini-3-flash-preview"))
    whole = stream_events([raw], prepared)
    check_stream(whole)
    for cut in range(1, len(raw)):
        assert stream_events([raw[:cut], raw[cut:]], prepared) == whole, f"split at byte {cut}"
