"""message_from_gemini, usage and countTokens answers; ModelProfile facts."""

import pytest
from anthropic.types import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.translate import (
    ModelProfile,
    count_tokens_from_gemini,
    message_from_gemini,
    new_tool_id,
    prepare,
    translator_for,
    usage_from_gemini,
)
from gatewayd.translate.blocks import fold

BODY = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]}


def test_text_and_function_call_message():
    resp = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Looking it up."},
            {"functionCall": {"name": "lookup", "args": {"q": "Alexiad", "n": [1, 2]}}},
        ]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 10, "totalTokenCount": 60},
    }
    prepared = prepare(BODY, ModelProfile("gemini-2.5-flash"))
    message = message_from_gemini(resp, prepared, message_id="msg_abc", model="gemini-2.5-flash",
                                  new_tool_id=lambda: "toolu_fixed")
    Message.model_validate(message)
    assert message == {
        "id": "msg_abc", "type": "message", "role": "assistant", "model": "gemini-2.5-flash",
        "content": [
            {"type": "text", "text": "Looking it up."},
            {"type": "tool_use", "id": "toolu_fixed", "name": "lookup", "input": {"q": "Alexiad", "n": [1, 2]}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 50, "output_tokens": 10, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }


_PART = st.one_of(
    st.fixed_dictionaries({"text": st.sampled_from(["", " ", "Hello", " there\n", "ll"])}),
    st.fixed_dictionaries({"text": st.just("Hmm"), "thought": st.just(True)}),
    st.fixed_dictionaries({"text": st.just("Hi"), "thoughtSignature": st.just("c2ln")}),
    st.fixed_dictionaries({"functionCall": st.just({"name": "lookup", "args": {"q": "x"}})}),
)


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(_PART, max_size=3),
    finish=st.sampled_from([None, "STOP", "MAX_TOKENS", "SAFETY", "MALFORMED_FUNCTION_CALL"]),
    blocked=st.booleans(),
    stops=st.sampled_from([[], ["ll"]]),
)
def test_an_answer_is_the_fold_of_its_stream_translation(parts, finish, blocked, stops):
    # Plain text answers are put together directly; every answer must come out as folding does.
    prepared = prepare({**BODY, "stop_sequences": stops}, ModelProfile("gemini-2.5-flash"))
    candidate = {"content": {"role": "model", "parts": parts}, **({"finishReason": finish} if finish else {})}
    resp = {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2}}
    if blocked:
        resp["promptFeedback"] = {"blockReason": "SAFETY"}
    translator = translator_for(prepared, message_id="msg_1", model="m", new_tool_id=lambda: "toolu_1")
    content = fold(translator.feed(resp) + translator.finish())
    assert message_from_gemini(resp, prepared, message_id="msg_1", model="m", new_tool_id=lambda: "toolu_1") == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": content,
        "stop_reason": translator.stop_reason, "stop_sequence": translator.stop_sequence,
        "usage": translator.usage,
    }


def test_tool_ids_are_unique_and_anthropic_shaped():
    made = {new_tool_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(i.startswith("toolu_") and len(i) == 30 and i[6:].isalnum() for i in made)


def test_usage_from_gemini():
    assert usage_from_gemini({"promptTokenCount": 1000, "cachedContentTokenCount": 800,
                              "candidatesTokenCount": 30, "thoughtsTokenCount": 70}) == {
        "input_tokens": 200, "output_tokens": 100, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 800}


def test_count_tokens_from_gemini():
    assert count_tokens_from_gemini({"totalTokens": 31, "totalBillableCharacters": 96}) == {"input_tokens": 31}


@pytest.mark.parametrize(
    "name, family, limit, gemini3, prefill",
    [
        ("gemini-2.0-flash-001", "2.0", 8192, False, True),
        ("gemini-2.5-pro", "2.5", 65535, False, True),  # Vertex: 65536 is out of range
        ("publishers/google/models/gemini-3-pro-preview", "3", 65536, True, True),
        ("gemini-3.1-flash-lite", "3", 65536, True, True),
        ("gemini-3.5-flash-lite", "3", 65536, True, False),
        ("gemini-3.5-flash", "3", 65536, True, True),
        ("gemini-3.7-flash", "3", 65536, True, False),
    ],
)
def test_model_profile_facts(name, family, limit, gemini3, prefill):
    profile = ModelProfile(name)
    assert (profile.family, profile.output_limit, profile.is_gemini3, profile.accepts_prefill) == (
        family, limit, gemini3, prefill)
    assert profile.supports_thinking is (family != "2.0")
