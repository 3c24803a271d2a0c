"""Google Search grounding -> Anthropic's web search blocks, citations and usage; and back."""

import json

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gatewayd.fakevertex import rules
from gatewayd.fakevertex.model import grounding
from gatewayd.translate import ModelProfile, message_from_gemini, prepare, translator_for

PROFILE = ModelProfile("gemini-2.5-flash")
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
BODY = {"model": "claude-x", "max_tokens": 200, "tools": [SEARCH],
        "messages": [{"role": "user", "content": "Perform a web search for the query: Alexiad"}]}
ANSWER = "The Alexiad is a history. Anna Komnene wrote it — in Greek! It has fifteen books."
USAGE = {"promptTokenCount": 20, "candidatesTokenCount": 12, "totalTokenCount": 32}


def ids():
    count = iter(range(100))
    return lambda: f"toolu_{next(count):024d}"


def answer(metadata, text=ANSWER):
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                            "groundingMetadata": metadata}], "usageMetadata": USAGE}


def message(resp, body=BODY):
    prepared = prepare(body, PROFILE)
    assert prepared.grounded
    return message_from_gemini(resp, prepared, message_id="msg_1", model="gemini-2.5-flash", new_tool_id=ids())


def test_grounded_answer_has_the_search_blocks_citations_and_usage():
    metadata = grounding("Perform a web search for the query: Alexiad", ANSWER)
    result = message(answer(metadata))
    parsed = Message.model_validate(result)
    kinds = [block.type for block in parsed.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text", "text", "text"]
    use, found = parsed.content[0], parsed.content[1]
    assert use.name == "web_search" and use.input == {"query": "Alexiad"} and use.id.startswith("srvtoolu_")
    assert found.tool_use_id == use.id
    assert [(r.title, r.url) for r in found.content] == [
        (c["web"]["title"], c["web"]["uri"]) for c in metadata["groundingChunks"]]
    assert all(r.encrypted_content for r in found.content)
    texts = parsed.content[2:]
    assert "".join(t.text for t in texts) == ANSWER
    assert [t.text for t in texts] == ["The Alexiad is a history.", " Anna Komnene wrote it — in Greek!",
                                       " It has fifteen books."]
    first = texts[0].citations[0]
    assert (first.type, first.url, first.title) == ("web_search_result_location", found.content[0].url,
                                                   "wikipedia.org")
    assert first.cited_text == "The Alexiad is a history." and first.encrypted_index
    assert texts[1].citations[0].url == found.content[1].url
    assert parsed.usage.server_tool_use.web_search_requests == 1


def test_supports_located_by_byte_offsets_alone():
    metadata = grounding("query: Alexiad", ANSWER)
    for support in metadata["groundingSupports"]:
        del support["segment"]["text"]
    texts = [b for b in message(answer(metadata))["content"] if b["type"] == "text"]
    assert [t["text"] for t in texts] == ["The Alexiad is a history.", " Anna Komnene wrote it — in Greek!",
                                         " It has fifteen books."]
    assert texts[1]["citations"][0]["cited_text"] == "Anna Komnene wrote it — in Greek!"


def test_uncited_text_stays_and_no_metadata_means_no_search_blocks():
    metadata = grounding("query: Alexiad", ANSWER)
    metadata["groundingSupports"] = metadata["groundingSupports"][1:2]
    texts = [(b["text"], "citations" in b) for b in message(answer(metadata))["content"] if b["type"] == "text"]
    assert texts == [("The Alexiad is a history. ", False), ("Anna Komnene wrote it — in Greek!", True),
                     (" It has fifteen books.", False)]
    plain = message(answer({}))
    assert [b["type"] for b in plain["content"]] == ["text"] and "server_tool_use" not in plain["usage"]


def test_stream_holds_content_until_the_metadata_and_matches_the_message():
    metadata = grounding("query: Alexiad", ANSWER)
    chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}}], "usageMetadata": USAGE}
              for piece in (ANSWER[:30], ANSWER[30:])]
    chunks.append({"candidates": [{"content": {"role": "model"}, "finishReason": "STOP",
                                   "groundingMetadata": metadata}], "usageMetadata": USAGE})
    translator = translator_for(prepare(BODY, PROFILE), message_id="msg_1", model="gemini-2.5-flash",
                                new_tool_id=ids())
    first = translator.start()
    assert [name for name, _ in first] == ["message_start", "ping"]
    assert all(translator.feed(chunk) == [] for chunk in chunks)
    events = first + translator.finish()
    adapter = TypeAdapter(RawMessageStreamEvent)
    snapshot, buffers = accumulate_event(event=adapter.validate_python(events[0][1]), current_snapshot=None,
                                         json_bufs={}), {}
    for name, data in events[2:]:  # after message_start and ping (the SDK does not type pings)
        event = adapter.validate_python(data)
        assert event.type == name
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts[0] == {"type": "server_tool_use", "id": starts[0]["id"], "name": "web_search", "input": {}}
    assert starts[1]["type"] == "web_search_tool_result" and len(starts[1]["content"]) == 2
    assert starts[2] == {"type": "text", "text": "", "citations": []}
    expected = message(answer(metadata))
    streamed = snapshot.model_dump(exclude_none=True)
    assert streamed["content"] == [{k: v for k, v in b.items() if v is not None} | (
        {"content": [{k: v for k, v in r.items() if v is not None} for r in b["content"]]}
        if b["type"] == "web_search_tool_result" else {}) for b in expected["content"]]
    assert streamed["usage"]["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}


def test_search_blocks_sent_back_in_history_become_text():
    result = message(answer(grounding("query: Alexiad", ANSWER)))
    body = {**BODY, "messages": [*BODY["messages"], {"role": "assistant", "content": result["content"]},
                                 {"role": "user", "content": "Thanks. Which site was first?"}]}
    for model, api in (("gemini-2.5-flash", "vertex"), ("gemini-3-pro-preview", "gemini")):
        prepared = prepare(body, ModelProfile(model, api=api))
        rules.check_generate(prepared.body, api=api, model=model)
        model_parts = prepared.body["contents"][1]["parts"]
        texts = [p["text"] for p in model_parts]
        assert texts[0].startswith("[Web search results:\n- wikipedia.org: https://vertexaisearch")
        assert "".join(texts[1:]) == ANSWER
    error = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
             "content": {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"}}
    body["messages"][1] = {"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}}, error,
        {"type": "text", "text": "No luck."}]}
    parts = prepare(body, PROFILE).body["contents"][1]["parts"]
    assert parts == [{"text": "[Web search failed: max_uses_exceeded]"}, {"text": "No luck."}]


def test_fake_grounding_offsets_are_utf8_bytes():
    metadata = grounding("query: x", ANSWER)
    encoded = ANSWER.encode()
    for support in metadata["groundingSupports"]:
        segment = support["segment"]
        assert encoded[segment.get("startIndex", 0):segment["endIndex"]].decode() == segment["text"]
    assert json.dumps(metadata)  # plain JSON, as on the wire
