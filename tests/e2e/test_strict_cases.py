"""Issue 14's translator cases through the real daemon and the strict fake: one request each."""

from __future__ import annotations

import base64
import io

import anthropic
import pytest
from PIL import Image

from tests.e2e.harness import Daemon, config_dir, model_override
from tests.e2e.test_gemini_api import gemini_daemon  # noqa: F401 (a fixture)
from tests.grammar import check_sdk_stream


@pytest.fixture(scope="module")
def flash_daemon(fake, tmp_path_factory):
    """The sample configuration on gemini-2.5-flash (Vertex), without the sample's output cap."""
    workdir = tmp_path_factory.mktemp("flash")
    name, text = model_override("gemini-2.5-flash")
    assert "max_tokens: 8192" in text
    override = (name, text.replace("max_tokens: 8192", "max_tokens: null"))
    daemon = Daemon(config_dir(workdir, override), fake.seed_environment(), workdir)
    yield daemon
    daemon.stop()


def client_of(daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=daemon.url + "/anything", api_key="x", max_retries=0)


def sent(fake) -> dict:
    """The body of the last model call the fake accepted."""
    calls = [r for r in fake.requests() if "Content" in r["path"] and r["status"] == 200]
    return calls[-1]["body"]


def gif() -> str:
    out = io.BytesIO()
    Image.new("RGB", (2, 2), (0, 128, 255)).save(out, format="GIF")
    return base64.b64encode(out.getvalue()).decode()


def test_alternative_required_sets_are_declared_as_gemini_takes_them(flash_daemon, fake):
    tool = {"name": "fetch", "description": "Fetch.", "input_schema": {
        "type": "object", "properties": {"path": {"type": "string"}, "url": {"type": "string"}},
        "anyOf": [{"required": ["path"]}, {"required": ["url"]}]}}
    message = client_of(flash_daemon).messages.create(
        model="m", max_tokens=100, tools=[tool], messages=[{"role": "user", "content": "[[call fetch {\"url\": \"u\"}]]"}])
    assert message.content[-1].type == "tool_use" and message.content[-1].input == {"url": "u"}
    (declaration,) = sent(fake)["tools"][0]["functionDeclarations"]
    assert declaration["parameters"]["type"] == "OBJECT"
    assert "At least one of these sets of properties is required: (path) or (url)." in declaration["description"]


def test_free_form_object_on_the_gemini_api(client, fake):
    tool = {"name": "run", "input_schema": {"type": "object", "properties": {
        "env": {"type": "object", "additionalProperties": {"type": "string"}}}}}
    message = client.messages.create(
        model="m", max_tokens=100, tools=[tool], messages=[{"role": "user", "content": "[[call run {\"env\": {\"A\": \"1\"}}]]"}])
    assert message.content[-1].input == {"env": {"A": "1"}}
    (declaration,) = sent(fake)["tools"][0]["functionDeclarations"]
    assert declaration["parametersJsonSchema"] == tool["input_schema"]


@pytest.fixture
def client(gemini_daemon):  # noqa: F811
    return client_of(gemini_daemon)


def test_gif_in_a_message_and_a_tool_result_reaches_gemini_as_png(flash_daemon, fake):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": gif()}}
    tool = {"name": "shot", "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}
    messages = [
        {"role": "user", "content": [image, {"type": "text", "text": "take another"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image]}]},
    ]
    client_of(flash_daemon).messages.create(model="m", max_tokens=100, tools=[tool], messages=messages)
    mimes = [p["inlineData"]["mimeType"] for c in sent(fake)["contents"] for p in c["parts"] if "inlineData" in p]
    assert mimes == ["image/png", "image/png"]


def test_an_answer_that_simply_ends_is_end_turn_with_stop_sequences_set(flash_daemon):
    client = client_of(flash_daemon)
    with client.messages.stream(model="m", max_tokens=100, stop_sequences=["###"],
                                messages=[{"role": "user", "content": "[[say no punctuation here]]"}]) as stream:
        check_sdk_stream(stream)
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("end_turn", None)
    cut = client.messages.create(model="m", max_tokens=100, stop_sequences=["###"],
                                 messages=[{"role": "user", "content": "[[say one ### two]]"}])
    assert (cut.stop_reason, cut.stop_sequence, cut.content[-1].text) == ("stop_sequence", "###", "one ")


def test_no_thinking_asked_means_none_and_max_tokens_is_clamped(flash_daemon, fake):
    with client_of(flash_daemon).messages.stream(model="m", max_tokens=100_000,
                                                 messages=[{"role": "user", "content": "hi"}]) as stream:
        check_sdk_stream(stream)
    config = sent(fake)["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 0}
    assert config["maxOutputTokens"] == 65535


def test_temperature_above_one_is_refused_before_google(flash_daemon, fake):
    fake.clear()
    with pytest.raises(anthropic.BadRequestError, match="temperature: must be a number from 0 to 1"):
        client_of(flash_daemon).messages.create(model="m", max_tokens=10, extra_body={"temperature": 1.5},
                                                messages=[{"role": "user", "content": "hi"}])
    assert [r for r in fake.requests() if "Content" in r["path"]] == []
