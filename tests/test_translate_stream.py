"""Gemini SSE bytes -> chunks -> Anthropic stream events."""

import itertools
import json

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tests.grammar import check_stream

from gatewayd.translate import (
    SIGNATURE_NEXT,
    SIGNATURE_PREVIOUS,
    SIGNATURE_THOUGHT,
    GeminiSSEDecoder,
    SignatureMemory,
    ModelProfile,
    StreamTranslator,
    TranslationError,
    encode_event,
    message_from_gemini,
    prepare,
)

EVENTS = TypeAdapter(RawMessageStreamEvent)
PROFILE = ModelProfile("gemini-3-pro-preview")
USAGE = {"promptTokenCount": 120, "cachedContentTokenCount": 20, "candidatesTokenCount": 7,
         "thoughtsTokenCount": 5, "totalTokenCount": 132}


def prepared(**extra):
    body = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "stream": True, "tools": [{"name": "mcp__srv__do thing", "input_schema": {"type": "object"}}]}
    body.update(extra)
    return prepare(body, PROFILE)


def ids():
    counter = itertools.count(1)
    return lambda: f"toolu_{next(counter):024d}"


def chunk(*parts, finish=None, usage=None):
    candidate = {"content": {"role": "model", "parts": list(parts)}} if parts else {}
    if finish:
        candidate["finishReason"] = finish
    out = {"candidates": [candidate], "modelVersion": "gemini-3-pro-preview"}
    if usage:
        out["usageMetadata"] = usage
    return out


CHUNKS = [
    chunk({"text": "Let me think", "thought": True}, usage={"promptTokenCount": 120}),
    chunk({"text": " harder.", "thought": True}),
    chunk({"text": "Hello"}),
    chunk({"text": ", world"}),
    chunk({"functionCall": {"name": "mcp__srv__do_thing", "args": {"q": "ü"}}, "thoughtSignature": "SIG1"},
          {"functionCall": {"name": "mcp__srv__do_thing", "args": {}}}),
    chunk({"text": "", "thoughtSignature": "SIG2"}),
    chunk(finish="STOP", usage=USAGE),
]
RAW = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in CHUNKS)


def translate(chunks, prep=None):
    translator = StreamTranslator(prep or prepared(), message_id="msg_1", model="gemini-3-pro-preview",
                                  new_tool_id=ids())
    events = translator.start()
    for c in chunks:
        events += translator.feed(c)
    events += translator.finish()
    check_stream(events)
    return events, translator


def test_decoder_reads_crlf_and_lf_events():
    decoder = GeminiSSEDecoder()
    data = b'data: {"a": 1}\r\n\r\n: comment\ndata: {"b":\ndata: 2}\n\n'
    assert decoder.feed(data) == [{"a": 1}, {"b": 2}]
    assert decoder.feed(b'data: {"c": 3}') == []
    assert decoder.close() == [{"c": 3}]


def test_decoder_rejects_garbage():
    with pytest.raises(TranslationError):
        GeminiSSEDecoder().feed(b"data: {nope\r\n\r\n")


def test_decoder_split_at_every_byte_boundary():
    whole = GeminiSSEDecoder().feed(RAW)
    assert whole == CHUNKS
    for cut in range(len(RAW) + 1):
        decoder = GeminiSSEDecoder()
        assert decoder.feed(RAW[:cut]) + decoder.feed(RAW[cut:]) + decoder.close() == CHUNKS, cut


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RAW)), max_size=12))
def test_decoder_any_splitting(cuts):
    decoder = GeminiSSEDecoder()
    points = [0, *sorted(cuts), len(RAW)]
    out = []
    for a, b in itertools.pairwise(points):
        out += decoder.feed(RAW[a:b])
    assert out == CHUNKS


def test_stream_events_in_order_and_valid():
    events, translator = translate(CHUNKS)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    for name, data in events:
        if name != "ping":
            assert EVENTS.validate_python(data).type == name
    blocks = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in blocks] == ["thinking", "text", "thinking", "tool_use", "tool_use", "thinking"]
    assert blocks[3] == {"type": "tool_use", "id": "toolu_000000000000000000000001",
                         "name": "mcp__srv__do thing", "input": {}}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert {"type": "text_delta", "text": ", world"} in deltas
    assert {"type": "input_json_delta", "partial_json": '{"q":"ü"}'} in deltas
    assert {"type": "signature_delta", "signature": SIGNATURE_NEXT + "SIG1"} in deltas
    starts = sum(n == "content_block_start" for n, _ in events)
    assert starts == sum(n == "content_block_stop" for n, _ in events)
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert final["usage"] == {"input_tokens": 100, "output_tokens": 12, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 20}
    assert translator.stop_reason == "tool_use"


def test_message_start_carries_prompt_tokens_when_feed_starts_it():
    translator = StreamTranslator(prepared(), message_id="msg_1", model="m")
    events = translator.feed(CHUNKS[0])
    assert events[0][1]["message"]["usage"]["input_tokens"] == 120
    assert translator.start() == []


def test_encode_event():
    assert encode_event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'


def accumulate(events):
    """Rebuild the message the way the anthropic SDK's stream accumulator does."""
    message = None
    for name, data in events:
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"], _json=""))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            key = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature",
                   "input_json_delta": "_json"}[delta["type"]]
            value = delta["partial_json" if key == "_json" else key]
            block[key] = value if key == "signature" else block[key] + value
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    for block in message["content"]:
        raw = block.pop("_json")
        if block["type"] == "tool_use":
            block["input"] = json.loads(raw)
    return message


def test_stream_and_message_agree():
    events, _ = translate(CHUNKS)
    streamed = accumulate(events)
    merged_parts = [p for c in CHUNKS for cand in c["candidates"] for p in cand.get("content", {}).get("parts", [])]
    single = chunk(*merged_parts, finish="STOP", usage=USAGE)
    message = message_from_gemini(single, prepared(), message_id="msg_1", model="gemini-3-pro-preview",
                                  new_tool_id=ids())
    Message.model_validate(message)
    assert streamed["content"] == message["content"]
    assert streamed["stop_reason"] == message["stop_reason"] == "tool_use"


def test_text_signature_follows_its_unbroken_text_block_and_thought_signature_stays_on_thought():
    # Claude Code shows (and reports as the result) the text block; splitting
    # it where the signature arrived would cut the answer in two.
    events, _ = translate([
        chunk({"text": "Part one. "}),
        chunk({"text": "Part two.", "thoughtSignature": "S"}),
        chunk({"text": "hmm", "thought": True, "thoughtSignature": "T"}, finish="STOP"),
    ])
    message = accumulate(events)
    assert message["content"] == [
        {"type": "text", "text": "Part one. Part two."},
        {"type": "thinking", "thinking": "", "signature": SIGNATURE_PREVIOUS + "S"},
        {"type": "thinking", "thinking": "hmm", "signature": SIGNATURE_THOUGHT + "T"},
    ]
    assert message["stop_reason"] == "end_turn"


def test_final_text_signature_is_remembered_not_appended_and_comes_back_on_its_text():
    # Claude Code reports the last block as the answer: nothing may follow the text.
    memory = SignatureMemory()
    translator = StreamTranslator(prepared(), message_id="msg_1", model="gemini-3-pro-preview", memory=memory)
    events = []
    for c in [chunk({"text": "All done."}), chunk({"text": "", "thoughtSignature": "E"}, finish="STOP")]:
        events += translator.feed(c)
    events += translator.finish()
    check_stream(events)
    message = accumulate(events)
    assert message["content"] == [{"type": "text", "text": "All done."}]
    history = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": message["content"]},
            {"role": "user", "content": "and?"},
        ],
    }
    body = prepare(history, ModelProfile("gemini-3-pro-preview"), memory).body
    assert body["contents"][1]["parts"] == [{"text": "All done.", "thoughtSignature": "E"}]
    # Models that never sign do not get one back.
    assert "thoughtSignature" not in prepare(history, ModelProfile("gemini-2.5-flash"), memory).body["contents"][1]["parts"][0]

def test_history_round_trip_restores_signatures():
    events, _ = translate(CHUNKS)
    message = accumulate(events)
    history = {"model": "claude-x", "max_tokens": 100, "tools": [{"name": "mcp__srv__do thing",
               "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": message["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}
                                     for b in message["content"] if b["type"] == "tool_use"]},
    ]}
    contents = prepare(history, PROFILE).body["contents"]
    assert contents[1]["parts"] == [
        {"text": "Hello, world"},
        {"functionCall": {"name": "mcp__srv__do_thing", "args": {"q": "ü"}}, "thoughtSignature": "SIG1"},
        {"functionCall": {"name": "mcp__srv__do_thing", "args": {}}},
    ]
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["mcp__srv__do_thing"] * 2


@pytest.mark.parametrize(
    "finish, expected",
    [("MAX_TOKENS", "max_tokens"), ("SAFETY", "refusal"), ("RECITATION", "refusal"),
     ("PROHIBITED_CONTENT", "refusal"), ("OTHER", "end_turn"), ("STOP", "end_turn")],
)
def test_finish_reasons(finish, expected):
    events, translator = translate([chunk({"text": "Hi."}, finish=finish, usage=USAGE)])
    assert events[-2][1]["delta"]["stop_reason"] == expected == translator.stop_reason


def test_malformed_function_call_ends_turn_with_a_note():
    resp = {"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": "bad args"}]}
    message = message_from_gemini(resp, prepared(), message_id="m", model="g")
    assert message["stop_reason"] == "end_turn"
    assert "MALFORMED_FUNCTION_CALL: bad args" in message["content"][0]["text"]


def test_blocked_prompt_is_a_refusal():
    resp = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}
    message = message_from_gemini(resp, prepared(), message_id="m", model="g")
    Message.model_validate(message)
    assert (message["stop_reason"], message["content"], message["usage"]["input_tokens"]) == ("refusal", [], 9)


def test_stop_sequence_found_in_split_text_is_cut():
    prep = prepared(stop_sequences=["#1", "#2", "#3", "#4", "#5", "END!"])
    events, translator = translate([chunk({"text": "one two EN"}), chunk({"text": "D! three"}, finish="STOP")],
                                   prep)
    message = accumulate(events)
    assert message["content"] == [{"type": "text", "text": "one two "}]
    assert (translator.stop_reason, translator.stop_sequence) == ("stop_sequence", "END!")


def test_held_back_text_is_flushed():
    prep = prepared(stop_sequences=["XYZ"])
    events, translator = translate([chunk({"text": "ok."}), chunk({"text": "X"}, finish="STOP")], prep)
    assert accumulate(events)["content"] == [{"type": "text", "text": "ok.X"}]


@pytest.mark.parametrize(
    "text, expected",
    [("The answer is 4.", ("end_turn", None)), ("<b>bold", ("end_turn", None)), ("", ("end_turn", None)),
     ("<b>bold</b> and more", ("stop_sequence", "</b>")), ("a\n\nb", ("stop_sequence", "\n\n"))],
)
def test_stop_sequence_only_when_one_is_in_the_text(text, expected):
    """An answer that simply ends is end_turn, however it ends; a sequence seen in the text stops it."""
    parts = [{"text": text}] if text else []
    events, translator = translate([chunk(*parts, finish="STOP")], prepared(stop_sequences=["</b>", "\n\n"]))
    assert (translator.stop_reason, translator.stop_sequence) == expected


def test_usage_keeps_last_metadata_and_handles_missing_counts():
    events, translator = translate([
        chunk({"text": "a"}, usage={"promptTokenCount": 5, "candidatesTokenCount": 1}),
        chunk(finish="STOP", usage={"promptTokenCount": 5, "candidatesTokenCount": 3}),
    ])
    assert translator.usage == {"input_tokens": 5, "output_tokens": 3, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}


@given(st.text(alphabet=" \n\tab", max_size=30), st.lists(st.integers(0, 30), max_size=5))
@settings(max_examples=200, deadline=None)
def test_a_text_digest_fed_in_pieces_equals_the_digest_of_the_stripped_whole(text, cuts):
    from gatewayd.translate.signatures import TextDigest
    import hashlib

    digest = TextDigest()
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    for start, end in zip(bounds, bounds[1:]):
        digest.update(text[start:end])
    assert digest.digest() == hashlib.sha256(text.strip().encode()).digest()


@pytest.mark.parametrize("raw", [
    b'data: {"x": "\xed\xa0\x80"}\n\n',  # a lone surrogate written as UTF-8: not UTF-8
    b'data: {"x": "\xff"}\r\n\r\n',
    b'data: \xef\xbb\xbf{"x": 1}\n\n',  # a byte-order mark inside the data
])
def test_the_decoders_quick_path_refuses_what_its_general_path_refuses(raw):
    with pytest.raises(TranslationError):
        GeminiSSEDecoder().feed(raw)


@pytest.mark.parametrize("end", [b"\r\n\r\n", b"\n\n", b"\n: a comment\n\n"])  # quick path and general
def test_a_call_argument_past_64_bits_comes_through_whole(end):
    raw = b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"id": 18446744073709551616}}}]}}]}' + end
    (chunk,) = GeminiSSEDecoder().feed(raw)
    assert chunk["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["id"] == 2**64
    assert type(chunk["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["id"]) is int
