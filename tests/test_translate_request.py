"""prepare(): Anthropic request -> Gemini request that the strict upstream accepts."""

import base64
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gatewayd.translate import (
    SIGNATURE_NEXT,
    SIGNATURE_THOUGHT,
    SKIP_SIGNATURE,
    ModelProfile,
    TranslationError,
    count_tokens_body,
    prepare,
)
from gatewayd.fakevertex import catalog, rules
from gatewayd.fakevertex.errors import Rejected
from gatewayd.translate import message_from_gemini
from gatewayd.translate.request import SYSTEM_NOTE

FIXTURE = Path(__file__).parent / "fixtures" / "claude_code" / "seed_question.json"
VERTEX_25 = ModelProfile("gemini-2.5-flash")
PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "default", "items", "minItems",
    "maxItems", "enum", "properties", "propertyOrdering", "required", "minProperties",
    "maxProperties", "minimum", "maximum", "minLength", "maxLength", "pattern", "example", "anyOf",
}


def schema_problems(schema: dict, api: str, path: str) -> list[str]:
    allowed = SCHEMA_KEYS | ({"additionalProperties"} if api == "vertex" else set())
    bad = [f"{path}.{k}" for k in schema if k not in allowed]
    children = list((schema.get("properties") or {}).items())
    children += [("items", schema["items"])] if "items" in schema else []
    children += [(f"anyOf{i}", s) for i, s in enumerate(schema.get("anyOf") or ())]
    for name, sub in children:
        bad += schema_problems(sub, api, f"{path}.{name}")
    return bad


def rule_violations(body: dict, profile: ModelProfile) -> list[str]:
    """The checks of /work/shared/gemini-api-rules.md that a translated body can break."""
    problems = []
    contents = body["contents"]
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            problems.append(f"contents[{i}].role")
        if not content.get("parts"):
            problems.append(f"contents[{i}] has no parts")
        for j, part in enumerate(content.get("parts", ())):
            where = f"contents[{i}].parts[{j}]"
            data = [k for k in part if k in PART_DATA]
            if len(data) != 1:
                problems.append(f"{where}: {len(data)} data fields")
            if set(part) - PART_DATA - {"thought", "thoughtSignature"}:
                problems.append(f"{where}: unknown fields {set(part) - PART_DATA}")
            if "text" in part and not part["text"].strip():
                problems.append(f"{where}: empty text")
            if "functionCall" in part and set(part["functionCall"]) - {"name", "args"}:
                problems.append(f"{where}: functionCall fields {set(part['functionCall'])}")
        calls = [p for p in content["parts"] if "functionCall" in p]
        if calls:
            if i and not (contents[i - 1]["role"] == "user"):
                problems.append(f"contents[{i}]: function call turn not after a user turn")
            following = contents[i + 1] if i + 1 < len(contents) else None
            responses = [p for p in following["parts"] if "functionResponse" in p] if following else []
            if following is not None and [r["functionResponse"]["name"] for r in responses] != [
                c["functionCall"]["name"] for c in calls
            ]:
                problems.append(f"contents[{i + 1}]: responses do not match calls")
            if profile.is_gemini3 and "thoughtSignature" not in calls[0]:
                problems.append(f"contents[{i}]: first functionCall has no thoughtSignature")
    for t, tool in enumerate(body.get("tools", ())):
        for d, decl in enumerate(tool["functionDeclarations"]):
            if "parameters" in decl:
                problems += schema_problems(decl["parameters"], profile.api, f"tools[{t}][{d}]")
    config = body.get("generationConfig", {})
    if len(config.get("stopSequences", ())) > 5:
        problems.append("more than 5 stopSequences")
    if not 1 <= config.get("maxOutputTokens", 1) <= profile.output_limit:
        problems.append("maxOutputTokens out of range")
    thinking = config.get("thinkingConfig")
    if thinking is not None:
        if profile.family == "2.0":
            problems.append("thinkingConfig on gemini-2.0")
        if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
            problems.append("thinkingBudget and thinkingLevel together")
        if profile.family == "2.5" and "thinkingLevel" in thinking:
            problems.append("thinkingLevel on 2.5")
        if profile.is_gemini3 and "thinkingBudget" in thinking:
            problems.append("thinkingBudget on 3")
        if profile.is_gemini3 and thinking.get("thinkingLevel", "HIGH") not in profile.thinking_levels:
            problems.append("thinkingLevel not accepted by the model")
        if profile.is_pro and thinking.get("thinkingBudget") == 0:
            problems.append("thinkingBudget 0 on pro")
    return problems


def seed_body() -> dict:
    return json.loads(FIXTURE.read_text())["body"]


def base(**extra) -> dict:
    body = {"model": "claude-of-the-client", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return body


def tool(name: str = "get_weather") -> dict:
    return {
        "name": name,
        "description": "weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }


PROFILES = [
    ModelProfile("gemini-2.0-flash"),
    ModelProfile("gemini-2.5-pro"),
    ModelProfile("gemini-2.5-flash"),
    ModelProfile("gemini-3-pro-preview"),
    ModelProfile("gemini-3-flash-preview"),
    ModelProfile("gemini-3-flash-preview", api="gemini"),
]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: f"{p.api}-{p.name}")
def test_claude_code_seed_request(profile):
    body = seed_body()
    prepared = prepare(body, profile)
    assert rule_violations(prepared.body, profile) == []
    gemini = prepared.body
    assert prepared.stream is True
    assert prepared.requested_model == "gemini-2.0-flash"
    assert len(gemini["tools"][0]["functionDeclarations"]) == 24
    assert [p["text"][:20] for p in gemini["systemInstruction"]["parts"]] == [
        b["text"][:20] for b in body["system"]
    ]
    # The role "system" message stays where it was, as a marked user note.
    last = gemini["contents"][-1]
    assert last["role"] == "user"
    assert last["parts"][0]["text"].startswith("<system-note>\n")
    assert body["messages"][1]["content"] in last["parts"][0]["text"]
    assert gemini["contents"][0]["parts"][-1] == {"text": "Tell me about Anna Komnene's Alexiad."}
    assert set(gemini) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}


def test_seed_request_input_is_not_modified():
    body = seed_body()
    before = copy.deepcopy(body)
    prepare(body, VERTEX_25)
    assert body == before


def test_max_tokens_clamped_to_family_and_profile():
    assert prepare(base(max_tokens=32000), ModelProfile("gemini-2.0-flash")).body["generationConfig"][
        "maxOutputTokens"
    ] == 8192
    capped = ModelProfile("gemini-2.5-flash", max_tokens=4000)
    assert prepare(base(max_tokens=32000), capped).body["generationConfig"]["maxOutputTokens"] == 4000


def test_sampling_and_stop_sequences():
    stops = ["a", "b", "c", "d", "e", "f", "g"]
    prepared = prepare(base(temperature=0.3, top_p=0.9, top_k=40, stop_sequences=stops), VERTEX_25)
    config = prepared.body["generationConfig"]
    assert "stopSequences" not in config  # matched here, see test_translate_stream
    assert prepared.stop_sequences == tuple(stops)
    assert (config["temperature"], config["topP"], config["topK"]) == (0.3, 0.9, 40)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"max_tokens": 10, "messages": []}, "model"),
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": 10}, "messages"),
        ({"model": "m", "max_tokens": 10, "messages": {}}, "messages"),
        (base(messages=[{"role": "bot", "content": "x"}]), "messages.0.role"),
        (base(messages=[{"role": "user", "content": [{"type": "hologram"}]}]), "messages.0.content.0.type"),
        (
            base(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}]),
            "messages.0.content.0.tool_use_id",
        ),
        (
            base(messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!notb64"}}
            ]}]),
            "messages.0.content.0.source.data",
        ),
        (base(temperature=3), "temperature"),
        (base(thinking={"type": "sometimes"}), "thinking.type"),
        (base(tools=[tool()], tool_choice={"type": "tool", "name": "nope"}), "tool_choice.name"),
    ],
)
def test_invalid_requests_name_the_field(body, field):
    with pytest.raises(TranslationError) as caught:
        prepare(body, VERTEX_25)
    assert str(caught.value).startswith(field + ":")
    assert caught.value.field == field


def test_images_base64_and_url():
    prepared = prepare(
        base(messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp?x=1"}},
            {"type": "document", "source": {"type": "url", "url": "https://example.com/paper"}},
            {"type": "text", "text": "what?", "cache_control": {"type": "ephemeral"}},
        ]}]),
        VERTEX_25,
    )
    assert prepared.body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/paper"}},
        {"text": "what?"},
    ]


def tool_history(*results, calls=("toolu_1",)) -> list:
    return [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}] + [
            {"type": "tool_use", "id": c, "name": "get_weather", "input": {"city": c}} for c in calls
        ]},
        {"role": "user", "content": list(results)},
    ]


def test_tool_use_and_results_in_call_order():
    messages = tool_history(
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sun", "is_error": False},
        {"type": "text", "text": "thanks"},
        calls=("toolu_1", "toolu_2"),
    )
    prepared = prepare(base(messages=messages, tools=[tool()], tool_choice={"type": "auto"}), VERTEX_25)
    contents = prepared.body["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"text": "Checking."},
        {"functionCall": {"name": "get_weather", "args": {"city": "toolu_1"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "toolu_2"}}},
    ]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sun"}}},
        {"functionResponse": {"name": "get_weather", "response": {"output": "rain"}}},
        {"text": "thanks"},
    ]}
    assert prepared.body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert rule_violations(prepared.body, VERTEX_25) == []


def test_tool_result_error_images_and_missing_results():
    png = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    messages = tool_history(
        {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
         "content": [{"type": "text", "text": "boom"}, png]},
        calls=("toolu_1", "toolu_2"),
    )
    parts = prepare(base(messages=messages, tools=[tool()]), VERTEX_25).body["contents"][2]["parts"]
    assert parts[0] == {"functionResponse": {"name": "get_weather", "response": {
        "error": "boom\n[1 attachment(s) follow this result as separate parts]"}}}
    assert parts[1]["functionResponse"]["response"]["error"].startswith("No result")
    assert parts[2] == {"text": SYSTEM_NOTE.format("Attachment(s) of the get_weather result above:")}
    assert parts[3] == {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}


def test_documents_keep_their_title_and_context():
    pdf = {"type": "document", "title": "Alexiad, book 1", "context": "A translation",
           "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    text = {"type": "document", "title": "notes.txt", "source": {"type": "text", "media_type": "text/plain",
                                                                 "data": "fifteen books"}}
    parts = prepare(base(messages=[{"role": "user", "content": [pdf, text]}]), VERTEX_25).body["contents"][0]["parts"]
    assert parts == [
        {"text": SYSTEM_NOTE.format("Document title: Alexiad, book 1; context: A translation")},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"text": SYSTEM_NOTE.format("Document title: notes.txt")},
        {"text": "fifteen books"},
    ]


def test_system_message_between_call_and_results_stays_valid():
    messages = tool_history(
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sun"},
    )
    messages.insert(2, {"role": "system", "content": "Be brief."})
    contents = prepare(base(messages=messages, tools=[tool()]), VERTEX_25).body["contents"]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sun"}}},
        {"text": SYSTEM_NOTE.format("Be brief.")},
    ]
    assert rule_violations({"contents": contents}, VERTEX_25) == []


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"type": "any"}, {"mode": "ANY"}),
        ({"type": "none"}, {"mode": "NONE"}),
        ({"type": "tool", "name": "mcp__srv__do thing", "disable_parallel_tool_use": True},
         {"mode": "ANY", "allowedFunctionNames": ["mcp__srv__do_thing"]}),
    ],
)
def test_tool_choice(choice, expected):
    tools = [tool(), tool("mcp__srv__do thing")]
    prepared = prepare(base(tools=tools, tool_choice=choice), VERTEX_25)
    assert prepared.body["toolConfig"] == {"functionCallingConfig": expected}


def test_tool_names_mapped_reversibly_and_server_tools_dropped():
    long_name = "x" * 80
    tools = [
        tool("mcp__server__tool"), tool("9lives"), tool("has space"), tool(long_name),
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ]
    prepared = prepare(base(tools=tools), VERTEX_25)
    names = [d["name"] for d in prepared.body["tools"][0]["functionDeclarations"]]
    assert names[:3] == ["mcp__server__tool", "_9lives", "has_space"]
    assert len(names[3]) <= 64 and names[3].startswith("xxx")
    assert {prepared.tool_names[n] for n in names} == {"mcp__server__tool", "9lives", "has space", long_name}
    assert prepared.dropped_tools == ("web_search",)


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}


@pytest.mark.parametrize("api", ["vertex", "gemini"])
@pytest.mark.parametrize("model", ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-3-pro-preview"])
def test_web_search_alone_becomes_google_search(model, api):
    profile = ModelProfile(model, api=api)
    prepared = prepare(base(tools=[WEB_SEARCH], tool_choice={"type": "auto"}), profile)
    assert prepared.body["tools"] == [{"googleSearch": {}}] and "toolConfig" not in prepared.body
    assert prepared.dropped_tools == ()
    rules.check_generate(prepared.body, api=api, model=model)
    assert "tools" not in count_tokens_body(base(tools=[WEB_SEARCH]), profile).get("generateContentRequest", {})


@pytest.mark.parametrize(
    "model, api, combined",
    [("gemini-3-pro-preview", "gemini", True), ("gemini-3-pro-preview", "vertex", False),
     ("gemini-2.5-flash", "gemini", False), ("gemini-2.5-flash", "vertex", False)],
)
def test_web_search_next_to_functions_only_where_google_combines_them(model, api, combined):
    prepared = prepare(base(tools=[tool(), WEB_SEARCH]), ModelProfile(model, api=api))
    assert ({"googleSearch": {}} in prepared.body["tools"]) is combined
    assert prepared.dropped_tools == (() if combined else ("web_search",))
    rules.check_generate(prepared.body, api=api, model=model)
    with_search = {**prepared.body, "tools": prepared.body["tools"] + [{"googleSearch": {}}]}
    if not combined:
        with pytest.raises(Rejected, match="function calling"):
            rules.check_generate(with_search, api=api, model=model)


def test_structured_output_becomes_response_schema():
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"],
              "additionalProperties": False}
    for api in ("vertex", "gemini"):
        body = base(output_config={"effort": "low", "format": {"type": "json_schema", "schema": schema}})
        prepared = prepare(body, ModelProfile("gemini-2.5-flash", api=api))
        config = prepared.body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"]["properties"] == {"title": {"type": "STRING"}}
        rules.check_generate(prepared.body, api=api, model="gemini-2.5-flash")
    with pytest.raises(TranslationError, match="output_config.format"):
        prepare(base(output_config={"format": {"type": "text"}}), VERTEX_25)


def test_disable_parallel_tool_use_keeps_the_first_call():
    prepared = prepare(base(tools=[tool("a"), tool("b")],
                            tool_choice={"type": "auto", "disable_parallel_tool_use": True}), VERTEX_25)
    assert prepared.single_tool_call
    resp = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "a", "args": {}}}, {"functionCall": {"name": "b", "args": {}}}]},
        "finishReason": "STOP"}]}
    message = message_from_gemini(resp, prepared, message_id="msg_1", model="m")
    assert [b["name"] for b in message["content"]] == ["a"] and message["stop_reason"] == "tool_use"
    assert not prepare(base(tools=[tool("a")], tool_choice={"type": "auto"}), VERTEX_25).single_tool_call


def test_empty_text_dropped_and_empty_turns_removed():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "  \n"}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "redacted_thinking", "data": "x"}]},
        {"role": "user", "content": "again"},
        {"role": "user", "content": [{"type": "text", "text": "and again"}]},
    ]
    contents = prepare(base(messages=messages), VERTEX_25).body["contents"]
    assert contents == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "user", "parts": [{"text": "again"}]},
        {"role": "user", "parts": [{"text": "and again"}]},
    ]


def test_prefill_kept_and_continued_where_rejected():
    messages = [{"role": "user", "content": "Name a color"}, {"role": "assistant", "content": "The color is"}]
    accepted = prepare(base(messages=messages), VERTEX_25).body["contents"]
    assert accepted[-1] == {"role": "model", "parts": [{"text": "The color is"}]}
    rejected = prepare(base(messages=messages), ModelProfile("gemini-3.6-flash")).body["contents"]
    assert rejected[-2]["role"] == "model" and rejected[-1]["role"] == "user"


def test_signatures_return_to_their_parts():
    profile = ModelProfile("gemini-3-pro-preview")
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I think", "signature": SIGNATURE_THOUGHT + "T1"},
            {"type": "thinking", "thinking": "", "signature": SIGNATURE_NEXT + "S1"},
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "x"}},
            {"type": "thinking", "thinking": "foreign", "signature": "EqQBCkgIAhABGAIiQ"},
            {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "y"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "1"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "2"},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "", "signature": SIGNATURE_NEXT + "S2"},
            {"type": "text", "text": "Done"},
        ]},
    ]
    contents = prepare(base(messages=messages, tools=[tool()]), profile).body["contents"]
    assert contents[1]["parts"] == [
        {"text": "I think", "thought": True, "thoughtSignature": "T1"},
        {"functionCall": {"name": "get_weather", "args": {"city": "x"}}, "thoughtSignature": "S1"},
        {"functionCall": {"name": "get_weather", "args": {"city": "y"}}},
    ]
    assert contents[3]["parts"] == [{"text": "Done", "thoughtSignature": "S2"}]


def test_gemini3_stand_in_signature_for_unsigned_calls():
    messages = tool_history({"type": "tool_result", "tool_use_id": "toolu_1", "content": "sun"})
    profile = ModelProfile("gemini-3-flash-preview")
    contents = prepare(base(messages=messages, tools=[tool()]), profile).body["contents"]
    assert contents[1]["parts"][1]["thoughtSignature"] == SKIP_SIGNATURE
    assert rule_violations({"contents": contents}, profile) == []
    older = prepare(base(messages=messages, tools=[tool()]), VERTEX_25).body["contents"]
    assert "thoughtSignature" not in older[1]["parts"][1]


@pytest.mark.parametrize(
    "model, thinking, effort, expected, include",
    [
        ("gemini-2.0-flash", {"type": "enabled", "budget_tokens": 2048}, None, None, False),
        ("gemini-2.5-flash", {"type": "enabled", "budget_tokens": 2048}, None,
         {"thinkingBudget": 2048, "includeThoughts": True}, True),
        ("gemini-2.5-flash", {"type": "disabled"}, None, {"thinkingBudget": 0}, False),
        ("gemini-2.5-pro", {"type": "disabled"}, None, {"thinkingBudget": 128}, False),
        ("gemini-2.5-pro", {"type": "adaptive"}, None, {"thinkingBudget": -1, "includeThoughts": True}, True),
        ("gemini-2.5-flash", {"type": "adaptive"}, "low", {"thinkingBudget": 1024, "includeThoughts": True}, True),
        ("gemini-3-pro-preview", {"type": "adaptive"}, "medium",
         {"thinkingLevel": "HIGH", "includeThoughts": True}, True),
        ("gemini-3-flash-preview", {"type": "adaptive"}, "medium",
         {"thinkingLevel": "MEDIUM", "includeThoughts": True}, True),
        ("gemini-3-pro-preview", {"type": "disabled"}, None, {"thinkingLevel": "LOW"}, False),
        ("gemini-3-flash-preview", {"type": "disabled"}, None, {"thinkingLevel": "MINIMAL"}, False),
        ("gemini-3-flash-preview", {"type": "enabled", "budget_tokens": 1024}, None,
         {"thinkingLevel": "LOW", "includeThoughts": True}, True),
        ("gemini-3-flash-preview", {"type": "adaptive", "display": "omitted"}, "high",
         {"thinkingLevel": "HIGH"}, False),
        ("gemini-3-flash-preview", None, None, {"thinkingLevel": "MINIMAL"}, False),  # Anthropic default: no thinking
    ],
)
def test_thinking_mapping(model, thinking, effort, expected, include):
    extra = {"thinking": thinking} if thinking else {}
    if effort:
        extra["output_config"] = {"effort": effort}
    profile = ModelProfile(model)
    prepared = prepare(base(**extra), profile)
    assert prepared.body["generationConfig"].get("thinkingConfig") == expected
    assert prepared.include_thoughts is include
    assert rule_violations(prepared.body, profile) == []


def test_count_tokens_body():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s",
            "tools": [tool()], "tool_choice": {"type": "any"}}
    vertex = count_tokens_body(body, VERTEX_25)
    assert set(vertex) == {"contents", "systemInstruction", "tools"}
    gemini = count_tokens_body(body, ModelProfile("gemini-2.5-flash", api="gemini"))
    assert gemini["generateContentRequest"]["model"] == "models/gemini-2.5-flash"
    assert gemini["generateContentRequest"]["contents"] == vertex["contents"]


def test_rule_checker_catches_what_upstream_rejects():
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": " "}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}, "id": "1"}}]},
            {"role": "user", "parts": []},
        ],
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "$schema": "x"}}]}],
    }
    problems = rule_violations(body, ModelProfile("gemini-3-pro-preview", api="gemini"))
    assert len(problems) == 6, problems


# --- issue 14: cases a careful gateway must get right ------------------------------------------


@pytest.mark.parametrize("api", ["vertex", "gemini"])
@pytest.mark.parametrize("model", sorted(catalog.KNOWN_MODELS))
def test_output_limits_table_matches_the_fakes_limits(model, api):
    """One table (models.OUTPUT_LIMITS) clamps max_tokens; the fake takes its value and not one more."""
    profile = ModelProfile(model, api=api)
    body = prepare(base(max_tokens=1_000_000), profile).body
    assert body["generationConfig"]["maxOutputTokens"] == profile.output_limit
    rules.check_generate(body, api=api, model=model)
    body["generationConfig"]["maxOutputTokens"] += 1
    with pytest.raises(Rejected, match="maxOutputTokens"):
        rules.check_generate(body, api=api, model=model)


def test_temperature_is_anthropics_range():
    assert prepare(base(temperature=1.0), VERTEX_25).body["generationConfig"]["temperature"] == 1.0
    with pytest.raises(TranslationError, match="temperature: must be a number from 0 to 1"):
        prepare(base(temperature=1.5), VERTEX_25)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gemini-2.5-flash", {"thinkingBudget": 0}),
        ("gemini-2.5-flash-lite", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", {"thinkingBudget": 128}),
        ("gemini-3-flash-preview", {"thinkingLevel": "MINIMAL"}),
        ("gemini-3-pro-preview", {"thinkingLevel": "LOW"}),
    ],
)
def test_no_thinking_requested_means_as_little_as_the_model_allows(model, expected):
    body = prepare(base(), ModelProfile(model)).body
    assert body["generationConfig"]["thinkingConfig"] == expected
    rules.check_generate(body, api="vertex", model=model)


def test_gemini_2_0_still_gets_no_thinking_config():
    assert "thinkingConfig" not in prepare(base(), ModelProfile("gemini-2.0-flash")).body["generationConfig"]


GIF = base64.b64encode(
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\x00\x00\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
).decode()


def gif_block():
    return {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": GIF}}


@pytest.mark.parametrize("api", ["vertex", "gemini"])
def test_gif_becomes_png_in_a_message_and_in_a_tool_result(api):
    messages = [
        {"role": "user", "content": [gif_block(), {"type": "text", "text": "what is this?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [gif_block()]}]},
    ]
    tools = [{"name": "shot", "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}]
    body = prepare(base(messages=messages, tools=tools), ModelProfile("gemini-2.5-flash", api=api)).body
    images = [p["inlineData"] for c in body["contents"] for p in c["parts"] if "inlineData" in p]
    assert [i["mimeType"] for i in images] == ["image/png", "image/png"]
    png = base64.b64decode(images[0]["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as decoded:
        assert (decoded.size, decoded.convert("RGB").getpixel((0, 0))) == ((1, 1), (255, 0, 0))
    rules.check_generate(body, api=api, model="gemini-2.5-flash")


def test_pillow_waits_for_the_first_gif():
    """The daemon's modules load without Pillow (2 MB resident); a GIF brings it in."""
    probe = (
        "import sys, gatewayd.daemon.tap, gatewayd.plugins, gatewayd.translate; "
        "assert 'PIL' not in sys.modules, 'Pillow imported at start'; "
        "from gatewayd.translate.images import gif_to_png; "
        f"gif_to_png(__import__('base64').b64decode({GIF!r})); "
        "assert 'PIL' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60, cwd=Path(__file__).parent.parent)


def test_a_gif_that_cannot_be_converted_is_a_400():
    broken = {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlhAAAA"}}
    with pytest.raises(TranslationError, match=r"messages\.0\.content\.0\.source\.data: not a readable GIF"):
        prepare(base(messages=[{"role": "user", "content": [broken]}]), VERTEX_25)
    by_url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.gif"}}
    with pytest.raises(TranslationError, match="image/gif image by URL"):
        prepare(base(messages=[{"role": "user", "content": [by_url]}]), VERTEX_25)


def test_gs_urls_need_vertex():
    doc = {"type": "document", "source": {"type": "url", "url": "gs://bucket/a.pdf"}}
    body = base(messages=[{"role": "user", "content": [doc]}])
    assert prepare(body, VERTEX_25).body["contents"][0]["parts"][0]["fileData"]["fileUri"] == "gs://bucket/a.pdf"
    with pytest.raises(TranslationError, match="gs:// URLs need a Vertex AI target"):
        prepare(body, ModelProfile("gemini-2.5-flash", api="gemini"))


ONE_OF_REQUIRED = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "url": {"type": "string"}, "encoding": {"type": "string"}},
    "required": ["encoding"],
    "anyOf": [{"required": ["path"]}, {"required": ["url"]}],
}


@pytest.mark.parametrize("keyword", ["anyOf", "oneOf"])
@pytest.mark.parametrize("api", ["vertex", "gemini"])
def test_alternative_required_sets_become_an_object_and_a_stated_rule(keyword, api):
    schema = {k if k != "anyOf" else keyword: v for k, v in ONE_OF_REQUIRED.items()}
    tools = [{"name": "fetch", "description": "Fetch a thing.", "input_schema": schema}]
    body = prepare(base(tools=tools), ModelProfile("gemini-2.5-flash", api=api)).body
    (declaration,) = body["tools"][0]["functionDeclarations"]
    parameters = declaration["parameters"]
    assert parameters["type"] == "OBJECT" and "anyOf" not in parameters
    assert parameters["required"] == ["encoding"]
    assert set(parameters["properties"]) == {"path", "url", "encoding"}
    word = "exactly one" if keyword == "oneOf" else "at least one"
    assert declaration["description"] == (
        f"Fetch a thing.\n\nArguments: {word.capitalize()} of these sets of properties is required: (path) or (url)."
    )
    rules.check_generate(body, api=api, model="gemini-2.5-flash")


@pytest.mark.parametrize("api", ["vertex", "gemini"])
def test_a_free_form_object_property_keeps_its_meaning(api):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "env": {"type": "object", "additionalProperties": {"type": "string"}}},
        "required": ["name"],
    }
    tools = [{"name": "run", "input_schema": schema}]
    body = prepare(base(tools=tools), ModelProfile("gemini-2.5-flash", api=api)).body
    (declaration,) = body["tools"][0]["functionDeclarations"]
    if api == "vertex":
        env = declaration["parameters"]["properties"]["env"]
        assert env == {"type": "OBJECT", "additionalProperties": {"type": "STRING"}}
    else:
        # The Gemini API has no way to say "any keys" in `parameters`: the JSON Schema goes as is.
        assert "parameters" not in declaration
        assert declaration["parametersJsonSchema"] == schema
    rules.check_generate(body, api=api, model="gemini-2.5-flash")
