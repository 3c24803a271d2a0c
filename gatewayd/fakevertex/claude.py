"""Claude on Vertex AI (publisher ``anthropic``), as strict as Google's documentation.

``publishers/anthropic/models/M:rawPredict`` and ``:streamRawPredict`` take an
Anthropic Messages body with two changes (Google's "Use Claude models" page and
Anthropic's "Claude on Vertex AI"): ``anthropic_version`` in the body, set to
``vertex-2023-10-16``, and no ``model`` (the URL names it).  The count-tokens
endpoint (``publishers/anthropic/models/count-tokens:rawPredict``) takes the
model in the body.  Errors come back in Anthropic's shape.

Tool turns are checked as Anthropic checks them, with its messages (seen from Vertex too, e.g.
Antigravity-Manager#654; anthropics/claude-code#13460, #5060): every ``tool_result`` answers a
``tool_use`` of the message just before it, and every ``tool_use`` is answered in the next message.

Answers, from the last user message:

(a) ``tool_result`` blocks: ``Tool results: `` + ``"; ".join(NAME + " " + TEXT[:200])``, NAME
    the tool the result answers, TEXT its content (a string, or its text blocks joined).
(b) a text holding ``[[tool NAME]]`` (NAME a declared tool): a ``tool_use`` of NAME with ``{}``;
    else the phrase ``read the file PATH`` when a tool named ``Read`` is declared (PATH as the
    Gemini model reads it): a ``tool_use`` of Read with ``{"file_path": PATH}``.
(c) else ``Claude: <last user text>``.

The model version reported is the URL's model.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
KNOWN_MODELS = frozenset({
    "claude-sonnet-4-5@20250929", "claude-haiku-4-5@20251001", "claude-opus-4-1@20250805",
    "claude-sonnet-4@20250514",
})
_TOOL = re.compile(r"\[\[tool ([A-Za-z0-9_-]+)\]\]")
_READ = re.compile(r"read the file\s+[\"'`]?([^\s\"'`]+)", re.I)


class ClaudeRejected(Exception):
    def __init__(self, code: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.body = {"type": "error", "error": {"type": kind, "message": message}}


def _invalid(message: str) -> ClaudeRejected:
    return ClaudeRejected(400, "invalid_request_error", message)


def check_messages(body: Any, *, stream: bool) -> dict[str, Any]:
    """The body of a rawPredict / streamRawPredict call, or ClaudeRejected."""
    if not isinstance(body, dict):
        raise _invalid("body: Input should be a valid dictionary")
    if "model" in body:
        raise _invalid("model: Extra inputs are not permitted")
    version = body.get("anthropic_version")
    if version is None:
        raise _invalid("anthropic_version: Field required")
    if version != VERTEX_ANTHROPIC_VERSION:
        raise _invalid(f"anthropic_version: Input should be '{VERTEX_ANTHROPIC_VERSION}'")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise _invalid("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: Field required")
    if (body.get("stream") is True) != stream:
        raise _invalid("stream: streamRawPredict takes stream: true, rawPredict takes no stream")
    _check_tool_pairs(messages)
    return body


def _blocks(message: Any, kind: str) -> list[dict[str, Any]]:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict) and block.get("type") == kind]


def _check_tool_pairs(messages: list[Any]) -> None:
    """Anthropic's 400s for a tool result without its call, and a call without its result."""
    for index, message in enumerate(messages):
        asked = {block.get("id") for block in _blocks(messages[index - 1], "tool_use")} if index else set()
        content = message.get("content") if isinstance(message, dict) else None
        for position, block in enumerate(content if isinstance(content, list) else ()):
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("tool_use_id") not in asked:
                raise _invalid(
                    f"messages.{index}.content.{position}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        calls = _blocks(message, "tool_use")
        answered = (
            {block.get("tool_use_id") for block in _blocks(messages[index + 1], "tool_result")}
            if index + 1 < len(messages) else set()
        )
        unanswered = [block.get("id") for block in calls if block.get("id") not in answered]
        if unanswered and index + 1 < len(messages):
            raise _invalid(
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {unanswered[0]}. Each `tool_use` block must have a corresponding "
                "`tool_result` block in the next message."
            )


def check_count(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise _invalid("model: Field required")
    if body["model"] not in KNOWN_MODELS:
        raise ClaudeRejected(404, "not_found_error", f"model: {body['model']}")
    if not isinstance(body.get("messages"), list):
        raise _invalid("messages: Field required")
    return body


def _last_user_text(body: dict[str, Any]) -> str:
    message = body["messages"][-1]
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    texts = [b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text"]
    return " ".join(texts)


def _tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text")


def _tool_results(body: dict[str, Any]) -> str | None:
    """The (a) answer to tool results in the last message, or None when it holds none."""
    messages = body["messages"]
    results = _blocks(messages[-1], "tool_result")
    if not results:
        return None
    names = {block.get("id"): block.get("name", "") for block in _blocks(messages[-2], "tool_use")}
    return "Tool results: " + "; ".join(
        f"{names[block['tool_use_id']]} {_result_text(block)[:200]}" for block in results
    )


def _tool_call(text: str, declared: set[Any]) -> dict[str, Any] | None:
    call = _TOOL.search(text)
    if call and call.group(1) in declared:
        return {"name": call.group(1), "input": {}}
    read = _READ.search(text)
    path = read.group(1).rstrip(".,;:!?)") if read else ""
    if path and "Read" in declared:
        return {"name": "Read", "input": {"file_path": path}}
    return None


def answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    declared = {t.get("name") for t in body.get("tools") or () if isinstance(t, dict)}
    content: list[dict[str, Any]] = []
    results = _tool_results(body)
    text = _last_user_text(body)
    call = None if results is not None else _tool_call(text, declared)
    if results is not None:
        content.append({"type": "text", "text": results})
    elif call is not None:
        content.append({"type": "tool_use", "id": "toolu_vrtx_" + secrets.token_hex(8), **call})
    else:
        content.append({"type": "text", "text": "Claude: " + _TOOL.sub("", text).strip()})
    return {
        "id": "msg_vrtx_" + secrets.token_hex(8),
        "type": "message",
        "role": "assistant",
        "model": model.split("@")[0],
        "content": content,
        "stop_reason": "tool_use" if content[0]["type"] == "tool_use" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": _tokens(body["messages"]),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": _tokens(content),
        },
    }


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The message as Anthropic's stream: message_start (output 1, provisional), blocks, delta."""
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "text_delta", "text": block["text"]}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {**block, "input": {}}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": json.dumps(block["input"])}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events
