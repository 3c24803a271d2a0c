"""The strict fake upstream: its rules, its scripted model, its token endpoint, its resource tree."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from treq.testing import StubTreq

from gatewayd.fakevertex import FakeVertex, auth, claude, make_resource, model, rules
from gatewayd.fakevertex.errors import Rejected

USER = {"role": "user", "parts": [{"text": "hi"}]}
READ_TOOL = {"functionDeclarations": [{"name": "Read", "parameters": {"type": "OBJECT", "properties": {"file_path": {"type": "STRING"}}}}]}


def rejected(body, *, api="vertex", model_name="gemini-2.5-flash", known=lambda raw: None) -> str:
    with pytest.raises(Rejected) as info:
        rules.check_generate(body, api=api, model=model_name, known_signature=known)
    assert info.value.code == 400
    return info.value.message


def accepted(body, *, api="vertex", model_name="gemini-2.5-flash", known=lambda raw: None) -> dict:
    return rules.check_generate(body, api=api, model=model_name, known_signature=known)


def call_turn(signature=None, name="Read", count=1):
    parts = [{"functionCall": {"name": name, "args": {}}} for _ in range(count)]
    if signature is not None:
        parts[0]["thoughtSignature"] = signature
    return {"role": "model", "parts": parts}


def response_turn(count=1, name="Read"):
    return {"role": "user", "parts": [{"functionResponse": {"name": name, "response": {"ok": True}}}] * count}


# --- structure ---------------------------------------------------------------------------------


def test_both_spellings_accepted_and_canonicalised():
    body = {
        "contents": [USER],
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "generation_config": {"max_output_tokens": 10, "stopSequences": ["x"]},
    }
    out = accepted(body)
    assert out["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert out["generationConfig"] == {"maxOutputTokens": 10, "stopSequences": ["x"]}


def test_unknown_top_level_field():
    assert rejected({"contents": [USER], "model_params": 1}) == (
        'Invalid JSON payload received. Unknown name "model_params": Cannot find field.'
    )


def test_unknown_nested_fields_are_all_listed_with_proto_paths():
    body = {"contents": [USER, {"role": "model", "parts": [{"text": "a", "cache_control": {}}]}], "foo": 1}
    assert rejected(body) == (
        "Invalid JSON payload received. Unknown name \"cache_control\" at 'contents[1].parts[0]': Cannot find field.\n"
        'Invalid JSON payload received. Unknown name "foo": Cannot find field.'
    )


def test_function_call_id_rejected_on_vertex_v1_only():
    body = {
        "contents": [USER, {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "Read", "args": {}}}]}]
    }
    assert rejected(body) == (
        "Invalid JSON payload received. Unknown name \"id\" at 'contents[1].parts[0].function_call': Cannot find field."
    )
    accepted(body, api="gemini")


def test_function_response_id_rejected_on_vertex():
    body = {"contents": [USER, call_turn(), {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "Read", "response": {}}}]}]}
    assert "'contents[2].parts[0].function_response'" in rejected(body)


def test_part_metadata_only_on_gemini():
    body = {"contents": [{"role": "user", "parts": [{"text": "a", "partMetadata": {"k": 1}}]}]}
    assert 'Unknown name "partMetadata"' in rejected(body)
    accepted(body, api="gemini")


def test_behavior_only_on_gemini():
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "f", "behavior": "BLOCKING"}]}]}
    assert 'Unknown name "behavior"' in rejected(body)
    accepted(body, api="gemini")


def test_schema_keywords_vertex_vs_gemini():
    schema = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "additionalProperties": False}
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "f", "parameters": schema}]}]}
    assert accepted(body)["tools"][0]["functionDeclarations"][0]["parameters"]["additionalProperties"] is False
    assert 'Unknown name "additionalProperties"' in rejected(body, api="gemini")


@pytest.mark.parametrize("keyword", ["$schema", "$ref", "$defs", "const", "exclusiveMinimum", "propertyNames", "examples", "oneOf", "allOf"])
@pytest.mark.parametrize("api", ["vertex", "gemini"])
def test_json_schema_keywords_unknown_in_parameters(keyword, api):
    schema = {"type": "OBJECT", "properties": {"a": {"type": "STRING", keyword: 1}}}
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "f", "parameters": schema}]}]}
    assert rejected(body, api=api) == (
        f"Invalid JSON payload received. Unknown name \"{keyword}\" at "
        "'tools[0].function_declarations[0].parameters.properties[0].value': Cannot find field."
    )


def test_null_type_only_on_gemini():
    schema = {"type": "OBJECT", "properties": {"a": {"anyOf": [{"type": "STRING"}, {"type": "NULL"}]}}}
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "f", "parameters": schema}]}]}
    assert rejected(body) == (
        "Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value.any_of[1].type' "
        '(type.googleapis.com/google.cloud.aiplatform.v1.Type), "NULL"'
    )
    accepted(body, api="gemini")


def test_enum_values_are_strings_only():
    schema = {"type": "INTEGER", "enum": [1, 2]}
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "f", "parameters": schema}]}]}
    assert "Invalid value at 'tools[0].function_declarations[0].parameters.enum[0]' (TYPE_STRING), 1" in rejected(body)


def test_parameters_json_schema_is_free_form():
    schema = {"type": "object", "$schema": "x", "properties": {"a": {"const": 1}}}
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": schema}]}]}
    assert accepted(body)["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == schema


def test_list_for_a_single_field():
    body = {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": [1]}}]}]}
    assert rejected(body) == (
        "Invalid JSON payload received. Unknown name \"response\" at 'contents[0].parts[0].function_response': "
        "Proto field is not repeating, cannot start list."
    )


def test_bad_base64_signature():
    body = {"contents": [USER, {"role": "model", "parts": [{"text": "a", "thoughtSignature": "not base64!"}]}]}
    assert "(TYPE_BYTES), Base64 decoding failed for" in rejected(body)


# --- contents ----------------------------------------------------------------------------------


def test_roles():
    assert rejected({"contents": [{"role": "assistant", "parts": [{"text": "a"}]}]}) == (
        "Please use a valid role: user, model."
    )
    accepted({"contents": [{"parts": [{"text": "a"}]}, USER, USER]})


def test_empty_parts():
    assert rejected({"contents": [{"role": "user", "parts": []}]}).startswith(
        "Unable to submit request because it must include at least one parts field"
    )
    assert rejected({"contents": [USER, {"role": "model", "parts": []}]}, api="gemini") == (
        "* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.\n"
    )


def test_no_contents():
    assert "contents is not specified" in rejected({})


def test_exactly_one_data_field():
    assert rejected({"contents": [{"role": "user", "parts": [{"text": "a", "functionCall": {"name": "f"}}]}]}) == (
        "required oneof field 'data' must have one initialized field"
    )
    assert rejected({"contents": [{"role": "user", "parts": [{"thought": True}]}]}, api="gemini") == (
        "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field\n"
    )


def test_empty_text():
    assert rejected({"contents": [{"role": "user", "parts": [{"text": ""}]}]}).startswith(
        "Unable to submit request because it has an empty text parameter."
    )
    assert "required oneof field 'data'" in rejected({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, api="gemini")


def test_empty_text_carrying_a_signature_is_accepted():
    signed_end = {"role": "model", "parts": [{"text": "a"}, {"text": "", "thoughtSignature": rules.SKIP_SIGNATURE}]}
    for api in ("vertex", "gemini"):
        accepted({"contents": [USER, signed_end, USER]}, api=api, model_name="gemini-3-flash-preview")


def test_response_count_must_match_calls():
    body = {"contents": [USER, call_turn(count=2), response_turn(count=1)]}
    assert rejected(body) == (
        "Please ensure that the number of function response parts is equal to the number of function call "
        "parts of the function call turn."
    )
    accepted({"contents": [USER, call_turn(count=2), response_turn(count=2)]})


def test_call_turn_must_follow_user_turn():
    message = (
        "Please ensure that function call turn comes immediately after a user turn or after a function response turn."
    )
    assert rejected({"contents": [USER, {"role": "model", "parts": [{"text": "a"}]}, call_turn(), response_turn()]}) == message
    assert rejected({"contents": [call_turn(), response_turn()]}) == message
    accepted({"contents": [USER, call_turn(), response_turn(), call_turn(), response_turn()]})


# --- tools -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1abc", "a b", "x" * 65, "a/b", ""])
def test_bad_function_names(name):
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": name}]}]}
    assert rejected(body).startswith("Invalid function name.")


def test_function_name_colon_only_on_gemini():
    body = {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "mcp:read", "description": "d"}]}]}
    assert rejected(body).startswith("Invalid function name.")
    accepted(body, api="gemini")
    accepted({"contents": [USER], "tools": [{"functionDeclarations": [{"name": "_a.b-c" + "x" * 58}]}]})


def test_at_most_128_declarations_on_vertex():
    declarations = [{"name": f"f{index}"} for index in range(129)]
    assert "more than 128 function declarations" in rejected({"contents": [USER], "tools": [{"functionDeclarations": declarations}]})
    accepted({"contents": [USER], "tools": [{"functionDeclarations": declarations[:128]}]})


def test_parameters_and_json_schema_are_exclusive():
    declaration = {"name": "f", "parameters": {"type": "OBJECT"}, "parametersJsonSchema": {"type": "object"}}
    assert "mutually exclusive" in rejected({"contents": [USER], "tools": [{"functionDeclarations": [declaration]}]})


# --- generation config -------------------------------------------------------------------------


def config(**generation):
    return {"contents": [USER], "generationConfig": generation}


def test_stop_sequences():
    assert rejected(config(stopSequences=list("abcdef"))) == (
        "Unable to submit request because it has a stopSequences value of 6 but the supported range is from 1 "
        "(inclusive) to 6 (exclusive). Update the value and try again."
    )
    assert "must not exceed 5" in rejected(config(stopSequences=list("abcdef")), api="gemini")
    accepted(config(stopSequences=list("abcde")))


def test_temperature_and_top_p():
    assert "temperature value of 2.5" in rejected(config(temperature=2.5))
    assert "temperature value of -1" in rejected(config(temperature=-1))
    assert "topP value of 1.5" in rejected(config(topP=1.5))
    accepted(config(temperature=2, topP=1))
    accepted(config(temperature=0, topP=0))


@pytest.mark.parametrize(
    ("model_name", "too_many", "enough"),
    [("gemini-2.0-flash", 8193, 8192), ("gemini-2.5-pro", 65536, 65535), ("gemini-3-pro-preview", 65537, 65536)],
)
def test_max_output_tokens_per_family(model_name, too_many, enough):
    assert f"maxOutputTokens value of {too_many} but the supported range is from 1 (inclusive) to {too_many} (exclusive)" in rejected(
        config(maxOutputTokens=too_many), model_name=model_name
    )
    assert "maxOutputTokens value of 0" in rejected(config(maxOutputTokens=0), model_name=model_name)
    accepted(config(maxOutputTokens=enough), model_name=model_name)


def test_thinking_on_2_0():
    body = config(thinkingConfig={"includeThoughts": True})
    assert "thinking is not supported by this model" in rejected(body, model_name="gemini-2.0-flash")
    assert rejected(body, api="gemini", model_name="gemini-2.0-flash-lite") == "thinking_config is not supported."


def test_thinking_on_2_5():
    assert rejected(config(thinkingConfig={"thinkingLevel": "LOW"})) == "Thinking level is not supported for this model."
    assert "thinking_budget to 0" in rejected(config(thinkingConfig={"thinkingBudget": 0}), model_name="gemini-2.5-pro")
    assert rejected(config(thinkingConfig={"thinkingBudget": 0}), api="gemini", model_name="gemini-2.5-pro") == (
        "Budget 0 is invalid. This model only works in thinking mode."
    )
    accepted(config(thinkingConfig={"thinkingBudget": 0}))
    accepted(config(thinkingConfig={"thinkingBudget": 1024, "includeThoughts": True}), model_name="gemini-2.5-pro")


def test_thinking_on_3():
    model_name = "gemini-3-pro-preview"
    assert "Thinking budget is not supported" in rejected(config(thinkingConfig={"thinkingBudget": 1024}), model_name=model_name)
    assert rejected(config(thinkingConfig={"thinkingLevel": "minimal"}), model_name=model_name) == (
        "Thinking level MINIMAL is not supported for this model."
    )
    accepted(config(thinkingConfig={"thinkingLevel": "minimal"}), model_name="gemini-3-flash-preview")
    accepted(config(thinkingConfig={"thinkingLevel": "HIGH"}), api="gemini", model_name=model_name)


def test_budget_and_level_together():
    body = config(thinkingConfig={"thinkingLevel": "HIGH", "thinkingBudget": 128})
    for model_name in ("gemini-2.5-flash", "gemini-3-flash-preview"):
        assert rejected(body, model_name=model_name) == "You can only set only one of thinking budget and thinking level."


def test_cached_content_with_system_instruction():
    body = {"contents": [USER], "cachedContent": "projects/p/cachedContents/1", "systemInstruction": {"parts": [{"text": "s"}]}}
    assert rejected(body).startswith("CachedContent can not be used with GenerateContent request")


def test_prefill_only_rejected_on_listed_models():
    body = {"contents": [USER, {"role": "model", "parts": [{"text": "Sure:"}]}]}
    assert rejected(body, model_name="gemini-3.7-flash") == "Requests ending with a model turn are not supported."
    for model_name in ("gemini-2.5-flash", "gemini-3-flash-preview", "gemini-3.1-pro-preview"):
        accepted(body, model_name=model_name)


# --- thought signatures --------------------------------------------------------------------------

G3 = "gemini-3-flash-preview"


def test_missing_signature_in_current_turn_vertex():
    assert rejected({"contents": [USER, call_turn(), response_turn()]}, model_name=G3) == (
        "Unable to submit request because function call `Read` in the 2. content block is missing a "
        "`thought_signature`. Learn more: https://docs.cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures"
    )


def test_missing_signature_in_current_turn_gemini():
    message = rejected({"contents": [USER, call_turn(), response_turn()]}, api="gemini", model_name=G3)
    assert message.startswith("Function call is missing a thought_signature in functionCall parts.")
    assert "function call `default_api:Read` , position 2." in message


def test_only_first_call_of_a_step_needs_a_signature():
    accepted({"contents": [USER, call_turn(rules.SKIP_SIGNATURE, count=2), response_turn(2)]}, model_name=G3)


def test_earlier_turns_need_no_signature():
    history = [USER, call_turn(), response_turn(), {"role": "model", "parts": [{"text": "done"}]}, USER]
    accepted({"contents": history}, model_name=G3)
    assert "missing a `thought_signature`" in rejected({"contents": [*history, call_turn(), response_turn()]}, model_name=G3)


def test_gemini_2_needs_no_signature():
    accepted({"contents": [USER, call_turn(), response_turn()]}, model_name="gemini-2.5-pro")


def test_issued_signature_accepted_and_forged_rejected():
    issued = rules.decode_bytes("aXNzdWVk")
    body = {"contents": [USER, call_turn("aXNzdWVk"), response_turn()]}
    anchor = rules.signature_anchor(call_turn()["parts"][0])
    accepted(body, model_name=G3, known=lambda raw: anchor if raw == issued else None)
    assert rejected(body, model_name=G3) == "Unable to submit request because Thought signature is not valid."
    assert rejected(body, api="gemini", model_name=G3) == "Thought signature is not valid."


def test_sentinels():
    gemini_only = {"contents": [USER, call_turn(rules.GEMINI_SKIP_SIGNATURE), response_turn()]}
    accepted(gemini_only, api="gemini", model_name=G3)
    assert "Thought signature is not valid." in rejected(gemini_only, model_name=G3)
    accepted({"contents": [USER, call_turn(rules.SKIP_SIGNATURE), response_turn()]}, model_name=G3)


# --- countTokens ---------------------------------------------------------------------------------


def test_count_tokens_fields_per_api():
    body = {"contents": [USER], "systemInstruction": {"parts": [{"text": "s"}]}, "tools": [READ_TOOL]}
    rules.check_count_tokens(body, api="vertex", model="gemini-2.5-flash")
    with pytest.raises(Rejected) as info:
        rules.check_count_tokens(body, api="gemini", model="gemini-2.5-flash")
    assert 'Unknown name "systemInstruction"' in info.value.message
    rules.check_count_tokens({"generateContentRequest": {"model": "models/gemini-2.5-flash", **body}}, api="gemini", model="gemini-2.5-flash")


# --- the scripted model ----------------------------------------------------------------------------


def run_script(contents, model_name="gemini-2.5-flash", api="vertex", **extra):
    issued = []
    reply = model.script({"contents": contents, **extra}, model=model_name, api=api, sign=lambda part: issued.append(part) or "U0lH")
    return reply, issued


def test_echo_and_alexiad():
    reply, _ = run_script([{"role": "user", "parts": [{"text": "hello [[chunks 2]] there"}]}])
    assert reply.parts == ({"text": "Echo: hello  there"},)
    assert reply.chunks == 2
    reply, _ = run_script([{"role": "user", "parts": [{"text": "Tell me about Anna Komnene's Alexiad."}]}])
    assert reply.parts == ({"text": model.ALEXIAD},)
    assert len(re.findall(r"[a-z)]\. [A-Z]", model.ALEXIAD)) == 2  # three sentences


def test_echo_keeps_last_200_characters():
    reply, _ = run_script([{"role": "user", "parts": [{"text": "x" * 300 + "END"}]}])
    assert reply.parts[0]["text"] == "Echo: " + ("x" * 300 + "END")[-200:]


def test_call_directives_make_parallel_calls():
    tools = [{"functionDeclarations": [{"name": "Read"}, {"name": "Bash"}]}]
    text = 'do [[call Read {"file_path": "/a]]"}]] and [[call Bash {"command": "ls"}]] [[call Nope {}]]'
    reply, _ = run_script([{"role": "user", "parts": [{"text": text}]}], tools=tools)
    assert reply.parts == (
        {"functionCall": {"name": "Read", "args": {"file_path": "/a]]"}}},
        {"functionCall": {"name": "Bash", "args": {"command": "ls"}}},
    )


def test_undeclared_call_falls_back_to_text():
    reply, _ = run_script([{"role": "user", "parts": [{"text": "[[call Read {}]]"}]}])
    assert reply.parts == ({"text": "Echo: "},)


def test_read_the_file_phrase():
    reply, _ = run_script([{"role": "user", "parts": [{"text": "Please Read the file '/etc/hosts'."}]}], tools=[READ_TOOL])
    assert reply.parts == ({"functionCall": {"name": "Read", "args": {"file_path": "/etc/hosts"}}},)
    reply, _ = run_script([{"role": "user", "parts": [{"text": "read the file /etc/hosts."}]}])
    assert "functionCall" not in reply.parts[0]


def test_tool_results():
    contents = [USER, call_turn(count=1), response_turn()]
    reply, _ = run_script(contents, tools=[READ_TOOL])
    assert reply.parts == ({"text": 'Tool results: Read {"ok": true}'},)
    long = {"role": "user", "parts": [{"functionResponse": {"name": "Read", "response": {"content": "y" * 500}}}]}
    reply, _ = run_script([USER, call_turn(), long])
    assert reply.parts[0]["text"] == "Tool results: Read " + json.dumps({"content": "y" * 500})[:200]


def test_fail_directive():
    reply, _ = run_script([{"role": "user", "parts": [{"text": "[[fail 429]]"}]}], api="gemini")
    assert reply.error.code == 429
    assert reply.error.body()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert reply.error.body()["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]
    assert run_script([{"role": "user", "parts": [{"text": "[[fail 503]]"}]}])[0].error.body()["error"]["status"] == "UNAVAILABLE"


def test_thoughts_and_signatures_on_gemini_3():
    thinking = {"generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    reply, issued = run_script([USER], model_name=G3, **thinking)
    assert reply.parts == ({"text": model.THOUGHT, "thought": True}, {"text": "Echo: hi", "thoughtSignature": "U0lH"})
    reply, _ = run_script([{"role": "user", "parts": [{"text": "[[call Read {}]] [[call Read {}]]"}]}], model_name=G3, tools=[READ_TOOL])
    assert [("thoughtSignature" in part) for part in reply.parts] == [True, False]
    reply, issued = run_script([USER], model_name="gemini-2.5-flash", **thinking)
    assert issued == [] and all("thoughtSignature" not in part for part in reply.parts)


def test_stream_chunks_and_usage():
    reply = model.Reply(parts=({"text": "T", "thought": True}, {"text": "abcdefgh", "thoughtSignature": "S"}))
    chunks = model.stream_chunks(reply, envelope={"responseId": "r"}, prompt_tokens=5, chunks=3)
    texts = [chunk["candidates"][0]["content"].get("parts") for chunk in chunks]
    assert texts == [
        [{"text": "T", "thought": True}],
        [{"text": "ab"}],
        [{"text": "cde"}],
        [{"text": "fgh", "thoughtSignature": "S"}],
        None,
    ]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("finishReason" not in chunk["candidates"][0] for chunk in chunks[:-1])
    assert chunks[-1]["usageMetadata"] == {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 1, "totalTokenCount": 8}
    assert all(chunk["responseId"] == "r" for chunk in chunks)


def test_count_tokens_answer():
    request = {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}]}
    vertex = model.count_tokens(request, "vertex")
    assert vertex["totalBillableCharacters"] == 3 and vertex["totalTokens"] == len(json.dumps(request)) // 4
    assert model.count_tokens(request, "gemini") == {"totalTokens": vertex["totalTokens"]}


# --- the resource tree ------------------------------------------------------------------------------

VERTEX = "http://fake/v1/projects/fake-project/locations/{location}/publishers/google/models/{model}:{method}"


class ResourceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.fake = FakeVertex(stream_delay=0.5)
        self.token = self.fake.issue_token()["access_token"]
        self.treq = StubTreq(make_resource(self.fake, self.clock))

    def post(self, url, body, headers=None):
        headers = {"Authorization": [f"Bearer {self.token}"]} if headers is None else headers
        response = self.successResultOf(self.treq.post(url, json=body, headers=headers))
        return response.code, self.successResultOf(response.text())

    def vertex(self, body, model_name="gemini-2.5-flash", method="generateContent", location="us-central1", **kwargs):
        return self.post(VERTEX.format(location=location, model=model_name, method=method), body, **kwargs)

    def test_generate(self):
        code, text = self.vertex({"contents": [USER]})
        self.assertEqual(code, 200)
        answer = json.loads(text)
        self.assertEqual(answer["candidates"][0]["content"]["parts"], [{"text": "Echo: hi"}])
        self.assertEqual(answer["modelVersion"], "gemini-2.5-flash")
        self.assertIn("createTime", answer)

    def test_auth_required(self):
        for headers in ({}, {"Authorization": ["Bearer nope"]}):
            code, text = self.vertex({"contents": [USER]}, headers=headers)
            self.assertEqual(code, 401)
            self.assertEqual(json.loads(text)["error"]["status"], "UNAUTHENTICATED")

    def test_gemini_3_only_at_global(self):
        code, text = self.vertex({"contents": [USER]}, model_name=G3)
        self.assertEqual(code, 404)
        self.assertIn("Publisher Model `projects/fake-project/locations/us-central1/publishers/google/models/gemini-3-flash-preview` was not found", text)
        self.assertEqual(self.vertex({"contents": [USER]}, model_name=G3, location="global")[0], 200)
        self.assertEqual(self.vertex({"contents": [USER]}, model_name="gemini-1.5-pro")[0], 404)

    def test_validation_error_body(self):
        code, text = self.vertex({"contents": [{"role": "assistant", "parts": [{"text": "a"}]}]})
        self.assertEqual((code, json.loads(text)), (400, {"error": {"code": 400, "message": "Please use a valid role: user, model.", "status": "INVALID_ARGUMENT"}}))

    def test_fail_directive(self):
        code, text = self.vertex({"contents": [{"role": "user", "parts": [{"text": "[[fail 500]]"}]}]})
        self.assertEqual((code, json.loads(text)["error"]["status"]), (500, "INTERNAL"))

    def test_gemini_api_key(self):
        url = "http://fake/v1beta/models/gemini-2.5-flash:generateContent"
        self.assertEqual(self.post(url, {"contents": [USER]}, headers={"x-goog-api-key": ["fake-gemini-key"]})[0], 200)
        self.assertEqual(self.post(url + "?key=fake-gemini-key", {"contents": [USER]}, headers={})[0], 200)
        code, text = self.post(url, {"contents": [USER]}, headers={"x-goog-api-key": ["wrong"]})
        self.assertEqual((code, json.loads(text)["error"]["message"]), (400, "API key not valid. Please pass a valid API key."))
        self.assertEqual(self.post(url, {"contents": [USER]}, headers={})[0], 403)

    def test_count_tokens(self):
        code, text = self.vertex({"contents": [USER]}, method="countTokens")
        self.assertEqual(code, 200)
        self.assertEqual(set(json.loads(text)), {"totalTokens", "totalBillableCharacters", "promptTokensDetails"})

    def test_stream_with_delay_and_signature_round_trip(self):
        url = VERTEX.format(location="global", model=G3, method="streamGenerateContent") + "?alt=sse"
        tools = [READ_TOOL]
        body = {"contents": [{"role": "user", "parts": [{"text": "read the file /tmp/x"}]}], "tools": tools}
        response = self.successResultOf(self.treq.post(url, json=body, headers={"Authorization": [f"Bearer {self.token}"]}))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/event-stream"])
        received = []
        done = self.treq.collect(response, received.append)
        self.assertNoResult(done)
        self.clock.advance(0.5)
        self.treq.flush()
        self.successResultOf(done)
        frames = b"".join(received).split(b"\r\n\r\n")
        self.assertEqual(frames[-1], b"")
        chunks = [json.loads(frame[len(b"data: "):]) for frame in frames[:-1]]
        self.assertEqual(len(chunks), 2)
        call_part = chunks[0]["candidates"][0]["content"]["parts"][0]
        self.assertEqual(call_part["functionCall"], {"name": "Read", "args": {"file_path": "/tmp/x"}})
        self.assertEqual(chunks[1]["candidates"][0]["finishReason"], "STOP")
        history = {
            "contents": [*body["contents"], {"role": "model", "parts": [call_part]}, response_turn()],
            "tools": tools,
        }
        code, text = self.vertex(history, model_name=G3, location="global")
        self.assertEqual(code, 200, text)
        forged = dict(call_part, thoughtSignature="Zm9yZ2Vk")
        history["contents"][1] = {"role": "model", "parts": [forged]}
        code, text = self.vertex(history, model_name=G3, location="global")
        self.assertEqual((code, json.loads(text)["error"]["message"]), (400, "Unable to submit request because Thought signature is not valid."))

    def test_stream_without_delay_in_chunks(self):
        self.fake.stream_delay = 0
        url = VERTEX.format(location="us-central1", model="gemini-2.5-flash", method="streamGenerateContent") + "?alt=sse"
        code, text = self.post(url, {"contents": [{"role": "user", "parts": [{"text": "abcdefghij [[chunks 3]]"}]}]})
        events = [json.loads(frame[len("data: "):]) for frame in text.split("\r\n\r\n") if frame]
        self.assertEqual(len(events), 4)
        self.assertEqual("".join(event["candidates"][0]["content"].get("parts", [{}])[0].get("text", "") for event in events), "Echo: abcdefghij")

    def test_stream_error_directive(self):
        self.fake.stream_delay = 0
        url = VERTEX.format(location="us-central1", model="gemini-2.5-flash", method="streamGenerateContent") + "?alt=sse"
        code, text = self.post(url, {"contents": [{"role": "user", "parts": [{"text": "x [[stream-error 503]]"}]}]})
        last = json.loads([frame for frame in text.split("\r\n\r\n") if frame][-1][len("data: "):])
        self.assertEqual((code, last["error"]["status"]), (200, "UNAVAILABLE"))

    def test_fail_all_answers_every_model_call_with_its_status(self):
        self.fake.fail_all = 503
        code, text = self.vertex({"contents": [USER]})
        self.assertEqual((code, json.loads(text)["error"]["status"]), (503, "UNAVAILABLE"))

    def streams(self):
        return json.loads(self.successResultOf(self.successResultOf(self.treq.get("http://fake/_fake/streams")).text()))

    def test_streams_counts_open_streams_and_those_cut_off_by_their_client(self):
        url = VERTEX.format(location="us-central1", model="gemini-2.5-flash", method="streamGenerateContent") + "?alt=sse"
        body = {"contents": [{"role": "user", "parts": [{"text": "abcdefghij [[chunks 5]]"}]}]}
        headers = {"Authorization": [f"Bearer {self.token}"]}
        response = self.successResultOf(self.treq.post(url, json=body, headers=headers, unbuffered=True))
        self.assertEqual(self.streams(), {"open": 1, "cancelled": 0})
        response.original._transport.stopProducing()  # the client hangs up mid-stream
        self.treq.flush()
        self.assertEqual(self.streams(), {"open": 0, "cancelled": 1})
        response = self.successResultOf(self.treq.post(url, json=body, headers=headers))
        done = self.treq.collect(response, lambda _: None)
        for _ in range(6):
            self.clock.advance(0.5)
            self.treq.flush()
        self.successResultOf(done)
        self.assertEqual(self.streams(), {"open": 0, "cancelled": 1})

    def test_requests_recorded_redacted_and_cleared(self):
        self.vertex({"contents": [USER]})
        self.vertex({"contents": []})
        recorded = json.loads(self.successResultOf(self.successResultOf(self.treq.get("http://fake/_fake/requests")).text()))
        self.assertEqual([entry["status"] for entry in recorded], [200, 400])
        self.assertEqual(recorded[0]["headers"]["authorization"], f"Bearer {self.token}"[:10])
        self.assertEqual(recorded[0]["body"], {"contents": [USER]})
        self.assertEqual(self.successResultOf(self.treq.delete("http://fake/_fake/requests")).code, 204)
        self.assertEqual(self.fake.requests, [])


# --- the token endpoint with real google-auth, and the command line -----------------------------------


def test_cli_and_token_endpoint_with_google_auth(tmp_path: Path):
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    key_path, port_path = tmp_path / "sa.json", tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "gatewayd.fakevertex", "--write-service-account", str(key_path), "--port-file", str(port_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 8
        while not port_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int(port_path.read_text())
        info = json.loads(key_path.read_text())
        assert (info["type"], info["project_id"], info["token_uri"]) == ("service_account", "fake-project", f"http://127.0.0.1:{port}/token")
        assert os.stat(key_path).st_mode & 0o777 == 0o600
        cloud = ["https://www.googleapis.com/auth/cloud-platform"]
        credentials = service_account.Credentials.from_service_account_info(info, scopes=cloud)
        credentials.refresh(Request())
        assert credentials.token and credentials.expiry

        import requests

        url = f"http://127.0.0.1:{port}/v1/projects/fake-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
        answer = requests.post(url, json={"contents": [USER]}, headers={"Authorization": f"Bearer {credentials.token}"}, timeout=5)
        assert answer.status_code == 200, answer.text

        wrong_scope = service_account.Credentials.from_service_account_info(info, scopes=["https://www.googleapis.com/auth/userinfo.email"])
        with pytest.raises(Exception, match="invalid_scope"):
            wrong_scope.refresh(Request())
        other_key = dict(info, private_key=_other_private_key())
        with pytest.raises(Exception, match="Invalid JWT Signature"):
            service_account.Credentials.from_service_account_info(other_key, scopes=cloud).refresh(Request())
    finally:
        process.terminate()
        output = process.communicate(timeout=5)[0].decode()
    assert f"listening on http://127.0.0.1:{port}/" in output


def _other_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _jwt(account, **claims) -> str:
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    def encode(data) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = 1_000_000
    payload = {"iss": account.client_email, "aud": account.token_uri, "scope": auth.CLOUD_PLATFORM, "iat": now, "exp": now + 3600, **claims}
    signing_input = f"{encode({'alg': 'RS256', 'typ': 'JWT'})}.{encode(payload)}"
    key = serialization.load_pem_private_key(account.private_key_pem.encode(), None)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def account():
    return auth.ServiceAccount.generate("http://127.0.0.1:1/token")


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"aud": "http://elsewhere/token"}, "aud must be"),
        ({"exp": 999_999}, "short-lived token"),
        ({"exp": 1_000_000 + 7200}, "short-lived token"),
        ({"scope": "https://www.googleapis.com/auth/userinfo.email"}, "Invalid OAuth scope"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, "iss does not match"),
    ],
)
def test_assertion_rejections(account, claims, error):
    form = {"grant_type": [auth.GRANT_TYPE], "assertion": [_jwt(account, **claims)]}
    with pytest.raises(auth.InvalidGrant, match=error):
        auth.verify_assertion(form, account, now=1_000_100)


def test_assertion_accepted_for_either_audience(account):
    for audience in (account.token_uri, auth.GOOGLE_TOKEN_AUDIENCE):
        form = {"grant_type": [auth.GRANT_TYPE], "assertion": [_jwt(account, aud=audience)]}
        assert auth.verify_assertion(form, account, now=1_000_100)["aud"] == audience


def test_assertion_tampered_or_wrong_grant(account):
    token = _jwt(account)
    signature = _jwt(account, iat=1_000_001).rsplit(".", 1)[1]
    tampered = token.rsplit(".", 1)[0] + "." + signature
    with pytest.raises(auth.InvalidGrant, match="Invalid JWT Signature"):
        auth.verify_assertion({"grant_type": [auth.GRANT_TYPE], "assertion": [tampered]}, account, now=1_000_100)
    with pytest.raises(auth.InvalidGrant) as info:
        auth.verify_assertion({"grant_type": ["client_credentials"], "assertion": [token]}, account, now=1_000_100)
    assert info.value.error == "unsupported_grant_type"


def test_the_scripted_model_reads_the_whole_current_user_turn():
    from gatewayd.fakevertex.model import last_user_content

    request = {
        "contents": [
            {"role": "user", "parts": [{"text": "old"}]},
            {"role": "model", "parts": [{"text": "reply"}]},
            {"role": "user", "parts": [{"text": "Tell me about the Alexiad"}]},
            {"role": "user", "parts": [{"text": "<system-note>x</system-note>"}]},
        ]
    }
    assert [p["text"] for p in last_user_content(request)["parts"]] == [
        "Tell me about the Alexiad",
        "<system-note>x</system-note>",
    ]


# --- rules the first fake let through (issue 14): each test fails against it ----------------------


def declared(parameters):
    return {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "f", "parameters": parameters}]}]}


@pytest.mark.parametrize(
    "parameters",
    [{"type": "STRING"}, {"anyOf": [{"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}]}, {"description": "no type"}],
)
def test_vertex_parameters_must_be_an_object(parameters):
    assert "functionDeclaration parameters schema should be of type OBJECT" in rejected(declared(parameters))
    accepted(declared({"type": "OBJECT"}))  # an OBJECT without properties is fine on Vertex


@pytest.mark.parametrize(
    ("parameters", "where"),
    [
        ({"type": "OBJECT"}, "parameters.properties"),
        ({"type": "OBJECT", "properties": {}}, "parameters.properties"),
        ({"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "OBJECT"}}}, "parameters.properties[1].value.properties"),
        ({"type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {"type": "OBJECT"}}}}, "parameters.properties[0].value.items.properties"),
    ],
)
def test_gemini_api_objects_need_properties(parameters, where):
    assert rejected(declared(parameters), api="gemini") == (
        f"* GenerateContentRequest.tools[0].function_declarations[0].{where}: should be non-empty for OBJECT type\n"
    )
    accepted(declared(parameters))  # Vertex takes them


def image_part(mime, api_field="inlineData"):
    if api_field == "inlineData":
        return {"inlineData": {"mimeType": mime, "data": "R0lGODlh"}}
    return {"fileData": {"mimeType": mime, "fileUri": "https://example.com/a"}}


@pytest.mark.parametrize("api", ["vertex", "gemini"])
@pytest.mark.parametrize("field", ["inlineData", "fileData"])
def test_gif_images_are_refused(api, field):
    body = {"contents": [{"role": "user", "parts": [{"text": "look"}, image_part("image/gif", field)]}]}
    assert rejected(body, api=api) == "Unsupported MIME type: image/gif"
    for mime in sorted(rules.IMAGE_TYPES):
        accepted({"contents": [{"role": "user", "parts": [image_part(mime, field)]}]}, api=api)


def test_gif_inside_a_function_response_is_refused():
    response = {"functionResponse": {"name": "Read", "response": {}, "parts": [{"inlineData": {"mimeType": "image/gif", "data": "R0lG"}}]}}
    body = {"contents": [USER, call_turn(), {"role": "user", "parts": [response]}], "tools": [READ_TOOL]}
    assert rejected(body) == "Unsupported MIME type: image/gif"


def test_gs_uris_only_on_vertex():
    part = {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://bucket/a.pdf"}}
    body = {"contents": [{"role": "user", "parts": [part]}]}
    accepted(body)
    assert rejected(body, api="gemini") == "Invalid or unsupported file uri: gs://bucket/a.pdf"


def test_a_signature_is_valid_only_on_the_call_it_came_with():
    issued = rules.decode_bytes("aXNzdWVk")
    read = {"functionCall": {"name": "Read", "args": {"file_path": "/a"}}}
    anchor = rules.signature_anchor(read)
    known = lambda raw: anchor if raw == issued else None  # noqa: E731
    tools = [{"functionDeclarations": [{"name": "Read"}, {"name": "Bash"}]}]

    def turn(*parts):
        return {"contents": [USER, {"role": "model", "parts": list(parts)}, response_turn(len(parts))], "tools": tools}

    accepted(turn({**read, "thoughtSignature": "aXNzdWVk"}), model_name=G3, known=known)
    moved = {"functionCall": {"name": "Bash", "args": {}}, "thoughtSignature": "aXNzdWVk"}
    assert rejected(turn(moved), model_name=G3, known=known).endswith("Thought signature is not valid.")
    # Clients fill in defaults of a call's args when they send it back: still the same call.
    filled = {"functionCall": {"name": "Read", "args": {"file_path": "/a", "limit": 0}}, "thoughtSignature": "aXNzdWVk"}
    accepted(turn(filled), model_name=G3, known=known)
    on_text = {"contents": [USER, {"role": "model", "parts": [{"text": "x", "thoughtSignature": "aXNzdWVk"}]}, USER]}
    assert rejected(on_text, model_name=G3, known=known).endswith("Thought signature is not valid.")
    twice = turn({**read, "thoughtSignature": "aXNzdWVk"}, {**read, "thoughtSignature": "aXNzdWVk"})
    assert rejected(twice, model_name=G3, known=known).endswith("Thought signature is not valid.")


@pytest.mark.parametrize(
    ("model_name", "api", "limit"),
    [("gemini-2.0-flash", "vertex", 8192), ("gemini-2.0-flash", "gemini", 8192),
     ("gemini-2.5-flash", "vertex", 65535), ("gemini-2.5-pro", "gemini", 65536),
     ("gemini-3-flash-preview", "vertex", 65536), ("gemini-3-pro-preview", "gemini", 65536)],
)
def test_max_output_tokens_per_model_and_api(model_name, api, limit):
    accepted(config(maxOutputTokens=limit), model_name=model_name, api=api)
    assert f"maxOutputTokens value of {limit + 1} but" in rejected(config(maxOutputTokens=limit + 1), model_name=model_name, api=api)


def test_retry_info_only_on_gemini_api_429s():
    vertex, _ = run_script([{"role": "user", "parts": [{"text": "[[fail 429]]"}]}], api="vertex")
    assert "details" not in vertex.error.body()["error"]
    gemini, _ = run_script([{"role": "user", "parts": [{"text": "[[fail 429]]"}]}], api="gemini")
    assert gemini.error.body()["error"]["details"][0]["retryDelay"] == "12s"


# --- Claude on Vertex (publisher anthropic) ----------------------------------------------------

CLAUDE_READ = [{"name": "Read", "description": "read", "input_schema": {"type": "object"}}]


def claude_body(*messages, tools=CLAUDE_READ):
    return {"anthropic_version": "vertex-2023-10-16", "max_tokens": 100, "messages": list(messages), "tools": tools}


def claude_rejected(body) -> str:
    with pytest.raises(claude.ClaudeRejected) as info:
        claude.check_messages(body, stream=False)
    assert info.value.code == 400
    return info.value.body["error"]["message"]


def test_claude_reads_the_file_it_is_asked_to_and_answers_the_result():
    ask = {"role": "user", "content": [{"type": "text", "text": "Please read the file /tmp/a.txt."}]}
    first = claude.answer(claude.check_messages(claude_body(ask), stream=False), "claude-sonnet-4-5@20250929")
    (call,) = first["content"]
    assert (call["type"], call["name"], call["input"]) == ("tool_use", "Read", {"file_path": "/tmp/a.txt"})
    assert first["stop_reason"] == "tool_use"
    result = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call["id"], "content": [{"type": "text", "text": "fifteen books"}]}]}
    body = claude_body(ask, {"role": "assistant", "content": first["content"]}, result)
    second = claude.answer(claude.check_messages(body, stream=False), "claude-sonnet-4-5@20250929")
    assert second["content"] == [{"type": "text", "text": "Tool results: Read fifteen books"}]
    assert second["stop_reason"] == "end_turn"
    # Without a Read tool, the same words are only text.
    plain = claude.answer(claude.check_messages(claude_body(ask, tools=[]), stream=False), "claude-sonnet-4-5@20250929")
    assert plain["content"][0]["text"].startswith("Claude: Please read")


def test_claude_tool_results_must_answer_the_calls_just_before():
    ask = {"role": "user", "content": "Please read the file /tmp/a.txt"}
    call = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]}
    wrong = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"},
                                         {"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}]}
    assert claude_rejected(claude_body(ask, call, wrong)).startswith(
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2.")
    assert claude_rejected(claude_body(ask, call, ask)).startswith(
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1.")
    right = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]}
    claude.check_messages(claude_body(ask, call, right), stream=False)
