"""Real Claude Code requests (tests/fixtures/claude_code, recorded by tests/fixtures/claude_code/capture.py)
translated for every model family on both APIs: the strict fake's rules accept them, and the
fake's answers translate back into messages and stream events the anthropic SDK's types accept."""

import json
from pathlib import Path

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gatewayd.fakevertex import model as fake_model
from gatewayd.fakevertex import rules
from gatewayd.translate import (
    ModelProfile,
    SignatureMemory,
    StreamTranslator,
    count_tokens_body,
    message_from_gemini,
    prepare,
)
from tests.grammar import check_stream

ALL_FIXTURES = sorted((Path(__file__).parent / "fixtures" / "claude_code").glob("*.json"))
# /context counts the tokens of each part of the session with /v1/messages/count_tokens.
COUNT_FIXTURES = [path for path in ALL_FIXTURES if path.stem.startswith("count_tokens")]
FIXTURES = [path for path in ALL_FIXTURES if path not in COUNT_FIXTURES]
MODELS = ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-flash-preview", "gemini-3-pro-preview"]
EVENT = TypeAdapter(RawMessageStreamEvent)


def fake_signatures(body: dict):
    """The fixtures were recorded against the fake: their signatures are ones it issued, on the
    parts they are on now (that record is gone, so only their being used once is checked)."""
    anchors = {
        rules.decode_bytes(part["thoughtSignature"]): rules.signature_anchor(part)
        for content in body["contents"]
        for part in content["parts"]
        if part.get("thoughtSignature", "").startswith(rules.encode_bytes(b"fakevertex-sig:")[:16])
    }
    return anchors.get


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_fixtures_cover_what_claude_code_sends():
    bodies = {path.stem: load(path)["body"] for path in FIXTURES}
    assert {"seed_question", "tool_session", "title_generation", "web_search", "compact"} <= set(bodies)
    session = bodies["tool_session"]
    names = {b["name"] for m in session["messages"] if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"}
    assert {"Read", "Write", "Edit", "Bash", "Glob"} <= names
    assert any(sum(b["type"] == "tool_use" for b in m["content"]) > 1 for m in session["messages"] if m["role"] == "assistant")
    assert any(m["role"] == "system" for m in session["messages"])
    assert bodies["title_generation"]["output_config"]["format"]["type"] == "json_schema"
    assert bodies["web_search"]["tools"][0]["type"].startswith("web_search_")
    assert {load(path)["path"] for path in COUNT_FIXTURES} == {"/anything/v1/messages/count_tokens?beta=true"}
    for path in ALL_FIXTURES:
        text = path.read_text()
        assert "gatewayd-capture" not in text, path.name
        assert load(path)["headers"].get("X-Claude-Code-Session-Id") == "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("api", ["vertex", "gemini"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_accepted_and_answer_parses(path, model, api):
    body = load(path)["body"]
    profile = ModelProfile(model, api=api)
    prepared = prepare(body, profile, SignatureMemory())
    canonical = rules.check_generate(prepared.body, api=api, model=model, known_signature=fake_signatures(prepared.body))
    reply = fake_model.script(canonical, model=model, api=api, sign=lambda part: rules.encode_bytes(b"fakevertex-sig:x"))
    assert reply.error is None
    envelope = {"modelVersion": model, "responseId": "r"}
    answer = fake_model.response(reply, envelope=envelope, prompt_tokens=100)
    message = message_from_gemini(answer, prepared, message_id="msg_1", model=model)
    Message.model_validate(message)
    translator = StreamTranslator(prepared, message_id="msg_1", model=model)
    events = translator.start()
    for chunk in fake_model.stream_chunks(reply, envelope=envelope, prompt_tokens=100, chunks=3):
        events += translator.feed(chunk)
    events += translator.finish()
    check_stream(events)
    for name, data in events:
        if name == "ping":
            continue
        assert EVENT.validate_python(data).type == name
    counted = count_tokens_body(body, profile)
    rules.check_count_tokens(counted, api=api, model=model)


@pytest.mark.parametrize("api", ["vertex", "gemini"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("path", COUNT_FIXTURES, ids=lambda p: p.stem)
def test_count_tokens_fixture_accepted(path, model, api):
    body = load(path)["body"]
    counted = count_tokens_body(body, ModelProfile(model, api=api))
    rules.check_count_tokens(counted, api=api, model=model)
    request = counted.get("generateContentRequest", counted)
    assert len(request.get("tools", [{}])[0].get("functionDeclarations", ())) == len(body.get("tools", ()))
